"""The one place where errors become HTTP responses, in the Google API error shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlengine.errors import Code, MLEngineError

log = logging.getLogger("mlengine.api")

_HTTP_TO_CODE = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    405: Code.UNIMPLEMENTED,
    409: Code.ALREADY_EXISTS,
    413: Code.PAYLOAD_TOO_LARGE,
    429: Code.RESOURCE_EXHAUSTED,
    503: Code.UNAVAILABLE,
}


def error_response(error: MLEngineError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.code is Code.UNAUTHENTICATED else None
    return JSONResponse(error.to_dict(), status_code=error.code.http_status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MLEngineError)
    async def _mlengine(_request: Request, exc: MLEngineError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            problems.append(f"Field: {loc or 'request'} Error: {err.get('msg', 'invalid')}")
        return error_response(MLEngineError(Code.INVALID_ARGUMENT, "; ".join(problems)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_TO_CODE.get(exc.status_code, Code.INTERNAL)
        if exc.status_code == 404:
            message = f"The requested URL {request.url.path} was not found on this server."
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}."
        else:
            message = str(exc.detail)
        response = JSONResponse(
            {"error": {"code": exc.status_code, "message": message, "status": code.name}},
            status_code=exc.status_code,
        )
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(MLEngineError(Code.INTERNAL, f"Internal error: {type(exc).__name__}"))
