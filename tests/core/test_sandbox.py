"""The trainers' sandbox (mlengine.core.sandbox): policy expansion, and real child processes
confined by it (Landlock, no capabilities), plus the environment allow-list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlengine.core import sandbox
from mlengine.core.sandbox import Rule, SandboxError, SandboxPolicy, plan_rules, replica_environment

needs_landlock = pytest.mark.skipif(sandbox.landlock_abi() < 1, reason="the kernel has no Landlock")

#: Run in the confined child: try each (label, kind, path) and print {label: "ok" | "denied"}.
PROBE = textwrap.dedent("""
    import json, os, sys
    out = {}
    for label, kind, path in json.loads(sys.argv[1]):
        try:
            if kind == "read":
                open(path, "rb").read()
            elif kind == "list":
                os.listdir(path)
            elif kind == "write":
                with open(path, "w") as f:
                    f.write("x")
            elif kind == "mkdir":
                os.mkdir(path)
            elif kind == "kill":
                os.kill(int(path), 0)
            out[label] = "ok"
        except PermissionError:
            out[label] = "denied"
        except OSError as exc:
            out[label] = f"error {exc.errno}"
    caps = [line.split()[1] for line in open("/proc/self/status") if line.startswith(("CapEff", "CapBnd"))]
    out["caps"] = caps
    print(json.dumps(out))
""")


def probe(policy: SandboxPolicy, checks: list[tuple[str, str, str]]) -> dict[str, object]:
    confinement = policy.confinement()
    try:
        result = subprocess.run([sys.executable, "-I", "-c", PROBE, json.dumps(checks)], preexec_fn=confinement.enter,
                                capture_output=True, text=True, timeout=60)
    finally:
        confinement.close()
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp/home (the server's home: a secret, envs/k/lib.py, jobs/A/log), tmp/data/x.csv, tmp/out/."""
    (tmp_path / "home" / "envs" / "k").mkdir(parents=True)
    (tmp_path / "home" / "jobs" / "A").mkdir(parents=True)
    (tmp_path / "home" / "admin_token").write_text("secret")
    (tmp_path / "home" / "envs" / "k" / "lib.py").write_text("x = 1")
    (tmp_path / "home" / "jobs" / "A" / "log").write_text("A's log")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("1,2")
    (tmp_path / "out").mkdir()
    (tmp_path / "link-to-home").symlink_to(tmp_path / "home")
    return tmp_path


# Expansion -------------------------------------------------------------------------------------

def test_ancestors_of_a_hidden_path_are_expanded_child_by_child(tree: Path) -> None:
    home = str(tree / "home")
    rules = plan_rules(SandboxPolicy(hidden=(home,), readable=(f"{home}/envs/k",),
                                     private=(f"{home}/jobs/B/work",)))
    paths = {r.path: r.access for r in rules}
    assert paths[str(tree / "data")] == "read" and paths[str(tree / "out")] == "read"
    # no rule on the hidden path, on any of its ancestors, or on a link that leads into it
    for forbidden in (home, str(tree), "/", str(tree / "link-to-home")):
        assert forbidden not in paths
    assert not any(p.startswith(home + "/") for p in paths if p != f"{home}/envs/k")
    assert paths[f"{home}/envs/k"] == "read"  # the exception inside the hidden home
    assert f"{home}/jobs/B/work" not in paths  # private dirs that do not exist yet are skipped
    assert paths.get("/usr") == "read" and "/dev" not in paths
    assert paths["/dev/null"] == "write" and not any(p.startswith("/dev/sd") or p.startswith("/dev/vd")
                                                     for p in paths)


def test_a_writable_root_that_contains_a_hidden_path_is_carved(tree: Path) -> None:
    rules = plan_rules(SandboxPolicy(hidden=(str(tree / "home"),), writable=(str(tree),)))
    writes = {r.path for r in rules if r.access == "write"}
    assert {str(tree / "data"), str(tree / "out")} <= writes
    assert str(tree) not in writes and str(tree / "home") not in writes


def test_policy_json_round_trip_and_errors() -> None:
    policy = SandboxPolicy(hidden=("/a",), readable=("/b",), writable=("/c",), private=("/d",), landlock=False)
    assert SandboxPolicy.from_json(policy.to_json()) == policy
    with pytest.raises(SandboxError, match="bad sandbox policy"):
        SandboxPolicy.from_json("[1, 2]")
    with pytest.raises(SandboxError):
        SandboxPolicy.from_json("{not json")
    assert Rule("/x", "read") == Rule("/x", "read")


