"""``mle jobs submit training``: build, stage and submit a trainer package, as gcloud does."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import click

from mlengine.cli import output
from mlengine.cli.core import (
    GcloudChoice,
    MleGroup,
    bool_value_option,
    client,
    fail,
    parse_accelerator,
    parse_key_values,
    parse_list,
    project_of,
    project_option,
)
from mlengine.cli.packages import job_exists, local_package, stage_all
from mlengine.cli.streaming import require_success
from mlengine.cli.streaming import stream_logs as follow_logs
from mlengine.core.names import JOB_ID_RE, validate_labels
from mlengine.training.cluster import SCALE_TIERS, UNSUPPORTED_TIERS, replica_counts

MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
TIERS = sorted({*SCALE_TIERS, *UNSUPPORTED_TIERS})


@click.group(cls=MleGroup)
def submit() -> None:
    """Submit jobs to the mlengine server.

    \b
    Examples:
      mle jobs submit training my_job --package-path trainer --module-name trainer.task
    """


def load_config(path: str) -> dict[str, Any]:
    """The Job body in a ``--config`` YAML or JSON file; a usage error naming the file and
    the problem when it cannot be read or parsed."""

    def bad(problem: str) -> click.BadParameter:
        return click.BadParameter(f"{path}: {problem}", param_hint="'--config'")

    try:
        text = Path(path).read_text()
    except OSError as err:
        raise bad(f"cannot read the file: {err.strerror or err}") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError as err:
            raise bad(f"not valid JSON: {err}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise bad(f"not valid YAML: {err}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise bad(f"must hold a Job (a mapping with trainingInput and labels), not a {type(data).__name__}")
    for key in ("trainingInput", "labels"):
        if key in data and not isinstance(data[key], dict):
            raise bad(f"{key} must be a mapping, not a {type(data[key]).__name__}")
    if "trainingInput" in data:
        packages = data["trainingInput"].get("packageUris")
        if packages is not None and (
            not isinstance(packages, list) or not all(isinstance(p, str) for p in packages)
        ):
            raise bad("trainingInput.packageUris must be a list of strings")
    return data


def build_training_input(config: dict[str, Any], flags: dict[str, Any], user_args: tuple[str, ...]) -> dict[str, Any]:
    """The config file's trainingInput with command-line values on top."""
    from mlengine.client.staging import absolute_uri

    ti = dict(config.get("trainingInput") or {})
    for key, value in flags.items():
        if value is not None:
            ti[key] = value
    if ti.get("jobDir"):
        ti["jobDir"] = absolute_uri(str(ti["jobDir"]))
    if user_args:
        ti["args"] = list(user_args)
    if not ti.get("pythonModule"):
        raise click.UsageError("Missing option '--module-name' (the Python module to run, e.g. trainer.task).")
    if not isinstance(ti["pythonModule"], str) or not MODULE_RE.match(ti["pythonModule"]):
        raise click.BadParameter(f"{ti['pythonModule']!r} is not a Python module name",
                                 param_hint="'--module-name'")
    replica_counts(ti)  # scale tier and replica counts, as the server checks them
    return ti


@submit.command("training")
@click.argument("job")
@click.argument("user_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- USER_ARGS...]")
@project_option
@click.option("--package-path", type=click.Path(exists=True, file_okay=False), default=None,
              help="Local directory of the trainer package (e.g. trainer/); built into an sdist "
                   "with its parent directory as context (setup.py there is used if present).")
@click.option("--module-name", default=None, help="Module to run, e.g. trainer.task.")
@click.option("--packages", default=None, metavar="PACKAGE,...",
              help="Extra packages: local .tar.gz/.whl files (staged) or URIs (passed unchanged).")
@click.option("--job-dir", default=None, metavar="URI",
              help="Output directory of the job; passed to the trainer as --job-dir.")
@click.option("--staging-bucket", default=None, metavar="URI",
              help="Where local packages are staged (default: JOB_DIR/packages, else uploaded "
                   "to the server).")
@click.option("--region", default=None, help="Region of the job, recorded as trainingInput.region.")
@click.option("--scale-tier", type=GcloudChoice(TIERS), default=None,
              help="Scale tier (gcloud's spellings: basic, BASIC, basic-gpu, BASIC_GPU...).")
