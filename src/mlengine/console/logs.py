"""A job's logs for the console: the tail first (never the whole file: a job may have written
millions of lines), then whatever was written since, by the API's cursor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlengine.jobs.logs import cursor_at, read_logs
from mlengine.jobs.paths import JobPaths

SEVERITIES = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY")
RANK = {name: i for i, name in enumerate(SEVERITIES)}
#: How far back the first read starts, per replica file.
TAIL_BYTES = 64 * 1024


def _sources(paths: JobPaths) -> list[tuple[str, Path]]:
    """(cursor name, file) of every log file, named as :func:`read_logs` names them."""
    out = [(p.stem, p) for p in sorted(paths.logs_dir.glob("*.jsonl"))] if paths.logs_dir.is_dir() else []
    for logs in sorted((paths.root / "trials").glob("*/logs")):
        out.extend((f"trial-{logs.parent.name}/{p.stem}", p) for p in sorted(logs.glob("*.jsonl")))
    return out


#: The replica filter lists at most this many trials (the newest): a tuning job may have thousands.
MAX_TRIALS_LISTED = 100


def tasks(paths: JobPaths) -> list[str]:
    """The replica filter's choices: the job's replicas, then its newest trials (each selects
    every replica of that trial)."""
    own = sorted(p.stem for p in paths.logs_dir.glob("*.jsonl")) if paths.logs_dir.is_dir() else []
    trials = sorted((d.parent.name for d in (paths.root / "trials").glob("*/logs")),
                    key=lambda n: (len(n), n))[-MAX_TRIALS_LISTED:]
    return own + [f"trial-{n}" for n in trials]


def _tail_offset(path: Path, max_bytes: int) -> int:
    size = path.stat().st_size
    if size <= max_bytes:
        return 0
    with open(path, "rb") as f:
        f.seek(size - max_bytes)
        chunk = f.read(max_bytes)
    newline = chunk.find(b"\n")
    return size - max_bytes + newline + 1 if newline >= 0 else size


def read(paths: JobPaths, cursor: str | None, task: str | None, severity: str | None,
         max_bytes: int = TAIL_BYTES) -> dict[str, Any]:
    """Entries after ``cursor`` (the tail when there is none), at least ``severity``."""
    if not cursor:
        cursor = cursor_at({name: _tail_offset(path, max_bytes) for name, path in _sources(paths)})
    trials = {f"trial-{d.parent.name}": d for d in sorted((paths.root / "trials").glob("*/logs"))}
    entries, token = read_logs(paths.logs_dir, task or None, cursor, 1000, trials)
    floor = RANK.get((severity or "").upper(), 0)
    if floor:
        entries = [e for e in entries if RANK.get(str(e.get("severity", "DEFAULT")).upper(), 0) >= floor]
    return {"entries": entries, "cursor": token}
