"""Building sdists from --package-path like gcloud, with real setup.py subprocesses."""

from __future__ import annotations

import hashlib
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from mlengine.core.packaging import (
    build_sdist,
    dist_name,
    needs_build_isolation,
    sha256_file,
    validate_package_archive,
)
from mlengine.errors import Code, MLEngineError


def write_trainer(root: Path, name: str = "trainer") -> Path:
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "task.py").write_text("print('training')\n")
    (package / "sub").mkdir()
    (package / "sub" / "__init__.py").write_text("")
    return package


def members(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as tf:
        return tf.getnames()


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_generated_setup_py(tmp_path: Path) -> None:
    package = write_trainer(tmp_path / "src")
    before = tree(tmp_path / "src")
    lines: list[str] = []
    started = time.perf_counter()
    sdist = build_sdist(package, tmp_path / "out", lines.append)
    elapsed = time.perf_counter() - started
    assert sdist == tmp_path / "out" / "trainer-0.0.0.tar.gz"
    names = members(sdist)
    assert "trainer-0.0.0/trainer/task.py" in names
    assert "trainer-0.0.0/trainer/sub/__init__.py" in names
    assert dist_name(sdist) == "trainer"
    assert tree(tmp_path / "src") == before  # no setup.py, egg-info or dist left behind
    assert any("generated setup.py" in line for line in lines)
    assert elapsed < 10, f"building a tiny sdist took {elapsed:.2f}s"


def test_uses_the_projects_setup_py_on_a_copy(tmp_path: Path) -> None:
    project = tmp_path / "project"
    package = write_trainer(project)
    (project / "setup.py").write_text(
        "import pathlib\n"
        "from setuptools import find_packages, setup\n"
        # A setup.py that writes into its own tree must not touch the user's files.
        "pathlib.Path('trainer/version.py').write_text('VERSION = \"2.1\"\\n')\n"
        "setup(name='taxifare', version='2.1', packages=find_packages(),\n"
        "      install_requires=['click'])\n"
    )
    (project / "trainer" / "version.py").write_text("VERSION = 'dev'\n")
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (project / "venv").mkdir()
    (project / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    before = tree(project)
    sdist = build_sdist(package, tmp_path / "out")
    assert sdist.name == "taxifare-2.1.tar.gz"
    names = members(sdist)
    assert "taxifare-2.1/trainer/task.py" in names and "taxifare-2.1/setup.py" in names
    assert not [n for n in names if "/.git" in n or "/venv" in n]
    assert tree(project) == before
    assert (project / "trainer" / "version.py").read_text() == "VERSION = 'dev'\n"
    assert dist_name(sdist) == "taxifare" and not needs_build_isolation(sdist)


def test_rebuild_replaces_the_previous_sdist(tmp_path: Path) -> None:
    package = write_trainer(tmp_path / "src")
    first = build_sdist(package, tmp_path / "out")
    (package / "task.py").write_text("print('v2')\n")
    second = build_sdist(package, tmp_path / "out")
    assert first == second and len(list((tmp_path / "out").iterdir())) == 1
    with tarfile.open(second) as tf:
        member = tf.extractfile("trainer-0.0.0/trainer/task.py")
        assert member is not None and member.read() == b"print('v2')\n"


def test_not_a_package(tmp_path: Path) -> None:
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "task.py").write_text("")
    with pytest.raises(MLEngineError) as exc:
        build_sdist(tmp_path / "trainer", tmp_path / "out")
    assert exc.value.code is Code.INVALID_ARGUMENT
    assert exc.value.message == (
        f"Field: --package-path Error: {tmp_path / 'trainer'} is not a Python package: it has no __init__.py"
    )
    with pytest.raises(MLEngineError, match="does not exist"):
        build_sdist(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "file.py").write_text("")
    with pytest.raises(MLEngineError, match="is not a directory"):
        build_sdist(tmp_path / "file.py", tmp_path / "out")


def test_failing_setup_py(tmp_path: Path) -> None:
    project = tmp_path / "project"
    package = write_trainer(project)
    (project / "setup.py").write_text("raise RuntimeError('boom: missing version file')\n")
    with pytest.raises(MLEngineError) as exc:
        build_sdist(package, tmp_path / "out")
    message = exc.value.message
    assert exc.value.code is Code.INVALID_ARGUMENT
    assert message.startswith(f"Failed to build a package from {project}: ")
    assert "RuntimeError: boom: missing version file" in message
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_sha256_file(tmp_path: Path) -> None:
    f = tmp_path / "blob"
    f.write_bytes(b"x" * (3 << 20))
    assert sha256_file(f) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()


def test_validate_package_archive(tmp_path: Path) -> None:
    sdist = build_sdist(write_trainer(tmp_path / "src"), tmp_path / "out")
    validate_package_archive(sdist)
    wrong = tmp_path / "trainer.rar"
    wrong.write_bytes(b"x")
    with pytest.raises(MLEngineError, match="trainer.rar is not a Python package archive"):
        validate_package_archive(wrong)
    evil = tmp_path / "evil-1.0.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        tf.add(sdist, arcname="../../outside.tar.gz")
    with pytest.raises(MLEngineError, match=r"evil-1.0.tar.gz has an unsafe member '\.\./\.\./"):
        validate_package_archive(evil)
    wheel = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("/etc/cron.d/x", "evil")
    with pytest.raises(MLEngineError, match="'/etc/cron.d/x'"):
        validate_package_archive(wheel)


def test_build_isolation_follows_pyproject(tmp_path: Path) -> None:
    sdist = tmp_path / "modern-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name, text in {
            "modern-1.0/PKG-INFO": "Metadata-Version: 2.1\nName: modern\nVersion: 1.0\n",
            "modern-1.0/pyproject.toml": '[build-system]\nrequires = ["hatchling"]\n',
        }.items():
            path = tmp_path / "tmpfile"
            path.write_text(text)
            tf.add(path, arcname=name)
    assert dist_name(sdist) == "modern" and needs_build_isolation(sdist)
    assert dist_name(tmp_path / "thing-2.0-py3-none-any.whl") == "thing"


PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "census-trainer"
version = "1.3"
dependencies = ["tinydep>=0.1", "click"]

[tool.setuptools.packages.find]
include = ["trainer*"]
"""


def pkg_info(sdist: Path) -> str:
    with tarfile.open(sdist) as tf:
        member = next(m for m in tf.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"))
        handle = tf.extractfile(member)
        assert handle is not None
        return handle.read().decode()


@pytest.mark.parametrize("build_system", [True, False], ids=["pep517-backend", "project-table-only"])
def test_a_pyproject_only_trainer_keeps_its_name_and_dependencies(tmp_path: Path, build_system: bool) -> None:
    """Issue 10.4: no setup.py, a PEP 621 pyproject.toml: built by a PEP 517 frontend (uv build),
    not a generated trainer-0.0.0 without dependencies."""
    project = tmp_path / "project"
    package = write_trainer(project)
    text = PYPROJECT if build_system else PYPROJECT.split("\n\n", 1)[1]
    (project / "pyproject.toml").write_text(text)
    before = tree(project)
    lines: list[str] = []
    sdist = build_sdist(package, tmp_path / "out", lines.append)
    assert sdist.name == "census_trainer-1.3.tar.gz"
    info = pkg_info(sdist)
    assert "Requires-Dist: tinydep>=0.1" in info and "Requires-Dist: click" in info
    assert "census_trainer-1.3/trainer/task.py" in members(sdist)
    assert dist_name(sdist) == "census-trainer" and needs_build_isolation(sdist) is build_system
    assert tree(project) == before
    assert any("pyproject.toml" in line for line in lines)


def test_a_pyproject_of_tool_settings_only_is_no_project(tmp_path: Path) -> None:
    project = tmp_path / "repo"
    package = write_trainer(project)
    (project / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")
    assert build_sdist(package, tmp_path / "out").name == "trainer-0.0.0.tar.gz"


def test_a_failing_pep517_build_names_the_project(tmp_path: Path) -> None:
    project = tmp_path / "project"
    package = write_trainer(project)
    (project / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "not a version!"\n')
    with pytest.raises(MLEngineError) as exc:
        build_sdist(package, tmp_path / "out")
    assert exc.value.code is Code.INVALID_ARGUMENT
    assert exc.value.message.startswith(f"Failed to build a package from {project}: ")
    assert "not a version!" in exc.value.message
