"""Copying a deploymentUri safely and detecting the framework from its files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlengine.errors import Code, MLEngineError
from mlengine.prediction.deploy import _check_name, inspect_source, resolve_framework, stage


def inspect(path: Path, max_files: int = 1000, max_bytes: int = 1 << 30):
    return inspect_source(str(path), max_files, max_bytes)


def refused(path: Path, **limits: int) -> str:
    with pytest.raises(MLEngineError) as info:
        inspect(path, **limits)
    assert info.value.code is Code.INVALID_ARGUMENT
    return info.value.message


def test_copies_files_and_inner_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"pb")
    (src / "variables" / "v.index").write_bytes(b"idx")
    os.symlink("saved_model.pb", src / "alias.pb")
    source = inspect(src)
    assert sorted(f.name for f in source.files) == ["alias.pb", "saved_model.pb", "variables/v.index"]
    assert resolve_framework(source, None, None) == "TENSORFLOW"
    stage(source, tmp_path / "dest")
    assert (tmp_path / "dest" / "variables" / "v.index").read_bytes() == b"idx"
    assert not (tmp_path / "dest" / "alias.pb").is_symlink()


def test_escaping_symlinks_and_special_files_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.joblib").write_bytes(b"x")
    os.symlink(secret, src / "leak.txt")
    assert "'leak.txt' is a symbolic link to" in refused(src)
    assert "outside the directory; nothing outside the model directory is ever read" in refused(src)
    os.unlink(src / "leak.txt")
    os.symlink("../secret.txt", src / "relative.txt")
    assert "'relative.txt' is a symbolic link to '../secret.txt', outside the directory" in refused(src)
    os.unlink(src / "relative.txt")
    (src / "sub").mkdir()
    os.symlink(tmp_path, src / "sub" / "up")
    assert "'sub/up' is a symbolic link to" in refused(src)
    os.unlink(src / "sub" / "up")
    os.mkfifo(src / "pipe")
    assert "'pipe' is a device file, FIFO or socket" in refused(src)


def test_limits_and_remote_names(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"f{i}").write_bytes(b"12345")
    assert "holds more than 3 files" in refused(tmp_path, max_files=3)
    assert "holds more than 10 bytes" in refused(tmp_path, max_bytes=10)
    for name in ("../etc/passwd", "/etc/passwd", "a/../../b"):
        with pytest.raises(MLEngineError, match="absolute name or contains '..'"):
            _check_name("gs://bucket/model", name)


def test_framework_detection_and_checks(tmp_path: Path) -> None:
    (tmp_path / "model.bst").write_bytes(b"x")
    source = inspect(tmp_path)
    assert resolve_framework(source, None, None) == "XGBOOST"
    with pytest.raises(MLEngineError, match="has no saved_model.pb or saved_model.pbtxt for framework TENSORFLOW"):
        resolve_framework(source, "TENSORFLOW", None)
    assert resolve_framework(source, None, "pkg.Predictor") == "CUSTOM"
    (tmp_path / "model.bst").unlink()
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(MLEngineError, match="holds no model file"):
        resolve_framework(inspect(tmp_path), None, None)
    with pytest.raises(MLEngineError) as info:
        inspect(tmp_path / "missing")
    assert info.value.code is Code.NOT_FOUND
