"""The server on a real PostgreSQL metadata store, and package installation failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.e2e.helpers import ECHO_TRAINER, build_package, job_body, write_trainer

pytestmark = pytest.mark.e2e
JOBS = "/v1/projects/mlengine/jobs"


@pytest.mark.postgres
def test_server_on_postgresql_survives_restart(server_factory, fresh_postgres_db: str,
                                               echo_package: Path) -> None:
    server = server_factory(MLE_DATABASE_URL=fresh_postgres_db)
    assert server.api("POST", JOBS, json=job_body("on_pg", echo_package)).status_code == 200
    assert server.wait_state("on_pg", ("SUCCEEDED", "FAILED"))["state"] == "SUCCEEDED"
    server.stop()
    server.start()
    job = server.job("on_pg")
    assert job["state"] == "SUCCEEDED" and job["endTime"]
    again = server.api("POST", JOBS, json=job_body("on_pg", echo_package))
    assert again.status_code == 409


def test_failed_install_fails_the_job_with_the_installers_message(server_factory, tmp_path: Path) -> None:
    server = server_factory()
    write_trainer(tmp_path, ECHO_TRAINER, requires=["mlengine-no-such-distribution-xyz==1.0"])
    package = build_package(tmp_path)
    server.api("POST", JOBS, json=job_body("bad_requires", package))
    job = server.wait_state("bad_requires", ("FAILED", "SUCCEEDED"), timeout=120)
    assert job["state"] == "FAILED"
    message = job["errorMessage"]
    assert "Failed to install the job's packages" in message
    assert "mlengine-no-such-distribution-xyz" in message
    assert "Traceback" not in message
