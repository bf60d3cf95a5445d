"""Jobs: the list (filtered and paged on the server), a job (inputs, outputs, timeline, live
logs, cancel), a tuning job's trials (table and charts), and "deploy as a version"."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mlengine.console import logs as console_logs
from mlengine.console.exports import find_export
from mlengine.console.routes import can
from mlengine.console.session import main_state, mint_proxy_token, read_form
from mlengine.core import iam
from mlengine.errors import Code, MLEngineError, invalid
from mlengine.jobs.lifecycle import ACTIVE
from mlengine.jobs.paths import JobPaths

router = APIRouter()
STATES = ("QUEUED", "PREPARING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED")
PAGE_SIZES = (25, 50, 100, 200)
TRIALS_PAGE = 100
_LABEL = re.compile(r"^([a-z][a-z0-9_-]{0,62})(?:=([a-z0-9_-]{0,63}))?$")
_TEXT = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def script_json(value: Any) -> str:
    """JSON to embed in ``<script type="application/json">``: user data (a categorical value, a
    feature name) cannot close the element, whatever it holds."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(request: Request, template: str, **context: Any) -> Response:
    context.setdefault("viewer", getattr(request.state, "viewer", None))
    context.setdefault("base", request.scope.get("root_path", ""))
    return request.app.state.templates.TemplateResponse(request, template, context)


def jobs_filter(state: str, label: str, text: str) -> str:
    """The API filter of the list's form fields (each checked: a 400 names the field)."""
    terms = []
    if state:
        if state not in STATES:
            raise invalid("state", f"must be one of {', '.join(STATES)}")
        terms.append(f"state={state}")
    if label:
        m = _LABEL.match(label)
        if not m:
            raise invalid("label", "must be KEY or KEY=VALUE (lowercase letters, digits, '_' or '-')")
        terms.append(f'labels.{m.group(1)}="{m.group(2)}"' if m.group(2) is not None else f"labels.{m.group(1)}:*")
    if text:
        if not _TEXT.match(text):
            raise invalid("q", "searches job ids: letters, digits, '_', '-' or '.'")
        terms.append(f"jobId:{text}*")  # a prefix: pushed down to SQL (a substring would scan every job)
    return " AND ".join(terms)


def _page_size(value: str | None) -> int:
    if not value:
        return 50
    if not value.isdigit() or int(value) not in PAGE_SIZES:
        raise invalid("pageSize", f"must be one of {', '.join(map(str, PAGE_SIZES))}")
    return int(value)


@router.get("/projects/{project}/jobs")
async def jobs_list(project: str, request: Request) -> Response:
    q = request.query_params
    state, label, text = q.get("state", ""), q.get("label", "").strip(), q.get("q", "").strip()
    size = _page_size(q.get("pageSize"))
    token = q.get("pageToken") or None
    result = await run_in_threadpool(main_state(request).jobs.list, project, jobs_filter(state, label, text) or None,
                                     size, token)
    keep = {k: v for k, v in (("state", state), ("label", label), ("q", text), ("pageSize", str(size))) if v}
    next_url = ("?" + urlencode({**keep, "pageToken": result["nextPageToken"]})) if result.get("nextPageToken") else ""
    return render(request, "jobs.html", project=project, jobs=result.get("jobs", []), states=STATES,
                  state=state, label=label, q=text, page_size=size, page_sizes=PAGE_SIZES, next_url=next_url,
                  first_url="?" + urlencode(keep) if token else "")


def _timeline(job: dict[str, Any]) -> list[tuple[str, str]]:
    steps = [("Created", job.get("createTime", ""))]
    if job.get("startTime"):
        steps.append(("Started", job["startTime"]))
    if job.get("endTime"):
        steps.append((f"Ended ({job.get('state')})", job["endTime"]))
    return steps


def _sections(job: dict[str, Any]) -> list[tuple[str, str]]:
    """The job's inputs and outputs as pretty JSON (a tuning job's trials are on their page)."""
    out = []
    for key, value in job.items():
        if key.endswith(("Input", "Output")) and isinstance(value, dict):
            shown = {k: v for k, v in value.items() if k != "trials"}
            if "trials" in value:
                shown["trials"] = f"{len(value['trials'])} trials (see the trials page)"
            out.append((key, json.dumps(shown, indent=2, sort_keys=True)))
    return out


