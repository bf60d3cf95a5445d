"""URIs through fsspec: validation, local paths, joins, copies (real files, real fsspec)."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest

from mlengine.errors import Code, MLEngineError
from mlengine.storage import uris


def _mem(name: str) -> str:
    return f"memory://mle-tests/{uuid.uuid4().hex}/{name}"


# check_usable --------------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_gs_without_gcsfs_names_the_extra() -> None:
    with pytest.raises(MLEngineError) as exc:
        uris.check_usable("gs://bucket/x", "trainingInput.jobDir")
    err = exc.value
    assert err.code is Code.INVALID_ARGUMENT and err.code.http_status == 400
    assert "trainingInput.jobDir" in err.message
    assert "gs://" in err.message and "pip install 'mlengine[gcs]'" in err.message


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_s3_without_s3fs_names_the_extra() -> None:
    with pytest.raises(MLEngineError, match=r"mlengine\[s3\]"):
        uris.check_usable("s3://bucket/x", "packageUris")


def test_unknown_scheme_lists_supported_ones() -> None:
    with pytest.raises(MLEngineError) as exc:
        uris.check_usable("foo://x", "f")
    message = exc.value.message
    assert exc.value.code is Code.INVALID_ARGUMENT
    assert "unknown URI scheme 'foo://'" in message
    for supported in ("local paths", "file://", "memory://", "gs://", "s3://"):
        assert supported in message


@pytest.mark.parametrize(
    "uri", ["memory://x", "/tmp/x", "relative/x", "~/x", "file:///tmp/x", "simplecache::memory://x"]
)
def test_usable(uri: str) -> None:
    uris.check_usable(uri, "f")


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        ("memory://", "no path"),
        ("file://server/share/x", "absolute"),
        ("/tmp/a\x00b", "NUL"),
        ("nosuchproto::memory://x", "unknown URI scheme"),
    ],
)
def test_unusable(uri: str, problem: str) -> None:
    with pytest.raises(MLEngineError, match=problem) as exc:
        uris.check_usable(uri, "myField")
    assert exc.value.message.startswith("Field: myField Error:")


# local paths ---------------------------------------------------------------------------------
def test_local_detection_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert uris.is_local("/a/b") and uris.is_local("file:///a/b") and uris.is_local("a/b")
    assert not uris.is_local("gs://b/x") and not uris.is_local("memory://x")
    assert uris.local_path("file:///a/b") == Path("/a/b")
    assert uris.local_path("file://localhost/a/b") == Path("/a/b")
    monkeypatch.chdir(tmp_path)
    assert uris.local_path("rel/x") == tmp_path / "rel" / "x"
    with pytest.raises(MLEngineError, match="gs://b/x is not a local path"):
        uris.local_path("gs://b/x")


# join ----------------------------------------------------------------------------------------
def test_join_keeps_scheme() -> None:
    assert uris.join("gs://bucket/jobs", "j1", "model/saved_model.pb") == ("gs://bucket/jobs/j1/model/saved_model.pb")
    assert uris.join("gs://bucket/", "x") == "gs://bucket/x"
    assert uris.join("/data", "./a//b/") == "/data/a/b"
    assert uris.join("file:///data", "x") == "file:///data/x"
    assert uris.join("memory://base") == "memory://base"


@pytest.mark.parametrize("part", ["../x", "a/../../x", "..", "/etc/passwd", "a\\..\\b", "gs://o/x"])
def test_join_refuses_escapes(part: str) -> None:
    with pytest.raises(MLEngineError) as exc:
        uris.join("gs://bucket/jobs", part)
    assert exc.value.code is Code.INVALID_ARGUMENT
    assert "gs://bucket/jobs" in exc.value.message


# fetch / put / exists / makedirs --------------------------------------------------------------
def test_fetch_local_file(tmp_path: Path) -> None:
    src = tmp_path / "src" / "pkg-1.0.tar.gz"
    src.parent.mkdir()
    src.write_bytes(b"payload")
    for uri in (str(src), src.as_uri()):
        got = uris.fetch(uri, tmp_path / "dest")
        assert got == tmp_path / "dest" / "pkg-1.0.tar.gz"
        assert got.read_bytes() == b"payload"
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["pkg-1.0.tar.gz"]


def test_put_fetch_exists_through_fsspec(tmp_path: Path) -> None:
    local = tmp_path / "model.bin"
    local.write_bytes(b"\x00\x01weights")
    uri = _mem("dir/model.bin")
    assert not uris.exists(uri)
    uris.put(local, uri)
    assert uris.exists(uri)
    got = uris.fetch(uri, tmp_path / "back")
    assert got.name == "model.bin" and got.read_bytes() == b"\x00\x01weights"


def test_put_local_creates_parents(tmp_path: Path) -> None:
    local = tmp_path / "f.txt"
    local.write_text("hello")
    target = tmp_path / "out" / "deep" / "f.txt"
    uris.put(local, target.as_uri())
    assert target.read_text() == "hello"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]  # no temp files left


def test_fetch_missing_is_not_found(tmp_path: Path) -> None:
    for uri in (str(tmp_path / "nope.tar.gz"), _mem("nope.tar.gz")):
        with pytest.raises(MLEngineError) as exc:
            uris.fetch(uri, tmp_path / "dest")
        assert exc.value.code is Code.NOT_FOUND
        assert uri in exc.value.message


def test_fetch_directory_or_unusable_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(MLEngineError, match="is a directory") as exc:
        uris.fetch(str(tmp_path), tmp_path / "dest")
    assert exc.value.code is Code.INVALID_ARGUMENT
    with pytest.raises(MLEngineError, match="does not name a file"):
        uris.fetch("memory://bucket/dir/", tmp_path / "dest")
    with pytest.raises(MLEngineError, match="unknown URI scheme"):
        uris.fetch("foo://bucket/x.tar.gz", tmp_path / "dest")


def test_makedirs_and_exists(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    uris.makedirs(target.as_uri())
    assert target.is_dir() and uris.exists(str(target))
    mem = _mem("d1/d2")
    uris.makedirs(mem)
    assert uris.exists(mem)
    assert not uris.exists(str(tmp_path / "missing"))
