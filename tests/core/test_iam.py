"""The role → permission table and policy evaluation (mlengine.core.iam)."""

from __future__ import annotations

import pytest

from mlengine.api.auth import PERMISSIONS as ROUTES
from mlengine.api.auth import PUBLIC
from mlengine.core import iam
from mlengine.errors import MLEngineError


def test_every_route_permission_is_a_known_permission() -> None:
    used = set(ROUTES.values()) - {iam.AUTHENTICATED, PUBLIC}
    assert used <= iam.PERMISSIONS, used - iam.PERMISSIONS


def test_role_lattice_and_what_developers_lack() -> None:
    viewer, developer, admin = (iam.ROLES[f"roles/ml.{r}"] for r in ("viewer", "developer", "admin"))
    assert viewer < developer < admin == iam.PERMISSIONS
    assert not developer & {"ml.jobs.cancel", "ml.jobs.update", "ml.versions.create", "ml.versions.delete",
                            "ml.models.update", "ml.models.delete", "ml.jobs.setIamPolicy", "mlengine.tokens.create"}
    assert {"ml.jobs.cancel", "ml.jobs.update"} <= iam.ROLES["roles/ml.jobOwner"]
    assert "ml.versions.create" in iam.ROLES["roles/ml.modelOwner"]
    assert not any(p.endswith(".setIamPolicy") or p.startswith("mlengine.tokens.") for p in iam.ROLES["roles/editor"])
    assert all(p in iam.PERMISSIONS for role in iam.ROLES.values() for p in role)


def test_chain() -> None:
    assert iam.chain("server") == ("server",)
    assert iam.chain("projects/p") == ("server", "projects/p")
    assert iam.chain("projects/p/models/m/versions/v") == ("server", "projects/p", "projects/p/models/m")
    assert iam.chain("projects/p/jobs/j") == ("server", "projects/p", "projects/p/jobs/j")


def test_granted_unions_members_groups_and_expiring_bindings() -> None:
    me = iam.Identity("ann-laptop", "user:ann", ("analysts",))
    later = iam.validate_bindings([{"role": "roles/ml.jobOwner", "members": ["group:analysts"], "condition": {
        "expression": 'request.time < timestamp("2030-01-01T00:00:00Z")'}}])
    server = iam.validate_bindings([{"role": "roles/ml.viewer", "members": ["allAuthenticatedUsers"]}])
    perms, until = iam.granted(me.members, [server, later], now=0)
    assert "ml.jobs.cancel" in perms and "ml.jobs.list" in perms and until == later[0].expires
    perms, until = iam.granted(me.members, [server, later], now=2e9)
    assert "ml.jobs.cancel" not in perms and until == float("inf")
    assert iam.granted(frozenset({"user:bob"}), [later], now=0)[0] == frozenset()


@pytest.mark.parametrize(("member", "ok"), [
    ("user:ann", True), ("user:ann@example.com", True), ("group:a-b", True), ("allAuthenticatedUsers", True),
    ("serviceAccount:trainer@p.iam.mlengine", True), ("serviceAccount:job-My_Job@p.iam.mlengine", True),
    ("serviceAccount:trainer@example.com", False), ("allUsers", False), ("domain:example.com", False),
    ("ann", False), ("user:", False), (7, False),
])
def test_member_formats(member: object, ok: bool) -> None:
    if ok:
        assert iam.validate_member(member, "m") == member
    else:
        with pytest.raises(MLEngineError):
            iam.validate_member(member, "m")


def test_bindings_merge_and_edit() -> None:
    merged = iam.validate_bindings([{"role": "roles/ml.viewer", "members": ["user:a"]},
                                    {"role": "roles/ml.viewer", "members": ["user:b", "user:a"]}])
    assert merged == (iam.Binding("roles/ml.viewer", ("user:a", "user:b")),)
    added = iam.with_member(merged, "roles/ml.viewer", "user:c")
    assert added[0].members == ("user:a", "user:b", "user:c")
    assert iam.without_member(iam.without_member(added, "roles/ml.viewer", "user:a"), "roles/ml.viewer", "user:b") == (
        iam.Binding("roles/ml.viewer", ("user:c",)),)
    assert iam.render_policy((), 0) == {"version": 1, "etag": "AAAAAAAAAAA="}
