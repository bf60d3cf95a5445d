"""The Python SDK of mlengine: talk to an mlengine server over HTTP.

>>> from mlengine.client import Client
>>> client = Client.from_settings()          # MLE_API_URL/MLE_TOKEN or the local server
>>> client.get_job("mlengine", "my_job")["state"]

- :mod:`mlengine.client.connection`: where the server is and which token to use
  (:func:`resolve`); cheap to import.
- :mod:`mlengine.client.http`: :class:`Client`, one method per REST call; every non-2xx answer
  becomes an :class:`~mlengine.errors.MLEngineError` rebuilt from the Google error body.
- :mod:`mlengine.client.staging`: putting local package files where the server can read them.
- :mod:`mlengine.client.follow`: following a job's logs and state until it ends.

httpx is imported only when :class:`Client` is first used, so ``import mlengine.client`` is
cheap (the ``mle`` CLI relies on it for a fast ``--help``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlengine.client.connection import Connection, resolve

if TYPE_CHECKING:
    from mlengine.client.http import Client

__all__ = ["Client", "Connection", "resolve"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from mlengine.client.http import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
