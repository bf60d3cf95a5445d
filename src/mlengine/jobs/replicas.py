"""A job's replicas as the scheduler sees them: polling their status (recorded in the store as
they finish), their handles, and stopping what is left of a job.

Contract: every method is called from the scheduler thread; :meth:`ReplicaWatch.teardown`
returns at once (SIGTERM now, SIGKILL after the grace on a thread of its own).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from mlengine.config import Settings
from mlengine.core.timeutil import utcnow
from mlengine.jobs import lifecycle as states
from mlengine.jobs.executors._base import Executor, ReplicaStatus
from mlengine.store.jobs import JobRepository
from mlengine.store.models import JobRow, ReplicaRow


def infrastructure_failure(status: ReplicaStatus) -> bool:
    """A replica killed by a signal or vanished: the machine's fault, not the user code's."""
    return status.state == "lost" or (status.exit_code is not None and status.exit_code < 0)


class ReplicaWatch:
    def __init__(self, settings: Settings, repo: JobRepository, executor: Executor) -> None:
        self.settings = settings
        self.repo = repo
        self.executor = executor

    def poll(self, job: JobRow) -> list[tuple[ReplicaRow, ReplicaStatus]]:
        result = []
        for replica in self.repo.replicas(job.id):
            if replica.state in states.REPLICA_FINISHED:
                status = ReplicaStatus("exited" if replica.state == states.ReplicaState.EXITED.value else "lost",
                                       replica.exit_code, replica.message)
            elif not self.launched(replica.handle):
                # Launched but the handle was never recorded (server died mid-launch).
                status = ReplicaStatus("lost", None, "the server stopped while launching it")
            else:
                status = self.executor.poll(replica.handle)
            if status.finished and replica.state not in states.REPLICA_FINISHED:
                self.repo.update_replica(
                    replica.id,
                    state=(states.ReplicaState.EXITED if status.state == "exited" else states.ReplicaState.LOST).value,
                    exit_code=status.exit_code, message=status.message, end_time=utcnow(),
                )
            result.append((replica, status))
        return result

    @staticmethod
    def launched(handle: dict[str, Any]) -> bool:
        return "pid" in handle or "actor" in handle or "pgid" in handle

    def handles(self, job: JobRow) -> list[dict[str, Any]]:
        return [r.handle for r in self.repo.replicas(job.id) if self.launched(r.handle)]

    def teardown(self, job: JobRow) -> None:
        """Stop what is left of a finished job (parameter servers never exit on their own)."""
        handles = self.handles(job)
        for handle in handles:
            self.executor.signal(handle, signal.SIGTERM)
        grace = self.settings.cancel_grace_seconds

        def reap() -> None:
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not any(self.executor.group_alive(h) for h in handles):
                    return
                time.sleep(0.1)
            for h in handles:
                self.executor.signal(h, signal.SIGKILL)

        if any(self.executor.group_alive(h) for h in handles):
            threading.Thread(target=reap, name="mle-teardown", daemon=True).start()
