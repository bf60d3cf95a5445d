"""The training baseline of a version: which data, read how, mapped onto which features.

Without asking: a version whose ``deploymentUri`` lies under the ``jobDir`` of a succeeded
training job of its project takes that job's training data, named by its arguments
(``--train-data-paths``, ``--train_files``, ``--training-data``... : files or wildcards, space
or comma separated). A CSV without a header gets its column names from the trainer's own code:
the job's package is searched (parsed, never run) for a list of string constants as long as the
file's rows that holds the model's features (``CSV_COLUMNS = [...]``, as trainers do). Any other
version takes ``trainingData`` (``mle versions create --training-data``).

The model's features (a SavedModel signature's inputs, scikit-learn's ``feature_names_in_``, as
the version's first replica reported them) are mapped onto the data's columns by name; those
without a column are listed with the reason. Without known features every column is profiled
and serving instances' names decide what is compared.
"""

from __future__ import annotations

import ast
import glob
import io
import json
import re
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlengine.errors import invalid
from mlengine.monitoring import stats

#: Trainer flags that name training data (``--train-data-paths``, ``--train_files``, ...).
DATA_FLAG = re.compile(r"^--?(train|training)[-_]?(data|files?|paths?|input|csv)([-_](paths?|files?|uris?))?$")
MAX_ROWS = 5_000_000


def baseline_path(version_dir: Path) -> Path:
    return version_dir / "monitoring" / "baseline.json"


def load(version_dir: Path) -> dict[str, Any] | None:
    path = baseline_path(version_dir)
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def save(version_dir: Path, baseline: Mapping[str, Any]) -> None:
    import os

    path = baseline_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(baseline))
    os.replace(temporary, path)


# Finding the data -------------------------------------------------------------------------
def data_args(args: Sequence[str]) -> list[str]:
    """The training data a trainer's arguments name."""
    found: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if DATA_FLAG.match(name):
            values = [value] if eq else []
            if not eq:
                while i + 1 < len(args) and not args[i + 1].startswith("--"):
                    i += 1
                    values.append(args[i])
            found.extend(v for part in values for v in part.split(",") if v)
        i += 1
    return found


def _under(path: str, directory: str) -> bool:
    from mlengine.storage import uris

    if uris.is_local(path) and uris.is_local(directory):
        p, d = uris.local_path(path).resolve(), uris.local_path(directory).resolve()
        return p == d or d in p.parents
    return path.rstrip("/").startswith(directory.rstrip("/") + "/")


def find_training_job(db: Any, project: str, deployment_uri: str) -> Any | None:
    """The newest succeeded training job (or trial) whose jobDir holds ``deployment_uri``."""
    from sqlalchemy import select

    from mlengine.store.models import JobRow

    with db.session() as s:
        rows = s.scalars(select(JobRow).where(JobRow.project == project, JobRow.state == "SUCCEEDED",
                                              JobRow.kind.in_(["training", "trial"]))
                         .order_by(JobRow.id.desc()).limit(500))
        for row in rows:
            job_dir = (row.input or {}).get("jobDir")
            if job_dir and _under(deployment_uri, job_dir):
                return row
    return None


def source_from_job(job: Any) -> dict[str, Any] | None:
    training_input = job.input or {}
    files = data_args([str(a) for a in training_input.get("args") or []])
    if not files:
        return None
    return {"job": job.job_id, "uris": files, "packageUris": list(training_input.get("packageUris") or [])}


# Reading ----------------------------------------------------------------------------------
def expand(uris_: Sequence[str]) -> list[str]:
    from mlengine.storage import uris

    files: list[str] = []
    for uri in uris_:
        if uris.is_local(uri):
            path = str(uris.local_path(uri))
            matched = sorted(glob.glob(path)) if any(c in path for c in "*?[") else [path]
            files.extend(p for p in matched if Path(p).is_file())
        else:
            fs, path = uris.filesystem(uri)
            proto = uri.split("://", 1)[0]
            files.extend(f"{proto}://{p}" for p in sorted(fs.glob(path)))
    return files


def data_format(files: Sequence[str], given: str | None) -> str:
    if given:
        return given
    name = files[0].lower().removesuffix(".gz")
    for ext, fmt in ((".parquet", "PARQUET"), (".jsonl", "JSONL"), (".json", "JSONL"), (".tfrecord", "TFRECORD"),
                     (".tfrecords", "TFRECORD")):
        if name.endswith(ext):
            return fmt
    return "CSV"


def _open(uri: str) -> Any:
    import fsspec

    return fsspec.open(uri, "rb", compression="infer").open()


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def sniff_header(first: list[str], features: Sequence[str]) -> bool:
    """A CSV's first row names columns when it holds a feature's name, or when none of its
    fields is a number (data rows of a numeric model have some)."""
    return bool(set(first) & set(features)) or (len(set(first)) == len(first) and not any(map(_numeric, first)))


def read_table(files: Sequence[str], fmt: str, *, columns: Sequence[str] | None = None, header: bool | None = None,
               features: Sequence[str] = (), max_rows: int = MAX_ROWS) -> tuple[Any, dict[str, Any]]:
    """The data as a ``pyarrow.Table`` and how it was read."""
    import pyarrow as pa

    tables = []
    how: dict[str, Any] = {"format": fmt, "files": len(files)}
    rows = 0
    for uri in files:
        if fmt == "PARQUET":
            import pyarrow.parquet as pq

            with _open(uri) as f:
                table = pq.read_table(f)
        elif fmt == "JSONL":
            import pyarrow.json as pj

            with _open(uri) as f:
                table = pj.read_json(f)
        elif fmt == "TFRECORD":
            table = _read_tfrecord(uri, max_rows - rows)
        else:
            table, names, header = _read_csv(uri, columns, header, features)
            how.update(header=header, columns=names)
        tables.append(table)
        rows += table.num_rows
        if rows >= max_rows:
            how["truncatedAt"] = max_rows
            break
    if not tables:
        raise invalid("trainingData.uri", "no file matches")
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return table.slice(0, max_rows), how


