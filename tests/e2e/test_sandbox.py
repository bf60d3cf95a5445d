"""User code cannot reach the control plane's secrets (issue 9.2), on a real server with the
local executor and with a real one-node Ray cluster.

A hostile trainer tries to read the admin token, the database, ``server.json``, another job's
log, the server's ``/proc/<pid>/environ``, to list ``MLE_HOME``, to overwrite the token, to
signal the server, and looks for secrets in its own environment (the server runs with
``MLE_TEST_SECRET`` and ``AWS_SECRET_ACCESS_KEY``). It catches every error and prints what it
got; the job succeeds, every attempt must say "denied", and no secret may appear in any log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import (
    ECHO_TRAINER,
    ServerProcess,
    _kill_leftovers,
    build_package,
    job_body,
    short_home,
    write_trainer,
)

pytestmark = [pytest.mark.e2e]
JOBS = "/v1/projects/mlengine/jobs"
SECRETS = {"MLE_TEST_SECRET": "hunter2-sandbox-canary",
           "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-sandbox-canary"}

HOSTILE = r"""
import argparse, json, os, signal, sqlite3
p = argparse.ArgumentParser()
p.add_argument("--home"); p.add_argument("--server-pid", type=int); p.add_argument("--other-log")
p.add_argument("--job-dir")
args, _ = p.parse_known_args()

def attempt(label, fn):
    try:
        got = fn()
    except Exception as exc:
        print(f"PROBE {label}: denied ({type(exc).__name__})", flush=True)
    else:
        print(f"PROBE {label}: GOT {got!r}", flush=True)

def read(path, n=200):
    with open(path, "rb") as f:
        return f.read(n)

def query_db():
    con = sqlite3.connect(f"file:{args.home}/mlengine.db?mode=ro", uri=True)
    return con.execute("select name from sqlite_master").fetchall()

def overwrite():
    with open(f"{args.home}/admin_token", "w") as f:
        f.write("owned")

attempt("admin token", lambda: read(f"{args.home}/admin_token"))
attempt("database file", lambda: read(f"{args.home}/mlengine.db"))
attempt("database query", query_db)
attempt("server.json", lambda: read(f"{args.home}/server.json"))
attempt("other job's log", lambda: read(args.other_log))
attempt("server environ", lambda: read(f"/proc/{args.server_pid}/environ", 100000))
attempt("server cwd", lambda: os.listdir(f"/proc/{args.server_pid}/cwd"))
attempt("list MLE_HOME", lambda: os.listdir(args.home))
attempt("list jobs", lambda: os.listdir(f"{args.home}/jobs"))
attempt("overwrite token", overwrite)
attempt("signal server", lambda: os.kill(args.server_pid, 0))
OWN = ("MLE_TOKEN", "MLE_API_URL", "MLE_PROJECT")  # the job's own identity (docs/iam.md), not the server's
leaked = sorted(k for k in os.environ if k not in OWN and (
    k.startswith(("MLE_", "AWS_", "RAY_", "GOOGLE_")) or "SECRET" in k or "TOKEN" in k))
print("ENV " + json.dumps({"leaked": leaked, "own": sorted(k for k in OWN if k in os.environ),
                           "home": os.environ.get("HOME"), "tmp": os.environ.get("TMPDIR")}), flush=True)
os.makedirs(args.job_dir, exist_ok=True)
with open(os.path.join(args.job_dir, "done.txt"), "w") as f:
    f.write("the job dir is writable")
import tempfile
with tempfile.NamedTemporaryFile(dir=None) as f:
    print("TMPFILE " + f.name, flush=True)
"""


@pytest.fixture(scope="module", params=["local", "ray"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    home = short_home()
    (home / "machine_types.yaml").write_text("tiny: {cpus: 1, memoryGb: 0.5}\n")
    if request.param == "local":
        srv = ServerProcess(home, SECRETS).start()
        try:
            yield srv
        finally:
            srv.stop()
            _kill_leftovers(home)
        return
    from tests.raycluster import start_cluster

    saved = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)  # the Ray node's environment holds the secrets too
    try:
        cluster = start_cluster([(2, None)])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    srv = None
    try:
        srv = ServerProcess(home, {**cluster.env, **SECRETS}).start()
        yield srv
    finally:
        if srv is not None:
            srv.stop()
            _kill_leftovers(home)
        cluster.stop()


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    echo, hostile = tmp_path_factory.mktemp("echo"), tmp_path_factory.mktemp("hostile")
    write_trainer(echo, ECHO_TRAINER)
    write_trainer(hostile, HOSTILE)
    return {"echo": build_package(echo), "hostile": build_package(hostile)}


def body(job_id: str, package: Path, args: list[str] | None = None, **training: str) -> dict[str, Any]:
    return job_body(job_id, package, args, scaleTier="CUSTOM", masterType="tiny", **training)


def run(server: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    response = server.api("POST", JOBS, json=body)
    assert response.status_code == 200, response.text
    job = server.wait_state(str(body["jobId"]), ("SUCCEEDED", "FAILED", "CANCELLED"), timeout=180)
    assert job["state"] == "SUCCEEDED", job
    return job


def all_log_text(home: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in (home / "jobs").rglob("*") if p.is_file()
                     and p.suffix in (".jsonl", ".log"))


def test_a_hostile_trainer_reads_no_secret(server: ServerProcess, packages: dict[str, Path], tmp_path: Path) -> None:
    run(server, body("victim", packages["echo"]))
    other_log = server.home / "jobs" / "mlengine" / "victim" / "logs" / "master-replica-0.jsonl"
    assert other_log.is_file()
    assert server.proc is not None
    job_dir = tmp_path / "out"
    run(server, body("hostile", packages["hostile"], [
        "--home", str(server.home), "--server-pid", str(server.proc.pid), "--other-log", str(other_log),
    ], jobDir=str(job_dir)))

    lines = [e["message"] for e in server.logs("hostile", "master-replica-0")]
    probes = [line for line in lines if line.startswith("PROBE ")]
    assert len(probes) == 11, lines
    for line in probes:
        assert ": denied (" in line, line
    env = json.loads(next(line for line in lines if line.startswith("ENV "))[4:])
    assert env["leaked"] == [] and env["own"] == ["MLE_API_URL", "MLE_PROJECT", "MLE_TOKEN"], env
    replica = server.home / "jobs" / "mlengine" / "hostile" / "replicas" / "master-replica-0"
    assert env["home"] == str(replica / "home") and env["tmp"] == str(replica / "tmp")
    assert next(line for line in lines if line.startswith("TMPFILE ")).startswith(f"TMPFILE {replica / 'tmp'}/")
    assert (job_dir / "done.txt").read_text() == "the job dir is writable"

    token = server.token
    assert (server.home / "admin_token").read_text().strip() == token  # not overwritten
    text = all_log_text(server.home) + json.dumps(server.logs("hostile"))
    for secret in (token, *SECRETS.values()):
        assert secret not in text


def test_a_job_dir_trainers_cannot_write_is_refused(server: ServerProcess, packages: dict[str, Path]) -> None:
    for job_dir, reason in ((str(server.home / "jobs"), "private"), ("/etc/mle-out", "MLE_SANDBOX_WRITABLE")):
        response = server.api("POST", JOBS, json=body("badjobdir", packages["echo"], jobDir=job_dir))
        assert response.status_code == 400, response.text
        assert "trainingInput.jobDir" in response.text and reason in response.text