@click.option("--master-machine-type", default=None, help="masterType (scale tier CUSTOM).")
@click.option("--worker-machine-type", default=None, help="workerType (scale tier CUSTOM).")
@click.option("--worker-count", type=click.IntRange(min=0), default=None, help="Number of workers.")
@click.option("--parameter-server-machine-type", default=None,
              help="parameterServerType (scale tier CUSTOM).")
@click.option("--parameter-server-count", type=click.IntRange(min=0), default=None,
              help="Number of parameter servers.")
@click.option("--master-accelerator", default=None, metavar="type=TYPE,count=N",
              help="GPUs of the master, e.g. type=nvidia-tesla-t4,count=1 (masterConfig.acceleratorConfig).")
@click.option("--worker-accelerator", default=None, metavar="type=TYPE,count=N", help="GPUs of each worker.")
@click.option("--parameter-server-accelerator", default=None, metavar="type=TYPE,count=N",
              help="GPUs of each parameter server.")
@bool_value_option("--use-chief-in-tf-config",
                   "Name the master 'chief' in TF_CONFIG (useChiefInTfConfig): bare flag or =true|false.")
@click.option("--master-image-uri", default=None, metavar="IMAGE",
              help="masterConfig.imageUri: one of Google's pre-built training images "
                   "(gcr.io/cloud-ml-public/training/...), run as that framework.")
@click.option("--worker-image-uri", default=None, metavar="IMAGE", help="workerConfig.imageUri.")
@click.option("--parameter-server-image-uri", default=None, metavar="IMAGE",
              help="parameterServerConfig.imageUri.")
@click.option("--runtime-version", default=None, help="runtimeVersion of the job.")
@click.option("--python-version", default=None, help="pythonVersion of the job, e.g. 3.11.")
@click.option("--service-account", default=None, metavar="EMAIL",
              help="Service account the job runs as (ID@PROJECT.iam.mlengine; you need "
                   "iam.serviceAccounts.actAs). Default: an account of the job's own, which may read "
                   "only this job.")
@click.option("--config", "config_file", default=None, metavar="FILE",
              help="YAML or JSON file with a Job body (trainingInput, labels); flags override it.")
@click.option("--labels", default=None, metavar="KEY=VALUE,...", help="Labels of the job.")
@click.option("--stream-logs", is_flag=True, help="Wait for the job, printing its logs; exit 1 "
              "unless it succeeds.")
@click.option("--async", "async_", is_flag=True, help="Return as soon as the job is submitted "
              "(the default without --stream-logs).")
