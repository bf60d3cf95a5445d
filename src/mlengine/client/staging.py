"""Putting local package files where the server can read them (``trainingInput.packageUris``).

Where a package goes, as ``gcloud ai-platform jobs submit training`` does it:

1. ``--staging-bucket B``: ``B/<jobId>/packages/<sha256>/<file name>``;
2. else ``--job-dir D``: ``D/packages/<sha256>/<file name>``;
3. else (or when the server cannot read that location): uploaded through the server
   (``POST /v1/projects/{p}/packages:upload``), which answers with the URI it stored it at.

A location is written directly only when the server can read it: a remote URI (``s3://``,
``gs://``...) always, a local path only when the server runs on this machine (same host name
and machine id, see :func:`~mlengine.client.connection.same_machine`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlengine.client.connection import same_machine
from mlengine.errors import Code, MLEngineError
from mlengine.storage import uris


def absolute_uri(uri: str) -> str:
    """A plain local path made absolute (``./out`` means the caller's directory, not the
    server's); URIs with a scheme are returned unchanged."""
    if uris.scheme(uri) is None:
        return str(uris.local_path(uri))
    return uri


def staging_base(job_id: str, staging_bucket: str | None, job_dir: str | None) -> str | None:
    """The directory under which ``<sha256>/<name>`` is written, or None to upload."""
    if staging_bucket:
        return uris.join(absolute_uri(staging_bucket), job_id, "packages")
    if job_dir:
        return uris.join(absolute_uri(job_dir), "packages")
    return None


class PackageStager:
    """Stages the local package files of one job; asks the server about itself at most once."""

    def __init__(
        self,
        client: Any,
        project: str,
        job_id: str,
        *,
        staging_bucket: str | None = None,
        job_dir: str | None = None,
        log: Callable[[str], None] | None = None,
        server_info: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.project = project
        self.base = staging_base(job_id, staging_bucket, job_dir)
        self.log = log or (lambda _message: None)
        self._server_info = server_info

    def server_can_read(self, uri: str) -> bool:
        if not uris.is_local(uri):
            return True
        if self._server_info is None:
            self._server_info = self.client.server_info()
        return same_machine(self._server_info)

    def stage(self, file: Path) -> str:
        """Put ``file`` where the server can read it; return its URI."""
        from mlengine.core.packaging import sha256_file

        if not file.is_file():
            raise MLEngineError(Code.INVALID_ARGUMENT, f"Package file {file} does not exist.")
        digest = sha256_file(file)
        if self.base is not None and self.server_can_read(self.base):
            dest = uris.join(self.base, digest, file.name)
            self.log(f"Copying {file.name} to {dest}")
            uris.put(file, dest)
            return dest
        self.log(f"Uploading {file.name} to the mlengine server")
        info = self.client.upload_package_info(self.project, file)
        returned = info.get("sha256")
        if returned and returned != digest:
            raise MLEngineError(
                Code.INTERNAL,
                f"Upload of {file} was corrupted: sha256 {digest} locally, {returned} on the server.",
            )
        return str(info["uri"])
