"""Distributed jobs larger than the machine on the local executor (issue 10.2): with 2 CPU
slots, a CUSTOM job of 4 replicas and a STANDARD_1 job (1 master, 4 workers, 3 parameter
servers) run alone, oversubscribed, as ``gcloud ai-platform local train --distributed`` would;
a job submitted after one waits until it ends."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import ServerProcess, _kill_leftovers, build_package, short_home, write_trainer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
JOBS = "/v1/projects/mlengine/jobs"

#: Every replica checks its TF_CONFIG against --expect and records it; the master waits for
#: every record and for --release, then exits (0 if the cluster was what was asked for).
TRAINER = """
import argparse, json, os, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--expect", required=True)
parser.add_argument("--job-dir")
args = parser.parse_args()
config = json.loads(os.environ["TF_CONFIG"])
expect = json.loads(args.expect)
task = config["task"]
cluster = config["cluster"]
ok = ({k: len(v) for k, v in cluster.items()} == expect and task["index"] < len(cluster[task["type"]])
      and len({a for v in cluster.values() for a in v}) == sum(expect.values()))
name = f"{task['type']}-{task['index']}"
with open(os.path.join(args.out, name + ".tmp"), "w") as f:
    json.dump({"ok": ok, "cluster": cluster}, f)
os.replace(os.path.join(args.out, name + ".tmp"), os.path.join(args.out, name + ".json"))
if task["type"] != "master":
    sys.exit(0 if ok else 3)
deadline = time.time() + 240
while time.time() < deadline:
    done = [p for p in os.listdir(args.out) if p.endswith(".json")]
    if len(done) == sum(expect.values()) and os.path.exists(os.path.join(args.out, "release")):
        break
    time.sleep(0.1)
else:
    sys.exit(4)
sys.exit(0 if ok else 3)
"""


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    home = short_home()
    (home / "machine_types.yaml").write_text("tiny: {cpus: 1, memoryGb: 0.5}\n")
    srv = ServerProcess(home, {"MLE_CAPACITY_SLOTS": "2"}).start()
    yield srv
    srv.stop()
    _kill_leftovers(home)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("oversub")
    write_trainer(root, TRAINER)
    return build_package(root)


def submit(server: ServerProcess, job_id: str, package: Path, out: Path, expect: dict[str, int],
           **training: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    body = {"jobId": job_id, "trainingInput": {
        "packageUris": [str(package)], "pythonModule": "trainer.task", "region": "local",
        "args": ["--out", str(out), "--expect", json.dumps(expect)], **training}}
    response = server.api("POST", JOBS, json=body)
    assert response.status_code == 200, response.text


def records(out: Path) -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def test_custom_job_of_four_replicas_on_two_slots(server: ServerProcess, package: Path, tmp_path: Path) -> None:
    out = tmp_path / "custom"
    (out / "release").parent.mkdir(parents=True)
    (out / "release").touch()
    submit(server, "custom4", package, out, {"master": 1, "worker": 3},
           scaleTier="CUSTOM", masterType="tiny", workerType="tiny", workerCount="3")
    job = server.wait_state("custom4", ("SUCCEEDED", "FAILED"), timeout=240)
    assert job["state"] == "SUCCEEDED", job
    seen = records(out)
    assert sorted(seen) == ["master-0", "worker-0", "worker-1", "worker-2"]
    assert all(r["ok"] for r in seen.values()), seen
    messages = [e["message"] for e in server.logs("custom4")]
    assert any("runs oversubscribed" in m and "4 CPUs asked, 2 there" in m for m in messages), messages


def test_standard_1_runs_alone_and_later_jobs_wait(server: ServerProcess, package: Path, tmp_path: Path) -> None:
    out = tmp_path / "std"
    submit(server, "std1", package, out, {"master": 1, "worker": 4, "ps": 3}, scaleTier="STANDARD_1")
    submit(server, "after", package, tmp_path / "after", {"master": 1}, scaleTier="BASIC")
    (tmp_path / "after" / "release").touch()
    deadline = time.monotonic() + 240
    while len(records(out)) < 8 and time.monotonic() < deadline:
        assert server.job("std1")["state"] in ("QUEUED", "PREPARING", "RUNNING")
        time.sleep(0.2)
    assert len(records(out)) == 8 and all(r["ok"] for r in records(out).values()), records(out)
    assert server.job("std1")["state"] == "RUNNING"
    after = server.job("after")
    assert after["state"] == "QUEUED" and after["jobPosition"] == "1", after
    (out / "release").touch()
    assert server.wait_state("std1", ("SUCCEEDED", "FAILED"), timeout=120)["state"] == "SUCCEEDED"
    assert server.wait_state("after", ("SUCCEEDED", "FAILED"), timeout=120)["state"] == "SUCCEEDED"
    assert not any("oversubscribed" in e["message"] for e in server.logs("after"))
