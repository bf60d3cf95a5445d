"""`mle local train` for real: a tiny trainer package, single and distributed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

TASK = '''
import json, os, sys, time
from pathlib import Path

tf_config = json.loads(os.environ["TF_CONFIG"])
task = tf_config["task"]
name = f"{task['type']}-{task['index']}"
out = Path(os.environ["RESULTS"])
record = {
    "tf_config": tf_config, "cwd": os.getcwd(), "argv": sys.argv[1:], "pid": os.getpid(),
    "env": {k: os.environ.get(k) for k in ("CLOUD_ML_JOB_ID", "CLOUD_ML_HP_METRIC_FILE",
                                           "CLUSTER_SPEC", "RANK", "WORLD_SIZE")},
}
(out / f"{name}.json").write_text(json.dumps(record))
print(f"hello from {name}", flush=True)
if os.environ.get("FAIL_TASK") == name:
    deadline = time.time() + 60
    while len(list(out.glob("*.json"))) < int(os.environ.get("FAIL_AFTER", "0")) \
            and time.time() < deadline:
        time.sleep(0.05)
    sys.exit(3)
if task["type"] == "ps" or os.environ.get("HANG"):
    time.sleep(600)  # parameter servers serve until they are stopped
if task["type"] in ("master", "chief"):
    expected = int(os.environ.get("EXPECT", "1"))
    deadline = time.time() + 60
    while len(list(out.glob("*.json"))) < expected and time.time() < deadline:
        time.sleep(0.05)
    print("master done", flush=True)
'''


@pytest.fixture
def package(tmp_path: Path) -> Path:
    trainer = tmp_path / "project" / "trainer"
    trainer.mkdir(parents=True)
    (trainer / "__init__.py").write_text("")
    (trainer / "task.py").write_text(TASK)
    return trainer


def run_local(package: Path, results: Path, *args: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    results.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "mlengine.cli.main", "local", "train", "--package-path", str(package),
         "--module-name", "trainer.task", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
        env={**os.environ, "RESULTS": str(results), **(env or {})},
    )


def records(results: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def test_single_process(package: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = run_local(package, results, "--job-dir", "rel/out", "--", "--epochs", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "hello from master-0" in done.stdout and "master done" in done.stdout
    seen = records(results)
    assert list(seen) == ["master-0"]
    master = seen["master-0"]
    assert master["cwd"] == str(package.parent)
    assert master["argv"] == ["--epochs", "2", "--job-dir", str(tmp_path / "rel" / "out")]
    tf = master["tf_config"]
    assert tf["task"] == {"type": "master", "index": 0}
    assert tf["environment"] == "cloud"
    assert list(tf["cluster"]) == ["master"]
    assert tf["job"]["pythonModule"] == "trainer.task"
    assert tf["job"]["jobDir"] == str(tmp_path / "rel" / "out")
    assert master["env"]["CLOUD_ML_JOB_ID"] == "local"
    assert master["env"]["CLOUD_ML_HP_METRIC_FILE"].endswith("hypertune/output.metrics")
    assert json.loads(master["env"]["CLUSTER_SPEC"]) == tf


def test_distributed(package: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    start = time.monotonic()
    done = run_local(package, results, "--distributed", "--worker-count", "1",
                     "--parameter-server-count", "1", "--start-port", "31000", "--", "--x=1",
                     env={"EXPECT": "3"})
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 60  # the parameter server was stopped, not waited for
    seen = records(results)
    assert sorted(seen) == ["master-0", "ps-0", "worker-0"]
    cluster = {"master": ["127.0.0.1:31000"], "worker": ["127.0.0.1:31001"], "ps": ["127.0.0.1:31002"]}
    for name, record in seen.items():
        task_type, index = name.split("-")
        assert record["tf_config"]["cluster"] == cluster
        assert record["tf_config"]["task"] == {"type": task_type, "index": int(index)}
        assert record["cwd"] == str(package.parent)
        assert record["argv"] == ["--x=1"]
    assert (seen["master-0"]["env"]["RANK"], seen["worker-0"]["env"]["RANK"]) == ("0", "1")
    assert seen["master-0"]["env"]["WORLD_SIZE"] == "2" and seen["ps-0"]["env"]["RANK"] is None
    lines = done.stdout.splitlines()
    for task in ("master-replica-0", "worker-replica-0", "ps-replica-0"):
        assert f"[{task}] hello from {task.split('-')[0]}-0" in lines
    assert "[master-replica-0] master done" in lines


def test_distributed_failure_names_the_task(package: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = run_local(package, results, "--distributed", "--worker-count", "1",
                     "--parameter-server-count", "1", "--evaluator-count", "1",
                     env={"EXPECT": "99", "FAIL_TASK": "worker-0", "FAIL_AFTER": "4"})
    assert done.returncode == 1
    assert "ERROR: (mle.local.train) Task worker-replica-0 failed with exit code 3." in done.stderr
    evaluator = records(results)["evaluator-0"]["tf_config"]
    assert evaluator["task"] == {"type": "evaluator", "index": 0}
    assert sorted(evaluator["cluster"]) == ["master", "ps", "worker"]
    assert "master done" not in done.stdout


def test_single_failure(package: Path, tmp_path: Path) -> None:
    done = run_local(package, tmp_path / "results", env={"FAIL_TASK": "master-0"})
    assert done.returncode == 1
    assert "ERROR: (mle.local.train) Task master-replica-0 failed with exit code 3." in done.stderr


def test_chief_in_tf_config(package: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = run_local(package, results, "--distributed", "--worker-count", "1",
                     "--parameter-server-count", "0", "--use-chief-in-tf-config", env={"EXPECT": "2"})
    assert done.returncode == 0, done.stderr
    seen = records(results)
    assert sorted(seen) == ["chief-0", "worker-0"]
    assert list(seen["worker-0"]["tf_config"]["cluster"]) == ["chief", "worker"]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.parametrize(("mode", "signum", "expected"), [
    ("distributed", signal.SIGINT, 3), ("single", signal.SIGTERM, 1),
])
def test_interrupt_stops_every_task(
    package: Path, tmp_path: Path, mode: str, signum: int, expected: int
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    extra = ["--distributed", "--worker-count", "1", "--parameter-server-count", "1"] \
        if mode == "distributed" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlengine.cli.main", "local", "train", "--package-path",
         str(package), "--module-name", "trainer.task", *extra],
        env={**os.environ, "RESULTS": str(results), "HANG": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while len(list(results.glob("*.json"))) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped every task" in err
    pids = [r["pid"] for r in records(results).values()]
    assert len(pids) == expected
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids)


def test_runs_the_python_on_path(package: Path, tmp_path: Path) -> None:
    # The user's environment comes first on PATH: its `python` runs the trainer, as with gcloud.
    bin_dir = tmp_path / "userbin"
    bin_dir.mkdir()
    marker = tmp_path / "wrapper-ran"
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\necho "$@" > "{marker}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    results = tmp_path / "results"
    done = run_local(package, results, "--", "--epochs", "1",
                     env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert marker.read_text().split() == ["-m", "trainer.task", "--epochs", "1"]
    assert list(records(results)) == ["master-0"]
    assert "No `python` on PATH" not in done.stderr


def test_without_python_on_path_mlengines_interpreter_runs_it(package: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    results = tmp_path / "results"
    done = run_local(package, results, env={"PATH": str(empty)})
    assert done.returncode == 0, done.stderr
    assert f"No `python` on PATH: running the trainer with {sys.executable}." in done.stderr
    assert list(records(results)) == ["master-0"]


@pytest.mark.parametrize(("flag", "first"), [("--use-chief-in-tf-config", "chief-0"),
                                             ("--use-chief-in-tf-config=true", "chief-0"),
                                             ("--use-chief-in-tf-config=false", "master-0")])
def test_use_chief_in_tf_config_takes_a_boolean(package: Path, tmp_path: Path, flag: str, first: str) -> None:
    results = tmp_path / "results"
    done = run_local(package, results, flag)
    assert done.returncode == 0, done.stderr
    assert list(records(results)) == [first]
