"""Helpers for the online prediction end-to-end tests: models on disk, deployment, processes."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from tests.e2e.helpers import ServerProcess

MODELS = "/v1/projects/mlengine/models"


def write_sklearn_model(path: Path) -> Path:
    """A scikit-learn pipeline on 3 numeric features (model.joblib) in ``path``."""
    import joblib
    import numpy as np
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.random((200, 3))
    path.mkdir(parents=True, exist_ok=True)
    joblib.dump(make_pipeline(StandardScaler(), Ridge()).fit(x, x @ [1.0, 2.0, 3.0]), path / "model.joblib")
    return path


def wait_operation(server: ServerProcess, operation: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not operation.get("done"):
        if time.monotonic() > deadline:
            raise AssertionError(f"operation not done after {timeout}s: {operation}")
        time.sleep(0.1)
        response = server.api("GET", "/v1/" + operation["name"])
        response.raise_for_status()
        operation = response.json()
    return operation


def deploy(server: ServerProcess, model: str, version: str, uri: Path | str, **fields: Any) -> dict[str, Any]:
    """Create the model if needed and the version; wait for the creation operation."""
    if server.api("GET", f"{MODELS}/{model}").status_code == 404:
        assert server.api("POST", MODELS, json={"name": model}).status_code == 200
    response = server.api("POST", f"{MODELS}/{model}/versions",
                          json={"name": version, "deploymentUri": str(uri), **fields})
    assert response.status_code == 200, response.text
    return wait_operation(server, response.json())


def predict(server: ServerProcess, model: str, body: Any, version: str | None = None, **kwargs: Any) -> Any:
    path = f"{MODELS}/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    return server.api("POST", path, json=body, **kwargs)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def serving_processes(server: ServerProcess, kind: str = "") -> tuple[list[int], list[int]]:
    """(zygote pids, replica pids) of ``server``: replicas are the zygotes' children."""
    zygotes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "mlengine.prediction.zygote" in cmdline and str(server.home) in cmdline and kind in cmdline:
            zygotes.append(int(entry.name))
    replicas = [child for z in zygotes for child in children(z) if alive(child)]
    return [z for z in zygotes if z not in replicas], replicas


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def kill_serving(home: Path) -> None:
    """Tests leave nothing running: zygotes, replicas and operation workers (with everything
    they started) of ``home``."""
    import signal

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(home) in cmdline and "mlengine.jobs.operations.worker" in cmdline:
            with contextlib.suppress(OSError):
                os.killpg(int(entry.name), signal.SIGKILL)
        if str(home) in cmdline and "mlengine.prediction" in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


def operation_handle(server: ServerProcess, name: str) -> dict[str, Any]:
    """The worker handle recorded on operation ``name`` (``projects/p/operations/x`` or ``x``),
    read from the server's SQLite store."""
    import json
    import sqlite3

    with contextlib.closing(sqlite3.connect(server.home / "mlengine.db", timeout=30)) as db:
        row = db.execute("SELECT handle FROM operations WHERE name = ?", (name.rsplit("/", 1)[-1],)).fetchone()
    return dict(json.loads(row[0]) or {}) if row and row[0] else {}
