"""A trainer with only a ``pyproject.toml`` (issue 10.4), submitted with ``mle jobs submit
training --package-path`` to a real server: it keeps its PEP 621 name and version, and the
dependency it declares is installed in the job's environment. The dependency is a local wheel
the server finds through ``UV_FIND_LINKS`` (it is not on PyPI and is not passed with
``--packages``), so only the declaration can bring it in."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.helpers import ServerProcess, _kill_leftovers, short_home

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "census-trainer"
version = "1.3"
dependencies = ["mle-e2e-tinydep==0.2"]

[tool.setuptools.packages.find]
include = ["trainer*"]
"""

TASK = """\
import argparse, json, importlib.metadata as md
import mle_e2e_tinydep

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--job-dir")
args = parser.parse_args()
with open(args.out, "w") as f:
    json.dump({"answer": mle_e2e_tinydep.ANSWER, "version": md.version("census-trainer"),
               "requires": md.requires("census-trainer")}, f)
"""


def wheel_of_tinydep(root: Path, links: Path) -> None:
    (root / "mle_e2e_tinydep").mkdir(parents=True)
    (root / "mle_e2e_tinydep" / "__init__.py").write_text("ANSWER = 42\n")
    (root / "setup.py").write_text("from setuptools import setup\n"
                                   "setup(name='mle-e2e-tinydep', version='0.2', packages=['mle_e2e_tinydep'])\n")
    subprocess.run([sys.executable, "-m", "uv", "build", "--wheel", "--no-build-isolation", "--python",
                    sys.executable, "--out-dir", str(links), str(root)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    links = tmp_path_factory.mktemp("links")
    wheel_of_tinydep(tmp_path_factory.mktemp("tinydep"), links)
    home = short_home()
    srv = ServerProcess(home, {"UV_FIND_LINKS": str(links)}).start()
    yield srv
    srv.stop()
    _kill_leftovers(home)


def test_pyproject_only_trainer_keeps_its_name_and_dependencies(server: ServerProcess, tmp_path: Path) -> None:
    project = tmp_path / "census"
    (project / "trainer").mkdir(parents=True)
    (project / "trainer" / "__init__.py").write_text("")
    (project / "trainer" / "task.py").write_text(TASK)
    (project / "pyproject.toml").write_text(PYPROJECT)
    out = tmp_path / "result.json"
    result = server.mle("jobs", "submit", "training", "pyproj", "--region", "local",
                        "--package-path", str(project / "trainer"), "--module-name", "trainer.task",
                        "--", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    job = server.wait_state("pyproj", ("SUCCEEDED", "FAILED"), timeout=300)
    log = "\n".join(e["message"] for e in server.logs("pyproj"))
    assert job["state"] == "SUCCEEDED", (job, log)
    assert [Path(u).name for u in job["trainingInput"]["packageUris"]] == ["census_trainer-1.3.tar.gz"]
    seen = json.loads(out.read_text())
    assert seen == {"answer": 42, "version": "1.3", "requires": ["mle-e2e-tinydep==0.2"]}
    assert "mle-e2e-tinydep" in log  # the server installed it as a dependency it lacked
