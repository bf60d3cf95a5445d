"""SDK methods for IAM (mixed into ``Client``): policies of the server, projects, jobs and models,
permission tests, and service accounts.

A resource is named as in policies: ``"server"`` (the server-wide policy, every project),
``"projects/P"``, ``"projects/P/jobs/J"`` or ``"projects/P/models/M"``.
:meth:`IamMixin.add_iam_policy_binding` and :meth:`IamMixin.remove_iam_policy_binding` read the
policy, change it and write it back guarded by its etag, reading again when another writer got
there first (like gcloud's ``add-iam-policy-binding``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from mlengine.errors import Code, MLEngineError

ATTEMPTS = 5


def resource_path(resource: str) -> str:
    """The URL path of a policy's resource (``projects/p/jobs/j`` → ``/v1/projects/p/jobs/j``)."""
    if resource == "server":
        return "/v1/server"
    parts = resource.strip("/").split("/")
    if parts[0] != "projects" or len(parts) not in (2, 4) or (len(parts) == 4 and parts[2] not in ("jobs", "models")):
        raise MLEngineError(Code.INVALID_ARGUMENT, f"{resource!r} has no IAM policy: name the server, "
                            "projects/P, projects/P/jobs/J or projects/P/models/M")
    return "/v1/" + "/".join(quote(p, safe="") for p in parts)


class IamMixin:
    request: Any  # provided by Client

    # Policies ----------------------------------------------------------------------------------
    def get_iam_policy(self, resource: str, requested_version: int | None = None) -> dict[str, Any]:
        params = {"options.requestedPolicyVersion": requested_version}
        return dict(self.request("GET", resource_path(resource) + ":getIamPolicy", params=params))

    def set_iam_policy(self, resource: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the policy; its ``etag`` (when given) must be the current one (else ABORTED)."""
        return dict(self.request("POST", resource_path(resource) + ":setIamPolicy", json={"policy": dict(policy)}))

    def test_iam_permissions(self, resource: str, permissions: Sequence[str]) -> list[str]:
        """Which of ``permissions`` the caller holds on ``resource``."""
        found = self.request("POST", resource_path(resource) + ":testIamPermissions",
                             json={"permissions": list(permissions)})
        return list(found.get("permissions") or [])

    def _edit_policy(self, resource: str, edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
                     ) -> dict[str, Any]:
        for attempt in range(ATTEMPTS):
            policy = self.get_iam_policy(resource, requested_version=3)
            bindings = edit([dict(b) for b in policy.get("bindings") or []])
            new = {"bindings": bindings, "etag": policy.get("etag"), "version": 3 if any(
                b.get("condition") for b in bindings) else 1}
            try:
                return self.set_iam_policy(resource, new)
            except MLEngineError as err:
                if err.code is Code.ABORTED and attempt + 1 < ATTEMPTS:
                    continue
                raise
        raise MLEngineError(Code.ABORTED, f"The policy of {resource} kept changing; try again")

    def add_iam_policy_binding(self, resource: str, member: str, role: str,
                               condition: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Add ``member`` to ``role`` (with ``condition``, a binding of its own) on ``resource``."""

        def add(bindings: list[dict[str, Any]]) -> list[dict[str, Any]]:
            wanted = dict(condition) if condition else None
            for binding in bindings:
                if binding.get("role") == role and binding.get("condition") == wanted:
                    if member not in binding.get("members", []):
                        binding["members"] = [*binding.get("members", []), member]
                    return bindings
            new: dict[str, Any] = {"role": role, "members": [member]}
            if wanted:
                new["condition"] = wanted
            return [*bindings, new]

        return self._edit_policy(resource, add)

    def remove_iam_policy_binding(self, resource: str, member: str, role: str) -> dict[str, Any]:
        """Remove ``member`` from every binding of ``role`` on ``resource`` (NOT_FOUND if it had none)."""

        def remove(bindings: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if not any(b.get("role") == role and member in b.get("members", []) for b in bindings):
                raise MLEngineError(Code.NOT_FOUND, f"Policy binding with the specified member {member} and role "
                                    f"{role} not found on {resource}")
            out = []
            for binding in bindings:
                if binding.get("role") == role:
                    binding["members"] = [m for m in binding.get("members", []) if m != member]
                    if not binding["members"]:
                        continue
                out.append(binding)
            return out

        return self._edit_policy(resource, remove)

    # Service accounts --------------------------------------------------------------------------
    @staticmethod
    def _accounts(project: str) -> str:
        return f"/v1/projects/{quote(project, safe='')}/serviceAccounts"

    def create_service_account(self, project: str, account_id: str, display_name: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {"accountId": account_id}
        if display_name:
            body["serviceAccount"] = {"displayName": display_name}
        return dict(self.request("POST", self._accounts(project), json=body))

    def list_service_accounts(self, project: str) -> list[dict[str, Any]]:
        return list(self.request("GET", self._accounts(project)).get("accounts") or [])

    def delete_service_account(self, project: str, account_id: str) -> None:
        self.request("DELETE", f"{self._accounts(project)}/{quote(account_id, safe='')}")
