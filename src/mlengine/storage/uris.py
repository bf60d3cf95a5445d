"""URIs: where users keep packages, job directories and models, read through fsspec.

Contract
--------
- A URI is either a local path (``/data/x``, ``./x``, ``~/x``), a ``file://`` URI
  (``file:///data/x``) or an fsspec URI ``<scheme>://...`` (``gs://bucket/x``, ``s3://bucket/x``,
  ``memory://x``...). Chained fsspec URLs (``simplecache::gs://b/x``) are accepted by
  :func:`check_usable` and by the generic (non-local) code paths.
- :func:`check_usable` is what the API calls on every user-supplied URI: it answers 400
  (``invalid(field, ...)``) for an empty string, an unknown scheme (listing the supported ones)
  or a scheme whose implementation is not installed on this server (naming the extra to install,
  e.g. ``pip install 'mlengine[gcs]'``). It never touches the network.
- Local URIs are handled with :mod:`pathlib`/:mod:`shutil` directly; writes to local files are
  atomic (a temporary file in the same directory, then :func:`os.replace`).
- Every failure is an :class:`~mlengine.errors.MLEngineError` whose message contains the URI.
- fsspec is imported lazily (it costs ~100 ms) so importing this module is cheap.
- All functions are thread-safe (they keep no state besides a cache of importable schemes).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlengine.errors import Code, MLEngineError, invalid, not_found

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_LOCAL_SCHEMES = frozenset({"file", "local"})
# Object stores whose directories are implicit: makedirs() must not create buckets.
_IMPLICIT_DIR_SCHEMES = frozenset({"gs", "gcs", "s3", "s3a", "az", "abfs", "abfss", "adl", "oss"})
# Schemes whose implementation ships as an mlengine extra.
_EXTRAS = {
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
}
_SUPPORTED_HINT = (
    "local paths, file://, memory://, gs:// (pip install 'mlengine[gcs]'), "
    "s3:// (pip install 'mlengine[s3]'), and the other fsspec protocols "
    "(az://, hdfs://, http(s)://, sftp://, ...)"
)
_usable_schemes: set[str] = set()


def chain(uri: str) -> list[str]:
    """The links of a chained fsspec URI (``simplecache::gs://b/x``); a ``::`` inside brackets
    (an IPv6 literal such as ``http://[fd00:ec2::254]/``) does not chain."""
    links, depth, start, i = [], 0, 0, 0
    while i < len(uri):
        char = uri[i]
        depth += char == "["
        depth -= char == "]"
        if depth == 0 and uri.startswith("::", i):
            links.append(uri[start:i])
            start = i = i + 2
            continue
        i += 1
    links.append(uri[start:])
    return links


def scheme(uri: str) -> str | None:
    """The lowercased scheme of ``uri`` (``"gs"``), or None for a plain local path."""
    match = _SCHEME_RE.match(uri)
    return match.group(1).lower() if match else None


def is_local(uri: str) -> bool:
    """True for plain paths and ``file://`` (or fsspec ``local://``) URIs."""
    return len(chain(uri)) == 1 and scheme(uri) in (None, *_LOCAL_SCHEMES)


def local_path(uri: str) -> Path:
    """The absolute local path of a local URI; ``~`` is expanded for plain paths.

    ``file:///a/b`` and ``file://localhost/a/b`` give ``/a/b`` (no percent-decoding, like
    fsspec). Raises INVALID_ARGUMENT for non-local URIs and for ``file://`` URIs naming a host.
    """
    if not uri:
        raise MLEngineError(Code.INVALID_ARGUMENT, "An empty string is not a path.")
    if not is_local(uri):
        raise MLEngineError(Code.INVALID_ARGUMENT, f"{uri} is not a local path.")
    proto = scheme(uri)
    if proto is None:
        return Path(uri).expanduser().absolute()
    rest = uri[len(proto) + 3 :]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    if not rest.startswith("/"):
        raise MLEngineError(
            Code.INVALID_ARGUMENT,
            f"{uri} must be an absolute {proto}:// URI such as {proto}:///path.",
        )
    return Path(rest)


def check_usable(uri: str, field: str) -> None:
    """Raise ``invalid(field, ...)`` (400) unless this server can read and write ``uri``.

    Refused: empty strings, NUL bytes, unknown schemes (the message lists supported ones),
    schemes whose fsspec implementation cannot be imported here (the message names the extra,
    e.g. ``gs://`` without gcsfs -> ``pip install 'mlengine[gcs]'``), and ``<scheme>://`` with
    nothing after it. Does not check that the object exists.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise invalid(field, "must be a non-empty path or URI.")
    if "\x00" in uri:
        raise invalid(field, f"{uri!r} contains a NUL character.")
    links = chain(uri)
    for link in links:
        proto = scheme(link)
        if proto is None:
            if len(links) > 1 and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", link):
                _check_scheme(link.lower(), uri, field)  # a bare protocol in a chain
            elif not link:
                raise invalid(field, f"{uri} has an empty part in its '::' chain.")
            continue
        if not link[len(proto) + 3 :].strip("/"):
            raise invalid(field, f"{uri} has no path after {proto}://.")
        if proto in _LOCAL_SCHEMES:
            if len(links) == 1:
                try:
                    local_path(uri)
                except MLEngineError as err:
                    raise invalid(field, err.message) from None
            continue
        _check_scheme(proto, uri, field)


def _check_scheme(proto: str, uri: str, field: str) -> None:
    if proto in _usable_schemes:
        return
    from fsspec.registry import known_implementations, registry

    if proto not in known_implementations and proto not in registry:
        raise invalid(field, f"{uri} has an unknown URI scheme '{proto}://'. Supported: {_SUPPORTED_HINT}.")
    import fsspec

    try:
        fsspec.get_filesystem_class(proto)
    except ImportError as err:
        if proto in _EXTRAS:
            module, extra = _EXTRAS[proto]
            raise invalid(
                field,
                f"{uri}: {proto}:// URIs need {module}, which is not installed on this server. "
                f"Install it with: pip install 'mlengine[{extra}]'",
            ) from None
        raise invalid(field, f"{uri}: {proto}:// URIs are not available on this server: {err}") from None
    except Exception as err:  # a broken third-party implementation
        raise invalid(field, f"{uri}: {proto}:// URIs are not available on this server: {err}") from None
    _usable_schemes.add(proto)


def filesystem(uri: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)`` for ``uri``, after :func:`check_usable`."""
    check_usable(uri, "uri")
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(uri)
    except Exception as err:  # credentials, bad bucket names...
        raise MLEngineError(Code.INVALID_ARGUMENT, f"Cannot open {uri}: {err}") from None


def join(base_uri: str, *parts: str) -> str:
    """Append relative ``parts`` to ``base_uri`` with ``/``, keeping its scheme.

    Each part may contain ``/``; empty and ``.`` components are dropped. Parts that are
    absolute or contain a ``..`` component are refused (INVALID_ARGUMENT), so the result always
    stays under ``base_uri``.
    """
    components: list[str] = []
    for part in parts:
        if part.startswith(("/", "\\")) or _SCHEME_RE.match(part) or re.match(r"^[A-Za-z]:", part):
            raise MLEngineError(Code.INVALID_ARGUMENT, f"Cannot join {part!r} to {base_uri}: it is absolute.")
        for comp in re.split(r"[/\\]", part):
            if comp == "..":
                raise MLEngineError(
                    Code.INVALID_ARGUMENT,
                    f"Cannot join {part!r} to {base_uri}: '..' would leave the directory.",
                )
            if comp not in ("", "."):
                components.append(comp)
    if not components:
        return base_uri
    base = base_uri if base_uri.endswith("/") else base_uri + "/"
    return base + "/".join(components)


def _basename(uri: str) -> str:
    target = next((link for link in chain(uri) if "://" in link), uri)
    name = posixpath.basename(_SCHEME_RE.sub("", target))
    if name in ("", ".", ".."):
        raise MLEngineError(Code.INVALID_ARGUMENT, f"{uri} does not name a file.")
    return name


@contextlib.contextmanager
def _io_errors(uri: str, verb: str) -> Any:
    try:
        yield
    except MLEngineError:
        raise
    except FileNotFoundError:
        raise not_found(f"File {uri}") from None
    except PermissionError as err:
        raise MLEngineError(Code.PERMISSION_DENIED, f"Permission denied {verb} {uri}: {err}") from None
    except (OSError, ValueError) as err:
        raise MLEngineError(Code.INVALID_ARGUMENT, f"Failed {verb} {uri}: {err}") from None


def _atomic_copy(src: Path, dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fetch(uri: str, dest_dir: Path) -> Path:
    """Copy the file at ``uri`` into ``dest_dir`` (created if needed), keeping its basename.

    Returns the local copy. NOT_FOUND (message contains the URI) when nothing exists there,
    INVALID_ARGUMENT when it is a directory or the URI does not name a file.
    """
    name = _basename(uri)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / name
    if is_local(uri):
        check_usable(uri, "uri")
        src = local_path(uri)
        with _io_errors(uri, "reading"):
            if not src.exists():
                raise not_found(f"File {uri}")
            if src.is_dir():
                raise MLEngineError(Code.INVALID_ARGUMENT, f"{uri} is a directory, not a file.")
            _atomic_copy(src, dest)
        return dest
    fs, path = filesystem(uri)
    with _io_errors(uri, "reading"):
        if not fs.exists(path):
            raise not_found(f"File {uri}")
        if fs.isdir(path):
            raise MLEngineError(Code.INVALID_ARGUMENT, f"{uri} is a directory, not a file.")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest_dir)
        os.close(fd)
        try:
            fs.get_file(path, tmp)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return dest


def put(local_file: Path, uri: str) -> None:
    """Copy ``local_file`` to ``uri`` (parent directories are created for local targets)."""
    if not local_file.is_file():
        raise not_found(f"File {local_file}")
    if is_local(uri):
        check_usable(uri, "uri")
        dest = local_path(uri)
        with _io_errors(uri, "writing"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            _atomic_copy(local_file, dest)
        return
    fs, path = filesystem(uri)
    with _io_errors(uri, "writing"):
        fs.put_file(str(local_file), path)


def makedirs(uri: str) -> None:
    """Create the directory ``uri`` and its parents; a no-op on object stores (gs, s3, az...)
    whose directories are implicit (so it never creates a bucket)."""
    if is_local(uri):
        check_usable(uri, "uri")
        with _io_errors(uri, "creating"):
            local_path(uri).mkdir(parents=True, exist_ok=True)
        return
    if scheme(uri) in _IMPLICIT_DIR_SCHEMES and len(chain(uri)) == 1:
        check_usable(uri, "uri")
        return
    fs, path = filesystem(uri)
    with _io_errors(uri, "creating"):
        fs.makedirs(path, exist_ok=True)


def exists(uri: str) -> bool:
    """Whether a file or directory exists at ``uri``."""
    if is_local(uri):
        check_usable(uri, "uri")
        return local_path(uri).exists()
    fs, path = filesystem(uri)
    with _io_errors(uri, "checking"):
        return bool(fs.exists(path))
