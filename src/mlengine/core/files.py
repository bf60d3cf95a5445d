"""Atomic file writes: readers see the old content or the new, never a half-written file."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, text: str, *, mode: int = 0o644, durable: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename.

    ``mode`` applies from creation (0o600: only the owner can ever read it, even mid-write).
    ``durable`` fsyncs the file and its directory, so the content survives a power loss
    (exit statuses that a restarted control plane must find).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
