"""The taxifare sample trainer, run as a user would: ``python -m trainer.task`` in a subprocess."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "samples" / "taxifare"
DATA_DIR = SAMPLE_DIR / "data"

HAVE_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAVE_TF, reason="tensorflow is not installed")

RAW_INSTANCE: dict[str, Any] = {
    "pickup_datetime": "2011-01-28 20:42:59 UTC",
    "pickup_longitude": -73.999022,
    "pickup_latitude": 40.739146,
    "dropoff_longitude": -73.990369,
    "dropoff_latitude": 40.717866,
    "passenger_count": 1,
}


def _load(name: str) -> ModuleType:
    """Import a trainer module under a private name (``trainer`` is too common to cache)."""
    path = SAMPLE_DIR / "trainer" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_taxifare_trainer_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def _tf_config(task_type: str, index: int, trial: str | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {"type": task_type, "index": index}
    if trial is not None:
        task["trial"] = trial
    return {
        "cluster": {
            "master": ["localhost:2222"],
            "worker": ["localhost:2223"],
            "ps": ["localhost:2224"],
        },
        "task": task,
        "job": {"job_name": "taxifare_test", "scale_tier": "CUSTOM"},
        "environment": "cloud",
    }


def _run_trainer(
    args: list[str], tf_config: dict[str, Any], env_extra: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(env_extra)
    env["TF_CONFIG"] = json.dumps(tf_config)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.task", *args],
        cwd=SAMPLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"trainer exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


@needs_tf
@pytest.mark.slow
def test_master_trains_checkpoints_reports_and_exports(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    metric_file = tmp_path / "hypertune" / "output.metrics"
    tf_config = _tf_config("master", 0)

    proc = _run_trainer(
        [
            "--train-data-paths",
            str(DATA_DIR / "taxi-train.csv"),
            "--eval-data-paths",
            str(DATA_DIR / "taxi-valid.csv"),
            "--train-steps",
            "20",
            "--batch-size",
            "32",
            "--hidden_units=16,4",  # hyperparameters may arrive spelled with underscores
            "--hypertune-metric-tag=taxi_rmse",
            "--job-dir",
            str(job_dir),
        ],
        tf_config,
        {"CLOUD_ML_HP_METRIC_FILE": str(metric_file), "CLOUD_ML_TRIAL_ID": "0"},
    )

    assert 'TF_CONFIG task: {"type": "master", "index": 0}' in proc.stdout
    assert "eval rmse: " in proc.stdout
    saw = json.loads((job_dir / "tf_config_master_0.json").read_text())
    assert saw == tf_config

    # Checkpoints (TensorFlow format) and TensorBoard event files under the job dir.
    assert (job_dir / "checkpoints" / "checkpoint").is_file()
    assert list((job_dir / "checkpoints").glob("ckpt-20.index"))
    events = list((job_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events

    # The tuning metric, in the cloudml-hypertune file format.
    lines = metric_file.read_text().strip().splitlines()
    reported = json.loads(lines[-1])
    assert math.isfinite(float(reported["taxi_rmse"]))
    assert reported["global_step"] == "20"

    # The SavedModel: exported where the log says, serving raw feature columns.
    exports = sorted((job_dir / "export").glob("*/saved_model.pb"))
    assert len(exports) == 1
    export_dir = exports[0].parent
    assert f"Exported SavedModel to {export_dir}" in proc.stdout

    import tensorflow as tf

    tags = {
        value.tag
        for path in events
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
    }
    assert "epoch_rmse" in tags

    loaded = tf.saved_model.load(str(export_dir))
    serve = loaded.signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    assert set(specs) == set(RAW_INSTANCE)
    instances = [RAW_INSTANCE, {**RAW_INSTANCE, "passenger_count": 3}]
    inputs = {
        name: tf.constant([inst[name] for inst in instances], dtype=spec.dtype)
        for name, spec in specs.items()
    }
    fares = serve(**inputs)["fare_amount"].numpy()
    assert fares.shape == (2,)
    assert all(math.isfinite(float(fare)) for fare in fares)


def test_parameter_server_records_tf_config_and_exits(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    tf_config = _tf_config("ps", 0, trial="7")
    proc = _run_trainer(["--job-dir", str(job_dir)], tf_config, {})
    assert 'TF_CONFIG task: {"type": "ps", "index": 0, "trial": "7"}' in proc.stdout
    # During hyperparameter tuning a trial writes under <job-dir>/<trial>.
    assert json.loads((job_dir / "7" / "tf_config_ps_0.json").read_text()) == tf_config


def test_arguments_accept_both_spellings_and_parse_hidden_units() -> None:
    task = _load("task")
    parser = task.build_parser()
    args = parser.parse_args(
        [
            "--job-dir",
            "/tmp/x",
            "--learning_rate=0.5",
            "--hidden-units",
            "64, 16,4",
            "--eval-steps=0",
        ]
    )
    assert args.learning_rate == 0.5
    assert args.hidden_units == (64, 16, 4)
    assert args.eval_steps is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--job-dir", "/tmp/x", "--hidden-units", "32,x"])


def test_bundled_data_is_found_next_to_the_package() -> None:
    task = _load("task")
    assert task.default_data_path("taxi-train.csv") == str(DATA_DIR / "taxi-train.csv")
    assert task.default_data_path("no-such-file.csv") is None


@needs_tf
def test_datetime_features_match_python() -> None:
    model = _load("model")
    import tensorflow as tf

    stamps = [
        "2011-01-28 20:42:59 UTC",
        "2012-02-29 00:05:00 UTC",
        "2013-03-01 23:59:59 UTC",
        "2015-12-31 12:00:00 UTC",
        "2000-01-01 07:30:00",
    ]
    hours, days = model._parse_datetime(tf.constant(stamps))
    for stamp, hour, day in zip(stamps, hours.numpy(), days.numpy(), strict=True):
        parsed = dt.datetime.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")
        assert hour == parsed.hour
        assert day == (parsed.weekday() + 1) % 7  # 0 = Sunday
