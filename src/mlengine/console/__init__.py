"""The web console at ``/console``: server-rendered pages over the same services the API uses.

A browser signs in with a token or a console user's password and then carries a session
cookie (HttpOnly, SameSite=Strict; Secure over https). Every route declares the API permission
it needs (:data:`mlengine.console.routes.PERMISSIONS`), checked with the API's authorizer on the
resource its path names; every state-changing request carries the session's CSRF token and
comes from this server's own origin. See docs/console.md.
"""

from __future__ import annotations

from typing import Any


def create_console(main_state: Any) -> Any:
    """The console's ASGI app over the control plane's ``app.state`` (tokens, IAM, services)."""
    from mlengine.console.app import build

    return build(main_state)
