"""A trainer on a real server gets a token of its own (MLE_TOKEN, MLE_API_URL): it may read its
job and its logs, nothing else, and the token dies with the job."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from tests.e2e.helpers import ServerProcess, build_package, job_body, write_trainer

pytestmark = pytest.mark.e2e

PROBE = """
import argparse, json, os, urllib.error, urllib.request
parser = argparse.ArgumentParser()
parser.add_argument("--other")
parser.add_argument("--out")
args, _ = parser.parse_known_args()
url, token, project = os.environ["MLE_API_URL"], os.environ["MLE_TOKEN"], os.environ["MLE_PROJECT"]
me = os.environ["CLOUD_ML_JOB_ID"]

def status(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method, headers={
        "Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code

jobs = f"/v1/projects/{project}/jobs"
codes = {
    "own job": status("GET", f"{jobs}/{me}"),
    "own logs": status("GET", f"{jobs}/{me}/logs"),
    "own policy": status("GET", f"{jobs}/{me}:getIamPolicy"),
    "cancel own job": status("POST", f"{jobs}/{me}:cancel", {}),
    "other job": status("GET", f"{jobs}/{args.other}"),
    "list jobs": status("GET", jobs),
    "create job": status("POST", jobs, {"jobId": "spawned"}),
    "models": status("GET", f"/v1/projects/{project}/models"),
    "tokens": status("GET", "/v1/tokens"),
    "server policy": status("GET", "/v1/server:getIamPolicy"),
    "make a token": status("POST", "/v1/tokens", {"name": "backdoor", "role": "admin"}),
}
print("STATUS " + json.dumps(codes), flush=True)
with open(args.out, "w") as f:
    json.dump({"token": token, "url": url}, f)
"""

EXPECTED = {"own job": 200, "own logs": 200, "own policy": 403, "cancel own job": 403, "other job": 403,
            "list jobs": 403, "create job": 403, "models": 403, "tokens": 403, "server policy": 403,
            "make a token": 403}


def test_a_trainer_token_reads_its_job_and_nothing_else(server: ServerProcess, tmp_path: Path) -> None:
    write_trainer(tmp_path / "src", PROBE)
    package = build_package(tmp_path / "src")
    assert server.api("POST", "/v1/projects/mlengine/jobs",
                      json=job_body("iam_other", package, ["--other", "x", "--out", str(tmp_path / "x")])
                      ).status_code == 200
    server.wait_state("iam_other", ("SUCCEEDED", "FAILED"))
    out = tmp_path / "probe.json"
    created = server.api("POST", "/v1/projects/mlengine/jobs",
                         json=job_body("iam_probe", package, ["--other", "iam_other", "--out", str(out)]))
    assert created.status_code == 200, created.text
    job = server.wait_state("iam_probe", ("SUCCEEDED", "FAILED"))
    lines = [e["message"] for e in server.logs("iam_probe") if e["message"].startswith("STATUS ")]
    assert job["state"] == "SUCCEEDED" and lines, (job, server.logs("iam_probe"))
    assert json.loads(lines[0].removeprefix("STATUS ")) == EXPECTED

    # The token is revoked once the job has ended.
    seen = json.loads(out.read_text())
    assert seen["url"] == server.url
    deadline = time.monotonic() + 10  # revoked right after the job ends, off the scheduler's path
    while any(t.get("job") for t in server.api("GET", "/v1/tokens").json()["tokens"]):
        assert time.monotonic() < deadline, "the trainer's token outlived its job"
        time.sleep(0.05)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {seen['token']}"}) as trainer:
        assert trainer.get("/v1/projects/mlengine/jobs/iam_probe").status_code == 401
