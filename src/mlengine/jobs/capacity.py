"""How much of an executor a job holds, and whether it fits now, later or never.

Contract
--------
- A job's kind plans its replicas (:meth:`mlengine.jobs.kinds.JobKind.plan`): each
  :class:`~mlengine.jobs.executors.ReplicaRequest` *asks* for resources (a training replica:
  its machine type's). What it *holds* on an executor depends on the resource mode
  (``MLE_RESOURCE_MODE``):

  ``machine``  what it asks for: right for a cluster whose nodes are sized like the machine
               types (a Ray cluster you give with ``--ray-address``).
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
- Oversubscription: in ``process`` mode on an executor whose capacity says so
  (``Capacity.oversubscribable``: the local executor), a job short of CPUs only (a
  ``STANDARD_1`` job's 8 replicas on 2 cores) is not refused: its assessment is ``alone`` and
  it fits only when no other job holds anything, so it starts once the jobs before it have
  ended, runs alone with its replicas sharing the CPUs (as ``gcloud ai-platform local train
  --distributed`` would), and the jobs after it wait, since it holds more than there is. The
  scheduler records that it runs oversubscribed (``scheduling.oversubscribed``, a log line).
- What a job holds is recorded in its scheduling state (``demand``).
- :func:`place` asks the executor to reserve every replica of a job at once and
  :func:`release` frees that reservation (never raising: it is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mlengine.jobs.executors._base import ReplicaRequest
from mlengine.jobs.resources import Capacity, Resources

if TYPE_CHECKING:
    from mlengine.config import Settings
    from mlengine.jobs.executors._base import Executor, Placement

log = logging.getLogger("mlengine.scheduler")


@dataclass(frozen=True)
class Assessment:
    demand: Resources
    replicas: list[tuple[str, Resources]]
    never: str | None = None
    #: Set (to a message saying so) when the job needs more CPUs than there are and may run
    #: only alone, oversubscribed.
    alone: str | None = None

    def fits_with(self, used: Resources, capacity: Capacity) -> bool:
        if self.alone:
            return not used.shortfall(Resources())  # nothing else holds anything
        return (used + self.demand).fits_in(capacity.total)


def held(asked: Resources, mode: str) -> Resources:
    """What a replica asking for ``asked`` holds in ``mode`` (``machine`` or ``process``)."""
    if mode == "process":
        return Resources(min(asked.cpus, 1.0), 0.0, asked.gpus)
    return asked


def holding(requests: Sequence[ReplicaRequest], mode: str) -> list[ReplicaRequest]:
    """The requests with what each replica holds in ``mode``."""
    return [replace(r, resources=held(r.resources, mode)) for r in requests]


def total(items: Iterable[Resources]) -> Resources:
    result = Resources()
    for r in items:
        result = result + r
    return result


def assess(requests: Sequence[ReplicaRequest], mode: str, capacity: Capacity) -> Assessment:
    """The job's demand and, if it can never fit ``capacity``, why."""
    replicas = [(r.task_name, held(r.resources, mode)) for r in requests]
    demand = total(r for _, r in replicas)
    never = alone = None
    short = demand.shortfall(capacity.total)
    if short and _oversubscribable(demand, mode, capacity):
        alone = (f"The job runs oversubscribed: its {len(replicas)} replica(s) share {capacity.label} "
                 f"({demand.cpus:g} CPUs asked, {capacity.total.cpus:g} there); it runs alone, and jobs "
                 "submitted after it wait until it ends.")
    elif short:
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
    return Assessment(demand, replicas, never, alone if never is None else None)


def _oversubscribable(demand: Resources, mode: str, capacity: Capacity) -> bool:
    """Whether a job short of ``capacity`` may run alone on it: short of CPUs only (GPUs and
    memory are never oversubscribed), in ``process`` mode on an executor that allows it."""
    room = Resources(demand.cpus, capacity.total.memory_gb, capacity.total.gpus)
    return mode == "process" and capacity.oversubscribable and demand.fits_in(room)


def held_by(scheduling: Mapping[str, Any]) -> Resources:
    """What a job in a holding state holds, from its scheduling record."""
    return Resources.from_json(scheduling.get("demand"))


def place(executor: Executor, settings: Settings, job_key: str, requests: Sequence[ReplicaRequest]) -> Placement:
    """Reserve all of a job's replicas at once (gang scheduling)."""
    from mlengine.jobs.ports import parse_range

    return executor.place(job_key, holding(requests, executor.resource_mode()), parse_range(settings.port_range))


def release(executor: Executor, job_id: str, reservation: Mapping[str, Any] | None) -> None:
    """Free what the executor reserved for a job that ended (or is queued again)."""
    if not reservation:
        return
    try:
        executor.release(dict(reservation))
    except Exception:  # a stuck release must not stop the scheduler; it is logged
        log.exception("releasing the placement of job %s failed", job_id)
