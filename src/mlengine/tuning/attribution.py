"""Which trial wrote which TensorFlow event file under a tuning job's job directory.

Trials share their tuning job's ``--job-dir`` (mlengine passes it unchanged, like the parent's
``trainingInput``), and trainers write summaries wherever they like: under
``<job-dir>/<trialId>/`` (samples that append ``TF_CONFIG.task.trial`` themselves) or straight
under the job directory (Google's census sample: ``<job-dir>/metric_tb/train``), where the
files of every trial end up side by side. :class:`SharedEvents` finds every event file under
the job directory and gives each to at most one trial, never to two:

1. a file under ``<job-dir>/<trialId>/`` is that trial's;
2. any other file is matched by its writer and its birth, both in its name
   (``events.out.tfevents.<epoch seconds>.<host>.<pid>.<n>[.v2]``, as TensorFlow, Keras and
   ``torch.utils.tensorboard`` name them): the trials that ran when it was born (a trial's
   window is its start to its end, a few seconds of slack either side); among those, the one
   whose processes include the writer's pid (the trainer pid each supervisor records at exit,
   or a live process in a replica's process group); else the only one that ran then;
3. a file that fits no trial (written before or outside every trial) belongs to none, and one
   that several trials could have written stays unassigned while one of them runs, then
   belongs to none (it is logged): two trials' scalars are never mixed.

Scans are cheap and incremental: one ``stat`` per directory, and only directories whose
modification time changed (or changed within the last few seconds, which a coarse clock could
hide) are listed again; files get their owner once. Readers of the files keep their offsets
(:class:`~mlengine.tuning.events.EventFileReader`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mlengine.core.timeutil import as_utc
from mlengine.store.models import JobRow, ReplicaRow

log = logging.getLogger("mlengine.tuner")

PREFIX = "events.out.tfevents."
#: Seconds a file's birth may lie outside its trial's window (names hold whole seconds).
SLACK_SECONDS = 3.0
#: A directory modified this recently is listed again even if its mtime looks unchanged.
RECENT_SECONDS = 3.0


@dataclass(frozen=True)
class TrialRun:
    """What tells a trial's files from its siblings': when it ran and its processes."""

    trial_id: str
    started: float | None
    ended: float | None
    #: Trainer pids the supervisors recorded when the replicas ended.
    pids: frozenset[int] = frozenset()
    #: Process groups of its replicas (each supervisor leads one; the trainer is in it).
    groups: frozenset[int] = frozenset()

    def ran_at(self, when: float) -> bool:
        if self.started is None or when < self.started - SLACK_SECONDS:
            return False
        return self.ended is None or when <= self.ended + SLACK_SECONDS

    def owns_pid(self, pid: int) -> bool:
        return pid in self.pids or _process_group(pid) in self.groups


def _process_group(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def name_fields(name: str) -> tuple[float | None, int | None]:
    """Birth (epoch seconds) and writer pid from an event file's name (None when absent)."""
    parts = name[len(PREFIX):].split(".")
    birth = float(parts[0]) if parts and parts[0].isdigit() else None
    rest = parts[1:-1] if parts[-1] == "v2" else parts[1:]
    pid = int(rest[-2]) if len(rest) >= 3 and rest[-1].isdigit() and rest[-2].isdigit() else None
    return birth, pid


def trial_run(trial_id: str, job: JobRow, replicas: Iterable[ReplicaRow]) -> TrialRun:
    """A trial's :class:`TrialRun` from its job row and its replicas' handles."""
    pids: set[int] = set()
    groups: set[int] = set()
    for replica in replicas:
        handle = replica.handle or {}
        if handle.get("pgid"):
            groups.add(int(handle["pgid"]))
        try:
            status = json.loads(Path(handle["statusFile"]).read_text(encoding="utf-8"))
            pids.add(int(status["pid"]))
        except (KeyError, OSError, TypeError, ValueError):
            pass  # still running, or it never started its trainer
    started, ended = as_utc(job.start_time), as_utc(job.end_time)  # SQLite gives naive UTC
    return TrialRun(trial_id, started.timestamp() if started else None, ended.timestamp() if ended else None,
                    frozenset(pids), frozenset(groups))


class SharedEvents:
    """Event files under ``root`` (a tuning job's local job directory), each given to at most
    one trial of ``runs()`` (called only when a scan finds new files). Not thread-safe: the
    tuner uses it from the scheduler thread."""

    def __init__(self, root: Path, runs: Callable[[], list[TrialRun]], scan_seconds: float = 2.0) -> None:
        self.root = root
        self.runs = runs
        self.scan_seconds = scan_seconds
        self._listed: dict[Path, int] = {}  # directory -> mtime_ns when it was last listed
        self._undecided: set[Path] = set()
        self._unowned: set[Path] = set()  # decided: no trial's
        self._owners: dict[str, list[Path]] = {}
        self._scanned = -float("inf")

    def files_of(self, trial_id: str, force: bool = False) -> list[Path]:
        """The event files of ``trial_id`` found so far (``force``: scan now, not throttled)."""
        now = time.monotonic()
        if force or now - self._scanned >= self.scan_seconds:
            self._scanned = now
            self._scan()
        return list(self._owners.get(trial_id, ()))

    def _scan(self) -> None:
        new = self._new_files()
        pending = sorted(self._undecided | new)
        if not pending:
            return
        runs = self.runs()
        self._undecided = set()
        for path in pending:
            owner = self._owner(path, runs)
            if owner is _WAIT:
                self._undecided.add(path)
            elif owner is not None:
                self._owners.setdefault(str(owner), []).append(path)

    def _new_files(self) -> set[Path]:
        found: set[Path] = set()
        stack = [self.root]
        wall = time.time()
        while stack:
            directory = stack.pop()
            try:
                stamp = directory.stat().st_mtime_ns
                recent = wall - stamp / 1e9 < RECENT_SECONDS
                relist = recent or self._listed.get(directory) != stamp
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif relist and entry.name.startswith(PREFIX) and entry.is_file(follow_symlinks=False):
                            found.add(Path(entry.path))
            except OSError:
                continue  # removed meanwhile, or unreadable
            self._listed[directory] = stamp
        known = {p for paths in self._owners.values() for p in paths}
        return found - known - self._unowned

    def _owner(self, path: Path, runs: list[TrialRun]) -> object:
        top = path.relative_to(self.root).parts[0]
        by_dir = [r for r in runs if r.trial_id == top]
        if by_dir and len(path.relative_to(self.root).parts) > 1:
            return by_dir[0].trial_id  # under <job-dir>/<trialId>/
        birth, pid = name_fields(path.name)
        candidates = [r for r in runs if birth is None or r.ran_at(birth)]
        if pid is not None:
            writers = [r for r in candidates if r.owns_pid(pid)]
            if len(writers) == 1:
                return writers[0].trial_id
        if len(candidates) == 1 and birth is not None:
            return candidates[0].trial_id
        if candidates and any(r.ended is None for r in candidates):
            return _WAIT  # a running trial's pid may still show who wrote it
        self._unowned.add(path)
        if len(candidates) > 1:
            log.info("event file %s could be any of trials %s: used for none", path,
                     ", ".join(r.trial_id for r in candidates))
        return None


_WAIT = object()
