"""Package staging and log following, with stand-in clients (no HTTP)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from mlengine.client.connection import machine_identity
from mlengine.client.follow import follow_job
from mlengine.client.staging import PackageStager, staging_base
from mlengine.errors import Code, MLEngineError


class StubClient:
    def __init__(self, same: bool) -> None:
        machine_id, host = machine_identity()
        self.info = {"hostname": host if same else "other", "machineId": machine_id}
        self.uploaded: list[Path] = []

    def server_info(self) -> dict[str, Any]:
        return self.info

    def upload_package_info(self, project: str, path: Path) -> dict[str, Any]:
        self.uploaded.append(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return {"uri": f"file:///srv/{digest}/{path.name}", "sha256": digest}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    path = tmp_path / "trainer-0.1.tar.gz"
    path.write_bytes(b"package bytes")
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_staging_base() -> None:
    assert staging_base("j", "s3://b/x", "/out") == "s3://b/x/j/packages"
    assert staging_base("j", None, "gs://b/out") == "gs://b/out/packages"
    assert staging_base("j", None, None) is None
    assert staging_base("j", None, "rel/out") == str(Path("rel/out").absolute() / "packages")


def test_local_job_dir_on_the_same_machine(package: Path, tmp_path: Path) -> None:
    stub = StubClient(same=True)
    stager = PackageStager(stub, "p", "j", job_dir=str(tmp_path / "out"))
    uri = stager.stage(package)
    assert uri == str(tmp_path / "out" / "packages" / digest(package) / package.name)
    assert Path(uri).read_bytes() == b"package bytes"
    assert stub.uploaded == []


def test_local_job_dir_on_another_machine_uploads(package: Path, tmp_path: Path) -> None:
    stub = StubClient(same=False)
    uri = PackageStager(stub, "p", "j", job_dir=str(tmp_path / "out")).stage(package)
    assert uri == f"file:///srv/{digest(package)}/{package.name}"
    assert stub.uploaded == [package] and not (tmp_path / "out").exists()


def test_remote_staging_bucket(package: Path) -> None:
    from mlengine.storage import uris

    stub = StubClient(same=False)
    uri = PackageStager(stub, "p", "j1", staging_bucket="memory://bucket/stage").stage(package)
    assert uri == f"memory://bucket/stage/j1/packages/{digest(package)}/{package.name}"
    assert uris.exists(uri) and stub.uploaded == []


def test_no_location_uploads(package: Path) -> None:
    stub = StubClient(same=True)
    assert PackageStager(stub, "p", "j").stage(package).startswith("file:///srv/")


def test_corrupted_upload_is_detected(package: Path) -> None:
    stub = StubClient(same=False)
    stub.upload_package_info = lambda project, path: {"uri": "file:///x", "sha256": "0"}  # type: ignore[method-assign]
    with pytest.raises(MLEngineError, match="corrupted"):
        PackageStager(stub, "p", "j").stage(package)


class ScriptedJobs:
    """get_job walks through states; logs arrive with them."""

    def __init__(self, steps: list[tuple[str, list[str]]], outages: int = 0) -> None:
        self.steps = steps
        self.logs: list[str] = []
        self.outages = outages

    def get_job(self, project: str, job_id: str) -> dict[str, Any]:
        if self.outages:
            self.outages -= 1
            raise MLEngineError(Code.UNAVAILABLE, "down")
        state, lines = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        self.logs += lines
        return {"jobId": job_id, "state": state, "jobPosition": "2"}

    def read_logs(self, project: str, job_id: str, task_name: str | None = None,
                  page_token: str | None = None, page_size: int | None = None) -> tuple[list[dict[str, Any]], str]:
        start = int(page_token or 0)
        return [{"message": m} for m in self.logs[start:]], str(len(self.logs))


def test_follow_delivers_each_entry_once() -> None:
    jobs = ScriptedJobs([("QUEUED", []), ("RUNNING", ["a", "b"]), ("RUNNING", ["c"]),
                         ("SUCCEEDED", ["d"])])
    seen: list[str] = []
    states: list[str] = []
    final = follow_job(jobs, "p", "j", on_entries=lambda es: seen.extend(e["message"] for e in es),
                       on_job=lambda j: states.append(j["state"]), sleep=lambda s: None)
    assert final["state"] == "SUCCEEDED"
    assert seen == ["a", "b", "c", "d"]
    assert states == ["QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"]


def test_follow_rides_out_an_outage() -> None:
    jobs = ScriptedJobs([("RUNNING", ["a"]), ("FAILED", ["b"])], outages=2)
    outages: list[str] = []
    final = follow_job(jobs, "p", "j", on_entries=lambda es: None, sleep=lambda s: None,
                       on_outage=lambda e: outages.append(e.message))
    assert final["state"] == "FAILED" and outages == ["down", "down"]


def test_follow_gives_other_errors_up() -> None:
    class Missing(ScriptedJobs):
        def get_job(self, project: str, job_id: str) -> dict[str, Any]:
            raise MLEngineError(Code.NOT_FOUND, "no such job")

    with pytest.raises(MLEngineError, match="no such job"):
        follow_job(Missing([]), "p", "j", on_entries=lambda es: None, sleep=lambda s: None)