def training(
    job: str, user_args: tuple[str, ...], project: str | None, package_path: str | None,
    module_name: str | None, packages: str | None, job_dir: str | None,
    staging_bucket: str | None, region: str | None, scale_tier: str | None,
    master_machine_type: str | None, worker_machine_type: str | None, worker_count: int | None,
    parameter_server_machine_type: str | None, parameter_server_count: int | None,
    master_accelerator: str | None, worker_accelerator: str | None,
    parameter_server_accelerator: str | None, use_chief_in_tf_config: bool | None,
    master_image_uri: str | None, worker_image_uri: str | None, parameter_server_image_uri: str | None,
    runtime_version: str | None, python_version: str | None, service_account: str | None, config_file: str | None,
    labels: str | None, stream_logs: bool, async_: bool,
) -> None:
    """Submit training job JOB: a Python package run as `python -m MODULE USER_ARGS`.

    Arguments after `--` are passed to the trainer; `--job-dir JOB_DIR` is appended when set.
    Local packages (--package-path, local files in --packages) are staged under
    --staging-bucket or --job-dir when the server can read that location, else uploaded to
    the server.

    \b
    Examples:
      mle jobs submit training my_job --package-path trainer --module-name trainer.task \\
          --job-dir /tmp/my_job -- --epochs 5
      mle jobs submit training big_job --config job.yaml --package-path trainer \\
          --module-name trainer.task --stream-logs
      mle jobs submit training dist_job --packages dist/trainer-0.1.tar.gz \\
          --module-name trainer.task --scale-tier custom --master-machine-type standard \\
          --worker-machine-type standard --worker-count 2 --labels team=ml
      mle jobs submit training tf_job --package-path trainer --module-name trainer.task \\
          --master-image-uri gcr.io/cloud-ml-public/training/tf-cpu.2-11:latest --region us-central1
    """
    if stream_logs and async_:
        raise click.UsageError("--stream-logs and --async cannot be used together.")
    if not JOB_ID_RE.match(job):
        raise click.BadParameter(
            f"{job!r} is not a valid job id: it must start with a letter and contain only "
            "letters, digits and underscores, at most 128 characters", param_hint="'JOB'")
    config = load_config(config_file) if config_file else {}
    ti = build_training_input(config, {
        "pythonModule": module_name, "region": region, "jobDir": job_dir,
        "scaleTier": scale_tier, "masterType": master_machine_type,
        "workerType": worker_machine_type,
        "workerCount": None if worker_count is None else str(worker_count),
        "parameterServerType": parameter_server_machine_type,
        "parameterServerCount": None if parameter_server_count is None else str(parameter_server_count),
        "runtimeVersion": runtime_version, "pythonVersion": python_version, "serviceAccount": service_account,
        "useChiefInTfConfig": use_chief_in_tf_config,
        **replica_configs(config.get("trainingInput") or {},
                          {"masterConfig": (master_accelerator, master_image_uri),
                           "workerConfig": (worker_accelerator, worker_image_uri),
                           "parameterServerConfig": (parameter_server_accelerator, parameter_server_image_uri)}),
    }, user_args)
    job_labels = validate_labels({**(config.get("labels") or {}), **parse_key_values(labels, "--labels")})
    if package_path or packages:
        entries = [(p, "'--packages'") for p in parse_list(packages)]
    else:
        entries = [(p, "'--config'") for p in ti.get("packageUris") or []]
    if not package_path and not entries:
        raise click.UsageError("Specify --package-path or --packages (or packageUris in --config).")
    resolved = [(uri, local_package(uri, source)) for uri, source in entries]
    if package_path and not (Path(package_path) / "__init__.py").is_file():
        raise click.BadParameter(f"{package_path} is not a Python package: it has no __init__.py",
                                 param_hint="'--package-path'")

    project_name = project_of(project)
    c = client()
    server_info = c.server_info()  # fail before building anything if the server is away
    if job_exists(c, project_name, job):
        raise fail(f"Job projects/{project_name}/jobs/{job} already exists.")
    with tempfile.TemporaryDirectory(prefix="mle-submit-") as tmp:
        files: list[tuple[str, Path | None]] = []
        if package_path:
            from mlengine.core.packaging import build_sdist

            with output.spinner("Building package..."):
                built = build_sdist(Path(package_path).absolute(), Path(tmp), log=None)
            files.append((built.name, built))
        files += resolved
        ti["packageUris"] = stage_all(c, project_name, job, files, staging_bucket,
                                      ti.get("jobDir"), server_info)
        body: dict[str, Any] = {"jobId": job, "trainingInput": ti}
        if job_labels:
            body["labels"] = job_labels
        created = c.create_job(project_name, body)
    output.status(f"Job [{job}] submitted successfully.")
    where = f" --project {project}" if project else ""
    if stream_logs:
        final = follow_logs(c, project_name, job)
        output.print_resource({k: final[k] for k in ("jobId", "state", "startTime", "endTime") if k in final})
        require_success(final)
        return
    output.status(
        "Your job is still active. You may view the status of your job with the command\n\n"
        f"  $ mle jobs describe {job}{where}\n\n"
        "or continue streaming the logs with the command\n\n"
        f"  $ mle jobs stream-logs {job}{where}"
    )
    output.print_resource({"jobId": created.get("jobId", job), "state": created.get("state")})


OPTION_PREFIX = {"masterConfig": "master", "workerConfig": "worker", "parameterServerConfig": "parameter-server"}


def replica_configs(
    config_ti: dict[str, Any], flags: dict[str, tuple[str | None, str | None]],
) -> dict[str, Any]:
    """``masterConfig``/``workerConfig``/``parameterServerConfig`` for the ``--*-accelerator
    type=...,count=...`` (gcloud's lower-case, dashed type names accepted) and ``--*-image-uri``
    flags, merged into the config file's."""
    out: dict[str, Any] = {}
    for field, (accelerator, image_uri) in flags.items():
        if not (accelerator or image_uri):
            continue
        config = dict(config_ti.get(field) or {})
        if accelerator:
            config["acceleratorConfig"] = parse_accelerator(accelerator, f"'--{OPTION_PREFIX[field]}-accelerator'")
        if image_uri:
            config["imageUri"] = image_uri
        out[field] = config
    return out


from mlengine.cli.submit_prediction import prediction  # noqa: E402 - `mle jobs submit prediction`

submit.add_command(prediction)
from mlengine.cli.submit_preprocessing import preprocessing  # noqa: E402 - `mle jobs submit preprocessing`

submit.add_command(preprocessing)
