"""Packages of a submitted job, shared by ``mle jobs submit training`` and ``preprocessing``:
which entries are local files, whether the job id is free, and staging the local ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlengine.cli import output
from mlengine.errors import Code, MLEngineError


def local_package(uri: str, source: str) -> Path | None:
    """The local file a package entry names (must exist), or None for a remote URI."""
    from mlengine.storage import uris

    if not uris.is_local(uri):
        return None
    try:
        path = uris.local_path(uri)
    except Exception as err:  # noqa: BLE001 - MLEngineError with a message
        raise click.BadParameter(str(err), param_hint=source) from None
    if not path.is_file():
        raise click.BadParameter(f"package file {uri} does not exist", param_hint=source)
    return path


def job_exists(c: Any, project: str, job: str) -> bool:
    """Checked before building and uploading (the server checks again on create)."""
    try:
        c.get_job(project, job)
    except MLEngineError as err:
        if err.code is Code.NOT_FOUND:
            return False
        raise
    return True


def stage_all(
    c: Any, project: str, job: str, files: list[tuple[str, Path | None]],
    staging_bucket: str | None, job_dir: str | None, server_info: dict[str, Any],
) -> list[str]:
    """Package URIs for the job: remote URIs unchanged, local files staged or uploaded."""
    from mlengine.client.staging import PackageStager
    from mlengine.core.packaging import validate_package_archive

    stager = PackageStager(c, project, job, staging_bucket=staging_bucket, job_dir=job_dir,
                           log=output.status, server_info=server_info)
    result: list[str] = []
    for uri, path in files:
        if path is None:
            result.append(uri)
            continue
        validate_package_archive(path)
        result.append(stager.stage(path))
    return result
