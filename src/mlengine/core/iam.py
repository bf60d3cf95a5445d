"""IAM as AI Platform has it: permissions, roles, principals, policies and their evaluation.

This is the ONE home of the role → permission table (:data:`ROLES`). The route → permission
table is :data:`mlengine.api.auth.PERMISSIONS`.

Model
-----
- A **principal** (IAM "member") is ``user:<name>`` (a user token), ``group:<name>`` (a token
  may belong to groups), ``serviceAccount:<id>@<project>.iam.mlengine`` (a service account of
  a project; jobs run as one) or ``allAuthenticatedUsers`` (any valid token).
- A **policy** (ml v1 ``GoogleIamV1__Policy``: ``bindings[{role, members, condition?}]``,
  ``etag``, ``version``) is attached to a **resource**: :data:`SERVER` (every project: the
  server-wide policy), ``projects/<p>``, ``projects/<p>/jobs/<j>`` or ``projects/<p>/models/<m>``.
- The **effective permissions** of a principal on a resource are the union of the roles bound
  to it (or to one of its groups, or to ``allAuthenticatedUsers``) on the resource's chain:
  the server, the project, then the job or model (a version is authorized on its model; a
  job's logs and cancel on the job; an operation on the resource it works on).
- Conditions: only expirable access is evaluated, ``request.time < timestamp("RFC 3339")``
  (a binding with any other expression is refused when the policy is set).

Roles follow AI Platform's documented lists (``roles/ml.*``) and the basic roles
(``roles/owner``, ``roles/editor``, ``roles/viewer``). Where mlengine differs it says so below.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlengine.errors import invalid

#: The resource whose policy applies to every project (legacy token roles land here).
SERVER = "server"
#: The domain of service account e-mails: ``<id>@<project>.iam.mlengine``.
SA_DOMAIN = "iam.mlengine"
#: Pseudo-permission every valid token has (``testIamPermissions``: anyone may ask what they
#: may do; ``GET /v1/server``).
AUTHENTICATED = "mlengine.authenticated"
ALL_AUTHENTICATED = "allAuthenticatedUsers"

# Permissions ---------------------------------------------------------------------------------
_ML = {
    "jobs": ("create", "get", "list", "update", "cancel", "getIamPolicy", "setIamPolicy"),
    "models": ("create", "get", "list", "update", "delete", "predict", "getIamPolicy", "setIamPolicy"),
    "versions": ("create", "get", "list", "update", "delete", "predict"),
    "operations": ("get", "list", "cancel"),
    "locations": ("get", "list"),
    "projects": ("getConfig",),
    "studies": ("create", "get", "list", "delete"),
    "trials": ("create", "get", "list", "update", "delete"),
}
ML_PERMISSIONS = frozenset(f"ml.{kind}.{verb}" for kind, verbs in _ML.items() for verb in verbs)
#: mlengine's own: the server, its tokens, services (managed processes) and the server policy.
MLENGINE_PERMISSIONS = frozenset({
    "mlengine.server.getIamPolicy", "mlengine.server.setIamPolicy",
    "mlengine.tokens.create", "mlengine.tokens.list", "mlengine.tokens.delete",
    "mlengine.services.create", "mlengine.services.list", "mlengine.services.get", "mlengine.services.delete",
    "mlengine.services.start", "mlengine.services.stop", "mlengine.services.use",
    "mlengine.metrics.get",  # GET /metrics: the server's Prometheus metrics, every project's
})
IAM_PERMISSIONS = frozenset({
    "iam.serviceAccounts.create", "iam.serviceAccounts.get", "iam.serviceAccounts.list",
    "iam.serviceAccounts.delete", "iam.serviceAccounts.actAs",
    "resourcemanager.projects.get", "resourcemanager.projects.list",
    "resourcemanager.projects.getIamPolicy", "resourcemanager.projects.setIamPolicy",
})
PERMISSIONS = ML_PERMISSIONS | MLENGINE_PERMISSIONS | IAM_PERMISSIONS

_READ_VERBS = (".get", ".list", ".getConfig")


def _reads(permissions: Iterable[str]) -> frozenset[str]:
    return frozenset(p for p in permissions if p.endswith(_READ_VERBS) and not p.startswith("mlengine.tokens."))


_PROJECT_READ = {"resourcemanager.projects.get", "resourcemanager.projects.list"}
_ML_READ = _reads(ML_PERMISSIONS)

#: Role → permissions. AI Platform's lists, with mlengine's additions marked.
ROLES: dict[str, frozenset[str]] = {
    # Everything ml.*, plus (mlengine) administering the server: tokens, service accounts,
    # services, and the server and project policies (in AI Platform project IAM belongs to
    # roles/owner; here the server's admin token is an ml.admin, so ml.admin holds it).
    "roles/ml.admin": PERMISSIONS,
    # Create jobs, models and (mlengine) services; read everything; predict with any model.
    # NOT cancelling or updating jobs, NOT adding versions to, changing or deleting models:
    # the creator of a job or model gets roles/ml.jobOwner / roles/ml.modelOwner on it.
    "roles/ml.developer": frozenset({
        "ml.jobs.create", "ml.jobs.get", "ml.jobs.list",
        "ml.models.create", "ml.models.get", "ml.models.list", "ml.models.predict",
        "ml.versions.get", "ml.versions.list", "ml.versions.predict",
        "ml.operations.get", "ml.operations.list", "ml.locations.get", "ml.locations.list",
        "ml.projects.getConfig", *_PROJECT_READ,
        # (mlengine) The Optimizer: create studies and run their trials; deleting is an admin's.
        "ml.studies.create", "ml.studies.get", "ml.studies.list",
        "ml.trials.create", "ml.trials.get", "ml.trials.list", "ml.trials.update",
        "mlengine.services.create", "mlengine.services.list", "mlengine.services.get",
        "mlengine.services.delete", "mlengine.services.start", "mlengine.services.stop",
        "mlengine.services.use",
    }),
    "roles/ml.viewer": _ML_READ | _PROJECT_READ | {"mlengine.services.get", "mlengine.services.list"},
    # On a model: everything about it and its versions, and (mlengine: operations are
    # authorized on the resource they work on) reading and cancelling its operations.
    "roles/ml.modelOwner": frozenset({
        "ml.models.get", "ml.models.update", "ml.models.delete", "ml.models.predict",
        "ml.models.getIamPolicy", "ml.models.setIamPolicy",
        "ml.versions.create", "ml.versions.get", "ml.versions.list", "ml.versions.update",
        "ml.versions.delete", "ml.versions.predict", "ml.operations.get", "ml.operations.cancel",
    }),
    "roles/ml.modelUser": frozenset({"ml.models.get", "ml.models.predict", "ml.versions.get", "ml.versions.list",
                                     "ml.versions.predict"}),
    "roles/ml.jobOwner": frozenset({"ml.jobs.get", "ml.jobs.update", "ml.jobs.cancel", "ml.jobs.getIamPolicy",
                                    "ml.jobs.setIamPolicy"}),
    "roles/ml.operationOwner": frozenset({"ml.operations.get", "ml.operations.cancel"}),
    "roles/iam.serviceAccountUser": frozenset({"iam.serviceAccounts.actAs", "iam.serviceAccounts.get",
                                               "iam.serviceAccounts.list"}),
    "roles/owner": PERMISSIONS,
    # Everything but changing policies and managing tokens.
    "roles/editor": frozenset(p for p in PERMISSIONS
                              if not p.endswith(".setIamPolicy") and not p.startswith("mlengine.tokens.")),
    "roles/viewer": _reads(PERMISSIONS) | {p for p in PERMISSIONS if p.endswith(".getIamPolicy")},
}

#: The roles of tokens made before IAM (``mle auth create-token --role``), as bindings on :data:`SERVER`.
LEGACY_ROLES = {"admin": "roles/ml.admin", "editor": "roles/ml.developer", "viewer": "roles/ml.viewer"}


def role_permissions(role: str) -> frozenset[str]:
    return ROLES.get(role, frozenset())


# Principals ----------------------------------------------------------------------------------
USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
#: Service account ids users create (like Google's): a lowercase letter, lowercase letters,
#: digits and hyphens. ``job-...`` ids are the server's (one per job) and hold the job id.
ACCOUNT_ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_ANY_ACCOUNT_RE = re.compile(r"^(?P<id>[A-Za-z][A-Za-z0-9_-]{0,140})@(?P<project>[a-z][a-z0-9-]{0,62})\."
                             + re.escape(SA_DOMAIN) + "$")
JOB_ACCOUNT_PREFIX = "job-"


def service_account_email(project: str, account_id: str) -> str:
    return f"{account_id}@{project}.{SA_DOMAIN}"


def job_account(project: str, job_id: str) -> str:
    """The e-mail of the account the server makes for a job (trials use their tuning job's)."""
    return service_account_email(project, JOB_ACCOUNT_PREFIX + job_id.split("/", 1)[0])


def parse_service_account(email: Any, field: str) -> tuple[str, str]:
    """``(account id, project)`` of a service account e-mail; INVALID_ARGUMENT naming ``field``."""
    match = _ANY_ACCOUNT_RE.match(email) if isinstance(email, str) else None
    if match is None:
        raise invalid(field, f"{email!r} is not a service account: expected ID@PROJECT.{SA_DOMAIN}")
    return match["id"], match["project"]


def validate_member(member: Any, field: str) -> str:
    """One IAM member; INVALID_ARGUMENT naming ``field`` when its format is not one of ours."""
    if member == ALL_AUTHENTICATED:
        return member
    if member == "allUsers":
        raise invalid(field, "allUsers is not supported: every request to mlengine carries a token")
    if not isinstance(member, str) or ":" not in member:
        raise invalid(field, f"{member!r} is not a member: use user:NAME, group:NAME, "
                             f"serviceAccount:ID@PROJECT.{SA_DOMAIN} or {ALL_AUTHENTICATED}")
    kind, _, name = member.partition(":")
    if kind in ("user", "group"):
        if not USER_NAME_RE.match(name):
            raise invalid(field, f"{member!r}: a {kind} name holds 1-128 letters, digits, '.', '_', '@', '+' or '-'")
    elif kind == "serviceAccount":
        parse_service_account(name, field)
    else:
        raise invalid(field, f"{member!r}: members of kind {kind!r} are not supported (user, group, "
                             f"serviceAccount, {ALL_AUTHENTICATED})")
    return member


@dataclass(frozen=True)
class Identity:
    """Who a token speaks for: its name, its principal, its groups, and the job it was made
    for (a trainer's token; None for tokens users make)."""

    name: str
    member: str
    groups: tuple[str, ...] = ()
    job_pk: int | None = None
    members: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "members",
                           frozenset({self.member, ALL_AUTHENTICATED, *(f"group:{g}" for g in self.groups)}))


