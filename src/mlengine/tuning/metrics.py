"""What a trial reported: its objective metric, step by step.

Two sources, in this order of preference:

1. The trial's metric file (``CLOUD_ML_HP_METRIC_FILE``, one per trial). The PyPI package
   ``cloudml-hypertune`` rewrites it on every report with its last 100 reports, one JSON
   object per line: ``{"timestamp": 1.7e9, "trial": "3", "<tag>": "0.25", "global_step":
   "100", "checkpoint_path": ""}`` (values are strings). :mod:`mlengine.hypertune` appends
   lines of the same shape. Lines that are not JSON (a rewrite caught half-way) are skipped.
2. TensorFlow event files the trial wrote (local job directories only): anywhere under the
   job directory, each file given to the one trial that wrote it
   (:class:`~mlengine.tuning.attribution.SharedEvents`: ``<job-dir>/<trialId>/``, or the
   writer's pid and birth in the file's name, e.g. the census sample's
   ``<job-dir>/metric_tb/train``); or, given a directory, every file under it. Scalars whose
   tag equals the metric tag exactly. When several runs (directories, e.g. ``train/`` and
   ``validation/``) hold the tag, the run that wrote it last is used, so training and
   validation curves are never mixed.

The *final* metric is the last report (AI Platform's "final objective metric seen"). Reports
feed early stopping as intermediate values keyed by their step; when steps repeat (a trainer
that reports without ``global_step``), their order number is used instead.

:class:`MetricWatcher` follows a running trial cheaply: the metric file is parsed again only
when its size or modification time changed, event files are read incrementally and looked
for at most every :data:`EVENTS_SCAN_SECONDS`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlengine.tuning.events import EventFileReader, Scalar, event_files

EVENTS_SCAN_SECONDS = 2.0
#: Where a trial's event files are: a directory (every file under it), or a function giving
#: them (``force``: look now, not throttled), e.g. ``SharedEvents.files_of`` for one trial.
EventSource = Path | Callable[[bool], list[Path]] | None
#: Keys of a metric-file line that are not metric tags.
NON_METRIC_KEYS = frozenset({"timestamp", "trial", "global_step", "checkpoint_path"})


@dataclass(frozen=True)
class Report:
    step: int
    value: float
    time: float


@dataclass
class TrialMetrics:
    """A trial's reports for the metric tag (oldest first) and where they came from
    (``"metric file"``, ``"TensorFlow events"`` or ``""``). ``other_tags``: tags found in the
    metric file that are not the metric tag (to explain a trial that reported "nothing")."""

    reports: list[Report] = field(default_factory=list)
    source: str = ""
    other_tags: set[str] = field(default_factory=set)

    @property
    def final(self) -> Report | None:
        return self.reports[-1] if self.reports else None


def read_metric_file(path: Path, tag: str) -> tuple[list[Report], set[str]]:
    """Reports for ``tag`` in a hypertune metric file, and the other tags it holds."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return [], set()
    reports: list[Report] = []
    others: set[str] = set()
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if tag not in record:
            others.update(k for k in record if k not in NON_METRIC_KEYS)
            continue
        try:
            value = float(record[tag])
            step = int(float(record.get("global_step") or 0))
            stamp = float(record.get("timestamp") or 0.0)
        except (TypeError, ValueError):
            continue
        reports.append(Report(step, value, stamp))
    return reports, others


def _best_run(scalars_by_run: dict[Path, list[Scalar]]) -> list[Report]:
    runs = {run: values for run, values in scalars_by_run.items() if values}
    if not runs:
        return []
    run = max(runs, key=lambda r: max(s.wall_time for s in runs[r]))
    values = sorted(runs[run], key=lambda s: (s.step, s.wall_time))
    return [Report(s.step, s.value, s.wall_time) for s in values]


class MetricWatcher:
    """Reports of one trial so far; call :meth:`poll` as often as you like."""

    def __init__(self, metric_file: Path, events: EventSource, tag: str) -> None:
        self.metric_file = metric_file
        self.events = events
        self.tag = tag
        self._stat: tuple[int, int] | None = None
        self._file_reports: list[Report] = []
        self._others: set[str] = set()
        self._readers: dict[Path, EventFileReader] = {}
        self._scalars: dict[Path, list[Scalar]] = {}
        self._scanned = 0.0

    def _poll_file(self) -> None:
        try:
            st = self.metric_file.stat()
        except OSError:
            return
        stamp = (st.st_size, st.st_mtime_ns)
        if stamp != self._stat:
            self._stat = stamp
            self._file_reports, self._others = read_metric_file(self.metric_file, self.tag)

    def _poll_events(self, force: bool) -> None:
        if self.events is None:
            return
        now = time.monotonic()
        if not force and now - self._scanned < EVENTS_SCAN_SECONDS:
            return
        self._scanned = now
        paths = self.events(force) if callable(self.events) else event_files(self.events)
        for path in paths:
            reader = self._readers.setdefault(path, EventFileReader(path, self.tag))
            new = reader.read_new()
            if new:
                self._scalars.setdefault(path.parent, []).extend(new)

    def poll(self, final: bool = False) -> TrialMetrics:
        """Everything reported so far (``final``: read event files now, not throttled)."""
        self._poll_file()
        if self._file_reports:
            return TrialMetrics(list(self._file_reports), "metric file", set(self._others))
        self._poll_events(force=final)
        reports = _best_run(self._scalars)
        return TrialMetrics(reports, "TensorFlow events" if reports else "", set(self._others))


def collect(metric_file: Path, events: EventSource, tag: str) -> TrialMetrics:
    """A finished trial's reports (one full read)."""
    return MetricWatcher(metric_file, events, tag).poll(final=True)


def intermediate_values(reports: list[Report]) -> dict[int, float]:
    """Step -> value for early stopping: steps as reported when they are distinct, else the
    report's order number (1, 2, ...). Non-finite values are left out."""
    steps = [r.step for r in reports]
    use_steps = len(set(steps)) == len(steps)
    values: dict[int, float] = {}
    for i, report in enumerate(reports, start=1):
        if math.isfinite(report.value):
            values[report.step if use_steps else i] = report.value
    return values
