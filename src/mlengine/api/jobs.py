"""``projects.jobs``: create, get, list, cancel, patch (labels), and logs (mlengine).

Their IAM methods are :mod:`mlengine.api.iam`'s."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Query, Request

from mlengine.api import web_access
from mlengine.api.auth import PREDICT_PERMISSION
from mlengine.api.body import read_json
from mlengine.api.iam import check_act_as
from mlengine.core import iam
from mlengine.jobs.service import JobService

router = APIRouter()
#: ``predictionInput.modelName`` / ``versionName``: the model a batch prediction job scores with.
_MODEL_NAME = re.compile(r"^projects/([^/]+)/models/([^/]+)(?:/versions/[^/]+)?$")


def _service(request: Request) -> JobService:
    return request.app.state.jobs


@router.post("/v1/projects/{project}/jobs")
async def create_job(project: str, request: Request) -> dict[str, Any]:
    """Create a job; the caller becomes its owner. A ``serviceAccount`` in its input must be an
    account of the project that the caller may act as (``iam.serviceAccounts.actAs``)."""
    body = await read_json(request)
    if isinstance(body, Mapping):
        for field, section in body.items():
            if field.endswith("Input") and isinstance(section, Mapping) and section.get("serviceAccount") is not None:
                await check_act_as(request, project, section["serviceAccount"], f"{field}.serviceAccount")
        _check_predict(request, body.get("predictionInput"))
    tensorboard = web_access.wanted(body)  # enableWebAccess: the job's TensorBoard (api/web_access.py)
    created = await _run(request, _service(request).create, project, body, request.state.identity.member)
    if tensorboard:
        created = await _run(request, web_access.start, request.app.state, str(request.base_url), project, created)
    return created


def _check_predict(request: Request, prediction_input: Any) -> None:
    """A batch prediction job naming a model scores with it: its creator needs what online
    prediction needs, ``ml.models.predict`` on that model (403 naming it otherwise). A malformed
    name is left to the kind's validation (400 naming the field)."""
    if not isinstance(prediction_input, Mapping):
        return
    for key in ("modelName", "versionName"):
        value = prediction_input.get(key)
        match = _MODEL_NAME.match(value) if isinstance(value, str) else None
        if match:
            request.app.state.iam.require(request.state.identity, PREDICT_PERMISSION,
                                          iam.model_resource(match.group(1), match.group(2)))


@router.get("/v1/projects/{project}/jobs")
async def list_jobs(
    project: str,
    request: Request,
    filter: str | None = None,  # noqa: A002 - the API's parameter name
    pageSize: int | None = Query(default=None),  # noqa: N803
    pageToken: str | None = Query(default=None),  # noqa: N803
) -> dict[str, Any]:
    return await _run(request, _service(request).list, project, filter, pageSize, pageToken)


@router.get("/v1/projects/{project}/jobs/{job}")
async def get_job(project: str, job: str, request: Request) -> dict[str, Any]:
    return await _run(request, _service(request).get, project, job)


@router.patch("/v1/projects/{project}/jobs/{job}")
async def patch_job(
    project: str, job: str, request: Request, updateMask: str | None = None  # noqa: N803
) -> dict[str, Any]:
    body = await read_json(request)
    return await _run(request, _service(request).patch, project, job, body, updateMask)


@router.post("/v1/projects/{project}/jobs/{job}:cancel")
async def cancel_job(project: str, job: str, request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    return await _run(request, _service(request).cancel, project, job)


@router.get("/v1/projects/{project}/jobs/{job}/logs")
async def job_logs(
    project: str,
    job: str,
    request: Request,
    taskName: str | None = None,  # noqa: N803
    pageToken: str | None = None,  # noqa: N803
    pageSize: int | None = None,  # noqa: N803
) -> dict[str, Any]:
    return await _run(request, _service(request).logs, project, job, taskName, pageToken, pageSize)


async def _run(request: Request, fn: Any, *args: Any) -> Any:
    """Run blocking store work off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)