# Resources -----------------------------------------------------------------------------------
def project_resource(project: str) -> str:
    return f"projects/{project}"


def job_resource(project: str, job_id: str) -> str:
    return f"projects/{project}/jobs/{job_id}"


def model_resource(project: str, model: str) -> str:
    return f"projects/{project}/models/{model}"


def path_resource(params: Mapping[str, Any]) -> str:
    """The resource a route's path parameters name: its job, else its model, else its project
    (the server for a route without a project)."""
    project = params.get("project")
    if not isinstance(project, str):
        return SERVER
    if "job" in params:
        return job_resource(project, params["job"])
    if "model" in params:
        return model_resource(project, params["model"])
    return project_resource(project)


def chain(resource: str) -> tuple[str, ...]:
    """The resources whose policies apply to ``resource``, broadest first: the server, the
    project, then the job or model (a version's or an operation's target reduced to its model)."""
    if resource == SERVER:
        return (SERVER,)
    parts = resource.split("/")
    if len(parts) < 2 or parts[0] != "projects":
        raise ValueError(f"not a resource name: {resource!r}")
    found = [SERVER, "/".join(parts[:2])]
    if len(parts) >= 4 and parts[2] in ("jobs", "models"):
        found.append("/".join(parts[:4]))
    return tuple(found)