@router.get("/projects/{project}/jobs/{job}")
async def job_page(project: str, job: str, request: Request) -> Response:
    state = main_state(request)
    data = await run_in_threadpool(state.jobs.get, project, job)
    resource = iam.job_resource(project, job)
    paths = JobPaths.of(state.settings, project, job)
    tuning = bool((data.get("trainingInput") or {}).get("hyperparameters"))
    export = None
    if data.get("state") == "SUCCEEDED" and not tuning:
        export = await run_in_threadpool(find_export, data)
    return render(request, "job.html", project=project, job=data, job_id=job, sections=_sections(data),
                  timeline=_timeline(data), active=data.get("state") in ACTIVE, tuning=tuning,
                  can_cancel=can(request, "ml.jobs.cancel", resource), export=export,
                  can_tensorboard=bool((data.get("trainingInput") or {}).get("jobDir"))
                  and can(request, "mlengine.services.create", iam.project_resource(project))
                  and can(request, "mlengine.services.use", iam.project_resource(project)),
                  can_deploy=can(request, "ml.versions.create", iam.project_resource(project))
                  or can(request, "ml.models.create", iam.project_resource(project)),
                  tasks=await run_in_threadpool(console_logs.tasks, paths),
                  severities=console_logs.SEVERITIES[1:])


@router.get("/projects/{project}/jobs/{job}/logs.json")
async def job_logs(project: str, job: str, request: Request) -> Response:
    state = main_state(request)
    q = request.query_params
    severity = q.get("severity", "")
    if severity and severity.upper() not in console_logs.RANK:
        raise invalid("severity", f"must be one of {', '.join(console_logs.SEVERITIES)}")
    row = await run_in_threadpool(state.jobs.repo.get, project, job)
    paths = JobPaths.of(state.settings, project, job)
    result = await run_in_threadpool(console_logs.read, paths, q.get("cursor") or None, q.get("task") or None,
                                     severity)
    result["active"] = row.state in ACTIVE
    result["state"] = row.state
    return JSONResponse(result, headers={"cache-control": "no-store"})


@router.post("/projects/{project}/jobs/{job}/cancel")
async def cancel(project: str, job: str, request: Request) -> Response:
    await run_in_threadpool(main_state(request).jobs.cancel, project, job)
    return RedirectResponse(f"{request.scope.get('root_path', '')}/projects/{quote(project)}/jobs/{quote(job)}",
                            status_code=303)


@router.post("/projects/{project}/jobs/{job}/tensorboard")
async def tensorboard(project: str, job: str, request: Request) -> Response:
    """TensorBoard over the job's output (its jobDir) as a managed service, opened through the
    server's proxy with a token of this session (the proxy authenticates by token)."""
    from mlengine.services.kinds.tensorboard import ensure_job_tensorboard, job_service_name

    state = main_state(request)
    viewer = request.state.viewer
    for permission in ("mlengine.services.create", "mlengine.services.start"):
        state.iam.require(viewer.identity, permission, iam.project_resource(project))
    if getattr(state, "services", None) is None:
        raise MLEngineError(Code.UNAVAILABLE, "Services are not enabled on this server")
    data = await run_in_threadpool(state.jobs.get, project, job)
    await run_in_threadpool(ensure_job_tensorboard, state.services, project, job, data.get("trainingInput"))
    token = await run_in_threadpool(mint_proxy_token, request, viewer)
    url = f"/v1/projects/{quote(project)}/services/{quote(job_service_name(job))}/proxy/"
    return RedirectResponse(f"{url}?{urlencode({'access_token': token})}", status_code=303,
                            headers={"referrer-policy": "no-referrer", "cache-control": "no-store"})


