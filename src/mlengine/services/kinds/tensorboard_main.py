"""TensorBoard's ``main`` as the ``tensorboard`` kind runs it (inside the sandbox):
``python -m mlengine.services.kinds.tensorboard_main KEY_FILE TENSORBOARD_FLAGS...``.

- No TensorFlow: TensorBoard's own stub is forced (a ``tensorboard.compat.notf`` module), so
  it starts in seconds and reads event files without importing TensorFlow.
- Only the proxy gets in: every request must carry the service's upstream key (read from
  ``KEY_FILE``, a 0600 file in the service's directory that other sandboxed processes cannot
  read) in :data:`~mlengine.services._base.UPSTREAM_KEY_HEADER`; the proxy and the manager's
  health checks send it. Anything else connecting to the port gets 403: TensorBoard itself has
  no authentication, and the port is on 127.0.0.1 where every local process can reach it.
"""

from __future__ import annotations

import hmac
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mlengine.services._base import UPSTREAM_KEY_HEADER, read_secret

_ENVIRON_KEY = "HTTP_" + UPSTREAM_KEY_HEADER.upper().replace("-", "_")
_REFUSED = b"This TensorBoard answers only mlengine's proxy: open it through the server.\n"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def guarded(app: WSGIApp, key: str) -> WSGIApp:
    """``app`` for requests carrying ``key`` in the upstream header; 403 for any other."""
    expected = key.encode()

    def guard(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = str(environ.get(_ENVIRON_KEY, "")).encode("latin-1", "replace")
        if expected and hmac.compare_digest(given, expected):
            return app(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", str(len(_REFUSED)))])
        return [_REFUSED]

    return guard


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: tensorboard_main KEY_FILE [TENSORBOARD FLAGS...]")
    key = read_secret(Path(sys.argv.pop(1)))
    if not key:
        sys.exit("tensorboard_main: the upstream key file is missing or empty")
    sys.modules["tensorboard.compat.notf"] = types.ModuleType("notf")
    sys.argv[0] = "tensorboard"
    from absl import app
    from tensorboard import default, main_lib, program
    from tensorboard.plugins import base_plugin

    def server(wsgi_app: WSGIApp, flags: Any) -> Any:
        return program.create_port_scanning_werkzeug_server(guarded(wsgi_app, key), flags)

    main_lib.global_init()
    tensorboard = program.TensorBoard(plugins=default.get_plugins(), server_class=server)
    try:
        app.run(tensorboard.main, flags_parser=tensorboard.configure)
    except base_plugin.FlagsError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
