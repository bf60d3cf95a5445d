"""Safe extraction: real tar and zip files with hostile members; nothing written on refusal."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from mlengine.errors import Code, MLEngineError
from mlengine.storage.archives import inspect_archive, safe_extract

Entry = tuple[str, str, str]  # (name, kind: file|dir|symlink|hardlink|chr, content or target)


def make_tar(path: Path, entries: list[Entry]) -> Path:
    gz = path.name.endswith((".tar.gz", ".tgz"))
    with tarfile.open(path, "w:gz") if gz else tarfile.open(path, "w") as tf:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            payload = None
            if kind == "file":
                payload = data.encode()
                info.size = len(payload)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, data
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tf.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def make_zip(path: Path, entries: list[Entry]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, kind, data in entries:
            if kind == "symlink":
                zinfo = zipfile.ZipInfo(name)
                zinfo.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(zinfo, data)
            else:
                zf.writestr(name, data)
    return path


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


GOOD = [
    ("pkg-1.0", "dir", ""),
    ("pkg-1.0/setup.py", "file", "print('setup')"),
    ("pkg-1.0/trainer/__init__.py", "file", ""),
    ("pkg-1.0/trainer/task.py", "file", "print('task')"),
    ("pkg-1.0/alias", "symlink", "trainer/task.py"),
]


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar"])
def test_extracts_good_tar(tmp_path: Path, suffix: str) -> None:
    archive = make_tar(tmp_path / f"good{suffix}", GOOD)
    dest = tmp_path / "out"
    got = safe_extract(archive, dest)
    assert got[0] == dest / "pkg-1.0" and dest / "pkg-1.0/trainer/task.py" in got
    assert (dest / "pkg-1.0/trainer/task.py").read_text() == "print('task')"
    assert os.readlink(dest / "pkg-1.0/alias") == "trainer/task.py"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs


def test_extracts_bz2_and_merges_into_existing_dest(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tf:
        data = b"new"
        info = tarfile.TarInfo("d/f.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    dest = tmp_path / "out"
    (dest / "d").mkdir(parents=True)
    (dest / "d" / "f.txt").write_text("old")
    (dest / "d" / "keep.txt").write_text("kept")
    safe_extract(archive, dest)
    assert (dest / "d" / "f.txt").read_text() == "new"
    assert (dest / "d" / "keep.txt").read_text() == "kept"


def test_extracts_zip_and_wheel(tmp_path: Path) -> None:
    entries = [("trainer/__init__.py", "file", ""), ("trainer-1.0.dist-info/METADATA", "file", "x")]
    for name in ("p.zip", "trainer-1.0-py3-none-any.whl"):
        archive = make_zip(tmp_path / name, entries)
        dest = tmp_path / f"out-{name}"
        safe_extract(archive, dest)
        assert (dest / "trainer" / "__init__.py").is_file()


BAD_TAR = {
    "dotdot": [("pkg/ok.txt", "file", "x"), ("../x", "file", "evil")],
    "nested-dotdot": [("pkg/../../x", "file", "evil")],
    "absolute": [("/etc/x", "file", "evil")],
    "symlink-out": [("pkg/link", "symlink", "../../etc")],
    "symlink-absolute": [("pkg/link", "symlink", "/etc/passwd")],
    # Each link alone looks inside; together "a" resolves to the parent of the destination.
    "symlink-chain": [("s2", "symlink", "."), ("a", "symlink", "s2/..")],
    "write-through-link": [("d", "symlink", ".."), ("d/x", "file", "evil")],
    "file-under-escaping-link": [("d/x", "file", "evil"), ("d", "symlink", "..")],
    "hardlink-out": [("pkg/h", "hardlink", "../outside.txt")],
    "device": [("pkg/null", "chr", "")],
}


@pytest.mark.parametrize("case", sorted(BAD_TAR))
def test_refuses_hostile_tar_and_writes_nothing(tmp_path: Path, case: str) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", BAD_TAR[case])
    before = snapshot(tmp_path)
    with pytest.raises(MLEngineError) as exc:
        safe_extract(archive, tmp_path / "out")
    assert exc.value.code is Code.INVALID_ARGUMENT
    assert "bad.tar.gz" in exc.value.message
    assert any(repr(name) in exc.value.message for name, _, _ in BAD_TAR[case])  # the member
    assert snapshot(tmp_path) == before
    with pytest.raises(MLEngineError):
        inspect_archive(archive)


@pytest.mark.parametrize(
    "entries",
    [
        [("../x", "file", "evil")],
        [("/abs/x", "file", "evil")],
        [("ok/../../x", "file", "evil")],
        [("link", "symlink", "../../etc/passwd")],
    ],
)
def test_refuses_hostile_zip(tmp_path: Path, entries: list[Entry]) -> None:
    archive = make_zip(tmp_path / "bad.zip", entries)
    with pytest.raises(MLEngineError) as exc:
        safe_extract(archive, tmp_path / "out")
    assert "bad.zip" in exc.value.message and entries[0][0] in exc.value.message
    assert not (tmp_path / "out").exists()


def test_existing_dest_untouched_on_refusal(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep").write_text("k")
    archive = make_tar(tmp_path / "bad.tar", [("fine.txt", "file", "x"), ("../x", "file", "e")])
    with pytest.raises(MLEngineError):
        safe_extract(archive, dest)
    assert snapshot(dest) == ["keep"]


def test_unsupported_corrupt_missing_and_too_big(tmp_path: Path) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("hi")
    with pytest.raises(MLEngineError, match="notes.txt is not a supported archive"):
        inspect_archive(txt)
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"definitely not gzip")
    with pytest.raises(MLEngineError, match="corrupt.tar.gz is not a valid tar archive") as exc:
        safe_extract(corrupt, tmp_path / "out")
    assert exc.value.code is Code.INVALID_ARGUMENT
    with pytest.raises(MLEngineError) as missing:
        inspect_archive(tmp_path / "missing.zip")
    assert missing.value.code is Code.NOT_FOUND
    big = make_tar(tmp_path / "big.tar", [("f", "file", "x" * 1000)])
    with pytest.raises(MLEngineError, match="more than the limit"):
        safe_extract(big, tmp_path / "out", max_bytes=100)
    assert not (tmp_path / "out").exists()


def test_archive_bombs_are_refused(tmp_path: Path) -> None:
    from mlengine.storage.archives import MAX_MEMBERS

    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(MAX_MEMBERS + 1):
            zf.writestr(f"f{i}", b"")
    with pytest.raises(MLEngineError, match=rf"{MAX_MEMBERS + 1} members, more than the limit"):
        inspect_archive(many)

    bomb = tmp_path / "bomb.zip"
    chunk = b"\0" * (1024 * 1024)
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf, \
            zf.open("zeros", "w", force_zip64=True) as member:
        for _ in range(256):
            member.write(chunk)
    assert bomb.stat().st_size < 1024 * 1024
    with pytest.raises(MLEngineError, match="looks like an archive bomb"):
        inspect_archive(bomb)
    with pytest.raises(MLEngineError, match="more than the limit of 1000"):
        inspect_archive(bomb, max_bytes=1000)
    dest = tmp_path / "out"
    with pytest.raises(MLEngineError):
        safe_extract(bomb, dest)
    assert not dest.exists()
