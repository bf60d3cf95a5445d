"""Long-running operations: any work on any resource that outlives the request asking for it.

An operation (``google.longrunning.Operation``, ml v1 ``projects.operations``) is a stored
record (:class:`mlengine.store.operations.OperationRow`): its ``kind`` (``CREATE_VERSION``,
``DELETE_VERSION``, ``UPDATE_MODEL``...; tomorrow notebook instances, batch and monitoring
runs), its ``target`` (the full resource name it works on), kind-specific ``metadata``,
``done``, and once done either ``error`` (a ``google.rpc.Status``) or ``response``.

Contract
--------
- Creating: the resource's service creates the operation in the request that changes the
  resource (a CREATING version and a pending ``CREATE_VERSION``), with
  :meth:`~mlengine.jobs.operations.runner.OperationRunner.create`. Work that is over when
  the request returns (``UPDATE_MODEL``) is an operation created done.
- Running: the capability that owns some kinds registers an :class:`Operation` (the owner
  of those kinds: how to cancel them, how to recover them) with the runner. Long work runs
  in a *worker*, a child process leading its own process group (its own session), started
  by :meth:`OperationRunner.run_worker`, never in a server thread, so that it can be killed.
  The worker's handle (step, attempt, directory) is written to the operation before the
  process starts and its pid right after; a worker outlives a server restart. Its result
  (``response`` or ``error``) is a JSON file it writes atomically.
- Ending: :meth:`OperationRunner.finish_async` is a compare-and-set: the first writer wins,
  a later one is a no-op.
- Cancelling: :meth:`OperationRunner.cancel` refuses a done operation or a kind that cannot
  be cancelled (FAILED_PRECONDITION), records the request (``isCancellationRequested``),
  stops the worker's whole session (SIGTERM, then SIGKILL after a short grace: nothing it
  started survives) and hands the operation to :meth:`Operation.cancel`, which stops
  whatever else works on it, leaves the target consistent and finishes the operation with
  ``CANCELLED`` (code 1) unless it had finished first. A :meth:`OperationRunner.run_worker`
  whose worker is stopped that way raises :class:`asyncio.CancelledError` in its caller.
- Restarting: :meth:`OperationRunner.reconcile` runs at start-up once the owners have
  reconciled their resources; each pending operation goes to its owner's
  :meth:`Operation.recover`, which resumes it (``run_worker`` adopts a worker still alive,
  takes the result of one that finished meanwhile, or starts the step again) or finishes it
  with an error saying why. A pending operation of a kind nobody registered ends INTERNAL.
- Threads: ``create``, ``get``, ``list_operations`` and ``kill_workers`` block and are
  thread-safe; ``run_worker``, ``cancel``, ``finish_async`` and ``reconcile`` are coroutines
  on the server's event loop, as are the :class:`Operation` hooks.
- Rendering (:func:`render_operation`): ml v1 ``GoogleLongrunning__Operation`` with
  ``google.cloud.ml.v1.OperationMetadata`` (``operationType`` is the kind; the operation's
  own ``metadata`` such as ``modelName`` and ``version`` is merged in).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from mlengine.core.timeutil import rfc3339
from mlengine.errors import Code
from mlengine.store.operations import OperationRow

METADATA_TYPE = "type.googleapis.com/google.cloud.ml.v1.OperationMetadata"
EMPTY_TYPE = "type.googleapis.com/google.protobuf.Empty"


class Operation(abc.ABC):
    """Long-running work of some kinds on some resources: how to cancel it and how to recover
    it after a restart (see the module contract). One subclass per capability that owns work,
    next to it (``prediction.manager.VersionOperations`` for versions)."""

    #: The kinds this owner runs (``CREATE_VERSION``...).
    kinds: ClassVar[tuple[str, ...]]
    #: Those of :attr:`kinds` that can be cancelled.
    cancellable: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    async def cancel(self, op: OperationRow) -> None:
        """Stop the work of ``op`` (its worker is already killed), leave its target consistent
        and finish it with :func:`cancelled_status` unless it finished first."""

    @abc.abstractmethod
    async def recover(self, op: OperationRow) -> None:
        """At start-up, for a pending ``op``: make sure something resumes it, or finish it
        with an error saying why."""


def cancelled_status(message: str) -> dict[str, Any]:
    """The ``error`` of a cancelled operation (``google.rpc.Code.CANCELLED``)."""
    return {"code": Code.CANCELLED.rpc_code, "message": message}


def render_operation(row: OperationRow) -> dict[str, Any]:
    """An operation as ml v1 renders it (see the module contract)."""
    metadata: dict[str, Any] = {
        "@type": METADATA_TYPE,
        "createTime": rfc3339(row.create_time),
        "operationType": row.kind,
        "isCancellationRequested": bool(row.cancel_requested),
    }
    if row.start_time:
        metadata["startTime"] = rfc3339(row.start_time)
    if row.end_time:
        metadata["endTime"] = rfc3339(row.end_time)
    for key, value in (row.meta or {}).items():
        if value or value == 0:
            metadata[key] = value
    operation: dict[str, Any] = {"name": f"projects/{row.project}/operations/{row.name}", "metadata": metadata,
                                 "done": bool(row.done)}
    if row.done and row.error:
        operation["error"] = row.error
    elif row.done:
        operation["response"] = row.response or {"@type": EMPTY_TYPE}
    return operation
