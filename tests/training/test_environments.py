"""Job environments: real uv installs on top of the server's site-packages, cached by content."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from mlengine.core.environments import EnvironmentCache, PreparedEnvironment
from mlengine.core.packaging import build_sdist
from mlengine.errors import Code, MLEngineError


def make_sdist(tmp: Path, name: str, requires: list[str], body: str = "") -> Path:
    """A real sdist of package ``name`` built by build_sdist from a project with setup.py."""
    project = tmp / f"proj-{name}"
    (project / name).mkdir(parents=True)
    (project / name / "__init__.py").write_text(body or f"NAME = {name!r}\n")
    (project / "setup.py").write_text(
        "from setuptools import find_packages, setup\n"
        f"setup(name={name!r}, version='0.1', packages=find_packages(),\n"
        f"      install_requires={requires!r})\n"
    )
    return build_sdist(project / name, tmp / "dist")


def make_wheel(directory: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A minimal valid pure-Python wheel, written by hand (for an offline --find-links)."""
    directory.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    contents[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: mlengine-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    contents[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            zf.writestr(path, text)
    return wheel


def run_in(env: PreparedEnvironment, code: str, cwd: Path) -> str:
    result = subprocess.run(
        [env.python, "-c", code],
        env={**os.environ, **env.env_vars()},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def site_names(env: PreparedEnvironment) -> set[str]:
    return {p.name.split("-")[0].lower() for p in Path(env.pythonpath[0]).iterdir()}


def test_install_on_top_of_the_server_then_cache_hit(tmp_path: Path) -> None:
    import click  # the server has it: the job must reuse it, not get a second copy

    sdist = make_sdist(tmp_path, "trainerpkg", ["click>=7"])
    cache = EnvironmentCache(tmp_path / "envs")
    lines: list[str] = []
    started = time.perf_counter()
    env = cache.prepare([sdist], lines.append)
    cold = time.perf_counter() - started
    assert not env.cached and env.python == sys.executable
    assert env.pythonpath == [str(tmp_path / "envs" / env.key / "site")]
    assert "trainerpkg" in site_names(env) and "click" not in site_names(env)
    assert lines[0] == f"Installing 1 package into a new environment {env.key}"
    out = run_in(env, "import click, trainerpkg; print(trainerpkg.NAME, click.__file__)", tmp_path)
    assert out == f"trainerpkg {click.__file__}"

    hits = []
    for _ in range(5):
        started = time.perf_counter()
        again = cache.prepare([sdist], lines.append)
        hits.append(time.perf_counter() - started)
    assert again.cached and again.key == env.key and again.pythonpath == env.pythonpath
    assert lines[-1] == f"Using cached environment {env.key}"
    assert min(hits) < 0.05, f"cache hits took {hits}"
    print(f"cold install {cold:.3f}s, cache hit {min(hits) * 1000:.2f}ms")
    # Another cache object (another process) on the same root sees it too.
    assert EnvironmentCache(tmp_path / "envs").prepare([sdist]).cached


def test_empty_package_list(tmp_path: Path) -> None:
    env = EnvironmentCache(tmp_path / "envs").prepare([])
    assert env.cached and env.pythonpath == [] and env.env_vars() == {}
    assert env.python == sys.executable
    assert not (tmp_path / "envs").exists()


def test_env_vars_prepend(tmp_path: Path) -> None:
    env = PreparedEnvironment(key="k", python="py", pythonpath=["/a", "/b"], cached=True)
    assert env.env_vars() == {"PYTHONPATH": os.pathsep.join(["/a", "/b"])}
    assert env.env_vars({"PYTHONPATH": "/c"}) == {"PYTHONPATH": os.pathsep.join(["/a", "/b", "/c"])}


def test_unresolvable_requirement_reports_uvs_reason(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "brokenpkg", ["this-distribution-does-not-exist-mle==1.0"])
    cache = EnvironmentCache(tmp_path / "envs")
    with pytest.raises(MLEngineError) as exc:
        cache.prepare([sdist])
    message = exc.value.message
    assert exc.value.code is Code.FAILED_PRECONDITION
    assert message.startswith("Failed to install the job's packages: ")
    assert "this-distribution-does-not-exist-mle" in message
    assert "Traceback" not in message and "Using Python" not in message
    assert [p.name for p in (tmp_path / "envs").iterdir() if not p.name.endswith(".lock")] == []


def test_missing_and_conflicting_dependencies_come_from_the_index(tmp_path: Path) -> None:
    """Offline: a local --find-links index provides a dependency the server lacks and a
    click 7 that the job pins below the server's click 8 (it must shadow the server's)."""
    links = tmp_path / "links"
    make_wheel(links, "mlehelperdep", "1.0", {"mlehelperdep/__init__.py": "HELP = 42\n"})
    make_wheel(links, "click", "7.0", {"click/__init__.py": "__version__ = '7.0-local'\n"})
    sdist = make_sdist(tmp_path, "jobpkg", ["mlehelperdep", "click<8"])
    cache = EnvironmentCache(tmp_path / "envs", uv_args=["--offline", "--no-index", "--find-links", str(links)])
    lines: list[str] = []
    env = cache.prepare([sdist], lines.append)
    assert {"jobpkg", "mlehelperdep", "click"} <= site_names(env)
    assert any("mlehelperdep==1.0" in line and "click==7.0" in line for line in lines)
    out = run_in(env, "import click, mlehelperdep; print(click.__version__, mlehelperdep.HELP)", tmp_path)
    assert out == "7.0-local 42"
    manifest = json.loads((tmp_path / "envs" / env.key / "env.json").read_text())
    assert sorted(manifest["dependencies"]) == ["click==7.0", "mlehelperdep==1.0"]


def test_build_failure_reports_the_backends_error(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "failpkg").mkdir(parents=True)
    (project / "failpkg" / "__init__.py").write_text("")
    (project / "setup.py").write_text(
        "import sys\n"
        "from setuptools import setup\n"
        "if 'sdist' not in sys.argv and 'egg_info' not in sys.argv:\n"
        "    raise RuntimeError('cannot build failpkg: missing CUDA')\n"
        "setup(name='failpkg', version='0.1', packages=['failpkg'])\n"
    )
    sdist = build_sdist(project / "failpkg", tmp_path / "dist")
    with pytest.raises(MLEngineError) as exc:
        EnvironmentCache(tmp_path / "envs").prepare([sdist])
    message = exc.value.message
    assert exc.value.code is Code.FAILED_PRECONDITION
    assert "Failed to build `failpkg" in message
    assert "RuntimeError: cannot build failpkg: missing CUDA" in message
    assert "Traceback" not in message and 'File "' not in message


def test_concurrent_prepares_build_once(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "concpkg", [])
    cache = EnvironmentCache(tmp_path / "envs")
    results: list[PreparedEnvironment] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(cache.prepare([sdist]))
        except BaseException as err:  # reported below
            errors.append(err)

    script = (
        "import sys; from pathlib import Path\n"
        "from mlengine.core.environments import EnvironmentCache\n"
        "env = EnvironmentCache(Path(sys.argv[1])).prepare([Path(sys.argv[2])])\n"
        "print(env.key, env.cached)\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "envs"), str(sdist)],
        stdout=subprocess.PIPE,
        text=True,
    )
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    out, _ = other.communicate(timeout=120)
    assert not errors and other.returncode == 0
    key, cached = out.split()
    assert {r.key for r in results} == {key}
    flags = sorted([*(r.cached for r in results), cached == "True"])
    assert flags == [False, True, True, True]  # built exactly once


def test_half_built_environment_is_not_cached(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "crashpkg", [])
    cache = EnvironmentCache(tmp_path / "envs")
    key = cache.key_for([sdist])
    # What a crash leaves: a build directory, and a published dir without its manifest.
    (tmp_path / "envs" / f".build-{key}-dead" / "site").mkdir(parents=True)
    (tmp_path / "envs" / key / "site").mkdir(parents=True)
    env = cache.prepare([sdist])
    assert not env.cached and env.key == key
    assert not list((tmp_path / "envs").glob(".build-*"))
    assert run_in(env, "import crashpkg; print(crashpkg.NAME)", tmp_path) == "crashpkg"


def test_missing_package_file(tmp_path: Path) -> None:
    with pytest.raises(MLEngineError) as exc:
        EnvironmentCache(tmp_path / "envs").prepare([tmp_path / "nope-1.0.tar.gz"])
    assert exc.value.code is Code.NOT_FOUND and "nope-1.0.tar.gz" in exc.value.message
