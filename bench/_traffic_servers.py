"""mlengine variants for bench/serving.py's traffic and Ray scenarios (issue 15).

- ``mlengine (model)``: one version, called on the model's name (the baseline of the two below);
- ``mlengine (50/50 split)``: versions v1 and v2 of the same model, ``trafficSplit`` 50/50;
- ``mlengine (shadow)``: v1 serves, v2 is a shadow version (a copy of every call, compared);
- ``mlengine (ray backend)``: one version on the ``ray`` replica backend of a two-node local Ray
  cluster (tests/raycluster.py: nodes at 127.0.0.2 and 127.0.0.3), against the local backend
  and Ray Serve in the same run.

Every version has one replica (autoScaling min 1, max 1), like bench/serving.py's ``mlengine``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.e2e.helpers import ServerProcess, short_home
from tests.e2e.serving_helpers import kill_serving, wait_operation

from bench._serving_servers import Server, memory_of

VARIANTS = {"mlengine-model": "mlengine (model)", "mlengine-split": "mlengine (50/50 split)",
            "mlengine-shadow": "mlengine (shadow)", "mlengine-ray": "mlengine (ray backend)"}
MODELS = "/v1/projects/bench/models"


def start_variant(variant: str, model: Path) -> Server:
    """Start an mlengine server for ``variant`` (one of :data:`VARIANTS`) serving ``model``."""
    env = {"MLE_LOG_LEVEL": "warning"}
    cluster: Any = None
    if variant == "mlengine-ray":
        from tests.raycluster import start_cluster

        cluster = start_cluster([(2, None), (2, None)])
        env.update({**cluster.env, "MLE_EXECUTOR": "local", "MLE_SERVING_BACKEND": "ray"})
    server = ServerProcess(short_home(), env)

    def stop() -> None:
        server.stop()
        kill_serving(server.home)
        if cluster is not None:
            cluster.stop()

    try:
        server.start()
        assert server.api("POST", MODELS, json={"name": "m"}).status_code == 200
        started = time.monotonic()
        versions = ("v1", "v2") if variant in ("mlengine-split", "mlengine-shadow") else ("v1",)
        for version in versions:
            response = server.api("POST", f"{MODELS}/m/versions", json={
                "name": version, "deploymentUri": str(model), "autoScaling": {"minNodes": 1, "maxNodes": 1}})
            operation = wait_operation(server, response.json(), timeout=300)
            if operation.get("error"):
                raise RuntimeError(f"mlengine could not deploy {model}: {operation['error']}")
        deployed = time.monotonic() - started
        traffic = {"mlengine-split": ({"trafficSplit": {"v1": 50, "v2": 50}}, "trafficSplit"),
                   "mlengine-shadow": ({"shadowVersions": ["v2"]}, "shadowVersions")}.get(variant)
        if traffic is not None:
            response = server.api("PATCH", f"{MODELS}/m", params={"updateMask": traffic[1]}, json=traffic[0])
            if response.status_code != 200:
                raise RuntimeError(f"traffic patch refused: {response.text}")
    except Exception:
        stop()
        raise

    def memory() -> dict[str, tuple[float, float]]:
        return {"server": memory_of([server.proc.pid]) if server.proc else (0.0, 0.0)}

    return Server(VARIANTS[variant], f"{server.url}{MODELS}/m:predict", {"Authorization": f"Bearer {server.token}"},
                  start_seconds=deployed, memory=memory, stop=stop, extra={"server": server})
