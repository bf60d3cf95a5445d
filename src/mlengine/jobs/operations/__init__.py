"""Long-running operations of any kind: the interface (:mod:`._base`), the runner and its
worker processes (:mod:`.runner`, :mod:`.worker`)."""

from mlengine.jobs.operations._base import (
    EMPTY_TYPE,
    METADATA_TYPE,
    Operation,
    cancelled_status,
    render_operation,
)
from mlengine.jobs.operations.runner import OperationRunner, WorkerFailed

__all__ = ["EMPTY_TYPE", "METADATA_TYPE", "Operation", "OperationRunner", "WorkerFailed", "cancelled_status",
           "render_operation"]
