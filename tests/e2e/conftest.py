"""Fixtures that start a real ``mle server`` process and build real trainer packages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import (
    ECHO_TRAINER,
    ServerProcess,
    _kill_leftovers,
    build_package,
    short_home,
    write_trainer,
)


@pytest.fixture
def server_factory() -> Iterator[Any]:
    started: list[ServerProcess] = []

    def make(home: Path | None = None, **env: str) -> ServerProcess:
        server = ServerProcess(home or short_home(), env)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()
        _kill_leftovers(server.home)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home()).start()
    yield srv
    srv.stop()
    _kill_leftovers(srv.home)



@pytest.fixture(scope="session")
def echo_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("echo")
    write_trainer(root, ECHO_TRAINER)
    return build_package(root)