# Policies ------------------------------------------------------------------------------------
_CONDITION_RE = re.compile(r"""^\s*request\.time\s*<\s*timestamp\(\s*(["'])([^"']+)\1\s*\)\s*$""")


@dataclass(frozen=True)
class Binding:
    role: str
    members: tuple[str, ...]
    condition: Mapping[str, str] | None = None
    #: Seconds since the epoch after which a conditional binding no longer applies.
    expires: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "members": list(self.members)}
        if self.condition is not None:
            out["condition"] = dict(self.condition)
        return out


def _expiry(condition: Any, field: str) -> float:
    if not isinstance(condition, Mapping):
        raise invalid(field, "must be an object with an expression")
    for key in condition:
        if key not in ("title", "description", "expression", "location"):
            raise invalid(f"{field}.{key}", f"unknown field {key!r} in a condition")
    expression = condition.get("expression")
    match = _CONDITION_RE.match(expression) if isinstance(expression, str) else None
    if match is None:
        raise invalid(f"{field}.expression", "only expirable access is supported: "
                                             "request.time < timestamp(\"2030-01-01T00:00:00Z\")")
    try:
        when = dt.datetime.fromisoformat(match[2].replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{field}.expression", f"{match[2]!r} is not an RFC 3339 timestamp") from None
    if when.tzinfo is None:
        raise invalid(f"{field}.expression", f"{match[2]!r} needs a time zone (e.g. Z)")
    return when.timestamp()


def binding_from_json(data: Any, field: str) -> Binding:
    if not isinstance(data, Mapping):
        raise invalid(field, "must be an object with role and members")
    for key in data:
        if key not in ("role", "members", "condition"):
            raise invalid(f"{field}.{key}", f"unknown field {key!r} in a binding")
    role = data.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise invalid(f"{field}.role", f"{role!r} is not a role of mlengine; one of: {', '.join(sorted(ROLES))}")
    members = data.get("members")
    if not isinstance(members, list) or not members:
        raise invalid(f"{field}.members", "must be a non-empty list of members")
    checked = tuple(dict.fromkeys(validate_member(m, f"{field}.members[{i}]") for i, m in enumerate(members)))
    condition = data.get("condition")
    if condition is None:
        return Binding(role, checked)
    expires = _expiry(condition, f"{field}.condition")
    return Binding(role, checked, {k: str(v) for k, v in condition.items()}, expires)


def validate_bindings(data: Any, field: str = "policy.bindings") -> tuple[Binding, ...]:
    """The bindings of a policy body, checked (roles known, members well formed) and merged:
    one binding per (role, condition), members in the order first given."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise invalid(field, "must be a list of bindings")
    merged: dict[tuple[str, str], Binding] = {}
    for i, item in enumerate(data):
        binding = binding_from_json(item, f"{field}[{i}]")
        key = (binding.role, repr(sorted((binding.condition or {}).items())))
        if key in merged:
            old = merged[key]
            binding = Binding(old.role, tuple(dict.fromkeys(old.members + binding.members)), old.condition,
                              old.expires)
        merged[key] = binding
    if len(merged) > 1500:
        raise invalid(field, "a policy holds at most 1500 bindings")
    return tuple(merged.values())


def policy_etag(revision: int) -> str:
    return base64.b64encode(struct.pack(">Q", revision)).decode()


def render_policy(bindings: Sequence[Binding], revision: int) -> dict[str, Any]:
    """A ``GoogleIamV1__Policy``: version 3 when a binding has a condition, else 1."""
    policy: dict[str, Any] = {"version": 3 if any(b.condition for b in bindings) else 1,
                              "etag": policy_etag(revision)}
    if bindings:
        policy["bindings"] = [b.to_json() for b in bindings]
    return policy


def with_member(bindings: Sequence[Binding], role: str, member: str) -> tuple[Binding, ...]:
    """``bindings`` with ``member`` added to the unconditional binding of ``role``."""
    out = list(bindings)
    for i, binding in enumerate(out):
        if binding.role == role and binding.condition is None:
            if member in binding.members:
                return tuple(out)
            out[i] = Binding(role, (*binding.members, member))
            return tuple(out)
    out.append(Binding(role, (member,)))
    return tuple(out)


def without_member(bindings: Sequence[Binding], role: str, member: str) -> tuple[Binding, ...]:
    """``bindings`` with ``member`` removed from every binding of ``role`` (empty ones dropped)."""
    out = []
    for binding in bindings:
        if binding.role == role and member in binding.members:
            rest = tuple(m for m in binding.members if m != member)
            if rest:
                out.append(Binding(role, rest, binding.condition, binding.expires))
        else:
            out.append(binding)
    return tuple(out)


def granted(members: frozenset[str], policies: Iterable[Sequence[Binding]], now: float) -> tuple[frozenset[str], float]:
    """The permissions ``members`` hold through ``policies`` at time ``now``, and until when
    that answer holds (the earliest future expiry of a conditional binding that applied;
    ``inf`` without one)."""
    permissions: set[str] = set()
    valid_until = float("inf")
    for bindings in policies:
        for binding in bindings:
            if members.isdisjoint(binding.members):
                continue
            if binding.expires is not None:
                if binding.expires <= now:
                    continue
                valid_until = min(valid_until, binding.expires)
            permissions |= ROLES.get(binding.role, frozenset())
    return frozenset(permissions), valid_until
