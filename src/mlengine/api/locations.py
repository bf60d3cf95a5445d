"""``projects.getConfig`` and ``projects.locations``.

mlengine is one server, so a location is a label (like a job's ``region``): every location
name is served by this server and holds its own studies. ``locations.list`` shows
:data:`DEFAULT_LOCATION` (AI Platform's default region, what samples use) and every location
that holds studies of the project.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from mlengine.core import iam

router = APIRouter()
DEFAULT_LOCATION = "us-central1"
#: What every location of this server can do (batch prediction is not served).
CAPABILITIES = ({"type": "TRAINING"}, {"type": "ONLINE_PREDICTION"})
#: The account mlengine names as its own in ``getConfig`` (jobs run as per-job accounts).
SERVER_ACCOUNT_ID = "mlengine"


def render_location(project: str, location: str) -> dict[str, Any]:
    return {"name": f"projects/{project}/locations/{location}", "capabilities": [dict(c) for c in CAPABILITIES]}


@router.get("/v1/projects/{project}:getConfig")
async def get_config(project: str) -> dict[str, Any]:
    """AI Platform's shape: the account the service acts as in the project, and its project.
    mlengine has no project numbers: ``serviceAccountProject`` is the project id."""
    account = iam.service_account_email(project, SERVER_ACCOUNT_ID)
    return {"serviceAccount": account, "serviceAccountProject": project,
            "config": {"tpuServiceAccount": account}}


@router.get("/v1/projects/{project}/locations")
async def list_locations(project: str, request: Request) -> dict[str, Any]:
    service = getattr(request.app.state, "vizier", None)
    used = await run_in_threadpool(service.locations, project) if service is not None else []
    names = sorted({DEFAULT_LOCATION, *used})
    return {"locations": [render_location(project, name) for name in names]}


@router.get("/v1/projects/{project}/locations/{location}")
async def get_location(project: str, location: str) -> dict[str, Any]:
    return render_location(project, location)
