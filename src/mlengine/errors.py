"""The one error type of mlengine and its codes.

Every layer raises :class:`MLEngineError`; the API maps it to HTTP in exactly one place
(``mlengine.api.errors``) using the Google API error shape
``{"error": {"code": 404, "message": "...", "status": "NOT_FOUND"}}``. Long-running operations
report errors as ``google.rpc.Status`` (``{"code": 5, "message": "..."}``): the RPC code of each
:class:`Code` is :attr:`Code.rpc_code`, and :meth:`MLEngineError.status` renders one.
"""

from __future__ import annotations

import enum
from typing import Any


class Code(enum.Enum):
    """Google API canonical codes with their HTTP status."""

    CANCELLED = (499, "CANCELLED")
    INVALID_ARGUMENT = (400, "INVALID_ARGUMENT")
    FAILED_PRECONDITION = (400, "FAILED_PRECONDITION")
    OUT_OF_RANGE = (400, "OUT_OF_RANGE")
    UNAUTHENTICATED = (401, "UNAUTHENTICATED")
    PERMISSION_DENIED = (403, "PERMISSION_DENIED")
    NOT_FOUND = (404, "NOT_FOUND")
    ALREADY_EXISTS = (409, "ALREADY_EXISTS")
    ABORTED = (409, "ABORTED")
    PAYLOAD_TOO_LARGE = (413, "PAYLOAD_TOO_LARGE")
    RESOURCE_EXHAUSTED = (429, "RESOURCE_EXHAUSTED")
    INTERNAL = (500, "INTERNAL")
    UNIMPLEMENTED = (501, "UNIMPLEMENTED")
    UNAVAILABLE = (503, "UNAVAILABLE")
    DEADLINE_EXCEEDED = (504, "DEADLINE_EXCEEDED")

    @property
    def http_status(self) -> int:
        # Values are (status, name) so codes sharing a status stay distinct members.
        return int(self.value[0])

    @property
    def rpc_code(self) -> int:
        """The ``google.rpc.Code`` number (what an Operation's ``error.code`` holds)."""
        return _RPC_CODES[self.name]


#: google.rpc.Code numbers; PAYLOAD_TOO_LARGE (HTTP only) is an INVALID_ARGUMENT there.
_RPC_CODES = {
    "CANCELLED": 1, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5, "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "UNAUTHENTICATED": 16, "PAYLOAD_TOO_LARGE": 3,
}  # fmt: skip


class MLEngineError(Exception):
    """An error with a canonical code and a message meant for the user.

    The message must name the problem (the field, the resource, the file) so the user can act
    on it without reading a stack trace.
    """

    def __init__(
        self, code: Code, message: str, *, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.code.http_status,
            "message": self.message,
            "status": self.code.name,
        }
        if self.details:
            body["details"] = self.details
        return {"error": body}

    def status(self) -> dict[str, Any]:
        """The error as a ``google.rpc.Status`` (an Operation's ``error``)."""
        return {"code": self.code.rpc_code, "message": self.message}

    def __repr__(self) -> str:
        return f"MLEngineError({self.code.name}, {self.message!r})"


def invalid(field: str, problem: str) -> MLEngineError:
    """A 400 INVALID_ARGUMENT naming the offending field, e.g. ``invalid("jobId", "...")``."""
    return MLEngineError(Code.INVALID_ARGUMENT, f"Field: {field} Error: {problem}")


def not_found(what: str) -> MLEngineError:
    return MLEngineError(Code.NOT_FOUND, f"{what} not found.")


def already_exists(what: str) -> MLEngineError:
    return MLEngineError(Code.ALREADY_EXISTS, f"{what} already exists.")


def failed_precondition(message: str) -> MLEngineError:
    return MLEngineError(Code.FAILED_PRECONDITION, message)