def test_off_creates_the_private_directories_and_confines_nothing(tmp_path: Path) -> None:
    private = tmp_path / "r" / "tmp"
    confinement = SandboxPolicy(private=(str(private),), landlock=False).confinement()
    assert private.is_dir() and oct(private.stat().st_mode & 0o777) == "0o700"
    assert confinement.ruleset is None
    confinement.enter()  # a no-op


def test_missing_landlock_is_an_error_that_names_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sandbox, "landlock_abi", lambda: 0)
    with pytest.raises(SandboxError, match="MLE_SANDBOX=landlock, but .*MLE_SANDBOX=off"):
        SandboxPolicy(hidden=(str(tmp_path),)).confinement()


# Confined child processes ----------------------------------------------------------------------

@needs_landlock
def test_a_confined_child_reads_allowed_files_and_nothing_hidden(tree: Path) -> None:
    home = tree / "home"
    private = home / "jobs" / "B" / "tmp"
    policy = SandboxPolicy(hidden=(str(home),), readable=(str(home / "envs" / "k"),), private=(str(private),))
    seen = probe(policy, [
        ("data", "read", str(tree / "data" / "x.csv")),
        ("env", "read", str(home / "envs" / "k" / "lib.py")),
        ("token", "read", str(home / "admin_token")),
        ("via link", "read", str(tree / "link-to-home" / "admin_token")),
        ("other job", "read", str(home / "jobs" / "A" / "log")),
        ("list home", "list", str(home)),
        ("own tmp", "write", str(private / "f")),
        ("data write", "write", str(tree / "data" / "y.csv")),
        ("new in out", "write", str(tree / "out" / "z")),
        ("system", "write", "/etc/mle-sandbox-test"),
        ("dev null", "write", "/dev/null"),
        ("urandom", "list", "/dev"),
    ])
    assert seen["data"] == "ok" and seen["env"] == "ok" and seen["own tmp"] == "ok" and seen["dev null"] == "ok"
    for label in ("token", "via link", "other job", "list home", "data write", "new in out", "system", "urandom"):
        assert seen[label] == "denied", (label, seen)
    assert seen["caps"] == ["0000000000000000", "0000000000000000"]  # no capabilities, not even in the bound
    assert (home / "admin_token").read_text() == "secret"


@needs_landlock
def test_a_confined_child_writes_its_writable_roots_but_not_hidden_paths_inside(tree: Path) -> None:
    seen = probe(SandboxPolicy(hidden=(str(tree / "home"),), writable=(str(tree),)), [
        ("out", "write", str(tree / "out" / "result.json")),
        ("mkdir", "mkdir", str(tree / "out" / "sub")),
        ("hidden", "write", str(tree / "home" / "admin_token")),
        ("beside hidden", "mkdir", str(tree / "new-dir")),  # created later next to a hidden path
    ])
    assert seen["out"] == "ok" and seen["mkdir"] == "ok"
    assert seen["hidden"] == "denied" and seen["beside hidden"] == "denied"
    assert (tree / "out" / "result.json").read_text() == "x"


@needs_landlock
def test_a_confined_child_cannot_read_or_signal_processes_outside_its_sandbox(tmp_path: Path) -> None:
    me = os.getpid()
    seen = probe(SandboxPolicy(hidden=(str(tmp_path),)), [
        ("parent environ", "read", f"/proc/{me}/environ"),
        ("parent mem", "read", f"/proc/{me}/mem"),
        ("own environ", "read", "/proc/self/environ"),
        ("signal parent", "kill", str(me)),
    ])
    assert seen["parent environ"] == "denied" and seen["parent mem"] == "denied"
    assert seen["own environ"] == "ok"
    if sandbox.landlock_abi() >= 6:
        assert seen["signal parent"] == "denied"


# Environment -----------------------------------------------------------------------------------

def test_the_environment_is_an_allow_list() -> None:
    host = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC", "CUDA_VISIBLE_DEVICES": "0",
            "MLE_HOME": "/srv/mle", "MLE_TOKEN": "t", "MLE_DATABASE_URL": "postgresql://u:p@h/db",
            "AWS_SECRET_ACCESS_KEY": "s", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json", "RAY_AUTH_TOKEN": "r",
            "TERM": "xterm", "PYTHONPATH": "/server", "HF_TOKEN": "h", "HF_HOME": "/hf"}
    env = replica_environment(host, {"TF_CONFIG": "{}", "PATH": "/env/bin:/usr/bin"})
    assert env == {"PATH": "/env/bin:/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC",
                   "CUDA_VISIBLE_DEVICES": "0", "TF_CONFIG": "{}"}
    extra = replica_environment(host, {}, (*sandbox.INHERITED_ENV, "HF_HOME"))
    assert extra["HF_HOME"] == "/hf" and "HF_TOKEN" not in extra
