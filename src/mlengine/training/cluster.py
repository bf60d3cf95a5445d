"""Cluster layout and the trainer environment, as AI Platform documents it.

One place builds what a replica sees (``TF_CONFIG``, ``CLUSTER_SPEC``, ``CLOUD_ML_*``, the
PyTorch rendezvous variables and its argument list) so that ``mle local train`` and a job
submitted to the server produce exactly the same environment.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from mlengine.errors import invalid
from mlengine.jobs.executors import ReplicaSpec

#: Replica counts of the predefined scale tiers (master, workers, parameter servers).
SCALE_TIERS: dict[str, tuple[int, int, int]] = {
    "BASIC": (1, 0, 0),
    "STANDARD_1": (1, 4, 3),
    "PREMIUM_1": (1, 19, 11),
    "BASIC_GPU": (1, 0, 0),
    "CUSTOM": (1, 0, 0),
}
UNSUPPORTED_TIERS = {"BASIC_TPU": "TPUs are not available on mlengine"}

#: Order in which task types appear; the first replica of the first type is the chief.
TASK_ORDER = ("master", "chief", "worker", "ps", "evaluator")


def _count(training_input: Mapping[str, Any], key: str) -> int:
    raw = training_input.get(key, 0)
    try:
        value = int(raw or 0)
    except (TypeError, ValueError):
        raise invalid(f"trainingInput.{key}", f"must be an integer, got {raw!r}") from None
    if value < 0:
        raise invalid(f"trainingInput.{key}", f"must not be negative, got {value}")
    return value


def replica_counts(training_input: Mapping[str, Any]) -> dict[str, int]:
    """How many replicas of each task type the job asks for (validated)."""
    tier = training_input.get("scaleTier") or "BASIC"
    if tier in UNSUPPORTED_TIERS:
        raise invalid("trainingInput.scaleTier", f"{tier} is not supported: {UNSUPPORTED_TIERS[tier]}")
    if tier not in SCALE_TIERS:
        valid = ", ".join(sorted(SCALE_TIERS))
        raise invalid("trainingInput.scaleTier", f"unknown scale tier {tier!r}; valid tiers: {valid}")
    chief_name = "chief" if training_input.get("useChiefInTfConfig") else "master"
    if tier == "CUSTOM":
        if not training_input.get("masterType"):
            raise invalid("trainingInput.masterType", "is required when scaleTier is CUSTOM")
        workers = _count(training_input, "workerCount")
        ps = _count(training_input, "parameterServerCount")
        evaluators = _count(training_input, "evaluatorCount")
        if workers and not training_input.get("workerType"):
            raise invalid("trainingInput.workerType", "is required when workerCount > 0")
        if ps and not training_input.get("parameterServerType"):
            raise invalid("trainingInput.parameterServerType", "is required when parameterServerCount > 0")
        if evaluators and not training_input.get("evaluatorType"):
            raise invalid("trainingInput.evaluatorType", "is required when evaluatorCount > 0")
    else:
        for key in ("workerCount", "parameterServerCount", "evaluatorCount"):
            if _count(training_input, key):
                raise invalid(f"trainingInput.{key}", f"can only be set when scaleTier is CUSTOM, not {tier}")
        _, workers, ps = SCALE_TIERS[tier]
        evaluators = 0
    counts = {chief_name: 1, "worker": workers, "ps": ps, "evaluator": evaluators}
    return {k: v for k, v in counts.items() if v}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def plan_replicas(
    counts: Mapping[str, int], host: str = "127.0.0.1", ports: Sequence[int] | None = None
) -> list[ReplicaSpec]:
    """Assign every replica an address. ``ports`` (consecutive, as gcloud's ``--start-port``)
    or free ports picked by the OS, so that several jobs at once never collide."""
    specs: list[ReplicaSpec] = []
    position = 0
    for task_type in TASK_ORDER:
        for index in range(counts.get(task_type, 0)):
            port = ports[position] if ports is not None else free_port(host)
            specs.append(ReplicaSpec(task_type, index, host, port))
            position += 1
    return specs


def cluster_dict(replicas: Sequence[ReplicaSpec]) -> dict[str, list[str]]:
    """The ``cluster`` of ``TF_CONFIG``; evaluators get a task but no cluster entry."""
    cluster: dict[str, list[str]] = {}
    for r in replicas:
        if r.task_type == "evaluator":
            continue
        cluster.setdefault(r.task_type, []).append(r.address)
    return cluster


def tf_config(
    replicas: Sequence[ReplicaSpec],
    me: ReplicaSpec,
    job: Mapping[str, Any],
    trial: str | None = None,
) -> dict[str, Any]:
    task: dict[str, Any] = {"type": me.task_type, "index": me.index}
    if trial is not None:
        task["trial"] = str(trial)
    return {
        "cluster": cluster_dict(replicas),
        "task": task,
        "job": dict(job),
        "environment": "cloud",
    }


def torch_rendezvous(replicas: Sequence[ReplicaSpec], me: ReplicaSpec) -> dict[str, str]:
    """``MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK`` for ``torch.distributed`` (gloo/nccl):
    the chief is rank 0, workers follow; parameter servers and evaluators are not ranks."""
    ranked = [r for r in replicas if r.task_type in ("master", "chief", "worker")]
    if me not in ranked or not ranked:
        return {}
    chief = ranked[0]
    return {
        "MASTER_ADDR": chief.host,
        "MASTER_PORT": str(chief.port),
        "WORLD_SIZE": str(len(ranked)),
        "RANK": str(ranked.index(me)),
        "LOCAL_RANK": "0",
    }


def replica_environment(
    *,
    job_id: str,
    replicas: Sequence[ReplicaSpec],
    me: ReplicaSpec,
    training_input: Mapping[str, Any],
    metric_file: str,
    trial: str | None = None,
) -> dict[str, str]:
    """Environment variables a replica gets on top of the inherited environment."""
    config = tf_config(replicas, me, training_input, trial)
    env = {
        "TF_CONFIG": json.dumps(config),
        "CLUSTER_SPEC": json.dumps(config),
        "CLOUD_ML_JOB_ID": job_id,
        "CLOUD_ML_HP_METRIC_FILE": metric_file,
        "CLOUD_ML_HP_METRIC_TAG": str(training_input.get("hyperparameters", {}).get(
            "hyperparameterMetricTag", "training/hptuning/metric")),
        "PYTHONUNBUFFERED": "1",
    }
    if trial is not None:
        env["CLOUD_ML_TRIAL_ID"] = str(trial)
    env.update(torch_rendezvous(replicas, me))
    return env


def trainer_argv(
    python: str,
    module: str,
    args: Sequence[str],
    job_dir: str | None,
    hyperparameters: Mapping[str, Any] | None = None,
) -> list[str]:
    """``python -m MODULE USER_ARGS [--name=value ...] [--job-dir DIR]`` as AI Platform builds it."""
    argv = [python, "-m", module, *args]
    for name, value in (hyperparameters or {}).items():
        argv.append(f"--{name}={value}")
    if job_dir:
        argv += ["--job-dir", job_dir]
    return argv
