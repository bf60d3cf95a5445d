"""The console session's proxy token (issue 14 follow-up): one token per session, the same for
every service it opens, so opening a notebook does not sign an open TensorBoard tab out; it
ends with the session."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mlengine.api.auth import TokenCache
from mlengine.console.session import Viewer, drop_proxy_tokens, mint_proxy_token, proxy_token_name
from mlengine.core.iam import Identity
from mlengine.store.database import open_database
from mlengine.store.tokens import TokenRepository


def _request(tmp_path: Path) -> Any:
    repo = TokenRepository(open_database(f"sqlite:///{tmp_path / 'm.db'}"))
    main = SimpleNamespace(token_repo=repo, tokens=TokenCache(repo))
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(main=main)))


def test_one_proxy_token_per_session_for_every_service(tmp_path: Path) -> None:
    request = _request(tmp_path)
    tokens = request.app.state.main.tokens
    ann = Viewer(Identity("console:ann", "user:ann", ("group:ml",)), "csrf", "session-secret-1", 7)
    first = mint_proxy_token(request, ann)  # e.g. the job page's TensorBoard
    again = mint_proxy_token(request, ann)  # then a notebook: the TensorBoard tab's cookie stays valid
    assert first == again
    seen = tokens.lookup(first)
    assert seen is not None and seen.name == proxy_token_name(7) and seen.member == "user:ann"
    assert seen.groups == ("group:ml",)
    other = mint_proxy_token(request, Viewer(ann.identity, "csrf", "session-secret-2", 8))
    assert other != first and tokens.lookup(other) is not None

    drop_proxy_tokens(request, [7])  # sign-out
    assert tokens.lookup(first) is None and tokens.lookup(other) is not None
    request.app.state.main.token_repo.db.dispose()
