"""Fixtures that run the real control plane in process, for the client and CLI tests.

``inprocess_server`` (module)
    :class:`mlengine.testing.inprocess.InProcessServer`: the app ``mle server`` serves, built by
    :func:`mlengine.api.server.build_app` with its lifespan (scheduler, serving manager) inside
    Starlette's ``TestClient``, over a fresh ``MLE_HOME`` under /tmp and SQLite in it, the
    local executor and one capacity slot (jobs run one at a time, so queue positions are
    predictable). Its URL is routed in process for every ``Client`` (the CLI's included), so
    ``MLE_API_URL=server.url MLE_TOKEN=server.token`` is all a command needs. At the end of the
    module every job still active is cancelled (the test fails if one will not end).
``server`` (function)
    The same server with its request log cleared, so ``server.requests`` holds this test's
    requests only.
``project`` (function)
    A project id of this test's own: tests share the module's server, never each other's jobs.
``client`` (function)
    A :class:`~mlengine.client.http.Client` of the server with the admin token and no retries.
``trainer_package`` (session)
    A real trainer sdist (module ``trainer.task``): prints ``--lines`` (comma-separated), sleeps
    ``--sleep`` seconds and exits with ``--exit-code``. As a tuning trial (``--lr=X``) it reports
    ``loss`` = 10 * X through :mod:`mlengine.hypertune`, or exits 5 when X is ``--fail-lr``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlengine.client.http import Client
from mlengine.config import load_settings
from mlengine.testing.inprocess import InProcessServer

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")

TRAINER = """
import argparse, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--job-dir")
parser.add_argument("--lines", default="")
parser.add_argument("--sleep", type=float, default=0)
parser.add_argument("--exit-code", type=int, default=0)
parser.add_argument("--lr", type=float)
parser.add_argument("--fail-lr", type=float)
args, _unknown = parser.parse_known_args()
for line in filter(None, args.lines.split(",")):
    print(line, flush=True)
time.sleep(args.sleep)
if args.lr is not None:
    from mlengine import hypertune

    if args.lr == args.fail_lr:
        sys.exit(5)
    hypertune.report("loss", args.lr * 10, 1)
if args.exit_code:
    print("trainer failing on purpose", file=sys.stderr, flush=True)
sys.exit(args.exit_code)
"""


@pytest.fixture(scope="module")
def inprocess_server() -> Iterator[InProcessServer]:
    home = Path(tempfile.mkdtemp(prefix="mle-", dir="/tmp"))  # short: replicas' unix sockets
    settings = load_settings(home=home, executor="local", database_url=f"sqlite:///{home / 'mlengine.db'}",
                             capacity_slots=1, cancel_grace_seconds=2)
    left: list[str] = []
    try:
        with InProcessServer(settings) as server:
            try:
                yield server
            finally:
                left = server.stop_jobs(timeout=30)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert not left, f"jobs still active after the tests and a cancel: {left}"


@pytest.fixture
def server(inprocess_server: InProcessServer) -> InProcessServer:
    inprocess_server.clear_requests()
    return inprocess_server


@pytest.fixture
def project(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]


@pytest.fixture
def client(server: InProcessServer) -> Iterator[Client]:
    with server.client(retries=0) as c:
        yield c


@pytest.fixture(scope="session")
def trainer_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlengine.core.packaging import build_sdist

    root = tmp_path_factory.mktemp("trainer")
    package = root / "trainer"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "task.py").write_text(textwrap.dedent(TRAINER))
    return build_sdist(package, root / "dist")


def job_body(job_id: str, package: Path, *args: str, **training: Any) -> dict[str, Any]:
    """A training Job running ``trainer.task`` from ``package`` with ``args``."""
    return {"jobId": job_id, "trainingInput": {"packageUris": [str(package)], "pythonModule": "trainer.task",
                                                "region": "local", "args": list(args), **training}}


def wait_for_job(client: Client, project: str, job_id: str, states: tuple[str, ...] = TERMINAL,
                 timeout: float = 60.0) -> dict[str, Any]:
    """The job once its state is one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get_job(project, job_id)
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s: {job}")
        time.sleep(0.05)
