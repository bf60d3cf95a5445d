"""Reading a job's logs: every replica's JSON-lines file merged by time, with a cursor.

The cursor (``pageToken``) records a byte offset per file, so a client that polls with the
token it got last time receives each line exactly once, even while replicas are writing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlengine.errors import invalid

MAX_ENTRIES = 5000

#: Largest byte offset a cursor may hold (a file position, so never negative).
MAX_OFFSET = 2**53


def _decode(token: str | None) -> dict[str, int]:
    if not token:
        return {}
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(data, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_OFFSET for v in data.values()):
            raise ValueError("bad cursor")
        return {str(k): int(v) for k, v in data.items()}
    except (ValueError, UnicodeError, RecursionError):
        raise invalid("pageToken", "is not a token returned by a previous logs call") from None


def _encode(offsets: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(offsets, sort_keys=True).encode()).decode()


def cursor_at(offsets: Mapping[str, int]) -> str:
    """A cursor that starts each named file at a byte offset (the console starts at the tail)."""
    return _encode(dict(offsets))


def read_logs(
    logs_dir: Path,
    task_name: str | None = None,
    page_token: str | None = None,
    page_size: int | None = None,
    prefixed_dirs: Mapping[str, Path] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Entries after the cursor (oldest first) and the cursor to continue from.

    ``prefixed_dirs`` adds more log directories (a tuning job's trials): their entries get the
    task name ``<prefix>/<task>``; ``task_name`` then selects ``<prefix>/<task>``, every task
    of one prefix, or one task under every prefix."""
    limit = min(page_size or 1000, MAX_ENTRIES)
    if limit <= 0:
        raise invalid("pageSize", "must be positive")
    offsets = _decode(page_token)
    entries: list[tuple[str, int, dict[str, Any]]] = []
    sources = [("", logs_dir), *sorted((prefixed_dirs or {}).items())]
    files = [(prefix, path) for prefix, directory in sources if directory.is_dir()
             for path in sorted(directory.glob("*.jsonl"))]
    for prefix, path in files:
        name = f"{prefix}/{path.stem}" if prefix else path.stem
        if task_name and task_name not in (name, path.stem, prefix):
            continue
        start = offsets.get(name, 0)
        with open(path, "rb") as f:
            f.seek(start)
            position = start
            count = 0
            while count < limit:
                raw = f.readline()
                if not raw or not raw.endswith(b"\n"):
                    break  # a line still being written is read next time
                position += len(raw)
                try:
                    record = json.loads(raw)
                except ValueError:
                    record = {"timestamp": "", "severity": "INFO", "taskName": path.stem,
                              "message": raw.decode("utf-8", "replace").rstrip("\n")}
                if prefix:
                    record["taskName"] = f"{prefix}/{record.get('taskName') or path.stem}"
                entries.append((str(record.get("timestamp", "")), len(entries), record))
                count += 1
        offsets[name] = position
    entries.sort(key=lambda item: (item[0], item[1]))
    return [record for _, _, record in entries], _encode(offsets)


def tail_errors(log_file: Path, lines: int = 5) -> list[str]:
    """The last ``lines`` messages of a replica's log, preferring ERROR/CRITICAL lines."""
    if not log_file.exists():
        return []
    with open(log_file, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))
        chunk = f.read().decode("utf-8", "replace").splitlines()
    records = []
    for raw in chunk:
        try:
            records.append(json.loads(raw))
        except ValueError:
            continue
    errors = [r for r in records if r.get("severity") in ("ERROR", "CRITICAL")]
    chosen = errors or records
    return [str(r.get("message", "")) for r in chosen[-lines:]]
