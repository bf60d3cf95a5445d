"""Safe inspection and extraction of user archives (sdists, wheels, zips, tarballs).

Contract
--------
- Supported: ``.tar.gz``, ``.tgz``, ``.tar``, ``.tar.bz2``, ``.tbz2``, ``.tar.xz``, ``.txz``,
  ``.zip`` and ``.whl`` (a zip), chosen by file name (case-insensitive).
- Refused, with INVALID_ARGUMENT naming the archive (its file name) and the member: member
  names that are absolute (``/etc/x``, ``C:\\x``) or contain a ``..`` component; symbolic or
  hard links whose target lies outside the destination (targets are resolved against the other
  links of the archive, like ``realpath`` would once extracted, so link chains cannot escape);
  absolute link targets; device files and FIFOs; and bombs: more than :data:`MAX_MEMBERS`
  members, more than ``max_bytes`` (default :data:`MAX_UNPACKED_BYTES`) unpacked, or an unpacked
  size more than :data:`MAX_RATIO` times the archive's own size (when it exceeds
  :data:`RATIO_FLOOR_BYTES`, so tiny archives of text stay fine). Member sizes are the ones the
  archive declares (tarfile and zipfile never extract more than a member declares).
- :func:`safe_extract` validates every member before writing anything, extracts into a fresh
  temporary directory next to ``dest`` (tar extraction also uses the stdlib ``data`` filter as
  a second line of defence), then moves the result into ``dest`` (a rename when ``dest`` does
  not exist yet, else a merge that replaces existing entries and never follows symlinks already
  in ``dest``). A refused or corrupt archive leaves ``dest`` untouched.
- Links in zip files are written as regular files containing the target (zipfile behaviour).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mlengine.errors import Code, MLEngineError, not_found

_KINDS = {
    ".tar.gz": "tar", ".tgz": "tar", ".tar": "tar", ".tar.bz2": "tar", ".tbz2": "tar",
    ".tar.xz": "tar", ".txz": "tar", ".zip": "zip", ".whl": "zip",
}  # fmt: skip
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_KINDS)
_MAX_LINK_HOPS = 64
#: Limits against archive bombs (see the contract).
MAX_MEMBERS = 20_000
MAX_UNPACKED_BYTES = 4 * 1024**3
MAX_RATIO = 200
RATIO_FLOOR_BYTES = 64 * 1024**2


@dataclass(frozen=True)
class _Member:
    raw: str  # the name as stored, for messages
    name: str  # normalized: components joined with "/", "" for the root
    kind: str  # file | dir | symlink | hardlink | device
    link: str = ""
    size: int = 0


def archive_kind(archive: Path) -> str | None:
    """``"tar"`` or ``"zip"`` from the file name, or None when the suffix is not supported."""
    lower = archive.name.lower()
    for suffix, kind in _KINDS.items():
        if lower.endswith(suffix):
            return kind
    return None


def _refuse(archive: Path, raw: str, reason: str) -> MLEngineError:
    return MLEngineError(Code.INVALID_ARGUMENT, f"Archive {archive.name} has an unsafe member {raw!r}: {reason}.")


def _normalize(archive: Path, raw: str, what: str = "member name") -> str:
    if "\x00" in raw:
        raise _refuse(archive, raw, f"its {what} contains a NUL character")
    if raw.startswith(("/", "\\")) or (len(raw) > 1 and raw[1] == ":" and raw[0].isalpha()):
        raise _refuse(archive, raw, f"its {what} is an absolute path")
    parts = raw.replace("\\", "/").split("/")
    if ".." in parts:
        raise _refuse(archive, raw, f"its {what} contains '..'")
    return "/".join(p for p in parts if p not in ("", "."))


def _list_members(archive: Path, kind: str) -> list[_Member]:
    members: list[_Member] = []
    if kind == "tar":
        with tarfile.open(archive) as tf:
            for info in tf.getmembers():
                if info.issym():
                    k = "symlink"
                elif info.islnk():
                    k = "hardlink"
                elif info.isdir():
                    k = "dir"
                elif info.ischr() or info.isblk() or info.isfifo():
                    k = "device"
                else:
                    k = "file"
                name = _normalize(archive, info.name)
                members.append(_Member(info.name, name, k, info.linkname, info.size))
        return members
    with zipfile.ZipFile(archive) as zf:
        for zinfo in zf.infolist():
            mode = (zinfo.external_attr >> 16) & 0xFFFF
            name = _normalize(archive, zinfo.filename)
            if stat.S_ISLNK(mode):
                target = zf.read(zinfo).decode("utf-8", "replace")
                members.append(_Member(zinfo.filename, name, "symlink", target, zinfo.file_size))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                members.append(_Member(zinfo.filename, name, "device"))
            else:
                k = "dir" if zinfo.is_dir() else "file"
                members.append(_Member(zinfo.filename, name, k, size=zinfo.file_size))
    return members


def _resolver(links: dict[str, str]) -> Callable[[list[str]], list[str] | None]:
    """A ``resolve(components) -> components | None`` over the archive's virtual tree."""
    hops = [0]

    def resolve(path: list[str]) -> list[str] | None:
        out: list[str] = []
        for comp in path:
            if comp in ("", "."):
                continue
            if comp == "..":
                if not out:
                    return None
                out.pop()
                continue
            out.append(comp)
            target = links.get("/".join(out))
            if target is None:
                continue
            hops[0] += 1
            if target.startswith("/") or hops[0] > _MAX_LINK_HOPS:
                return None
            resolved = resolve(out[:-1] + target.split("/"))
            if resolved is None:
                return None
            out = resolved
        return out

    return resolve


