"""Process primitives shared by executors, operations, services and serving: the one home of
process-group and session handling.

User code runs as the leader of its own session (and so of its own process group), so that
one signal reaches everything it started. A pid alone does not identify a process across a
server restart (pids are reused): handles record the leader's start time in clock ticks too.
Every function here is best effort: a process that is gone is not an error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

#: /proc states of a process that has exited (zombie, dead).
EXITED_STATES = ("Z", "X")


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            # The command name may contain spaces and parentheses: split after the last ')'.
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def proc_start_ticks(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks, state letter) from /proc, or None if no such process.
    The start time tells a reused pid from ours."""
    fields = proc_stat(pid)
    return (int(fields[19]), fields[0]) if fields else None


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to process group ``pgid``; nothing if it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_alive(pgid: int) -> bool:
    """Whether a live (not exited) process of group ``pgid`` remains. A zombie leader nobody
    reaped yet still counts for ``killpg(pgid, 0)``, so its members are looked up in /proc."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    leader = proc_start_ticks(pgid)
    if leader is not None and leader[1] not in EXITED_STATES:
        return True
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields is not None and int(fields[2]) == pgid and fields[0] not in EXITED_STATES:
                return True
    return False


def session_members(sid: int, start_ticks: int | None) -> list[int]:
    """Live processes of the session ``sid`` leads, found through /proc; only processes
    started after the leader count, so a reused pid is never taken for ours."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = proc_stat(int(entry.name))
        if fields is None or int(fields[3]) != sid or fields[0] in EXITED_STATES:
            continue
        if start_ticks is not None and int(fields[19]) < start_ticks:
            continue
        members.append(int(entry.name))
    return members


def kill_session(sid: int, start_ticks: int | None, grace: float = 2.0) -> list[int]:
    """Stop every process of the session ``sid`` leads: SIGTERM, then SIGKILL whatever is left
    after ``grace`` seconds. Blocking (up to ``grace``); returns the pids signalled."""
    members = session_members(sid, start_ticks)
    for member in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = members
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = session_members(sid, start_ticks)
    for member in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)
    return sorted(set(members) | set(left))
