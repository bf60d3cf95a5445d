"""How much of an executor a job holds, and whether it fits now, later or never.

Contract
--------
- A replica *asks* for its machine type's resources (:mod:`mlengine.training.machines`). What
  it *holds* on an executor depends on the resource mode (``MLE_RESOURCE_MODE``):

  ``machine``  its machine type's CPUs, memory and GPUs: right for a cluster whose nodes are
               sized like the machine types (a Ray cluster you give with ``--ray-address``).
  ``process``  at most 1 CPU, no memory, its GPUs: every replica is one process sharing one
               machine, which is how a 2-core laptop runs a chief, two workers and a parameter
               server (4 CPUs held; ``MLE_CAPACITY_SLOTS`` raises the local capacity).
  ``auto``     ``process`` for the local executor and for a Ray that mlengine starts on this
               machine; ``machine`` for a Ray cluster given by address.

  GPUs are never oversubscribed, whatever the mode.
- :func:`assess` compares a job's total against the executor's capacity (all nodes) and each
  replica against the largest node: a job that can never fit gets a message saying why (the
  scheduler fails it at once); one that fits the capacity but not what other jobs leave free
  waits in QUEUED (first come, first served).
- Jobs record what they hold in ``internal["demand"]`` (a :class:`Resources` as JSON); jobs
  stored by older versions hold ``internal["slots"]`` CPUs.
- :func:`place` asks the executor to reserve every replica of a job at once and
  :func:`release` frees that reservation (never raising: it is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlengine.errors import invalid
from mlengine.training import cluster
from mlengine.training.machines import MachineType, Resources, machine_table, replica_resources

if TYPE_CHECKING:
    from mlengine.config import Settings
    from mlengine.training.executors._base import Executor, Placement

MODES = ("auto", "machine", "process")
log = logging.getLogger("mlengine.scheduler")


@dataclass(frozen=True)
class Capacity:
    """What an executor can hand out: in all, and per node (a replica never spans nodes)."""

    total: Resources
    nodes: list[Resources] = field(default_factory=list)
    #: Words for messages, e.g. "the local executor (MLE_CAPACITY_SLOTS=4)".
    label: str = "the executor"


@dataclass(frozen=True)
class Assessment:
    demand: Resources
    replicas: list[tuple[str, Resources]]
    never: str | None = None

    def fits_with(self, used: Resources, capacity: Capacity) -> bool:
        return (used + self.demand).fits_in(capacity.total)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise invalid("MLE_RESOURCE_MODE", f"must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def held(asked: Resources, mode: str) -> Resources:
    """What a replica asking for ``asked`` holds in ``mode`` (``machine`` or ``process``)."""
    if mode == "process":
        return Resources(min(asked.cpus, 1.0), 0.0, asked.gpus)
    return asked


def replica_demands(training_input: Mapping[str, Any], mode: str,
                    table: Mapping[str, MachineType]) -> list[tuple[str, Resources]]:
    """(task name, resources held) of every replica, in launch order."""
    counts = cluster.replica_counts(training_input)
    per_type = replica_resources(training_input, counts, table)
    out = []
    for task_type in cluster.TASK_ORDER:
        for index in range(counts.get(task_type, 0)):
            out.append((f"{task_type}-replica-{index}", held(per_type[task_type], mode)))
    return out


def total(items: Iterable[Resources]) -> Resources:
    result = Resources()
    for r in items:
        result = result + r
    return result


def assess(training_input: Mapping[str, Any], mode: str, capacity: Capacity,
           table: Mapping[str, MachineType] | None = None) -> Assessment:
    """The job's demand and, if it can never fit ``capacity``, why."""
    replicas = replica_demands(training_input, mode, table if table is not None else machine_table())
    demand = total(r for _, r in replicas)
    never = None
    short = demand.shortfall(capacity.total)
    if short:
        never = (f"The job can never run here: its {len(replicas)} replica(s) need "
                 f"{', '.join(short)} in all from {capacity.label}. Ask for fewer or smaller "
                 "replicas (machine types), or give the executor more capacity.")
    elif capacity.nodes:
        for name, need in replicas:
            if not any(need.fits_in(node) for node in capacity.nodes):
                biggest = max(capacity.nodes, key=lambda n: (n.gpus, n.cpus, n.memory_gb))
                never = (f"The job can never run here: replica {name} needs {need.describe()}, more "
                         f"than any single node of {capacity.label} has (the largest: {biggest.describe()}).")
                break
    return Assessment(demand, replicas, never)


def held_by(internal: Mapping[str, Any]) -> Resources:
    """What a job in a holding state holds, from its ``internal`` record."""
    if "demand" in internal:
        return Resources.from_json(internal["demand"])
    return Resources(float(internal.get("slots", 0)), 0.0, 0)


def assess_for(executor: Executor, settings: Settings, training_input: Mapping[str, Any],
               capacity: Capacity) -> Assessment:
    """:func:`assess` with the executor's resource mode and the configured machine types."""
    return assess(training_input, executor.resource_mode(), capacity, machine_table(settings.machine_types_path))


def place(executor: Executor, settings: Settings, job_key: str, training_input: Mapping[str, Any]) -> Placement:
    """Reserve all of a job's replicas at once (gang scheduling)."""
    from mlengine.training.executors._base import ReplicaRequest
    from mlengine.training.ports import parse_range

    table = machine_table(settings.machine_types_path)
    requests = [ReplicaRequest(name.rsplit("-replica-", 1)[0], int(name.rsplit("-", 1)[1]), res)
                for name, res in replica_demands(training_input, executor.resource_mode(), table)]
    return executor.place(job_key, requests, parse_range(settings.port_range))


def release(executor: Executor, job_id: str, internal: Mapping[str, Any]) -> None:
    """Free what the executor reserved for a job that ended (or is queued again)."""
    reservation = internal.get("placement")
    if not reservation:
        return
    try:
        executor.release(reservation)
    except Exception:  # a stuck release must not stop the scheduler; it is logged
        log.exception("releasing the placement of job %s failed", job_id)
