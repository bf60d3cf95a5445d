"""Process primitives shared by executors and serving."""

from __future__ import annotations


def proc_start_ticks(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks, state letter) from /proc, or None if no such process.
    The start time tells a reused pid from ours."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    rest = stat.rsplit(")", 1)[1].split()
    return int(rest[19]), rest[0]

