"""``projects.operations``: list, get and cancel long-running operations of any kind.

Handlers go to the :class:`~mlengine.jobs.operations.OperationRunner` (``app.state.operations``):
reads in a thread (they block on the store), cancel on the event loop (it stops the operation's
worker and hands it to the capability that owns it; see :mod:`mlengine.jobs.operations._base`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from mlengine.api.body import read_json
from mlengine.errors import Code, MLEngineError

router = APIRouter()
OPERATIONS = "/v1/projects/{project}/operations"


def _operations(request: Request) -> Any:
    runner = getattr(request.app.state, "operations", None)
    if runner is None:
        raise MLEngineError(Code.UNAVAILABLE, "Operations are not enabled on this server.")
    return runner


@router.get(OPERATIONS)
async def list_operations(
    project: str, request: Request, filter: str | None = None,  # noqa: A002
    pageSize: int | None = Query(default=None), pageToken: str | None = Query(default=None),  # noqa: N803
) -> dict[str, Any]:
    return await run_in_threadpool(_operations(request).list_operations, project, filter, pageSize, pageToken)


@router.get(OPERATIONS + "/{operation}")
async def get_operation(project: str, operation: str, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_operations(request).get, project, operation)


@router.post(OPERATIONS + "/{operation}:cancel")
async def cancel_operation(project: str, operation: str, request: Request) -> dict[str, Any]:
    await read_json(request, required=False)
    await _operations(request).cancel(project, operation)
    return {}
