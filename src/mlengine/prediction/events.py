"""What the model service tells online prediction about the changes it stored.

Contract
--------
- :class:`~mlengine.prediction.service.ModelService` calls these after the change is
  committed to the store, from whatever thread it runs in (the API's thread pool).
- When a call returns, routing reflects the change: a predict call that starts afterwards sees
  the new default version, a CREATING version's 503, a deleted version's 404. The work the
  change starts (staging and loading a version, stopping replicas) is not waited for.
- Implementations never raise for a change they cannot act on; the store stays the truth and
  is reconciled again at start-up.
"""

from __future__ import annotations

import abc


class ServingEvents(abc.ABC):
    """Notifications from the model service (see the module contract)."""

    @abc.abstractmethod
    def model_changed(self, project: str, model: str) -> None:
        """A model was created, deleted or got another default version."""

    @abc.abstractmethod
    def version_changed(self, project: str, model: str, version: str) -> None:
        """A version was created, patched (scaling) or is being deleted."""


class NoServing(ServingEvents):
    """No online prediction here (a store-only service, tests)."""

    def model_changed(self, project: str, model: str) -> None:
        return None

    def version_changed(self, project: str, model: str, version: str) -> None:
        return None
