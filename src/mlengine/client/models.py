"""SDK methods for models, versions, operations and online prediction (mixed into ``Client``).

Version creation and deletion are long-running operations: :meth:`ModelsMixin.create_version`
returns the Operation; :meth:`ModelsMixin.wait_operation` polls it until ``done`` and raises
:class:`~mlengine.errors.MLEngineError` with the operation's error message when it failed.
:meth:`ModelsMixin.predict` raises with the server's flat prediction error message on 4xx/5xx.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from mlengine.errors import Code, MLEngineError

PREDICT_TIMEOUT = 300.0
_RPC_TO_CODE = {1: Code.ABORTED, 3: Code.INVALID_ARGUMENT, 9: Code.FAILED_PRECONDITION, 13: Code.INTERNAL}


def _seg(value: str) -> str:
    return quote(str(value), safe="")


class ModelsMixin:
    request: Any  # provided by Client

    @staticmethod
    def _models(project: str) -> str:
        return f"/v1/projects/{_seg(project)}/models"

    def _versions(self, project: str, model: str) -> str:
        return f"{self._models(project)}/{_seg(model)}/versions"

    def _pages(self, path: str, key: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = self.request("GET", path, params={**params, "pageToken": token})
            yield from page.get(key) or []
            token = page.get("nextPageToken") or None
            if not token:
                return

    # Models ------------------------------------------------------------------------------------
    def create_model(self, project: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", self._models(project), json=dict(body)))

    def get_model(self, project: str, model: str) -> dict[str, Any]:
        return dict(self.request("GET", f"{self._models(project)}/{_seg(model)}"))

    def list_models(self, project: str, filter: str | None = None) -> Iterator[dict[str, Any]]:
        return self._pages(self._models(project), "models", {"filter": filter})

    def delete_model(self, project: str, model: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"{self._models(project)}/{_seg(model)}"))

    def patch_model(self, project: str, model: str, body: Mapping[str, Any], update_mask: str) -> dict[str, Any]:
        return dict(self.request("PATCH", f"{self._models(project)}/{_seg(model)}",
                                 params={"updateMask": update_mask}, json=dict(body)))

    def traffic_status(self, project: str, model: str) -> dict[str, Any]:
        """mlengine extension: the model's shadow comparisons and canary windows."""
        return dict(self.request("GET", f"{self._models(project)}/{_seg(model)}/trafficStatus"))

    # Versions ----------------------------------------------------------------------------------
    def create_version(self, project: str, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Start creating a version; returns the Operation (see :meth:`wait_operation`)."""
        return dict(self.request("POST", self._versions(project, model), json=dict(body)))

    def get_version(self, project: str, model: str, version: str) -> dict[str, Any]:
        return dict(self.request("GET", f"{self._versions(project, model)}/{_seg(version)}"))

    def list_versions(self, project: str, model: str, filter: str | None = None) -> Iterator[dict[str, Any]]:
        return self._pages(self._versions(project, model), "versions", {"filter": filter})

    def delete_version(self, project: str, model: str, version: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"{self._versions(project, model)}/{_seg(version)}"))

    def set_default_version(self, project: str, model: str, version: str) -> dict[str, Any]:
        return dict(self.request("POST", f"{self._versions(project, model)}/{_seg(version)}:setDefault", json={}))

    def patch_version(self, project: str, model: str, version: str, body: Mapping[str, Any],
                      update_mask: str) -> dict[str, Any]:
        return dict(self.request("PATCH", f"{self._versions(project, model)}/{_seg(version)}",
                                 params={"updateMask": update_mask}, json=dict(body)))

    # Operations --------------------------------------------------------------------------------
    def get_operation(self, name: str) -> dict[str, Any]:
        """``name`` is the full ``projects/P/operations/ID`` an Operation carries."""
        return dict(self.request("GET", "/v1/" + name.lstrip("/")))

    def list_operations(self, project: str, filter: str | None = None) -> Iterator[dict[str, Any]]:
        return self._pages(f"/v1/projects/{_seg(project)}/operations", "operations", {"filter": filter})

    def cancel_operation(self, name: str) -> None:
        self.request("POST", "/v1/" + name.lstrip("/") + ":cancel", json={})

    def wait_operation(self, operation: Mapping[str, Any], timeout: float = 1800.0,
                       interval: float = 0.2) -> dict[str, Any]:
        """Poll ``operation`` until done; its ``response`` (or ``{}``), else raise its error."""
        current = dict(operation)
        deadline = time.monotonic() + timeout
        while not current.get("done"):
            if time.monotonic() > deadline:
                raise MLEngineError(Code.DEADLINE_EXCEEDED, f"Operation {current.get('name')} is not done after "
                                    f"{timeout:g} s; check it later with its name.")
            time.sleep(interval)
            interval = min(interval * 1.5, 2.0)
            current = self.get_operation(str(current["name"]))
        error = current.get("error")
        if error:
            raise MLEngineError(_RPC_TO_CODE.get(int(error.get("code", 13)), Code.INTERNAL),
                                str(error.get("message") or "The operation failed."))
        return dict(current.get("response") or {})

    # Prediction --------------------------------------------------------------------------------
    def predict(self, project: str, model: str, body: Mapping[str, Any], version: str | None = None) -> dict[str, Any]:
        """``{"predictions": [...]}`` for a request body ``{"instances": [...], ...}``."""
        import httpx

        path = f"{self._models(project)}/{_seg(model)}"
        if version:
            path += f"/versions/{_seg(version)}"
        return dict(self.request("POST", path + ":predict", json=dict(body),
                                 timeout=httpx.Timeout(PREDICT_TIMEOUT, connect=10.0)))
