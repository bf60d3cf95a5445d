"""Every path parameter of every route is checked by the ``ml`` v1 naming rules before a
handler runs (an app-wide dependency), so no bad name is ever stored or joined into a path."""

from __future__ import annotations

from fastapi import Request

from mlengine.core.names import validate_path_segment

#: Path parameters that are not names (a catch-all path of the proxy, for instance).
FREE_FORM = frozenset({"path"})


async def check_path(request: Request) -> None:
    for param, value in request.path_params.items():
        if param not in FREE_FORM and isinstance(value, str):
            validate_path_segment(param, value)
