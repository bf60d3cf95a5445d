"""Models and versions behind the REST API (``projects.models.*``, ``projects.models.versions.*``).

The service validates and stores; it never loads a model and never waits for one. Long work
(copying files, installing packages, loading the model in a replica, stopping replicas) is
recorded as a CREATING/DELETING version plus a pending operation
(:mod:`mlengine.jobs.operations`), which the serving manager (:mod:`mlengine.prediction.manager`)
carries out. After every change the service tells online prediction what changed through its
:class:`~mlengine.prediction.events.ServingEvents`. All methods are blocking (store access)
and thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlengine.config import Settings
from mlengine.core import iam
from mlengine.errors import failed_precondition, invalid
from mlengine.jobs.lifecycle import VersionState
from mlengine.jobs.operations import OperationRunner, render_operation
from mlengine.monitoring.spec import FIELDS as MONITORING_FIELDS
from mlengine.monitoring.spec import validate as validate_monitoring
from mlengine.prediction import specs
from mlengine.prediction.events import NoServing, ServingEvents
from mlengine.store.filters import compile_filter
from mlengine.store.iam import PolicyStore
from mlengine.store.serving import ModelRow, ServingRepository, VersionRow
from mlengine.store.serving import etag as etag_of

Counts = Callable[[str, str, str], "Mapping[str, int] | None"]
READY, DELETING, FAILED = VersionState.READY.value, VersionState.DELETING.value, VersionState.FAILED.value
MODEL_OWNER = "roles/ml.modelOwner"
VERSION_TYPE = "type.googleapis.com/google.cloud.ml.v1.Version"
MODEL_TYPE = "type.googleapis.com/google.cloud.ml.v1.Model"
VERSION_MASKS = ("description", "labels", "autoScaling", "autoScaling.minNodes", "autoScaling.maxNodes",
                 "manualScaling", "manualScaling.nodes", *MONITORING_FIELDS)


def _mask(update_mask: str | None, allowed: tuple[str, ...]) -> list[str]:
    mask = [m.strip() for m in (update_mask or "").split(",") if m.strip()]
    if not mask:
        raise invalid("updateMask", f"is required; one or more of: {', '.join(allowed)}")
    for path in mask:
        top = path.split(".", 1)[0]
        if top in specs.UNIMPLEMENTED_VERSION_FIELDS:
            raise specs.unimplemented(top, specs.UNIMPLEMENTED_VERSION_FIELDS[top])
        if top in specs.UNIMPLEMENTED_MODEL_FLAGS:
            raise specs.unimplemented(top, specs.UNIMPLEMENTED_MODEL_FLAGS[top])
        if path not in allowed:
            raise invalid("updateMask", f"{path!r} cannot be updated; one or more of: {', '.join(allowed)}")
    return mask


def _traffic_uses(spec: Mapping[str, Any], version: str) -> str | None:
    """Which of the model's traffic fields still sends ``version`` calls (None: none)."""
    if (spec.get("trafficSplit") or {}).get(version):
        return "trafficSplit"
    if version in (spec.get("shadowVersions") or ()):
        return "shadowVersions"
    canary = spec.get("canary") or {}
    if version in (canary.get("stable"), canary.get("canary")):
        return "canary"
    return None


def _check_etag(body: Mapping[str, Any], row_id: int, version: int, what: str) -> None:
    given = body.get("etag")
    if given and given != etag_of(row_id, version):
        from mlengine.errors import Code, MLEngineError

        raise MLEngineError(Code.ABORTED, f"The etag {given!r} does not match the {what}'s current etag: it was "
                            "changed concurrently; read it again and retry")


