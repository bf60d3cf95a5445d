"""Who a job runs as, and the token its replicas get.

Contract
--------
- Every job runs as a service account: the one its input names (``trainingInput.serviceAccount``,
  checked by the API when the job is created: an account of the project the caller may act
  as), else the account the server makes for it, ``job-<jobId>@<project>.iam.mlengine``
  (implicit: no row, and nobody else can name it). A tuning job's trials run as their tuning
  job's account.
- When a job is created its policy gets ``roles/ml.jobOwner`` for the creator and
  ``roles/ml.viewer`` for its account (:func:`initial_bindings`): on its own job the account
  may read the job and its logs, nothing else, unless some policy grants it more.
- :class:`JobCredentials` makes, at each launch, one token for the job's replicas (named
  ``job-<pk>-<attempt>``, principal the job's account) and hands it to them as ``MLE_TOKEN`` with
  ``MLE_API_URL`` (when the server knows the URL its replicas reach it at) and ``MLE_PROJECT``.
  The token is deleted when the job ends or is queued again for a retry
  (:meth:`JobCredentials.revoke`, called by the scheduler wherever it releases a job; it
  deletes that attempt's token only, so a late revocation never takes the next attempt's),
  and at start-up for every job that is no longer active (:meth:`JobCredentials.revoke_ended`).
  Its secret lives only in the replicas' environment; the store keeps its digest.
"""

from __future__ import annotations

from collections.abc import Iterable

from mlengine.core import iam
from mlengine.core.iam import Binding
from mlengine.store.models import JobRow
from mlengine.store.tokens import JOB_TOKEN_PREFIX, TokenRepository

JOB_OWNER = "roles/ml.jobOwner"
RUNNER_ROLE = "roles/ml.viewer"


def service_account_of(job: JobRow) -> str:
    """The e-mail of the service account ``job`` runs as."""
    account = (job.input or {}).get("serviceAccount")
    if isinstance(account, str) and account:
        return account
    return iam.job_account(job.project, job.job_id)


def initial_bindings(job: JobRow, creator: str | None) -> tuple[Binding, ...]:
    bindings: tuple[Binding, ...] = ()
    if creator:
        bindings = iam.with_member(bindings, JOB_OWNER, creator)
    return iam.with_member(bindings, RUNNER_ROLE, f"serviceAccount:{service_account_of(job)}")


def token_name(job: JobRow) -> str:
    attempt = (job.scheduling or {}).get("attempt") or 1
    return f"{JOB_TOKEN_PREFIX}{job.id}-{attempt}"


class JobCredentials:
    """Tokens of jobs' replicas (see the module contract). Thread-safe."""

    def __init__(self, tokens: TokenRepository, api_url: str | None = None) -> None:
        self.tokens = tokens
        #: The URL replicas reach the server at; set once the server listens.
        self.api_url = api_url

    def issue(self, job: JobRow) -> dict[str, str]:
        """A new token for ``job``'s replicas (any earlier one revoked): their environment."""
        self.tokens.delete_for_jobs([job.id])
        member = f"serviceAccount:{service_account_of(job)}"
        _row, secret = self.tokens.create(token_name(job), member, job_pk=job.id)
        env = {"MLE_TOKEN": secret, "MLE_PROJECT": job.project}
        if self.api_url:
            env["MLE_API_URL"] = self.api_url
        return env

    def revoke(self, job: JobRow) -> None:
        """Delete the token of ``job``'s current attempt (as the row says)."""
        self.tokens.discard(token_name(job))

    def revoke_ended(self, active: Iterable[JobRow]) -> int:
        """Delete the tokens of every job not in ``active``; returns how many jobs had one."""
        ended = self.tokens.job_pks() - {job.id for job in active}
        self.tokens.delete_for_jobs(sorted(ended))
        return len(ended)
