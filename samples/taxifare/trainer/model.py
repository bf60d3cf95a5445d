"""The ML of the taxifare sample: input pipeline, feature engineering, model and export.

The feature engineering lives in one function, :func:`transform`, that maps the *raw* columns
of the taxi CSV files to the model's inputs using TensorFlow ops only. The training input
pipeline calls it inside ``tf.data`` and the exported serving signature calls it inside the
SavedModel graph, so an online prediction request carries the raw columns and training and
serving cannot drift apart.
"""

from __future__ import annotations

import json
import posixpath
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

# --- the data -------------------------------------------------------------------------------

CSV_COLUMNS: tuple[str, ...] = (
    "fare_amount",
    "pickup_datetime",
    "pickup_longitude",
    "pickup_latitude",
    "dropoff_longitude",
    "dropoff_latitude",
    "passenger_count",
    "key",
)
LABEL_COLUMN = "fare_amount"
RECORD_DEFAULTS: list[list[Any]] = [[0.0], ["na"], [0.0], [0.0], [0.0], [0.0], [1.0], ["na"]]

#: The raw feature columns, in the order of the serving signature, with their dtypes.
RAW_FEATURES: dict[str, tf.DType] = {
    "pickup_datetime": tf.string,
    "pickup_longitude": tf.float32,
    "pickup_latitude": tf.float32,
    "dropoff_longitude": tf.float32,
    "dropoff_latitude": tf.float32,
    "passenger_count": tf.float32,
}
SERVING_OUTPUT = "fare_amount"

# The part of New York City that is bucketized into a grid; rides outside fall in edge cells.
LON_MIN, LON_MAX = -74.05, -73.75
LAT_MIN, LAT_MAX = 40.60, 40.90
# Degrees to kilometres at the latitude of New York.
KM_PER_DEG_LAT = 111.0
KM_PER_DEG_LON = 84.2
# Mean fare of the training set: the output bias starts there so a few steps already help.
MEAN_FARE = 11.3
NUM_NUMERIC = 8


@dataclass(frozen=True)
class HParams:
    """The hyperparameters and run settings of one training run."""

    train_steps: int = 500
    batch_size: int = 256
    learning_rate: float = 0.01
    nbuckets: int = 10
    hidden_units: tuple[int, ...] = (32, 8)
    embedding_dim: int = 4
    eval_steps: int | None = None
    num_evals: int = 1
    seed: int = 42
    verbose: int = 2


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    rmse: float
    global_step: int
    output_dir: str
    export_path: str | None


# --- feature engineering (shared by training and serving) -----------------------------------


