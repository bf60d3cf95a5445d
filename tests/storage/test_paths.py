"""safe_join refuses every way out of its root, including symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlengine.errors import Code, MLEngineError
from mlengine.storage.paths import safe_join


def test_joins_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    assert safe_join(root, "a", "b/c.txt") == root.resolve() / "a" / "b" / "c.txt"
    assert safe_join(root, "a/../b") == root.resolve() / "b"
    assert safe_join(root) == root.resolve()
    assert safe_join(root, ".") == root.resolve()


@pytest.mark.parametrize("parts", [("..",), ("a", "../../x"), ("/etc/passwd",), ("C:\\x",)])
def test_refuses_escapes(tmp_path: Path, parts: tuple[str, ...]) -> None:
    with pytest.raises(MLEngineError) as exc:
        safe_join(tmp_path / "root", *parts)
    assert exc.value.code is Code.INVALID_ARGUMENT


def test_refuses_escape_through_symlink(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(MLEngineError, match="escapes"):
        safe_join(root, "link", "secret.txt")


def test_symlink_inside_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    os.symlink("real", root / "alias")
    assert safe_join(root, "alias", "f") == root.resolve() / "real" / "f"


def test_refuses_nul(tmp_path: Path) -> None:
    with pytest.raises(MLEngineError, match="NUL"):
        safe_join(tmp_path, "a\x00b")
