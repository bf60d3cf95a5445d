"""Entry point of the taxifare trainer: ``python -m trainer.task --job-dir DIR [options]``.

Runs the same way on a laptop, under ``mle local train`` and as a submitted training job:

* ``--job-dir`` is where checkpoints, TensorBoard summaries and the exported SavedModel go
  (AI Platform appends ``--job-dir`` to the arguments when the job has one). During
  hyperparameter tuning each trial writes under ``<job-dir>/<trial id>``.
* ``TF_CONFIG`` tells the replica who it is. The master (or chief, or a run without
  ``TF_CONFIG``) trains, evaluates, reports the metric to the hyperparameter tuning service
  with ``cloudml-hypertune`` after every evaluation (``--num-evals``) and exports the model.
  Workers train on their shard of the data under ``<job-dir>/<type>_<index>/`` without
  exporting; parameter servers and evaluators have nothing to do in this sample and exit
  successfully.
* Hyperparameters arrive as ``--name=value``; both ``--learning-rate`` and ``--learning_rate``
  spellings are accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Quiet TensorFlow's C++ logging; must happen before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CHIEF_TYPES = ("master", "chief")
IDLE_TYPES = ("ps", "evaluator")
DATA_DIR_ENV = "TAXIFARE_DATA_DIR"


def _add(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Add ``--some-name`` together with its ``--some_name`` spelling."""
    flags = [name]
    if "-" in name[2:]:
        flags.append("--" + name[2:].replace("-", "_"))
    parser.add_argument(*flags, **kwargs)


def _hidden_units(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(part) for part in re.split(r"[,\s]+", text.strip()) if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like '32,8', got {text!r}") from None
    if not units or min(units) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers like '32,8', got {text!r}")
    return units


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _optional_steps(text: str) -> int | None:
    """``0``, ``none`` or an empty value mean: the whole evaluation set."""
    if text.strip().lower() in ("", "0", "none"):
        return None
    return _positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.task",
        description="Train a Keras model that predicts New York taxi fares.",
    )
    _add(
        parser,
        "--job-dir",
        required=True,
        help="Output directory for checkpoints, summaries and the exported model.",
    )
    _add(
        parser,
        "--train-data-paths",
        nargs="+",
        default=None,
        help="Training CSV files or glob patterns (also comma-separated). "
        "Default: data/taxi-train.csv next to the trainer package.",
    )
    _add(
        parser,
        "--eval-data-paths",
        nargs="+",
        default=None,
        help="Evaluation CSV files or glob patterns. Default: data/taxi-valid.csv.",
    )
    _add(
        parser,
        "--train-steps",
        type=_positive_int,
        default=500,
        help="Number of training steps (batches) in total.",
    )
    _add(parser, "--batch-size", type=_positive_int, default=256)
    _add(parser, "--learning-rate", type=float, default=0.01)
    _add(
        parser,
        "--nbuckets",
        type=_positive_int,
        default=10,
        help="Grid size for bucketizing pickup and dropoff coordinates (nbuckets^2 cells).",
    )
    _add(
        parser,
        "--hidden-units",
        type=_hidden_units,
        default=(32, 8),
        help="Sizes of the hidden layers, e.g. '32,8'.",
    )
    _add(
        parser,
        "--embedding-dim",
        type=_positive_int,
        default=4,
        help="Size of the embeddings of grid cells, hour of day and day of week.",
    )
    _add(
        parser,
        "--eval-steps",
        type=_optional_steps,
        default=None,
        help="Evaluation batches per evaluation; default (or 0): the whole evaluation set.",
    )
    _add(
        parser,
        "--num-evals",
        type=_positive_int,
        default=1,
        help="Number of evaluations (and checkpoints) spread over the training steps.",
    )
    _add(
        parser,
        "--export-format",
        choices=("savedmodel", "none"),
        default="savedmodel",
        help="'savedmodel' exports to <job-dir>/export/<timestamp>/; 'none' skips the export.",
    )
    _add(
        parser,
        "--hypertune-metric-tag",
        default=None,
        help="Tag of the metric reported for hyperparameter tuning. Default: "
        "$CLOUD_ML_HP_METRIC_TAG (the job's hyperparameterMetricTag) if set, else 'rmse'.",
    )
    _add(
        parser,
        "--transform-dir",
        default=None,
        help="The transform/ directory of a preprocessing job (its transform.json): the "
        "analysis to train with when its nbuckets is --nbuckets. Default: analyze the "
        "training data here (cached).",
    )
    _add(
        parser,
        "--analyze-cache",
        default=None,
        help="Where analyses are cached by (data, nbuckets); default <job-dir>/analyze, which "
        "the trials of a tuning job share.",
    )
    _add(parser, "--seed", type=int, default=42)
    _add(
        parser,
        "--verbosity",
        choices=("DEBUG", "INFO", "WARN", "ERROR", "FATAL"),
        default="WARN",
        help="Python logging level of TensorFlow.",
    )
    return parser


