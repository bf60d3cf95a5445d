"""``mle tensorboard JOB | --logdir URI``: TensorBoard as a service of the server, over a job's
``jobDir`` or any log directory, reached through the server at a stable URL."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import quote

import click

from mlengine.cli import output
from mlengine.cli.core import MleCommand, client, fail, project_of, project_option, settings
from mlengine.errors import Code, MLEngineError
from mlengine.services.kinds.tensorboard import KIND, job_logdir, job_service_name, logdir_service_name

WAIT_SECONDS = 90.0


def _services(project: str) -> str:
    return f"/v1/projects/{quote(project, safe='')}/services"


def _ensure(c: Any, project: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The service ``name``: created if missing, started if stopped or failed."""
    path = f"{_services(project)}/{quote(name, safe='')}"
    try:
        service: dict[str, Any] = c.request("GET", path)
    except MLEngineError as err:
        if err.code is not Code.NOT_FOUND:
            raise
        created: dict[str, Any] = c.request("POST", _services(project), json={"name": name, "kind": KIND, "spec": spec})
        return created
    if service.get("kind") != KIND:
        raise fail(f"Service {name} exists and is a {service.get('kind')}, not a tensorboard.")
    if service.get("state") in ("STOPPED", "FAILED"):
        service = c.request("POST", path + ":start")
    return service


def _wait_running(c: Any, project: str, service: dict[str, Any]) -> dict[str, Any]:
    path = f"{_services(project)}/{quote(service['name'].rsplit('/', 1)[-1], safe='')}"
    deadline = time.monotonic() + WAIT_SECONDS
    with output.spinner("Starting TensorBoard"):
        while service.get("state") == "STARTING" and time.monotonic() < deadline:
            time.sleep(0.5)
            service = c.request("GET", path)
    if service.get("state") == "FAILED":
        raise fail(f"TensorBoard failed to start: {service.get('errorMessage', '')}")
    return service


@click.command(cls=MleCommand)
@click.argument("job", required=False)
@click.option("--logdir", default=None, metavar="URI",
              help="Show this log directory (a path on the server's machine or any fsspec URI: gs://, s3://...) "
                   "instead of a job's jobDir.")
@project_option
@click.option("--open", "open_", is_flag=True, help="Open the URL in a browser.")
@click.option("--no-token", is_flag=True, help="Print the URL without your access token (sign in otherwise).")
@click.option("--no-wait", is_flag=True, help="Print the URL at once, without waiting for TensorBoard to run.")
def tensorboard(job: str | None, logdir: str | None, project: str | None, open_: bool, no_token: bool,
                no_wait: bool) -> None:
    """Start TensorBoard over JOB's output (its jobDir), or over --logdir, and print its URL.

    TensorBoard runs on the server as a managed service (`tb-JOB`), reached through the server
    with your token; it stops by itself after 30 minutes without use and starts again when the
    URL is opened.

    \b
    Examples:
      mle tensorboard census_train_1 --open
      mle tensorboard --logdir gs://my-bucket/census/logs
    """
    if (job is None) == (logdir is None):
        raise click.UsageError("give a JOB or --logdir URI (one of them)")
    c = client()
    where = project_of(project)
    if job is not None:
        described = c.request("GET", f"/v1/projects/{quote(where, safe='')}/jobs/{quote(job, safe='')}")
        job_input = described.get("trainingInput") or {}
        found = job_logdir(job_input)
        if found is None:
            raise fail(f"Job {job} has no jobDir for TensorBoard to read; give its log directory with --logdir.")
        name, spec = job_service_name(job), {"logdir": found, "job": f"projects/{where}/jobs/{job}"}
    elif logdir is not None:
        if "://" not in logdir and not os.path.isabs(logdir):
            logdir = os.path.abspath(logdir)
        name, spec = logdir_service_name(logdir), {"logdir": logdir}
    service = _ensure(c, where, name, spec)
    if not no_wait:
        service = _wait_running(c, where, service)
    url = c.url + service["proxyUrl"]
    output.status(f"TensorBoard [{name}] over {spec['logdir']}: {service.get('state')}")
    if not no_token:
        from mlengine.client.connection import resolve_token

        url += "?access_token=" + quote(resolve_token(settings()), safe="")
    if open_:
        import webbrowser

        webbrowser.open(url)
    click.echo(url)