def _read_csv(uri: str, columns: Sequence[str] | None, header: bool | None,
              features: Sequence[str]) -> tuple[Any, list[str], bool]:
    import csv

    import pyarrow.csv as pc

    with _open(uri) as f:
        data = f.read()
    first = next(csv.reader(io.StringIO(data[:65536].decode("utf-8", "replace"))), [])
    if header is None:
        header = columns is None and sniff_header(first, features)
    if columns is not None and len(columns) != len(first):
        raise invalid("trainingData.columns", f"names {len(columns)} columns, but {uri} has {len(first)}")
    names = list(columns) if columns is not None else (first if header else [f"column_{i}" for i in range(len(first))])
    read = pc.ReadOptions(column_names=names, skip_rows=1 if header else 0)
    convert = pc.ConvertOptions(strings_can_be_null=True, null_values=["", "NA", "NaN", "null", "None"])
    return pc.read_csv(io.BytesIO(data), read_options=read, convert_options=convert), names, bool(header)


def _read_tfrecord(uri: str, limit: int) -> Any:
    import pyarrow as pa

    try:
        import tensorflow as tf
    except ImportError:
        raise invalid("trainingData.format", "reading TFRecord files needs TensorFlow on the server") from None
    rows: list[dict[str, Any]] = []
    for record in tf.data.TFRecordDataset([uri], compression_type="GZIP" if uri.endswith(".gz") else ""):
        example = tf.train.Example.FromString(record.numpy())
        row: dict[str, Any] = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value) if kind else []
            value = values[0] if len(values) == 1 else None
            row[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        rows.append(row)
        if len(rows) >= limit:
            break
    return pa.Table.from_pylist(rows)


# Column names from the trainer's code ------------------------------------------------------
def columns_from_packages(package_uris: Sequence[str], width: int, features: Sequence[str]) -> list[str] | None:
    """A list of ``width`` string constants in the trainer's sources that holds the most of
    ``features`` (at least half of them); parsed with :mod:`ast`, never imported."""
    best: tuple[int, list[str]] | None = None
    for uri in package_uris:
        for source in _package_sources(uri):
            for names in _string_lists(source):
                if len(names) != width or len(set(names)) != width:
                    continue
                score = len(set(names) & set(features))
                if score * 2 >= max(1, len(features)) and (best is None or score > best[0]):
                    best = (score, names)
    return best[1] if best else None


def _package_sources(uri: str) -> list[str]:
    from mlengine.storage import uris

    if not uris.is_local(uri):
        return []
    path = uris.local_path(uri)
    sources: list[str] = []
    try:
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as archive:
                for member in archive.getmembers():
                    if member.isfile() and member.name.endswith(".py") and member.size < 1_000_000:
                        handle = archive.extractfile(member)
                        if handle is not None:
                            sources.append(handle.read().decode("utf-8", "replace"))
        elif path.suffix in (".whl", ".zip"):
            import zipfile

            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.filename.endswith(".py") and info.file_size < 1_000_000:
                        sources.append(archive.read(info).decode("utf-8", "replace"))
    except (OSError, tarfile.TarError, ValueError):
        return []
    return sources


def _string_lists(source: str) -> list[list[str]]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)) and node.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            found.append([e.value for e in node.elts])  # type: ignore[attr-defined]
    return found


# The baseline -----------------------------------------------------------------------------
def compute(source: Mapping[str, Any], features: Sequence[str] | None, *, buckets: int = stats.BUCKETS,
            binning: str = "quantile", check: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Read the source, map the features, profile: the baseline record (JSON-able). ``check``
    (the server's URI policy) sees every URI and every file a wildcard matched before it is read."""
    started = time.time()
    for uri in source["uris"]:
        if check is not None:
            check(uri)
    files = expand(source["uris"])
    if not files:
        raise invalid("trainingData.uri", f"no file matches {', '.join(source['uris'])}")
    for uri in files:
        if check is not None:
            check(uri)  # a wildcard or a symbolic link may lead into the server's own files
    fmt = data_format(files, source.get("format"))
    columns = source.get("columns")
    table, how = read_table(files, fmt, columns=columns, header=source.get("header"), features=features or ())
    if fmt == "CSV" and not how.get("header") and columns is None and source.get("packageUris"):
        named = columns_from_packages(source["packageUris"], table.num_columns, features or ())
        if named:
            table = table.rename_columns(named)
            how.update(columns=named, columnsFrom="trainer package")
    mapping: dict[str, str] = {}
    unmatched: dict[str, str] = {}
    names = list(features) if features else list(table.column_names)
    for name in names:
        if name in table.column_names:
            mapping[name] = name
        else:
            unmatched[name] = (f"no column named {name!r} in the training data "
                               f"(columns: {', '.join(table.column_names[:30])})")
    profile = stats.profile_table(table.select(list(mapping.values())), buckets=buckets, binning=binning)
    return {"source": dict(source), "read": how, "features": list(mapping), "unmatched": unmatched,
            "featuresFrom": "model" if features else "training data columns", "profile": profile,
            "computeTime": time.time(), "seconds": round(time.time() - started, 3)}