def read_tf_config() -> dict[str, Any]:
    """The parsed ``TF_CONFIG`` environment variable, ``{}`` when unset."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise SystemExit(f"TF_CONFIG is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise SystemExit("TF_CONFIG must be a JSON object")
    return config


def default_data_path(filename: str) -> str | None:
    """Find a bundled data file: $TAXIFARE_DATA_DIR, next to the package, or ./data."""
    candidates: list[Path] = []
    if os.environ.get(DATA_DIR_ENV):
        candidates.append(Path(os.environ[DATA_DIR_ENV]))
    candidates.append(Path(__file__).resolve().parent.parent / "data")
    candidates.append(Path.cwd() / "data")
    for directory in candidates:
        path = directory / filename
        if path.is_file():
            return str(path)
    return None


def _resolve_data(
    parser: argparse.ArgumentParser, given: Sequence[str] | None, filename: str, flag: str
) -> list[str]:
    if given:
        return list(given)
    found = default_data_path(filename)
    if found is None:
        parser.error(
            f"{flag} was not given and no bundled data/{filename} was found next to the "
            f"trainer package, in ${DATA_DIR_ENV} or in ./data; pass {flag} PATH"
        )
    return [found]


def _training_replicas(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    """The (type, index) of every replica that trains, chief first."""
    replicas: list[tuple[str, int]] = []
    for task_type in (*CHIEF_TYPES, "worker"):
        replicas.extend((task_type, i) for i in range(len(cluster.get(task_type) or [])))
    return replicas


def _write_text(path: str, text: str) -> None:
    """Write a small file, locally without importing TensorFlow, or via tf.io.gfile (gs://)."""
    if "://" not in path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
        return
    import tensorflow as tf

    tf.io.gfile.makedirs(posixpath.dirname(path))
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(text)


class MetricReporter:
    """Reports the tuning metric with cloudml-hypertune, tolerating its absence.

    One ``HyperTune`` object per process, so the metric file keeps every report (one JSON
    line each, up to 100), which is what early stopping looks at.
    """

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._hypertune: Any = None
        self._disabled = False

    def __call__(self, value: float, step: int) -> None:
        if self._disabled:
            return
        try:
            if self._hypertune is None:
                try:
                    import hypertune
                except ImportError:
                    print("cloudml-hypertune is not installed; not reporting the tuning metric")
                    self._disabled = True
                    return
                self._hypertune = hypertune.HyperTune()
            self._hypertune.report_hyperparameter_tuning_metric(
                hyperparameter_metric_tag=self.tag, metric_value=value, global_step=step
            )
        except OSError as exc:
            print(f"could not report the tuning metric: {exc}", file=sys.stderr)


def _analysis(args: argparse.Namespace, train_paths: list[str], job_dir: str) -> dict[str, Any]:
    """The transform's analysis: the preprocessing job's, else the (cached) analyze pass."""
    import tempfile

    from trainer import analyze

    if args.transform_dir:
        given = analyze.load_analysis(args.transform_dir)
        if int(given["nbuckets"]) == args.nbuckets:
            print(f"Transform {given['fingerprint']} from {args.transform_dir}", flush=True)
            return given
        print(f"{args.transform_dir} was analysed for nbuckets={given['nbuckets']}, not "
              f"{args.nbuckets}: analysing again", flush=True)
    cache = args.analyze_cache or posixpath.join(job_dir, "analyze")
    if "://" in cache:  # the cache's lock needs a local file system
        cache = posixpath.join(tempfile.gettempdir(), "taxifare-analyze")
    analysis, hit = analyze.cached_analysis(analyze.expand(train_paths), args.nbuckets, cache)
    print(f"Analyze pass for nbuckets={args.nbuckets}: {'cache hit' if hit else 'computed'}, "
          f"transform {analysis['fingerprint']} ({analysis['rows']} rows)", flush=True)
    return analysis


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.monotonic()

    tf_config = read_tf_config()
    task = tf_config.get("task") or {"type": "master", "index": 0}
    task_type = str(task.get("type") or "master")
    task_index = int(task.get("index") or 0)
    trial = str(task.get("trial") or "")
    if tf_config:
        print(f"TF_CONFIG task: {json.dumps(task)}", flush=True)
    else:
        print("TF_CONFIG is not set: running as a single master replica", flush=True)

    job_dir = str(args.job_dir)
    output_dir = posixpath.join(job_dir, trial) if trial else job_dir
    if tf_config:
        _write_text(
            posixpath.join(output_dir, f"tf_config_{task_type}_{task_index}.json"),
            json.dumps(tf_config, indent=2, sort_keys=True),
        )

    if task_type in IDLE_TYPES:
        print(
            f"{task_type} replica: nothing to do in this sample (replicas train "
            "independently, without parameter servers); exiting"
        )
        return 0

    train_paths = _resolve_data(
        parser, args.train_data_paths, "taxi-train.csv", "--train-data-paths"
    )
    eval_paths = _resolve_data(parser, args.eval_data_paths, "taxi-valid.csv", "--eval-data-paths")

    analysis = _analysis(args, train_paths, job_dir)

    import tensorflow as tf

    from trainer import model

    tf.get_logger().setLevel(args.verbosity)

    is_chief = task_type in CHIEF_TYPES
    replicas = _training_replicas(tf_config.get("cluster") or {})
    shard = None
    if (task_type, task_index) in replicas and len(replicas) > 1:
        shard = (len(replicas), replicas.index((task_type, task_index)))
    if not is_chief:
        output_dir = posixpath.join(output_dir, f"{task_type}_{task_index}")

    hparams = model.HParams(
        train_steps=args.train_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        nbuckets=args.nbuckets,
        hidden_units=args.hidden_units,
        embedding_dim=args.embedding_dim,
        eval_steps=args.eval_steps,
        num_evals=args.num_evals,
        seed=args.seed + (shard[1] if shard else 0),
    )
    print(
        f"Training {task_type} {task_index} on {train_paths} (shard {shard}), "
        f"writing to {output_dir}",
        flush=True,
    )
    reporter = MetricReporter(
        args.hypertune_metric_tag or os.environ.get("CLOUD_ML_HP_METRIC_TAG") or "rmse"
    )

    def report(rmse: float, step: int) -> None:
        print(f"eval rmse: {rmse:.4f} (global step {step})", flush=True)
        if is_chief:  # the tuning service reads the master's metric
            reporter(rmse, step)

    result = model.train_and_evaluate(
        hparams,
        train_paths,
        eval_paths,
        output_dir,
        export=is_chief and args.export_format == "savedmodel",
        shard=shard,
        report=report,
        analysis=analysis,
    )
    if result.export_path:
        print(f"Exported SavedModel to {result.export_path}", flush=True)
    print(f"Done in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
