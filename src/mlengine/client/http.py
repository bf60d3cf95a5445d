"""The HTTP client of the mlengine REST API (``ml`` v1 plus mlengine extensions).

Contract
--------
- One :class:`Client` per server; it holds an ``httpx.Client`` (a connection pool) and is
  safe to use from one thread at a time. Close it (or use ``with``) when done.
- Every non-2xx answer raises :class:`~mlengine.errors.MLEngineError` rebuilt from the Google
  error body ``{"error": {"code", "message", "status"}}``: the code comes from ``status``
  (falling back to the HTTP status), the message is the server's.
- Connection failures are retried (with a short backoff) for GET requests only, which are
  idempotent; a POST that may or may not have reached the server is never sent twice.
  When the server cannot be reached the error is UNAVAILABLE and names the URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from mlengine import __version__
from mlengine.config import Settings, load_settings
from mlengine.errors import Code, MLEngineError

from .connection import resolve, transport_for
from .iam import IamMixin
from .models import ModelsMixin

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
UPLOAD_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
#: Preferred code for an HTTP status when the body does not name one.
_CODE_BY_HTTP = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.ABORTED,
    413: Code.PAYLOAD_TOO_LARGE,
    429: Code.RESOURCE_EXHAUSTED,
    501: Code.UNIMPLEMENTED,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


#: Failures worth retrying for an idempotent request.
_TRANSIENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)
#: Failures after which the server certainly did not receive the request.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


def _seg(value: str) -> str:
    """One path segment, quoted (a job id never contains '/', but a typo might)."""
    return quote(str(value), safe="")


def error_from_response(response: httpx.Response) -> MLEngineError:
    """The :class:`MLEngineError` a non-2xx response stands for."""
    status = response.status_code
    message = ""
    code: Code | None = None
    details: list[dict[str, Any]] | None = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            name = error.get("status")
            if isinstance(name, str) and name in Code.__members__:
                code = Code[name]
            if isinstance(error.get("details"), list):
                details = error["details"]
        elif isinstance(error, str):  # prediction errors: {"error": "message"}
            message = error
        elif isinstance(body.get("detail"), str):  # a framework's default error body
            message = body["detail"]
    if code is None:
        code = _CODE_BY_HTTP.get(status) or (Code.INTERNAL if status >= 500 else Code.INVALID_ARGUMENT)
    if not message:
        text = response.text.strip()
        reason = response.reason_phrase or code.name
        message = f"HTTP {status} {reason}" + (f": {text[:300]}" if text else "")
    return MLEngineError(code, message, details=details)


class Client(ModelsMixin, IamMixin):
    """The mlengine REST API.

    ``Client(url, token)`` or ``Client.from_settings()`` (``MLE_API_URL``/``MLE_TOKEN`` or the
    server recorded under ``MLE_HOME``). Requests go over real HTTP unless ``transport`` is
    given (e.g. ``httpx.MockTransport``) or one is registered for ``url`` with
    :func:`mlengine.client.connection.register_transport` (an in-process server app).
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        if transport is None:
            transport = transport_for(self.url)
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(
            base_url=self.url,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"mlengine-client/{__version__}",
                "Accept": "application/json",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> Client:
        connection = resolve(settings or load_settings())
        return cls(connection.url, connection.token, **kwargs)

    # Plumbing -----------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unreachable(self, err: Exception) -> MLEngineError:
        return MLEngineError(
            Code.UNAVAILABLE,
            f"Cannot reach the mlengine server at {self.url}: {err or type(err).__name__}. "
            "Is it running? Check `mle server status`, or start it with `mle server start`.",
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body (``{}`` for an empty body)."""
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        attempts = 1 + (self.retries if method == "GET" else 0)
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        for attempt in range(attempts):
            try:
                response = self._http.request(
                    method, path, params=clean, json=json, content=content, headers=headers, **extra
                )
                break
            except _TRANSIENT as err:
                if attempt + 1 < attempts:
                    time.sleep(self.backoff * (2**attempt))
                    continue
                if method != "GET" and not isinstance(err, _NOT_SENT):
                    raise MLEngineError(
                        Code.UNAVAILABLE,
                        f"The connection to {self.url} broke during {method} {path}: {err}. "
                        "The request may or may not have been applied; check before retrying.",
                    ) from None
                raise self._unreachable(err) from None
            except httpx.TimeoutException as err:
                raise MLEngineError(
                    Code.DEADLINE_EXCEEDED,
                    f"The mlengine server at {self.url} did not answer {method} {path} in time "
                    f"({type(err).__name__}).",
                ) from None
            except httpx.HTTPError as err:
                raise self._unreachable(err) from None
        if response.status_code >= 300:
            raise error_from_response(response)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise MLEngineError(
                Code.INTERNAL, f"{method} {path}: the server answered with invalid JSON."
            ) from None

    # Server --------------------------------------------------------------------------------
    def server_info(self) -> dict[str, Any]:
        """``GET /v1/server``: version, executor, capacitySlots, hostname, machineId, home, pid."""
        return dict(self.request("GET", "/v1/server"))

    # Jobs ----------------------------------------------------------------------------------
    @staticmethod
    def _jobs(project: str) -> str:
        return f"/v1/projects/{_seg(project)}/jobs"

    def create_job(self, project: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", self._jobs(project), json=dict(body)))

    def get_job(self, project: str, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"{self._jobs(project)}/{_seg(job_id)}"))

    def list_jobs(
        self, project: str, filter: str | None = None, page_size: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every job matching ``filter``, following ``nextPageToken`` page after page."""
        token: str | None = None
        seen: set[str] = set()
        while True:
            page = self.request(
                "GET",
                self._jobs(project),
                params={"filter": filter, "pageSize": page_size, "pageToken": token},
            )
            yield from page.get("jobs") or []
            token = page.get("nextPageToken") or None
            if not token:
                return
            if token in seen:  # a server bug must not loop forever
                raise MLEngineError(Code.INTERNAL, "The server returned the same page token twice.")
            seen.add(token)

    def cancel_job(self, project: str, job_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"{self._jobs(project)}/{_seg(job_id)}:cancel", json={}))

    def patch_job_labels(
        self, project: str, job_id: str, labels: Mapping[str, str], etag: str | None = None
    ) -> dict[str, Any]:
        """Replace the job's labels; with ``etag``, fail with a conflict if it changed since."""
        body: dict[str, Any] = {"labels": dict(labels)}
        if etag:
            body["etag"] = etag
        return dict(
            self.request(
                "PATCH",
                f"{self._jobs(project)}/{_seg(job_id)}",
                params={"updateMask": "labels"},
                json=body,
            )
        )

    def read_logs(
        self,
        project: str,
        job_id: str,
        task_name: str | None = None,
        page_token: str | None = None,
        page_size: int | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Log entries after ``page_token`` (oldest first) and the token to continue from."""
        page = self.request(
            "GET",
            f"{self._jobs(project)}/{_seg(job_id)}/logs",
            params={"taskName": task_name, "pageToken": page_token, "pageSize": page_size},
        )
        return list(page.get("entries") or []), page.get("nextPageToken") or page_token

    # Packages ------------------------------------------------------------------------------
    def upload_package(self, project: str, path: Path | str) -> str:
        """Upload a package file through the server; return the URI the server stored it at."""
        return str(self.upload_package_info(project, path)["uri"])

    def upload_package_info(self, project: str, path: Path | str) -> dict[str, Any]:
        """Like :meth:`upload_package`, returning ``{"uri", "sha256"}``."""
        file = Path(path)
        try:
            handle = file.open("rb")
        except OSError as err:
            raise MLEngineError(Code.INVALID_ARGUMENT, f"Cannot read package {file}: {err}") from None
        with handle:
            result = self.request(
                "POST",
                f"/v1/projects/{_seg(project)}/packages:upload",
                params={"filename": file.name},
                content=handle,
                headers={"Content-Type": "application/octet-stream"},
                timeout=UPLOAD_TIMEOUT,
            )
        if not isinstance(result, dict) or not isinstance(result.get("uri"), str):
            raise MLEngineError(Code.INTERNAL, f"The server did not return a URI for {file.name}.")
        return result

    # Tokens --------------------------------------------------------------------------------
    def create_token(self, name: str, role: str | None = "viewer", *, user: str | None = None,
                     groups: Sequence[str] = (), service_account: str | None = None) -> dict[str, Any]:
        """A token for user ``user`` (default: ``name``) or ``service_account``, in ``groups``;
        ``role`` (admin, editor, viewer, a ``roles/...`` name, or None for no binding) is bound
        on the server-wide policy. Returns ``{"name", "principal", "roles", "token", ...}``; the
        token is shown this once only."""
        body: dict[str, Any] = {"name": name, "role": role or "none"}
        if user:
            body["user"] = user
        if groups:
            body["groups"] = list(groups)
        if service_account:
            body["serviceAccount"] = service_account
        return dict(self.request("POST", "/v1/tokens", json=body))

    def list_tokens(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/tokens").get("tokens") or [])

    def delete_token(self, name: str) -> None:
        self.request("DELETE", f"/v1/tokens/{_seg(name)}")
