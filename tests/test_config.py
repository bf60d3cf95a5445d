"""Settings (``mlengine.config``): types, constraints, precedence, and clear errors on bad values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlengine import config
from mlengine.config import Settings, load_settings, settings_table
from mlengine.errors import Code, MLEngineError

ENV_NAMES = [name for name, _ in settings_table()]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MLE_* variable from the caller's environment; HOME is a temp dir."""
    for name in list(os.environ):
        if name.startswith("MLE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def invalid(**env: str) -> MLEngineError:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        with pytest.raises(MLEngineError) as info:
            load_settings()
    assert info.value.code is Code.INVALID_ARGUMENT
    return info.value


# --------------------------------------------------------------------------- #
# Declarations
# --------------------------------------------------------------------------- #


def test_every_setting_has_an_mle_variable_and_help() -> None:
    table = settings_table()
    assert len(table) == len(Settings.model_fields) == len(set(ENV_NAMES))
    assert all(name.startswith("MLE_") and text for name, text in table)
    assert ("MLE_EXECUTOR", "Where replicas run: local | ray.") in table
    assert not hasattr(config, "Setting")


def test_defaults_and_derived_locations(clean_env: Path) -> None:
    s = load_settings()
    home = clean_env / ".mlengine"
    assert s.home == home
    assert (s.executor, s.resource_mode, s.capacity_slots, s.local_gpus) == ("local", "auto", 0, -1)
    assert (s.port_range, s.ray_placement_strategy, s.log_level) == ("20000-32767", "PACK", "info")
    assert (s.tuning_bayesian, s.serving_zygotes, s.project) == ("tpe", "on", "mlengine")
    assert s.predict_batch_wait_ms == 0.0 and s.upload_max_bytes == 512 * 1024 * 1024
    assert s.api_url is None and s.token is None and s.machine_types_file is None
    assert s.resolved_database_url == f"sqlite:///{home / 'mlengine.db'}"
    assert s.token_file == home / "admin_token" and s.server_file == home / "server.json"
    assert (s.jobs_dir, s.envs_dir, s.staging_dir) == (home / "jobs", home / "envs", home / "staging")
    assert (s.models_dir, s.serving_dir, s.ray_dir) == (home / "models", home / "serving", home / "ray")
    assert s.machine_types_path == home / "machine_types.yaml"
    assert s.effective_slots == (os.cpu_count() or 1)
    assert load_settings(capacity_slots=3).effective_slots == 3


def test_settings_are_immutable() -> None:
    s = load_settings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance ValidationError
        s.executor = "ray"
    assert s.executor == "local"


def test_values_are_typed(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.setenv("MLE_CAPACITY_SLOTS", "4")
    monkeypatch.setenv("MLE_PREDICT_TIMEOUT", "2.5")
    monkeypatch.setenv("MLE_MACHINE_TYPES", "~/types.yaml")
    monkeypatch.setenv("MLE_PORT_RANGE", "1024-1025")
    monkeypatch.setenv("MLE_LOCAL_GPUS", "-1")
    monkeypatch.setenv("MLE_PREDICT_BATCH_WAIT_MS", "0")
    monkeypatch.setenv("MLE_EXECUTOR", "ray")
    monkeypatch.setenv("MLE_DATABASE_URL", "postgresql://db/x")
    s = load_settings()
    assert s.capacity_slots == 4 and isinstance(s.capacity_slots, int)
    assert s.predict_timeout_seconds == 2.5
    assert s.machine_types_file == clean_env / "types.yaml" and s.machine_types_path == s.machine_types_file
    assert (s.port_range, s.local_gpus, s.predict_batch_wait_ms, s.executor) == ("1024-1025", -1, 0.0, "ray")
    assert s.resolved_database_url == "postgresql://db/x"


# --------------------------------------------------------------------------- #
# Precedence, empty values, home
# --------------------------------------------------------------------------- #


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLE_EXECUTOR", "ray")
    monkeypatch.setenv("MLE_RAY_ADDRESS", "env:6379")
    monkeypatch.setenv("MLE_CAPACITY_SLOTS", "2")
    s = load_settings(executor="local", capacity_slots=5, ray_address=None)
    assert (s.executor, s.capacity_slots) == ("local", 5)
    assert s.ray_address == "env:6379"  # None = not given: the environment's value stays
    assert load_settings(executor=None).executor == "ray"


def test_a_bad_override_is_reported_like_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLE_EXECUTOR", "bogus")
    assert load_settings(executor="ray").executor == "ray"  # the override replaces the bad value
    with pytest.raises(MLEngineError, match=r"MLE_CAPACITY_SLOTS=-1 is not valid: must be an integer >= 0"):
        load_settings(executor="ray", capacity_slots=-1)


def test_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="nonsense"):
        load_settings(nonsense=1)


def test_an_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    for name in ("MLE_HOME", "MLE_EXECUTOR", "MLE_CAPACITY_SLOTS", "MLE_PORT_RANGE", "MLE_API_URL",
                 "MLE_PREDICT_TIMEOUT", "MLE_MACHINE_TYPES"):
        monkeypatch.setenv(name, "")
    s = load_settings()
    assert s.home == clean_env / ".mlengine"
    assert (s.executor, s.capacity_slots, s.port_range, s.api_url) == ("local", 0, "20000-32767", None)
    assert s.predict_timeout_seconds == 60.0 and s.machine_types_file is None


def test_home_is_expanded_and_absolute(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.setenv("MLE_HOME", "~/state")
    assert load_settings().home == clean_env / "state"
    monkeypatch.chdir(clean_env)
    monkeypatch.setenv("MLE_HOME", "relative/dir")
    assert load_settings().home == clean_env / "relative" / "dir"
    assert load_settings(home="~/other").home == clean_env / "other"
    assert load_settings(home=Path("x")).home == clean_env / "x"
    assert load_settings(home=None).home == clean_env / "relative" / "dir"


def test_variable_names_are_case_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("mle_executor", "bogus")
    assert load_settings().executor == "local"


# --------------------------------------------------------------------------- #
# Invalid values
# --------------------------------------------------------------------------- #


def test_the_message_for_a_bad_executor() -> None:
    err = invalid(MLE_EXECUTOR="bogus")
    assert err.message == "MLE_EXECUTOR='bogus' is not valid: must be one of local, ray"


CHOICES = [
    ("MLE_EXECUTOR", "kubernetes", "must be one of local, ray"),
    ("MLE_RESOURCE_MODE", "bogus", "must be one of auto, machine, process"),
    ("MLE_RAY_PLACEMENT_STRATEGY", "pack", "must be one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD"),
    ("MLE_TUNING_BAYESIAN", "cmaes", "must be one of tpe, gp"),
    ("MLE_SERVING_ZYGOTES", "yes", "must be one of on, off"),
    ("MLE_LOG_LEVEL", "verbose", "must be one of critical, error, warning, info, debug, trace"),
]


@pytest.mark.parametrize(("name", "value", "valid"), CHOICES, ids=[c[0] for c in CHOICES])
def test_choice_settings_name_their_values(name: str, value: str, valid: str) -> None:
    assert invalid(**{name: value}).message == f"{name}={value!r} is not valid: {valid}"


PORT_RANGE_VALID = "must be LOW-HIGH with 1024 <= LOW < HIGH <= 65535"
NUMBERS = [
    ("MLE_CAPACITY_SLOTS", "-3", "must be an integer >= 0"),
    ("MLE_CAPACITY_SLOTS", "abc", "must be an integer >= 0"),
    ("MLE_CAPACITY_SLOTS", "1.5", "must be an integer >= 0"),
    ("MLE_LOCAL_GPUS", "-2", "must be an integer >= -1"),
    ("MLE_RAY_NUM_CPUS", "-1", "must be an integer >= 0"),
    ("MLE_SERVING_MAX_NODES", "-1", "must be an integer >= 0"),
    ("MLE_UPLOAD_MAX_BYTES", "0", "must be an integer > 0"),
    ("MLE_PREDICT_MAX_BODY_BYTES", "0", "must be an integer > 0"),
    ("MLE_PREDICT_MAX_BATCH", "0", "must be an integer > 0"),
    ("MLE_PREDICT_QUEUE_LIMIT", "0", "must be an integer > 0"),
    ("MLE_MODEL_MAX_FILES", "0", "must be an integer > 0"),
    ("MLE_MODEL_MAX_BYTES", "-5", "must be an integer > 0"),
    ("MLE_RAY_PLACEMENT_TIMEOUT", "0", "must be a number > 0"),
    ("MLE_CANCEL_GRACE_SECONDS", "-1", "must be a number >= 0"),
    ("MLE_SCHEDULER_INTERVAL", "0", "must be a number > 0"),
    ("MLE_PREDICT_TIMEOUT", "0", "must be a number > 0"),
    ("MLE_PREDICT_TIMEOUT", "nan", "must be a number > 0"),
    ("MLE_PREDICT_TIMEOUT", "soon", "must be a number > 0"),
    ("MLE_PREDICT_BATCH_WAIT_MS", "-1", "must be a number >= 0"),
    ("MLE_SERVING_IDLE_SECONDS", "0", "must be a number > 0"),
    ("MLE_SERVING_TARGET_INFLIGHT", "0", "must be a number > 0"),
    ("MLE_SERVING_START_TIMEOUT", "-10", "must be a number > 0"),
    ("MLE_PORT_RANGE", "32767-20000", PORT_RANGE_VALID),
    ("MLE_PORT_RANGE", "0-100", PORT_RANGE_VALID),
    ("MLE_PORT_RANGE", "20000-70000", PORT_RANGE_VALID),
    ("MLE_PORT_RANGE", "20000", PORT_RANGE_VALID),
    ("MLE_PORT_RANGE", "a-b", PORT_RANGE_VALID),
]


@pytest.mark.parametrize(("name", "value", "valid"), NUMBERS, ids=[f"{n}={v}" for n, v, _ in NUMBERS])
def test_numeric_settings_are_bounded(name: str, value: str, valid: str) -> None:
    assert invalid(**{name: value}).message.startswith(f"{name}={value!r} is not valid: {valid}")


def test_boundary_values_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [("MLE_CAPACITY_SLOTS", "0"), ("MLE_LOCAL_GPUS", "-1"), ("MLE_SERVING_MAX_NODES", "0"),
                        ("MLE_CANCEL_GRACE_SECONDS", "0"), ("MLE_PREDICT_BATCH_WAIT_MS", "0"),
                        ("MLE_PORT_RANGE", "65534-65535"), ("MLE_PREDICT_MAX_BATCH", "1")]:
        monkeypatch.setenv(name, value)
    load_settings()


def test_every_typed_setting_rejects_garbage() -> None:
    typed = [name for name, field in Settings.model_fields.items()
             if field.annotation not in (str, str | None, Path, Path | None)]
    assert len(typed) >= 20
    for name in typed:
        env = config._ENV_NAMES[name]
        message = invalid(**{env: "garbage!"}).message
        assert message.startswith(f"{env}='garbage!' is not valid: must be "), message


def test_several_bad_variables_make_one_message() -> None:
    err = invalid(MLE_EXECUTOR="bogus", MLE_CAPACITY_SLOTS="-3", MLE_SERVING_ZYGOTES="maybe")
    assert err.message == (
        "MLE_EXECUTOR='bogus' is not valid: must be one of local, ray; "
        "MLE_CAPACITY_SLOTS='-3' is not valid: must be an integer >= 0; "
        "MLE_SERVING_ZYGOTES='maybe' is not valid: must be one of on, off"
    )


# --------------------------------------------------------------------------- #
# The CLI and the server stop with the message
# --------------------------------------------------------------------------- #


def test_cli_commands_print_the_message_and_exit_2(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    from mlengine.cli.main import cli

    monkeypatch.setenv("MLE_HOME", str(clean_env / "home"))
    monkeypatch.setenv("MLE_RESOURCE_MODE", "bogus")
    result = CliRunner().invoke(cli, ["jobs", "list"])
    assert result.exit_code == 2, result.output
    assert "ERROR: (mle.jobs.list) MLE_RESOURCE_MODE='bogus' is not valid: must be one of auto, machine, process" \
        in result.output
    assert "Traceback" not in result.output


def run(argv: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLE_")}
    return subprocess.run(argv, env={**clean, "MLE_HOME": str(home), **env}, cwd=str(home.parent),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


MLE = [sys.executable, "-m", "mlengine.cli.main"]


def test_server_start_foreground_stops_on_a_bad_executor(clean_env: Path) -> None:
    proc = run([*MLE, "server", "start", "--foreground", "--port", "0"], clean_env / "home", MLE_EXECUTOR="bogus")
    assert proc.returncode != 0
    assert "MLE_EXECUTOR='bogus' is not valid: must be one of local, ray" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (clean_env / "home" / "server.json").exists()


def test_server_start_background_stops_on_bad_capacity_slots(clean_env: Path) -> None:
    proc = run([*MLE, "server", "start", "--port", "0"], clean_env / "home", MLE_CAPACITY_SLOTS="abc")
    assert proc.returncode != 0
    assert "MLE_CAPACITY_SLOTS='abc' is not valid: must be an integer >= 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (clean_env / "home" / "server.json").exists()


def test_the_server_process_itself_stops_with_the_message(clean_env: Path) -> None:
    """What `mle server start` spawns: exit 1 and ``ERROR: ...`` before it listens."""
    argv = [sys.executable, "-m", "mlengine.api.server", "--port", "0"]
    proc = run(argv, clean_env / "home", MLE_RESOURCE_MODE="bogus", MLE_CAPACITY_SLOTS="-3")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "ERROR: MLE_CAPACITY_SLOTS='-3' is not valid: must be an integer >= 0; "
        "MLE_RESOURCE_MODE='bogus' is not valid: must be one of auto, machine, process"
    )
    proc = run([*argv, "--executor", "bogus"], clean_env / "home")
    assert proc.returncode == 1
    assert "ERROR: MLE_EXECUTOR='bogus' is not valid: must be one of local, ray" in proc.stderr


def test_a_store_that_cannot_be_opened_stops_the_server_with_a_message(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLE_")}
    env.update({"MLE_HOME": str(tmp_path), "MLE_DATABASE_URL": "sqlite:////proc/mlengine.db"})
    result = subprocess.run([sys.executable, "-m", "mlengine.api.server", "--port", "0"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "ERROR: cannot open the metadata store sqlite:////proc/mlengine.db (MLE_DATABASE_URL)" in result.stderr
    assert "Traceback" not in result.stderr
