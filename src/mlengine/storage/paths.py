"""Path joins that cannot escape their root.

Use :func:`safe_join` whenever a path component comes from a user or a request (a job id, a
file name in an upload, a member of an archive).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from mlengine.errors import Code, MLEngineError


def is_within(path: Path, root: Path) -> bool:
    """True if ``path`` is ``root`` or lies under it (both compared as given, not resolved)."""
    return path == root or root in path.parents


def safe_join(root: Path, *parts: str) -> Path:
    """``root / parts...`` resolved, refusing any result outside ``root``.

    Refused (INVALID_ARGUMENT naming the part): absolute parts (``/x``, ``C:\\x``, ``\\\\x``), NUL
    bytes, and any join whose resolved path (``..`` components and symlinks followed with
    :meth:`Path.resolve`) is not ``root`` itself or under it. ``root`` need not exist; parts
    that do not exist yet are resolved lexically. Returns the resolved path.
    """
    real_root = Path(os.path.realpath(root))
    for part in parts:
        if "\x00" in part:
            raise MLEngineError(Code.INVALID_ARGUMENT, f"Path {part!r} contains a NUL character.")
        if PurePosixPath(part).is_absolute() or PureWindowsPath(part).anchor:
            raise MLEngineError(Code.INVALID_ARGUMENT, f"Path {part!r} is absolute; expected a path under {root}.")
    candidate = real_root.joinpath(*parts)
    resolved = Path(os.path.realpath(candidate))
    if not is_within(resolved, real_root):
        shown = "/".join(parts)
        raise MLEngineError(Code.INVALID_ARGUMENT, f"Path {shown!r} escapes {root}.")
    return resolved
