"""Model replicas cannot reach the control plane's secrets (issue 9.2, serving half), on a real
server, with replicas forked from zygotes and started as fresh interpreters.

A hostile custom prediction routine tries, from ``predict``, to read the admin token, the
database, ``server.json``, another version's model files and the server's
``/proc/<pid>/environ``, to list ``MLE_HOME``, to overwrite the token, to signal the server, to
ask a zygote for an unconfined replica and to talk to another version's replica over its unix
socket; it also looks for secrets in its own environment (the server runs with
``MLE_TEST_SECRET`` and ``AWS_SECRET_ACCESS_KEY``). Every attempt must be denied, its own model
directory and private HOME/TMPDIR must work, and no secret may appear in any answer or log.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.helpers import ServerProcess, build_package, short_home
from tests.e2e.serving_helpers import deploy, kill_serving, predict, write_sklearn_model

pytestmark = [pytest.mark.e2e]
SECRETS = {"MLE_TEST_SECRET": "hunter2-serving-canary", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-serving-canary"}

HOSTILE = r'''
import json, os, socket, sqlite3


def attempt(label, fn, out):
    try:
        got = fn()
    except Exception as exc:
        out.append(f"{label}: denied ({type(exc).__name__})")
    else:
        out.append(f"{label}: GOT {got!r}"[:300])


def read(path, n=200):
    with open(path, "rb") as f:
        return f.read(n)


def talk(path, message):
    """Connect to a unix socket, send a line, return what comes back (nothing: denied)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(message)
        data = s.recv(4096)
    if not data:
        raise ConnectionAbortedError("closed without an answer")
    return data


class Probe:
    def __init__(self, model_dir):
        self.model_dir = model_dir

    @classmethod
    def from_path(cls, model_dir):
        return cls(model_dir)

    def predict(self, instances, **kwargs):
        args = instances[0]
        home, pid, out = args["home"], args["server_pid"], []
        attempt("admin token", lambda: read(f"{home}/admin_token"), out)
        attempt("database file", lambda: read(f"{home}/mlengine.db"), out)
        attempt("database query", lambda: sqlite3.connect(f"file:{home}/mlengine.db?mode=ro", uri=True)
                .execute("select name from sqlite_master").fetchall(), out)
        attempt("server.json", lambda: read(f"{home}/server.json"), out)
        attempt("other version's model", lambda: read(args["victim_model"]), out)
        attempt("other version's log", lambda: read(args["victim_log"]), out)
        attempt("server environ", lambda: read(f"/proc/{pid}/environ", 100000), out)
        attempt("server cwd", lambda: os.listdir(f"/proc/{pid}/cwd"), out)
        attempt("list MLE_HOME", lambda: os.listdir(home), out)
        attempt("list models", lambda: os.listdir(f"{home}/models"), out)
        attempt("overwrite token", lambda: open(f"{home}/admin_token", "w").write("owned"), out)
        attempt("signal server", lambda: os.kill(pid, 0), out)
        request = {"config": {"model_dir": "/", "framework": "CUSTOM"}, "socket": f"{os.environ['TMPDIR']}/x.sock",
                   "log": f"{os.environ['TMPDIR']}/x.log"}
        for path in args["zygote_sockets"]:
            attempt(f"zygote {os.path.basename(path)}", lambda: talk(path, json.dumps(request).encode() + b"\n"), out)
        for path in args["replica_sockets"]:
            predict_frame = bytes([1]) + (7).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"{}"
            attempt(f"replica {os.path.basename(path)}", lambda: talk(path, predict_frame), out)
        leaked = sorted(k for k in os.environ if k.startswith(("MLE_", "AWS_", "RAY_", "GOOGLE_"))
                        or "SECRET" in k or "TOKEN" in k)
        own = read(os.path.join(self.model_dir, "own.txt")).decode()
        for where in ("HOME", "TMPDIR"):
            with open(os.path.join(os.environ[where], "scratch.txt"), "w") as f:
                f.write("private")
        return [{"probes": out, "leaked": leaked, "own": own, "home": os.environ["HOME"],
                 "tmp": os.environ["TMPDIR"], "cwd": os.getcwd()}]
