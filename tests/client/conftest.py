from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # mle_fake_api, shared with tests/cli

from mle_fake_api import FakeAPI, FakeMLServer  # noqa: E402


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    server = FakeAPI()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake() -> Iterator[FakeMLServer]:
    server = FakeMLServer()
    server.start()
    yield server
    server.stop()