class ModelService:
    def __init__(self, settings: Settings, repo: ServingRepository, operations: OperationRunner,
                 events: ServingEvents | None = None, counts: Counts | None = None,
                 policies: PolicyStore | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.operations = operations
        self.events: ServingEvents = events or NoServing()
        self.counts = counts
        self.policies = policies

    # Rendering -------------------------------------------------------------------------------
    def _version_json(self, model: ModelRow, row: VersionRow) -> dict[str, Any]:
        replicas = self.counts(model.project, model.name, row.name) if self.counts and row.state == READY else None
        return specs.render_version(model, row, replicas)

    def _model_json(self, row: ModelRow) -> dict[str, Any]:
        default = None
        if row.default_version:
            default = next((v for v in self.repo.versions_of(row.id) if v.name == row.default_version), None)
        return specs.render_model(row, default)

    def _operation(self, project: str, kind: str, model: str, version: str | None, meta: dict[str, Any],
                   done: bool = False, response: dict[str, Any] | None = None) -> dict[str, Any]:
        """A new operation on the model (or one of its versions), rendered."""
        target = specs.model_name(project, model) + (f"/versions/{version}" if version else "")
        prefix = f"{kind.split('_')[0].lower()}_{model}" + (f"_{version}" if version else "")
        row = self.operations.create(project, kind, target, {"modelName": specs.model_name(project, model), **meta},
                                     prefix=prefix, done=done, response=response)
        return render_operation(row)

    # Models ----------------------------------------------------------------------------------
    def create_model(self, project: str, body: Any, creator: str | None = None) -> dict[str, Any]:
        """Create a model; ``creator`` (an IAM member) gets roles/ml.modelOwner on it."""
        fields = specs.validate_model(body)
        row = self.repo.create_model(project, fields["name"], description=fields["description"],
                                     labels=fields["labels"], spec=fields["spec"])
        if self.policies is not None:
            owners = iam.with_member((), MODEL_OWNER, creator) if creator else ()
            self.policies.set(iam.model_resource(project, row.name), owners)
        self.events.model_changed(project, row.name)
        return self._model_json(row)

    def get_model(self, project: str, name: str) -> dict[str, Any]:
        return self._model_json(self.repo.get_model(project, name))

    def list_models(self, project: str, filter_text: str | None, page_size: int | None,
                    page_token: str | None) -> dict[str, Any]:
        predicate = compile_filter(filter_text)
        rows, token = self.repo.list_models(project, lambda r: predicate(specs.render_model(r, None)), page_size,
                                            page_token)
        result: dict[str, Any] = {"models": [self._model_json(r) for r in rows]}
        if token:
            result["nextPageToken"] = token
        return result

    def patch_model(self, project: str, name: str, body: Any, update_mask: str | None) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise invalid("model", "the request body must be a JSON object (a Model)")
        mask = _mask(update_mask, ("description", "labels", *specs.TRAFFIC_FIELDS))
        fields = specs.validate_model({**body, "name": name} if "name" not in body else body, patching=True)
        row = self.repo.get_model(project, name)
        _check_etag(body, row.id, row.version, "model")
        traffic: dict[str, Any] = {}
        if any(m in specs.TRAFFIC_FIELDS for m in mask):
            from mlengine.prediction.policies import validate_traffic

            live = {v.name for v in self.repo.versions_of(row.id) if v.state not in (FAILED, DELETING)}
            traffic = validate_traffic(body, mask, live, row.spec or {})

        def change(model: ModelRow) -> None:
            if "description" in mask:
                model.description = fields["description"]
            if "labels" in mask:
                model.labels = fields["labels"]
            if traffic:
                spec = dict(model.spec or {})
                for key, value in traffic.items():
                    if value is None:
                        spec.pop(key, None)
                    else:
                        spec[key] = value
                model.spec = spec

        updated = self.repo.update_model(row.id, change)
        if traffic:
            self.events.model_changed(project, name)
        response = {"@type": MODEL_TYPE, **self._model_json(updated)}
        return self._operation(project, "UPDATE_MODEL", name, None, {}, True, response)

    def delete_model(self, project: str, name: str) -> dict[str, Any]:
        row = self.repo.get_model(project, name)

        def check(_model: ModelRow, versions: list[VersionRow]) -> None:
            if versions:
                names = ", ".join(v.name for v in versions[:5])
                raise failed_precondition(f"Model projects/{project}/models/{name} still has {len(versions)} "
                                          f"version(s) ({names}); delete them before the model")

        self.repo.delete_model(row.id, check)
        if self.policies is not None:  # a new model of the same name starts with no bindings
            self.policies.delete(iam.model_resource(project, name))
        self.events.model_changed(project, name)
        return self._operation(project, "DELETE_MODEL", name, None, {}, True)

    # Versions --------------------------------------------------------------------------------
    def create_version(self, project: str, model_name: str, body: Any) -> dict[str, Any]:
        from mlengine.prediction import deploy
        from mlengine.storage import uris

        spec = specs.validate_version(body, self.settings)
        model = self.repo.get_model(project, model_name)
        internal: dict[str, Any] = {}
        if uris.is_local(spec["deploymentUri"]):  # refuse a bad directory right away
            source = deploy.inspect_source(spec["deploymentUri"], self.settings.model_max_files,
                                           self.settings.model_max_bytes)
            internal["framework"] = deploy.resolve_framework(source, spec.get("framework"),
                                                             spec.get("predictionClass"))
        row, _ = self.repo.create_version(model, spec["name"], spec=spec, internal=internal)
        model = self.repo.get_model(project, model_name)
        meta = {"version": self._version_json(model, row), "labels": spec.get("labels") or {}}
        operation = self._operation(project, "CREATE_VERSION", model_name, row.name, meta)
        self.events.version_changed(project, model_name, row.name)
        return operation

    def get_version(self, project: str, model_name: str, name: str) -> dict[str, Any]:
        model = self.repo.get_model(project, model_name)
        return self._version_json(model, self.repo.get_version(model, name))

    def list_versions(self, project: str, model_name: str, filter_text: str | None, page_size: int | None,
                      page_token: str | None) -> dict[str, Any]:
        model = self.repo.get_model(project, model_name)
        predicate = compile_filter(filter_text)
        rows, token = self.repo.list_versions(model, lambda r: predicate(specs.render_version(model, r)),
                                              page_size, page_token)
        result: dict[str, Any] = {"versions": [self._version_json(model, r) for r in rows]}
        if token:
            result["nextPageToken"] = token
        return result

    def patch_version(self, project: str, model_name: str, name: str, body: Any,
                      update_mask: str | None) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise invalid("version", "the request body must be a JSON object (a Version)")
        mask = _mask(update_mask, VERSION_MASKS)
        model = self.repo.get_model(project, model_name)
        row = self.repo.get_version(model, name)
        _check_etag(body, row.id, row.version, "version")
        from mlengine.core.names import validate_labels

        def change(version: VersionRow) -> None:
            spec = dict(version.spec)
            if "description" in mask:
                spec["description"] = str(body.get("description") or "")
            if "labels" in mask:
                spec["labels"] = validate_labels(body.get("labels"))
            scaling_paths = [m for m in mask if m.startswith(("autoScaling", "manualScaling"))]
            if scaling_paths:
                merged: dict[str, Any] = {
                    k: dict(spec.get(k) or {}) for k in ("autoScaling", "manualScaling") if k in spec
                }
                for path in scaling_paths:
                    top, _, leaf = path.partition(".")
                    given = body.get(top)
                    if not isinstance(given, Mapping):
                        raise invalid(top, "must be an object")
                    if leaf:
                        if leaf not in given:
                            raise invalid(path, "is in updateMask but not in the body")
                        merged.setdefault(top, {})[leaf] = given[leaf]
                    else:
                        merged[top] = dict(given)
                    merged.pop("manualScaling" if top == "autoScaling" else "autoScaling", None)
                normalized = specs.validate_scaling(merged)
                spec.pop("autoScaling", None)
                spec.pop("manualScaling", None)
                spec.update(normalized)
            for field in set(mask) & set(MONITORING_FIELDS):  # set, replaced or (empty) removed
                spec.pop(field, None)
                spec.update(validate_monitoring({field: body.get(field)}, self.settings))
            version.spec = spec

        updated = self.repo.update_version(row.id, change)
        model = self.repo.get_model(project, model_name)
        response = {"@type": VERSION_TYPE, **self._version_json(model, updated)}
        meta = {"version": self._version_json(model, updated)}
        operation = self._operation(project, "UPDATE_VERSION", model_name, name, meta, True, response)
        self.events.version_changed(project, model_name, name)
        return operation

    def delete_version(self, project: str, model_name: str, name: str) -> dict[str, Any]:
        model = self.repo.get_model(project, model_name)
        row = self.repo.get_version(model, name)
        if row.state == DELETING:
            raise failed_precondition(f"Version {name} is already being deleted")
        serving = _traffic_uses(model.spec or {}, name)
        if serving:
            raise failed_precondition(f"Cannot delete version {name}: the model's {serving} names it; change "
                                      "the model's traffic first (models.patch)")
        others = [v for v in self.repo.versions_of(model.id) if v.name != name]
        if model.default_version == name and others:
            raise failed_precondition(
                f"Cannot delete version {name}: it is the default version of model {model_name}, which has other "
                f"versions ({', '.join(v.name for v in others[:5])}). Make another version the default first "
                "(setDefault)")

        def change(version: VersionRow) -> None:
            version.state = DELETING

        updated = self.repo.update_version(row.id, change)
        meta = {"version": self._version_json(model, updated)}
        operation = self._operation(project, "DELETE_VERSION", model_name, name, meta)
        self.events.version_changed(project, model_name, name)
        return operation

    def set_default(self, project: str, model_name: str, name: str) -> dict[str, Any]:
        model = self.repo.get_model(project, model_name)
        row = self.repo.get_version(model, name)
        if row.state in (FAILED, DELETING):
            raise failed_precondition(f"Version {name} is {row.state} and cannot become the default version")

        def change(m: ModelRow) -> None:
            m.default_version = name

        model = self.repo.update_model(model.id, change)
        self.events.model_changed(project, model_name)
        return self._version_json(model, row)