'''


@pytest.fixture(scope="module", params=["zygotes", "spawned"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    env = {**SECRETS, "MLE_SERVING_ZYGOTES": "on" if request.param == "zygotes" else "off"}
    srv = ServerProcess(short_home(), env).start()
    try:
        yield srv
    finally:
        srv.stop()
        kill_serving(srv.home)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    (root / "hostile").mkdir()
    (root / "hostile" / "__init__.py").write_text(textwrap.dedent(HOSTILE))
    (root / "setup.py").write_text("from setuptools import setup\nsetup(name='hostile', version='0.1', "
                                   "packages=['hostile'])\n")
    return build_package(root, "hostile")


def sockets(server: ServerProcess) -> tuple[list[str], list[str]]:
    sock_dir = server.home / "serving" / "sock"
    found = sorted(str(p) for p in sock_dir.glob("*.sock"))
    return [p for p in found if "/zygote-" in p], [p for p in found if "/zygote-" not in p]


def all_logs(home: Path) -> str:
    """Replica and zygote logs, and whatever the replicas wrote in their private directories."""
    files = [*(home / "serving").rglob("*"), *(home / "models").rglob("*.log")]
    return "\n".join(p.read_text(errors="replace") for p in files if p.is_file() and not p.is_socket())


def test_a_hostile_prediction_routine_reads_no_secret(server: ServerProcess, package: Path, tmp_path: Path,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    victim_dir = write_sklearn_model(tmp_path_factory.mktemp("victim") / "model")
    assert deploy(server, "victim", "v1", victim_dir, manualScaling={"nodes": 1})["response"]["state"] == "READY"
    assert predict(server, "victim", {"instances": [[0.1, 0.2, 0.3]]}).status_code == 200
    victim_model = next((server.home / "models").rglob("model.joblib"))
    victim_log = next((server.home / "models").rglob("replica-*.log"))

    own = tmp_path / "own-model"
    own.mkdir()
    (own / "own.txt").write_text("my own model file")
    operation = deploy(server, "hostile", "v1", own, predictionClass="hostile.Probe", packageUris=[str(package)],
                       manualScaling={"nodes": 1})
    assert operation.get("response", {}).get("state") == "READY", operation

    zygotes, replicas = sockets(server)
    assert len(replicas) >= 2  # the victim's and the hostile's own (which refuses it as well)
    assert (len(zygotes) >= 2) == (server.env["MLE_SERVING_ZYGOTES"] == "on")
    assert server.proc is not None
    instance: dict[str, Any] = {"home": str(server.home), "server_pid": server.proc.pid,
                                "victim_model": str(victim_model), "victim_log": str(victim_log),
                                "zygote_sockets": zygotes, "replica_sockets": replicas}
    response = predict(server, "hostile", {"instances": [instance]})
    assert response.status_code == 200, response.text
    report = response.json()["predictions"][0]
    probes = report["probes"]
    assert len(probes) == 12 + len(zygotes) + len(replicas), probes
    for line in probes:
        assert ": denied (" in line, line
    assert report["leaked"] == [], report
    assert report["own"] == "my own model file"
    private = server.home / "serving" / "replicas"
    assert report["home"].startswith(f"{private}/") and report["home"].endswith("/home")
    assert report["tmp"] == report["home"][:-len("home")] + "tmp" and report["cwd"] == report["home"]

    # Nothing was harmed: the token is intact, the victim still serves, no secret anywhere.
    assert (server.home / "admin_token").read_text().strip() == server.token
    assert predict(server, "victim", {"instances": [[0.1, 0.2, 0.3]]}).status_code == 200
    text = response.text + all_logs(server.home)
    for secret in (server.token, *SECRETS.values()):
        assert secret not in text
    # The zygotes themselves run with the replicas' environment, not the server's.
    for pid in _zygote_pids(server):
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        assert not any(secret in environ for secret in SECRETS.values()) and "MLE_HOME" not in environ


def _zygote_pids(server: ServerProcess) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "mlengine.prediction.zygote" in cmdline and str(server.home) in cmdline:
                pids.append(int(entry.name))
    return pids


def test_a_deployment_uri_inside_mle_home_is_refused(server: ServerProcess) -> None:
    assert server.api("GET", "/v1/projects/mlengine/models/refused").status_code == 404
    assert server.api("POST", "/v1/projects/mlengine/models", json={"name": "refused"}).status_code == 200
    for uri in (str(server.home), str(server.home / "models"), "http://169.254.169.254/computeMetadata/v1/"):
        response = server.api("POST", "/v1/projects/mlengine/models/refused/versions",
                              json={"name": "v1", "deploymentUri": uri})
        assert response.status_code == 400 and "deploymentUri" in response.json()["error"]["message"], response.text
    assert not json.loads(server.api("GET", "/v1/projects/mlengine/models/refused/versions").text).get("versions")