def _parse_datetime(datetimes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Hour of day and day of week (0 = Sunday) of ``YYYY-MM-DD HH:MM:SS[ UTC]`` strings."""

    def number(pos: int, length: int) -> tf.Tensor:
        return tf.strings.to_number(tf.strings.substr(datetimes, pos, length), tf.int32)

    year, month, day, hour = number(0, 4), number(5, 2), number(8, 2), number(11, 2)
    # Days since 1970-01-01 (Howard Hinnant's days_from_civil), in integer tensor ops.
    year = year - tf.cast(month <= 2, tf.int32)
    era = tf.math.floordiv(year, 400)
    year_of_era = year - era * 400
    day_of_year = tf.math.floordiv(153 * tf.math.floormod(month + 9, 12) + 2, 5) + day - 1
    day_of_era = (
        year_of_era * 365
        + tf.math.floordiv(year_of_era, 4)
        - tf.math.floordiv(year_of_era, 100)
        + day_of_year
    )
    days = era * 146097 + day_of_era - 719468
    dayofweek = tf.math.floormod(days + 4, 7)  # 1970-01-01 was a Thursday
    return tf.clip_by_value(hour, 0, 23), dayofweek


def default_analysis(nbuckets: int) -> dict[str, Any]:
    """Transform constants without an analyze pass: the fixed NYC box, distance / 10 km."""
    return {"nbuckets": nbuckets, "lon_min": LON_MIN, "lon_max": LON_MAX, "lat_min": LAT_MIN,
            "lat_max": LAT_MAX, "distance_mean": 0.0, "distance_std": 10.0}


def transform(
    raw: dict[str, tf.Tensor], nbuckets: int, analysis: Mapping[str, Any] | None = None
) -> dict[str, tf.Tensor]:
    """Map raw feature columns (each of shape ``[batch]``) to the model's inputs.

    ``analysis`` holds the constants of the analyze pass over the training data
    (:mod:`trainer.analyze`): the coordinate range bucketized into an ``nbuckets`` grid and the
    distance's mean and spread. They become constants of the graph, so the exported model
    carries the transform it was trained with.
    """
    from trainer.analyze import cross_bins

    a = dict(analysis) if analysis is not None else default_analysis(nbuckets)
    lon_min, lon_max = float(a["lon_min"]), float(a["lon_max"])
    lat_min, lat_max = float(a["lat_min"]), float(a["lat_max"])
    plon = tf.cast(raw["pickup_longitude"], tf.float32)
    plat = tf.cast(raw["pickup_latitude"], tf.float32)
    dlon = tf.cast(raw["dropoff_longitude"], tf.float32)
    dlat = tf.cast(raw["dropoff_latitude"], tf.float32)
    passengers = tf.cast(raw["passenger_count"], tf.float32)

    east_km = (dlon - plon) * KM_PER_DEG_LON
    north_km = (dlat - plat) * KM_PER_DEG_LAT
    distance_km = tf.sqrt(east_km * east_km + north_km * north_km)

    def scale(values: tf.Tensor, low: float, high: float) -> tf.Tensor:
        return (values - tf.constant(low, tf.float32)) / (
            tf.constant(high, tf.float32) - tf.constant(low, tf.float32)
        )

    numeric = tf.stack(
        [
            scale(plon, lon_min, lon_max),
            scale(plat, lat_min, lat_max),
            scale(dlon, lon_min, lon_max),
            scale(dlat, lat_min, lat_max),
            east_km / 10.0,
            north_km / 10.0,
            (distance_km - tf.constant(float(a["distance_mean"]), tf.float32))
            / tf.constant(float(a["distance_std"]), tf.float32),
            (passengers - 1.0) / 5.0,
        ],
        axis=-1,
    )

    def bucket(values: tf.Tensor, low: float, high: float) -> tf.Tensor:
        index = tf.cast(tf.floor(scale(values, low, high) * float(nbuckets)), tf.int32)
        return tf.clip_by_value(index, 0, nbuckets - 1)

    def cell(lon: tf.Tensor, lat: tf.Tensor) -> tf.Tensor:
        return bucket(lat, lat_min, lat_max) * nbuckets + bucket(lon, lon_min, lon_max)

    hour, dayofweek = _parse_datetime(raw["pickup_datetime"])
    pickup, dropoff = cell(plon, plat), cell(dlon, dlat)
    return {
        "numeric": numeric,
        "pickup_cell": pickup,
        "dropoff_cell": dropoff,
        # the feature cross of the two grid cells: which trip across the grid
        "trip_cross": tf.math.floormod(pickup * nbuckets * nbuckets + dropoff, cross_bins(nbuckets)),
        "hourofday": hour,
        "dayofweek": dayofweek,
    }


# --- input pipeline ----------------------------------------------------------------------


def expand_paths(paths: Sequence[str]) -> list[str]:
    """Expand comma-separated paths and glob patterns (local or any tf.io.gfile scheme)."""
    files: list[str] = []
    for entry in paths:
        for pattern in (part.strip() for part in entry.split(",")):
            if not pattern:
                continue
            matches = sorted(tf.io.gfile.glob(pattern))
            if not matches:
                raise FileNotFoundError(f"no data file matches {pattern!r}")
            files.extend(matches)
    if not files:
        raise FileNotFoundError("no data paths given")
    return files


def read_dataset(
    paths: Sequence[str],
    batch_size: int,
    nbuckets: int,
    training: bool,
    seed: int = 42,
    shard: tuple[int, int] | None = None,
    analysis: Mapping[str, Any] | None = None,
) -> tf.data.Dataset:
    """Batches of ``(model inputs, fare_amount)`` from taxi CSV files without a header.

    ``shard`` is ``(num_shards, index)``: a replica reads only its share of the lines.
    """
    files = expand_paths(paths)
    nbuckets_ = nbuckets

    def decode(lines: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        columns = tf.io.decode_csv(lines, record_defaults=RECORD_DEFAULTS)
        raw = dict(zip(CSV_COLUMNS, columns, strict=True))
        label = raw.pop(LABEL_COLUMN)
        raw.pop("key")
        return transform(raw, nbuckets_, analysis), label

    dataset = tf.data.TextLineDataset(files)
    dataset = dataset.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0)
    if shard is not None and shard[0] > 1:
        dataset = dataset.shard(shard[0], shard[1])
    if training:
        dataset = dataset.shuffle(10_000, seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


# --- the model -----------------------------------------------------------------------------


def build_model(hparams: HParams) -> keras.Model:
    """A small wide-and-deep style regressor over the engineered features."""
    from trainer.analyze import cross_bins

    ncells = hparams.nbuckets * hparams.nbuckets
    dim = hparams.embedding_dim
    inputs = {
        "numeric": keras.Input(shape=(NUM_NUMERIC,), name="numeric"),
        "pickup_cell": keras.Input(shape=(), dtype="int32", name="pickup_cell"),
        "dropoff_cell": keras.Input(shape=(), dtype="int32", name="dropoff_cell"),
        "hourofday": keras.Input(shape=(), dtype="int32", name="hourofday"),
        "dayofweek": keras.Input(shape=(), dtype="int32", name="dayofweek"),
        "trip_cross": keras.Input(shape=(), dtype="int32", name="trip_cross"),
    }
    embedded = [
        keras.layers.Embedding(ncells, dim, name="pickup_cell_embedding")(inputs["pickup_cell"]),
        keras.layers.Embedding(ncells, dim, name="dropoff_cell_embedding")(inputs["dropoff_cell"]),
        keras.layers.Embedding(24, dim, name="hourofday_embedding")(inputs["hourofday"]),
        keras.layers.Embedding(7, dim, name="dayofweek_embedding")(inputs["dayofweek"]),
        keras.layers.Embedding(cross_bins(hparams.nbuckets), dim, name="trip_cross_embedding")(
            inputs["trip_cross"]
        ),
    ]
    x = keras.layers.Concatenate(name="features")([inputs["numeric"], *embedded])
    for i, units in enumerate(hparams.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
    output = keras.layers.Dense(
        1, bias_initializer=keras.initializers.Constant(MEAN_FARE), name="fare"
    )(x)
    model = keras.Model(inputs=inputs, outputs=output, name="taxifare")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=hparams.learning_rate),
        loss="mse",
        metrics=[keras.metrics.RootMeanSquaredError(name="rmse")],
    )
    return model


class _CheckpointEachEpoch(keras.callbacks.Callback):
    """Save a TensorFlow checkpoint (model and optimizer) at the end of every epoch."""

    def __init__(self, manager: tf.train.CheckpointManager) -> None:
        super().__init__()
        self._manager = manager

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._manager.save(checkpoint_number=global_step(self.model))


class _ScalarSummaries(keras.callbacks.Callback):
    """Write training and validation metrics as TensorBoard scalars.

    Uses only TensorFlow core (``tf.summary.write`` with the scalars plugin metadata), so it
    works without the ``tensorboard`` package installed; TensorBoard reads the event files.
    """

    def __init__(self, log_dir: str, every_n_steps: int) -> None:
        super().__init__()
        self._log_dir = log_dir
        self._every = max(1, every_n_steps)
        self._writers: dict[str, Any] = {}
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR,
        )

    def _write(self, split: str, tag: str, value: float, step: int) -> None:
        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(
                posixpath.join(self._log_dir, split)
            )
        with self._writers[split].as_default():
            tf.summary.write(
                tag, tf.constant(value, tf.float32), step=step, metadata=self._metadata
            )

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = global_step(self.model)
        if logs and step % self._every == 0:
            for name, value in logs.items():
                self._write("train", f"batch_{name}", float(value), step)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        step = global_step(self.model)
        for key, value in (logs or {}).items():
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._write(split, f"epoch_{name}", float(value), step)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class _ReportEachEval(keras.callbacks.Callback):
    """Hand every evaluation's RMSE to ``report(rmse, global_step)``."""

    def __init__(self, report: Callable[[float, int], None]) -> None:
        super().__init__()
        self._report = report

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs and "val_rmse" in logs:
            self._report(float(logs["val_rmse"]), global_step(self.model))


def global_step(model: keras.Model) -> int:
    return int(np.asarray(model.optimizer.iterations))


# --- training, evaluation and export ----------------------------------------------------------


def train_and_evaluate(
    hparams: HParams,
    train_paths: Sequence[str],
    eval_paths: Sequence[str],
    output_dir: str,
    export: bool = True,
    shard: tuple[int, int] | None = None,
    report: Callable[[float, int], None] | None = None,
    analysis: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train, checkpoint and evaluate under ``output_dir``; export a SavedModel if asked.

    Layout of ``output_dir``: ``checkpoints/`` (TensorFlow checkpoints; a rerun with the same
    directory resumes from the latest), ``tensorboard/`` (summaries) and
    ``export/<timestamp>/`` (the SavedModel).
    The summaries are written with TensorFlow core only (see :class:`_ScalarSummaries`).
    ``report(rmse, global_step)`` is called after every evaluation (``num_evals`` times).
    """
    keras.utils.set_random_seed(hparams.seed)
    train_ds = read_dataset(
        train_paths, hparams.batch_size, hparams.nbuckets, True, hparams.seed, shard, analysis
    )
    eval_ds = read_dataset(
        eval_paths, hparams.batch_size, hparams.nbuckets, False, analysis=analysis
    )

    model = build_model(hparams)
    model.optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = tf.train.CheckpointManager(
        checkpoint, posixpath.join(output_dir, "checkpoints"), max_to_keep=3
    )
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        print(f"Restored checkpoint {manager.latest_checkpoint} (step {global_step(model)})")

    num_evals = max(1, hparams.num_evals)
    steps_per_epoch = max(1, hparams.train_steps // num_evals)
    initial_epoch = min(global_step(model) // steps_per_epoch, num_evals)
    callbacks: list[keras.callbacks.Callback] = [
        _ScalarSummaries(
            posixpath.join(output_dir, "tensorboard"), every_n_steps=max(1, steps_per_epoch // 10)
        ),
        _CheckpointEachEpoch(manager),
    ]
    if report is not None:
        callbacks.append(_ReportEachEval(report))
    with warnings.catch_warnings():
        # The evaluation set is read to its end on purpose; Keras warns when that happens.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(
            train_ds,
            steps_per_epoch=steps_per_epoch,
            epochs=num_evals,
            initial_epoch=initial_epoch,
            validation_data=eval_ds,
            validation_steps=hparams.eval_steps,
            callbacks=callbacks,
            shuffle=False,  # the training dataset shuffles itself
            verbose=hparams.verbose,
        )
        val_rmse = history.history.get("val_rmse")
        if val_rmse:
            rmse = float(val_rmse[-1])
        else:  # nothing left to train after a restore: evaluate what we have
            metrics = model.evaluate(eval_ds, steps=hparams.eval_steps, return_dict=True, verbose=0)
            rmse = float(metrics["rmse"])
            if report is not None:
                report(rmse, global_step(model))

    export_path = None
    if export:
        export_base = posixpath.join(output_dir, "export")
        export_path = export_saved_model(model, hparams.nbuckets, export_base, analysis)
    return TrainResult(rmse, global_step(model), output_dir, export_path)


def export_saved_model(
    model: keras.Model,
    nbuckets: int,
    export_base: str,
    analysis: Mapping[str, Any] | None = None,
) -> str:
    """Export a SavedModel whose ``serving_default`` signature takes the raw feature columns.

    Inputs: one tensor of shape ``[batch]`` per entry of :data:`RAW_FEATURES`; output:
    ``fare_amount`` of shape ``[batch]``. Returns ``export_base/<timestamp>``.
    The transform's constants are in the graph; the analysis itself (with its fingerprint) is
    written to ``assets.extra/transform.json``, where mlengine finds which transform a version
    serves. ``predict_transformed`` takes the model's inputs (the transform applied by hand).
    """
    stamp = int(time.time())
    while tf.io.gfile.exists(posixpath.join(export_base, str(stamp))):
        stamp += 1
    export_dir = posixpath.join(export_base, str(stamp))

    signature = [tf.TensorSpec([None], dtype, name=name) for name, dtype in RAW_FEATURES.items()]

    def serve(
        pickup_datetime: tf.Tensor,
        pickup_longitude: tf.Tensor,
        pickup_latitude: tf.Tensor,
        dropoff_longitude: tf.Tensor,
        dropoff_latitude: tf.Tensor,
        passenger_count: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        raw = {
            "pickup_datetime": pickup_datetime,
            "pickup_longitude": pickup_longitude,
            "pickup_latitude": pickup_latitude,
            "dropoff_longitude": dropoff_longitude,
            "dropoff_latitude": dropoff_latitude,
            "passenger_count": passenger_count,
        }
        fare = model(transform(raw, nbuckets, analysis), training=False)
        return {SERVING_OUTPUT: tf.reshape(fare, [-1])}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=signature)
    transformed = {
        "numeric": tf.TensorSpec([None, NUM_NUMERIC], tf.float32, name="numeric"),
        **{
            name: tf.TensorSpec([None], tf.int32, name=name)
            for name in ("pickup_cell", "dropoff_cell", "trip_cross", "hourofday", "dayofweek")
        },
    }

    def predict_transformed(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {SERVING_OUTPUT: tf.reshape(model(features, training=False), [-1])}

    archive.add_endpoint(
        name="predict_transformed", fn=predict_transformed, input_signature=[transformed]
    )
    tf.io.gfile.makedirs(export_base)
    archive.write_out(export_dir, verbose=False)
    if analysis is not None:
        _write_text_gfile(
            posixpath.join(export_dir, "assets.extra", "transform.json"),
            json.dumps(dict(analysis), indent=2, sort_keys=True),
        )
    return export_dir


def _write_text_gfile(path: str, text: str) -> None:
    tf.io.gfile.makedirs(posixpath.dirname(path))
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(text)


__all__ = [
    "CSV_COLUMNS",
    "RAW_FEATURES",
    "HParams",
    "TrainResult",
    "build_model",
    "export_saved_model",
    "read_dataset",
    "train_and_evaluate",
    "transform",
]
