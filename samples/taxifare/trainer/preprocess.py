"""The taxifare preprocessing pipeline (Apache Beam), as the course writes it: read the raw rides
(CSV without a header, or Parquet), clean them, split them into train and eval by a hash of the
ride's key, write sharded CSV files, and run the transform's analyze pass over the training
split (:class:`trainer.analyze.Analyzer` as a ``CombineFn``).

    python -m trainer.preprocess --input data/taxi-train.csv --job-dir OUT [--nbuckets 10]
        [Beam pipeline options, e.g. --runner DirectRunner --direct_num_workers 2]

or as an mlengine job (the runner options are added by the server):

    mle jobs submit preprocessing taxi_prep --package-path trainer \\
        --module-name trainer.preprocess --job-dir OUT -- --input data/taxi-train.csv

Outputs under ``--job-dir``: ``train-SSSSS-of-NNNNN.csv``, ``eval-SSSSS-of-NNNNN.csv`` and
``transform/transform.json`` (the analysis and its fingerprint, which mlengine records).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from trainer import analyze


def split_of(row: analyze.Row, eval_percent: int) -> int:
    """0 = train, 1 = eval; stable across runs and runners (a hash of the key)."""
    return 1 if zlib.crc32(str(row["key"]).encode()) % 100 < eval_percent else 0


def from_record(record: dict[str, Any]) -> analyze.Row | None:
    """A Parquet record as a row (same schema as the CSV files)."""
    try:
        return analyze.parse_line(",".join(str(record[name]) for name in analyze.CSV_COLUMNS))
    except KeyError:
        return None


def match(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    files = sorted(m.path for result in FileSystems.match([pattern]) for m in result.metadata_list)
    if not files:
        raise FileNotFoundError(f"no input file matches {pattern!r}")
    return files


def read_file(path: str) -> Iterator[analyze.Row | None]:
    """The rows of one CSV (no header) or Parquet file."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            for record in pq.read_table(handle).to_pylist():
                yield from_record(record)
            return
        for line in io.TextIOWrapper(handle, encoding="utf-8"):
            yield analyze.parse_line(line.strip())


def shard_of(row: analyze.Row, shards: int) -> int:
    return zlib.crc32(f"shard:{row['key']}".encode()) % max(1, shards)


def to_line(row: analyze.Row) -> str:
    return analyze.to_csv(row)


def write_shard(group: tuple[tuple[str, int], Iterable[str]], job_dir: str, shards: int) -> str:
    from apache_beam.io.filesystems import FileSystems

    (split, shard), lines = group
    path = FileSystems.join(job_dir, f"{split}-{shard:05d}-of-{shards:05d}.csv")
    with FileSystems.create(path) as handle:
        handle.write("".join(f"{line}\n" for line in sorted(lines)).encode())
    return path


def write_analysis(analysis: dict[str, Any], job_dir: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    directory = FileSystems.join(job_dir, "transform")
    FileSystems.mkdirs(directory) if not FileSystems.exists(directory) else None
    with FileSystems.create(FileSystems.join(directory, analyze.ANALYSIS_FILE)) as handle:
        handle.write(json.dumps(analysis, indent=2, sort_keys=True).encode())
    return directory


def run(argv: Sequence[str] | None = None) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    parser = argparse.ArgumentParser(prog="python -m trainer.preprocess")
    parser.add_argument("--input", default=None, help="Raw rides: CSV files or *.parquet (globs).")
    parser.add_argument("--job-dir", "--job_dir", dest="job_dir", required=True)
    parser.add_argument("--nbuckets", type=int, default=10)
    parser.add_argument("--eval-percent", type=int, default=20)
    parser.add_argument("--num-shards", type=int, default=2)
    known, beam_args = parser.parse_known_args(argv)
    source = known.input or os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "taxi-train.csv")
    out = known.job_dir

    class AnalyzeFn(beam.CombineFn):  # type: ignore[misc]
        """:class:`trainer.analyze.Analyzer` as Beam's CombineFn."""

        def __init__(self, nbuckets: int) -> None:
            super().__init__()
            self.analyzer = analyze.Analyzer(nbuckets)

        def create_accumulator(self) -> Any:
            return self.analyzer.create_accumulator()

        def add_input(self, acc: Any, row: Any) -> Any:
            return self.analyzer.add_input(acc, row)

        def merge_accumulators(self, accs: Any) -> Any:
            return self.analyzer.merge_accumulators(accs)

        def extract_output(self, acc: Any) -> Any:
            return self.analyzer.extract_output(acc)

    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        # Files listed here and read in a FlatMap (not ReadFromText/ReadFromParquet): Beam's
        # DaskRunner runs Create, ParDo, GroupByKey and Flatten only, not Impulse-based reads.
        raw = p | "files" >> beam.Create(match(source)) | "read" >> beam.FlatMap(read_file)
        rides = raw | "clean" >> beam.Filter(analyze.is_valid)
        # Two filters rather than beam.Partition: Beam's DaskRunner has no multi-output ParDo.
        train = rides | "train_split" >> beam.Filter(lambda row: split_of(row, known.eval_percent) == 0)
        evaluation = rides | "eval_split" >> beam.Filter(lambda row: split_of(row, known.eval_percent) == 1)
        # Sharded files written by a GroupByKey on (split, shard), rows sorted within a shard:
        # the same bytes on every runner (Beam's WriteToText leaves nothing on the DaskRunner).
        written = []
        for name, rows in (("train", train), ("eval", evaluation)):
            written.append(rows
             | f"{name}_key" >> beam.Map(lambda row, n=name: ((n, shard_of(row, known.num_shards)), to_line(row)))
             | f"{name}_group" >> beam.GroupByKey()
             | f"{name}_write" >> beam.Map(write_shard, out, known.num_shards))
        written.append(train
                       | "analyze" >> beam.CombineGlobally(AnalyzeFn(known.nbuckets))
                       | "write_transform" >> beam.Map(write_analysis, out))
        # One leaf that depends on every write: Beam's DaskRunner computes only the last one.
        _ = tuple(written) | "written" >> beam.Flatten() | "done" >> beam.Map(str)


if __name__ == "__main__":
    from trainer import preprocess  # functions pickled by reference to the importable module

    preprocess.run()
