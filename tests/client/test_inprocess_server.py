"""mlengine.testing.inprocess.InProcessServer: routed while open, forgotten once closed."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.inprocess import job_body, wait_for_job

from mlengine.client import connection
from mlengine.config import load_settings
from mlengine.errors import Code, MLEngineError
from mlengine.testing.inprocess import InProcessServer


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mle-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_lifecycle(home: Path, trainer_package: Path) -> None:
    settings = load_settings(home=home, executor="local", database_url=f"sqlite:///{home / 'mlengine.db'}",
                             capacity_slots=1, cancel_grace_seconds=2)
    server = InProcessServer(settings)
    with server:
        assert server.token == (home / "admin_token").read_text().strip()
        assert server.url.endswith(".invalid") and connection.transport_for(server.url) is not None
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        with server.client(retries=0) as c:
            c.create_job("p", job_body("sleeper", trainer_package, "--sleep", "60"))
            wait_for_job(c, "p", "sleeper", ("RUNNING",))  # the lifespan started the scheduler
            assert server.stop_jobs(timeout=30) == []
            assert c.get_job("p", "sleeper")["state"] == "CANCELLED"
    assert connection.transport_for(server.url) is None
    with server.client(retries=0) as c, pytest.raises(MLEngineError) as info:
        c.server_info()  # nobody answers that URL any more
    assert info.value.code is Code.UNAVAILABLE
    server.close()  # closing twice is harmless
