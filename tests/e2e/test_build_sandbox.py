"""Installing a job's package runs its own setup.py: user code the server runs itself. The build
(and the module probe) run confined like replicas: the hostile setup.py below reads no secret
and sees none of the server's environment; its findings reach the job's error message, where
the test checks them."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.helpers import ServerProcess, _kill_leftovers, job_body, short_home

pytestmark = pytest.mark.e2e

SECRET = "hunter2-build"

HOSTILE_SETUP = textwrap.dedent('''
    import json, os
    from setuptools import setup

    home = os.environ.get("PROBE_HOME") or "{home}"
    found = {{}}
    for name in ("admin_token", "mlengine.db", "server.json"):
        try:
            with open(os.path.join(home, name), "rb") as f:
                found[name] = f.read(100).decode("latin-1")
        except OSError as exc:
            found[name] = "denied: " + type(exc).__name__
    try:
        found["listing"] = sorted(os.listdir(home))
    except OSError as exc:
        found["listing"] = "denied: " + type(exc).__name__
    found["secret_env"] = [k for k, v in os.environ.items() if "{secret}" in v or k.startswith("MLE_")]
    raise SystemExit("PROBE " + json.dumps(found))
''')


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home(), {"MLE_TEST_SECRET": SECRET}).start()
    yield srv
    srv.stop()
    _kill_leftovers(srv.home)


def hostile_package(root: Path, home: Path) -> Path:
    import tarfile

    src = root / "evil-0.1"
    (src / "evil").mkdir(parents=True)
    (src / "evil" / "__init__.py").write_text("")
    (src / "setup.py").write_text(HOSTILE_SETUP.format(home=home, secret=SECRET))
    (src / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 0.1\n")
    archive = root / "evil-0.1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="evil-0.1")
    return archive


def test_a_hostile_setup_py_reads_no_secret(server: ServerProcess, tmp_path: Path) -> None:
    package = hostile_package(tmp_path, server.home)
    body = job_body("evil", package)
    body["trainingInput"]["pythonModule"] = "evil"
    assert server.api("POST", "/v1/projects/mlengine/jobs", json=body).status_code == 200
    job = server.wait_state("evil", ("SUCCEEDED", "FAILED"), timeout=180)
    assert job["state"] == "FAILED"
    text = job["errorMessage"]
    assert "PROBE " in text, text
    probe = json.loads(text.split("PROBE ", 1)[1].splitlines()[0])
    assert probe["admin_token"].startswith("denied") and probe["mlengine.db"].startswith("denied")
    assert probe["server.json"].startswith("denied") and str(probe["listing"]).startswith("denied")
    assert probe["secret_env"] == []
    token = (server.home / "admin_token").read_text().strip()
    logs = json.dumps(server.logs("evil"))
    assert token not in text and token not in logs and SECRET not in logs
