"""Storage: fsspec URIs, safe path joins and safe archive extraction.

- :mod:`mlengine.storage.uris`: every location a user gives (``--job-dir``, ``packageUris``,
  model ``deploymentUri``...) is a URI read and written through fsspec. Local paths and
  ``file://`` are local; ``gs://`` and ``s3://`` need the ``mlengine[gcs]`` / ``mlengine[s3]``
  extras.
- :mod:`mlengine.storage.paths`: :func:`~mlengine.storage.paths.safe_join`, a join that cannot
  escape its root (not even through symlinks).
- :mod:`mlengine.storage.archives`: :func:`~mlengine.storage.archives.safe_extract` and
  :func:`~mlengine.storage.archives.inspect_archive` for user archives (sdists, wheels, zips).

fsspec is imported lazily so importing this package stays cheap.
"""

from __future__ import annotations

from mlengine.storage.archives import inspect_archive, safe_extract
from mlengine.storage.paths import safe_join
from mlengine.storage.uris import (
    check_usable,
    exists,
    fetch,
    is_local,
    join,
    local_path,
    makedirs,
    put,
)

__all__ = [
    "check_usable",
    "exists",
    "fetch",
    "inspect_archive",
    "is_local",
    "join",
    "local_path",
    "makedirs",
    "put",
    "safe_extract",
    "safe_join",
]
