"""Trials' TensorFlow summaries anywhere under the job directory (issue 10.6), with event files
written by real TensorFlow processes (``tf.summary``), as Google's census sample does into
``<job-dir>/metric_tb/train``: each file is read for the trial that wrote it, never for two."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from tests.jobs.fakes import FakeExecutor
from tests.jobs.test_tuner import Harness

from mlengine.jobs import lifecycle as states
from mlengine.tuning.attribution import SharedEvents, TrialRun, name_fields
from mlengine.tuning.metrics import MetricWatcher

pytest.importorskip("tensorflow")  # the writers below are real TensorFlow processes

#: Writes ``accuracy`` = VALUE + step/100 at steps 1..3 with tf.summary into DIR, prints its pid.
WRITER = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
directory, value = sys.argv[1], float(sys.argv[2])
writer = tf.summary.create_file_writer(directory)
with writer.as_default():
    for step in (1, 2, 3):
        tf.summary.scalar("accuracy", value + step / 100, step=step)
        tf.summary.scalar("loss", 1 - value, step=step)
writer.close()
print(os.getpid(), flush=True)
"""


def start_writer(directory: Path, value: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(directory), str(value)],
                            stdout=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> int:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    return int(out.split()[-1])


def test_names_give_birth_and_writer() -> None:
    assert name_fields("events.out.tfevents.1700000000.vm.1234.0.v2") == (1700000000.0, 1234)
    assert name_fields("events.out.tfevents.1700000000.node.example.com.99.5") == (1700000000.0, 99)  # torch
    assert name_fields("events.out.tfevents.1700000000.node") == (1700000000.0, None)  # TF1: no pid


def watch(shared: SharedEvents, trial: str) -> list[tuple[int, float]]:
    reports = MetricWatcher(Path("/nonexistent/metric"), partial(shared.files_of, trial), "accuracy").poll(True)
    return [(r.step, round(r.value, 4)) for r in reports.reports]


def test_parallel_trials_writing_into_one_directory_are_told_apart(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    shared_dir = job_dir / "metric_tb" / "train"
    old = job_dir / "metric_tb" / "train" / "events.out.tfevents.1000000000.vm.1.0.v2"  # an older run's
    shared_dir.mkdir(parents=True)
    old.write_bytes(b"")
    started = time.time()
    one, two = start_writer(shared_dir, 0.5), start_writer(shared_dir, 0.8)  # run at the same time
    own = start_writer(job_dir / "3" / "eval", 0.1)  # under <job-dir>/<trialId>/
    pids = {"1": finish(one), "2": finish(two), "3": finish(own)}
    ended = time.time()
    runs = [TrialRun(t, started, ended, frozenset({pid})) for t, pid in pids.items()]
    asked: list[int] = []

    def provide() -> list[TrialRun]:
        asked.append(1)
        return runs

    shared = SharedEvents(job_dir, provide)
    assert watch(shared, "1") == [(1, 0.51), (2, 0.52), (3, 0.53)]
    assert watch(shared, "2") == [(1, 0.81), (2, 0.82), (3, 0.83)]
    assert watch(shared, "3") == [(1, 0.11), (2, 0.12), (3, 0.13)]
    assert old not in {p for t in pids for p in shared.files_of(t)}
    calls = len(asked)
    shared.files_of("1", force=True)
    assert len(asked) == calls, "nothing new: the trials are not looked up again"


def test_files_two_trials_could_have_written_go_to_neither(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    now = int(time.time())
    orphan = job_dir / f"events.out.tfevents.{now}.vm.424242.0.v2"  # a pid of neither trial
    orphan.write_bytes(b"")
    running = [TrialRun("1", now - 10, None), TrialRun("2", now - 5, None)]
    shared = SharedEvents(job_dir, lambda: runs)
    runs = running
    assert shared.files_of("1", force=True) == [] and shared.files_of("2", force=True) == []
    runs = [TrialRun("1", now - 10, now + 1), TrialRun("2", now - 5, now + 2)]  # both ended: undecidable
    assert shared.files_of("1", force=True) == [] and shared.files_of("2", force=True) == []
    alone = job_dir / "later"
    alone.mkdir()
    single = alone / f"events.out.tfevents.{now + 100}.vm.424243.0.v2"
    single.write_bytes(b"")
    runs = [*runs, TrialRun("3", now + 99, None)]
    assert shared.files_of("3", force=True) == [single], "the only trial running then wrote it"


class ReplicaProcesses(FakeExecutor):
    """The fake executor, plus what the supervisor records at exit: the trainer's pid."""

    def __init__(self, status_dir: Path) -> None:
        super().__init__(cpus=16)
        self.status_dir = status_dir

    def launch(self, launch: Any) -> dict[str, Any]:
        handle = super().launch(launch)
        return {**handle, "statusFile": str(self.status_dir / f"{handle['pid']}.json")}


def test_a_trial_whose_summaries_are_under_metric_tb_is_judged(tmp_path: Path) -> None:
    """The tuner judges trials from the census sample's <job-dir>/metric_tb/train, each from
    the file its own trainer wrote (trials share the job directory)."""
    h = Harness(tmp_path / "home")
    status_dir = tmp_path / "status"
    status_dir.mkdir()
    h.executor = ReplicaProcesses(status_dir)
    h.scheduler.executor = h.executor
    h.scheduler.replicas.executor = h.executor
    job_dir = tmp_path / "job"
    try:
        h.submit("tune", max_trials=2)
        job = h.repo.get("p", "tune")
        h.repo.update(job.id, lambda r: setattr(r, "input", {**r.input, "jobDir": str(job_dir)}))
        for value in (0.5, 0.8):
            trial = h.running_trial("tune")
            pid = finish(start_writer(job_dir / "metric_tb" / "train", value))
            handle = h.repo.replicas(trial.id)[0].handle
            Path(handle["statusFile"]).write_text(json.dumps({"exitCode": 0, "pid": pid}))
            h.executor.exit(int(handle["pid"]), 0)
            h.until(lambda t=trial: "outcome" in h.repo.get_by_pk(t.id).kind_state, timeout=60)
        h.until(lambda: h.repo.get("p", "tune").state in states.TERMINAL)
        output = h.service.get("p", "tune")["trainingOutput"]
        assert len(os.listdir(job_dir / "metric_tb" / "train")) == 2
        finals = sorted(t["finalMetric"]["objectiveValue"] for t in output["trials"])
        assert finals == pytest.approx([0.53, 0.83]), output
    finally:
        h.scheduler.stop()
        h.db.dispose()
