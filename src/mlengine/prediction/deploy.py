"""Copying a version's ``deploymentUri`` into managed storage, safely, and finding its framework.

Contract
--------
- :func:`inspect_source` lists what would be copied and refuses (INVALID_ARGUMENT naming the
  file) anything that could read outside the source directory: names with ``..`` or absolute
  names (from object stores), symbolic links whose target lies outside the directory (links
  to files inside it are copied as the files they point to; links to directories are
  refused), device files, FIFOs and sockets; more than ``MLE_MODEL_MAX_FILES`` files or more
  than ``MLE_MODEL_MAX_BYTES`` bytes. A missing or empty source is NOT_FOUND/INVALID_ARGUMENT.
- :func:`stage` copies the inspected files into a fresh directory (written under a temporary
  name and renamed when complete) and resolves the framework (:func:`resolve_framework`).
- Local sources are checked with ``lstat`` (never following a link before checking it);
  remote ones through fsspec's listing.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from mlengine.errors import Code, MLEngineError, invalid, not_found
from mlengine.prediction.frameworks._base import (
    CUSTOM,
    MODEL_FILES,
    detect_framework,
    expected_files,
    pickle_file,
    pickle_refused,
)
from mlengine.storage import uris
from mlengine.storage.paths import is_within, safe_join


@dataclass(frozen=True)
class SourceFile:
    name: str  # relative, "/"-separated
    size: int
    source: str  # local path or remote path within the filesystem


@dataclass(frozen=True)
class Source:
    uri: str
    files: list[SourceFile]

    @property
    def top_level(self) -> set[str]:
        return {f.name.split("/", 1)[0] for f in self.files}


def _refuse(uri: str, name: str, reason: str) -> MLEngineError:
    return invalid("deploymentUri", f"{uri}: {name!r} {reason}; nothing outside the model directory is ever read")


def _check_name(uri: str, name: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts or "\x00" in name:
        raise _refuse(uri, name, "is an absolute name or contains '..'")


def _limits(uri: str, count: int, total: int, max_files: int, max_bytes: int) -> None:
    if count > max_files:
        raise invalid("deploymentUri", f"{uri} holds more than {max_files} files (MLE_MODEL_MAX_FILES)")
    if total > max_bytes:
        raise invalid("deploymentUri", f"{uri} holds more than {max_bytes} bytes (MLE_MODEL_MAX_BYTES)")


def _inspect_local(uri: str, root: Path, max_files: int, max_bytes: int) -> list[SourceFile]:
    real_root = Path(os.path.realpath(root))
    files: list[SourceFile] = []
    total = 0
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = prefix + entry.name
                mode = entry.stat(follow_symlinks=False).st_mode
                path = Path(entry.path)
                if stat.S_ISLNK(mode):
                    target = Path(os.path.realpath(path))
                    if not is_within(target, real_root):
                        raise _refuse(uri, name, f"is a symbolic link to {os.readlink(path)!r}, outside the directory")
                    if target.is_dir():
                        raise _refuse(uri, name, "is a symbolic link to a directory (not supported)")
                    if not target.is_file():
                        raise _refuse(uri, name, "is a symbolic link to nothing")
                    size = target.stat().st_size
                elif stat.S_ISDIR(mode):
                    stack.append((path, name + "/"))
                    continue
                elif stat.S_ISREG(mode):
                    size = entry.stat(follow_symlinks=False).st_size
                else:
                    raise _refuse(uri, name, "is a device file, FIFO or socket")
                files.append(SourceFile(name, size, str(path)))
                total += size
                _limits(uri, len(files), total, max_files, max_bytes)
    return files


def inspect_source(uri: str, max_files: int, max_bytes: int) -> Source:
    """What :func:`stage` would copy from ``uri`` (see the module contract)."""
    if uris.is_local(uri):
        root = uris.local_path(uri)
        if not root.exists():
            raise not_found(f"deploymentUri {uri}")
        if not root.is_dir():
            raise invalid("deploymentUri", f"{uri} is not a directory")
        files = _inspect_local(uri, root, max_files, max_bytes)
    else:
        fs, base = uris.filesystem(uri)
        base = base.rstrip("/")
        try:
            found = fs.find(base, detail=True, withdirs=False)
        except FileNotFoundError:
            raise not_found(f"deploymentUri {uri}") from None
        except Exception as err:
            raise invalid("deploymentUri", f"cannot list {uri}: {err}") from None
        files, total = [], 0
        for path, info in sorted(found.items()):
            name = path[len(base):].lstrip("/") if path.startswith(base) else path
            _check_name(uri, name)
            size = int(info.get("size") or 0)
            files.append(SourceFile(name, size, path))
            total += size
            _limits(uri, len(files), total, max_files, max_bytes)
    if not files:
        raise invalid("deploymentUri", f"{uri} is empty: export the model there first")
    return Source(uri, files)


def resolve_framework(source: Source, framework: str | None, prediction_class: str | None) -> str:
    """The framework to load with: the given one (checked against the files) or the detected one."""
    names = source.top_level
    if prediction_class:
        return framework or CUSTOM
    listing = ", ".join(sorted(names)[:10])
    if framework:
        wanted = expected_files(framework)
        if not names.intersection(wanted):
            raise invalid("deploymentUri", f"{source.uri} has no {' or '.join(wanted)} for framework {framework}; "
                          f"it holds: {listing}")
        return framework
    detected = detect_framework(names)
    if detected is None:
        known = ", ".join(name for name, _ in MODEL_FILES)
        raise invalid("deploymentUri", f"{source.uri} holds no model file ({known}) at its top level; it holds: "
                      f"{listing}. Set framework, or a predictionClass for a custom prediction routine")
    return detected


def refuse_pickle(uri: str, names: set[str], framework: str | None, prediction_class: str | None) -> None:
    """INVALID_ARGUMENT naming ``deploymentUri`` and the file when the model in ``uri`` (top-level
    file ``names``) would be loaded from a Python pickle; for servers with
    ``MLE_MODEL_ALLOW_PICKLE=false``. Custom prediction routines are code either way."""
    if prediction_class:
        return
    name = pickle_file(names, framework or detect_framework(names) or "")
    if name:
        raise invalid("deploymentUri", f"{uri}: {pickle_refused(name)}")


def stage(source: Source, dest: Path) -> None:
    """Copy ``source`` into ``dest`` (which must not exist yet)."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    local = uris.is_local(source.uri)
    fs = None if local else uris.filesystem(source.uri)[0]
    real_root = Path(os.path.realpath(uris.local_path(source.uri))) if local else None
    try:
        for file in source.files:
            target = safe_join(tmp, *file.name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            if real_root is not None:
                if not is_within(Path(os.path.realpath(file.source)), real_root):  # changed since inspected
                    raise _refuse(source.uri, file.name, "now points outside the directory")
                shutil.copyfile(file.source, target)
            elif fs is not None:
                fs.get_file(file.source, str(target))
        os.rename(tmp, dest)
    except MLEngineError:
        raise
    except OSError as err:
        raise MLEngineError(Code.INVALID_ARGUMENT, f"Copying {source.uri} failed: {err}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: Where a model says which transform it embeds (the taxifare sample's export writes it).
TRANSFORM_FILES = ("assets.extra/transform.json", "transform.json")


def transform_fingerprint(model_dir: Path) -> str | None:
    """The ``fingerprint`` of the transform a staged model embeds, if it records one."""
    import json

    for name in TRANSFORM_FILES:
        try:
            data = json.loads((model_dir / name).read_text())
        except (OSError, ValueError):
            continue
        value = data.get("fingerprint") if isinstance(data, dict) else None
        if isinstance(value, str) and len(value) <= 128:
            return value
    return None