def _check_bomb(archive: Path, members: list[_Member], max_bytes: int | None) -> None:
    if len(members) > MAX_MEMBERS:
        raise MLEngineError(Code.INVALID_ARGUMENT,
                            f"Archive {archive.name} has {len(members)} members, more than the limit of {MAX_MEMBERS}.")
    total = sum(m.size for m in members)
    limit = MAX_UNPACKED_BYTES if max_bytes is None else max_bytes
    if total > limit:
        raise MLEngineError(
            Code.INVALID_ARGUMENT,
            f"Archive {archive.name} expands to {total} bytes, more than the limit of {limit}.",
        )
    packed = max(archive.stat().st_size, 1)
    if total > RATIO_FLOOR_BYTES and total > MAX_RATIO * packed:
        raise MLEngineError(
            Code.INVALID_ARGUMENT,
            f"Archive {archive.name} expands {total // packed}-fold ({packed} bytes to {total}), more than the "
            f"limit of {MAX_RATIO}: it looks like an archive bomb.",
        )


def _validate(archive: Path, members: list[_Member], max_bytes: int | None) -> None:
    _check_bomb(archive, members, max_bytes)
    links = {m.name: m.link for m in members if m.kind == "symlink"}
    resolve = _resolver(links)
    for m in members:
        if m.kind == "device":
            raise _refuse(archive, m.raw, "device files and FIFOs are not allowed")
        if m.kind in ("symlink", "hardlink"):
            if not m.link:
                raise _refuse(archive, m.raw, "its link target is empty")
            if m.link.startswith(("/", "\\")):
                raise _refuse(archive, m.raw, f"it links to the absolute path {m.link!r}")
            parent = m.name.split("/")[:-1] if m.kind == "symlink" else []
            target = parent + m.link.replace("\\", "/").split("/")
            if resolve(target) is None:
                raise _refuse(archive, m.raw, f"it links to {m.link!r}, outside the destination")
        elif m.name and resolve(m.name.split("/")) is None:
            raise _refuse(archive, m.raw, "it would be written outside the destination")


@contextlib.contextmanager
def _reading(archive: Path, kind: str) -> Iterator[None]:
    try:
        yield
    except MLEngineError:
        raise
    except FileNotFoundError:
        raise not_found(f"Archive {archive}") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise MLEngineError(Code.INVALID_ARGUMENT, f"{archive.name} is not a valid {kind} archive: {err}") from None


def _check(archive: Path, max_bytes: int | None) -> tuple[str, list[_Member]]:
    kind = archive_kind(archive)
    if kind is None:
        raise MLEngineError(
            Code.INVALID_ARGUMENT,
            f"{archive.name} is not a supported archive; expected one of " + ", ".join(SUPPORTED_SUFFIXES) + ".",
        )
    if not archive.is_file():
        raise not_found(f"Archive {archive}")
    with _reading(archive, kind):
        members = _list_members(archive, kind)
    _validate(archive, members, max_bytes)
    return kind, members


def inspect_archive(archive: Path, max_bytes: int | None = None) -> None:
    """Validate ``archive`` exactly as :func:`safe_extract` would, without extracting it."""
    _check(archive, max_bytes)


def _merge(src: Path, dst: Path) -> None:
    """Move the entries of ``src`` into ``dst``, replacing what is there; never follows links
    found in ``dst``."""
    for entry in src.iterdir():
        target = dst / entry.name
        entry_is_dir = entry.is_dir() and not entry.is_symlink()
        if entry_is_dir and target.is_dir() and not target.is_symlink():
            _merge(entry, target)
            continue
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        os.rename(entry, target)


def safe_extract(archive: Path, dest: Path, max_bytes: int | None = None) -> list[Path]:
    """Extract ``archive`` into ``dest`` (created if missing) after validating every member.

    Returns the extracted paths (``dest / member``) in archive order, without duplicates.
    Raises INVALID_ARGUMENT (naming the archive and the member) for unsafe members and corrupt
    archives, NOT_FOUND when ``archive`` does not exist; nothing is written in those cases.
    """
    kind, members = _check(archive, max_bytes)
    dest = Path(os.path.abspath(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        with _reading(archive, kind):
            if kind == "tar":
                with tarfile.open(archive) as tf:
                    if hasattr(tarfile, "data_filter"):
                        tf.extractall(tmp, filter="data")
                    else:  # pragma: no cover - Python < 3.10.12
                        tf.extractall(tmp)
            else:
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(tmp)
        if dest.exists() or dest.is_symlink():
            _merge(tmp, dest)
        else:
            tmp.chmod(0o755)
            os.rename(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    seen: dict[str, Path] = {}
    for m in members:
        if m.name and m.name not in seen:
            seen[m.name] = dest / m.name
    return list(seen.values())
