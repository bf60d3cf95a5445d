"""The console's log reader: the tail first (never the whole file), then what was written
since by the API's cursor, filtered by severity; the replica filter's choices."""

from __future__ import annotations

import json
from pathlib import Path

from mlengine.config import load_settings
from mlengine.console import logs
from mlengine.jobs.paths import JobPaths


def _write(path: Path, start: int, count: int, severity: str = "INFO") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for i in range(start, start + count):
            f.write(json.dumps({"timestamp": f"2026-01-01T00:00:{i // 1000:02d}.{i % 1000:03d}000Z",
                                "severity": severity, "taskName": path.stem, "message": f"line {i}"}) + "\n")


def test_tail_then_new_lines_then_severity(tmp_path: Path) -> None:
    paths = JobPaths.of(load_settings(home=tmp_path), "p", "j")
    log = paths.logs_dir / "master-replica-0.jsonl"
    _write(log, 0, 20_000)
    first = logs.read(paths, None, None, None, max_bytes=4096)
    messages = [e["message"] for e in first["entries"]]
    assert messages and messages[-1] == "line 19999" and "line 0" not in messages  # the tail only
    assert len(messages) < 100 and all(m.startswith("line ") for m in messages)  # whole lines
    _write(log, 20_000, 2)
    _write(log, 20_002, 1, severity="ERROR")
    later = logs.read(paths, first["cursor"], None, None)
    assert [e["message"] for e in later["entries"]] == ["line 20000", "line 20001", "line 20002"]
    assert logs.read(paths, later["cursor"], None, None)["entries"] == []
    errors = logs.read(paths, first["cursor"], None, "WARNING")
    assert [e["message"] for e in errors["entries"]] == ["line 20002"]


def test_replica_choices_list_the_newest_trials(tmp_path: Path) -> None:
    paths = JobPaths.of(load_settings(home=tmp_path), "p", "tuned")
    _write(paths.logs_dir / "service.jsonl", 0, 1)
    for n in range(1, 151):
        _write(paths.root / "trials" / str(n) / "logs" / "master-replica-0.jsonl", 0, 1)
    choices = logs.tasks(paths)
    assert choices[0] == "service" and len(choices) == 1 + logs.MAX_TRIALS_LISTED
    assert choices[-1] == "trial-150" and "trial-50" not in choices
    only = logs.read(paths, None, "trial-150", None)
    assert {e["taskName"] for e in only["entries"]} == {"trial-150/master-replica-0"}
