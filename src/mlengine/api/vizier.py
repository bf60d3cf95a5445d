"""``projects.locations.studies`` and ``.trials`` (AI Platform Optimizer, "Vizier") and
``projects.locations.operations``: handlers over :class:`mlengine.tuning.vizier.service.VizierService`
(``app.state.vizier``), run in a thread (they block on the store and Optuna)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from mlengine.api.body import read_json
from mlengine.errors import Code, MLEngineError

router = APIRouter()
LOCATION = "/v1/projects/{project}/locations/{location}"
STUDIES = LOCATION + "/studies"
STUDY = STUDIES + "/{study}"
TRIALS = STUDY + "/trials"
TRIAL = TRIALS + "/{trial}"
OPERATION = LOCATION + "/operations/{operation}"


def _vizier(request: Request) -> Any:
    service = getattr(request.app.state, "vizier", None)
    if service is None:
        raise MLEngineError(Code.UNAVAILABLE, "The Optimizer (studies) API is not enabled on this server.")
    return service


async def _call(request: Request, method: str, *args: Any) -> Any:
    return await run_in_threadpool(getattr(_vizier(request), method), *args)


@router.post(STUDIES)
async def create_study(project: str, location: str, request: Request,
                       studyId: str | None = None) -> dict[str, Any]:  # noqa: N803
    body = await read_json(request)
    return await _call(request, "create_study", project, location, studyId, body)


@router.get(STUDIES)
async def list_studies(project: str, location: str, request: Request) -> dict[str, Any]:
    return await _call(request, "list_studies", project, location)


@router.get(STUDY)
async def get_study(project: str, location: str, study: str, request: Request) -> dict[str, Any]:
    return await _call(request, "get_study", project, location, study)


@router.delete(STUDY)
async def delete_study(project: str, location: str, study: str, request: Request) -> dict[str, Any]:
    return await _call(request, "delete_study", project, location, study)


@router.post(TRIALS)
async def create_trial(project: str, location: str, study: str, request: Request) -> dict[str, Any]:
    body = await read_json(request)
    return await _call(request, "create_trial", project, location, study, body)


@router.get(TRIALS)
async def list_trials(project: str, location: str, study: str, request: Request) -> dict[str, Any]:
    return await _call(request, "list_trials", project, location, study)


@router.post(TRIALS + ":suggest")
async def suggest_trials(project: str, location: str, study: str, request: Request) -> dict[str, Any]:
    body = await read_json(request)
    return await _call(request, "suggest", project, location, study, body)


@router.post(TRIALS + ":listOptimalTrials")
async def list_optimal_trials(project: str, location: str, study: str, request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    return await _call(request, "list_optimal", project, location, study)


@router.get(TRIAL)
async def get_trial(project: str, location: str, study: str, trial: str, request: Request) -> dict[str, Any]:
    return await _call(request, "get_trial", project, location, study, trial)


@router.delete(TRIAL)
async def delete_trial(project: str, location: str, study: str, trial: str, request: Request) -> dict[str, Any]:
    return await _call(request, "delete_trial", project, location, study, trial)


@router.post(TRIAL + ":addMeasurement")
async def add_measurement(project: str, location: str, study: str, trial: str,
                          request: Request) -> dict[str, Any]:
    body = await read_json(request)
    return await _call(request, "add_measurement", project, location, study, trial, body)


@router.post(TRIAL + ":complete")
async def complete_trial(project: str, location: str, study: str, trial: str, request: Request) -> dict[str, Any]:
    body = await read_json(request, required=False)
    return await _call(request, "complete", project, location, study, trial, body)


@router.post(TRIAL + ":stop")
async def stop_trial(project: str, location: str, study: str, trial: str, request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    return await _call(request, "stop", project, location, study, trial)


@router.post(TRIAL + ":checkEarlyStoppingState")
async def check_early_stopping(project: str, location: str, study: str, trial: str,
                               request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    return await _call(request, "check_early_stopping", project, location, study, trial)


@router.get(OPERATION)
async def get_operation(project: str, location: str, operation: str, request: Request) -> dict[str, Any]:
    return await _call(request, "get_operation", project, location, operation)


@router.post(OPERATION + ":cancel")
async def cancel_operation(project: str, location: str, operation: str, request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    return await _call(request, "cancel_operation", project, location, operation)
