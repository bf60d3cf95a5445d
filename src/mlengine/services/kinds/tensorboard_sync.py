"""Keep a local copy of a remote log directory for TensorBoard, and run TensorBoard over it:
``python -m mlengine.services.kinds.tensorboard_sync URI CACHE SECONDS -- ARGV...``.

The copy runs here, outside the sandbox (this is mlengine's code; it needs the server user's
credentials for ``gs://`` or ``s3://``), every ``SECONDS``: files that are new or whose size
changed (event files grow) are copied whole, atomically, keeping their relative paths; files
gone from the source stay. ``ARGV`` (the confined TensorBoard) runs as a child in this
process's group; SIGTERM stops both, and this process exits with the child's status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlengine.storage import uris
from mlengine.storage.paths import safe_join

MAX_FILES = 100_000


def sync_once(uri: str, cache: Path) -> int:
    """Copy what changed under ``uri`` into ``cache``; the number of files copied."""
    fs, root = uris.filesystem(uri)
    root = root.rstrip("/")
    copied = 0
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return 0
    for path, info in list(found.items())[:MAX_FILES]:
        if info.get("type") == "directory":
            continue
        relative = str(path)[len(root):].lstrip("/")
        if not relative:
            continue
        dest = safe_join(cache, *relative.split("/"))
        size = info.get("size")
        if dest.exists() and size is not None and dest.stat().st_size == size:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.partial")
        fs.get_file(path, str(partial))
        os.replace(partial, dest)
        copied += 1
    return copied


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        print("usage: python -m mlengine.services.kinds.tensorboard_sync URI CACHE SECONDS -- ARGV...",
              file=sys.stderr)
        return 2
    uri, cache, interval = argv[0], Path(argv[1]), float(argv[2])
    cache.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(argv[4:])
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    next_sync = 0.0
    while child.poll() is None:
        if not stopping and time.monotonic() >= next_sync:
            try:
                copied = sync_once(uri, cache)
                if copied:
                    print(f"mlengine: copied {copied} file(s) from {uri}", flush=True)
            except Exception as exc:  # keep TensorBoard up with what it has; say why once per pass
                print(f"mlengine: cannot copy {uri}: {exc}", file=sys.stderr, flush=True)
            next_sync = time.monotonic() + interval
        time.sleep(0.2)
    return int(child.returncode or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