def _trial_rows(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for t in trials:
        metric = t.get("finalMetric") or {}
        value = metric.get("objectiveValue")
        rows.append({"id": str(t.get("trialId", "")), "state": t.get("state", ""),
                     "objective": float(value) if isinstance(value, (int, float)) else None,
                     "step": metric.get("trainingStep", ""), "hp": t.get("hyperparameters") or {}})
    return rows


@router.get("/projects/{project}/jobs/{job}/trials")
async def trials_page(project: str, job: str, request: Request) -> Response:
    data = await run_in_threadpool(main_state(request).jobs.get, project, job)
    spec = (data.get("trainingInput") or {}).get("hyperparameters")
    if not spec:
        raise MLEngineError(Code.FAILED_PRECONDITION, f"Job {job} is not a hyperparameter tuning job")
    goal = str(spec.get("goal", "MAXIMIZE")).upper()
    rows = _trial_rows((data.get("trainingOutput") or {}).get("trials") or [])
    q = request.query_params
    sort, order = q.get("sort", "objective"), q.get("order", "best")
    if sort not in ("objective", "trial") or order not in ("best", "worst", "asc", "desc"):
        raise invalid("sort", "sort is objective or trial; order is best, worst, asc or desc")
    page_arg = q.get("page", "1")
    if not page_arg.isdigit() or int(page_arg) < 1:
        raise invalid("page", "must be a positive number")
    page = int(page_arg)
    if sort == "objective":
        best_first = (goal == "MAXIMIZE") == (order in ("best", "desc"))
        scored = sorted((r for r in rows if r["objective"] is not None), key=lambda r: r["objective"],
                        reverse=best_first)
        ordered = scored + [r for r in rows if r["objective"] is None]
    else:
        ordered = sorted(rows, key=lambda r: int(r["id"]) if r["id"].isdigit() else 0,
                         reverse=order in ("desc", "worst"))
    shown = ordered[(page - 1) * TRIALS_PAGE: page * TRIALS_PAGE]
    names = sorted({k for r in rows for k in r["hp"]})
    chart = {"goal": goal, "metric": spec.get("hyperparameterMetricTag") or "objective", "params": names,
             "trials": [[int(r["id"]) if r["id"].isdigit() else 0, r["objective"], [r["hp"].get(n) for n in names]]
                        for r in rows if r["objective"] is not None]}
    pages = max(1, -(-len(rows) // TRIALS_PAGE))
    return render(request, "trials.html", project=project, job=data, job_id=job, rows=shown, params=names,
                  chart_json=script_json(chart), sort=sort, order=order, page=page, pages=pages, total=len(rows))


@router.get("/projects/{project}/jobs/{job}/deploy")
async def deploy_form(project: str, job: str, request: Request) -> Response:
    data = await run_in_threadpool(main_state(request).jobs.get, project, job)
    export = await run_in_threadpool(find_export, data)
    model = re.sub(r"[^A-Za-z0-9_]", "_", job)[:128]
    return render(request, "deploy.html", project=project, job_id=job, export=export, model=model, version="v1",
                  frameworks=("TENSORFLOW", "SCIKIT_LEARN", "XGBOOST", "PYTORCH"), error="")


@router.post("/projects/{project}/jobs/{job}/deploy")
async def deploy(project: str, job: str, request: Request) -> Response:
    """Create the model if it does not exist (needs ml.models.create on the project), then the
    version (needs ml.versions.create on the model); goes to the version's page."""
    state = main_state(request)
    form = await read_form(request)
    model, version, uri, framework = (str(form.get(k) or "").strip()
                                      for k in ("model", "version", "deploymentUri", "framework"))
    for field, value in (("model", model), ("version", version), ("deploymentUri", uri)):
        if not value:
            raise invalid(field, "is required")
    viewer = request.state.viewer
    models = state.models
    try:
        await run_in_threadpool(models.get_model, project, model)
    except MLEngineError as err:
        if err.code is not Code.NOT_FOUND:
            raise
        state.iam.require(viewer.identity, "ml.models.create", iam.project_resource(project))
        await run_in_threadpool(models.create_model, project, {"name": model}, viewer.identity.member)
    state.iam.require(viewer.identity, "ml.versions.create", iam.model_resource(project, model))
    body: dict[str, Any] = {"name": version, "deploymentUri": uri,
                            "description": f"Deployed from job {job} in the console"}
    if framework:
        body["framework"] = framework
    await run_in_threadpool(models.create_version, project, model, body)
    return RedirectResponse(f"{request.scope.get('root_path', '')}/projects/{quote(project)}/models/"
                            f"{quote(model)}/versions/{quote(version)}", status_code=303)
