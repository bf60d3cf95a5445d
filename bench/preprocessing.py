"""The taxifare preprocessing (clean, split, sharded CSV, analyze pass) side by side on the same
generated rides (the sample's schema):

- pandas in one process (read, filter, split by the same key hash, write, the same statistics);
- Beam DirectRunner ``in_memory`` and ``multi_processing`` (``--workers`` processes);
- Beam DaskRunner on a two-node local Dask cluster (two worker processes, one thread each).

Each variant runs in its own process; rows/s over its wall time and its peak memory (largest
resident set of the process and its children). Beam and Dask run in the overlay preprocessing
jobs use (``mlengine.core.runtimes.BEAM_REQUIREMENTS``, built by uv into ``--cache`` on first
use, on ``PYTHONPATH`` of the Beam variants). Writes docs/benchmarks.md, section
``preprocessing``. Run alone on an idle machine:

    python bench/preprocessing.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "taxifare"
# bench/distributed.py would shadow the `distributed` package (Dask's) of the Dask variant.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Rides with the sample's columns; a few per cent fail the cleaning rule."""
    rng = random.Random(seed)
    with path.open("w") as out:
        for key in range(rows):
            plon, plat = rng.uniform(-74.05, -73.75), rng.uniform(40.60, 40.90)
            dlon, dlat = plon + rng.gauss(0, 0.03), plat + rng.gauss(0, 0.03)
            fare = max(0.0, 2.5 + 2.0 * abs(dlon - plon) * 84 + rng.gauss(0, 2))
            if rng.random() < 0.02:
                plon = 0.0  # a ride the cleaning drops
            stamp = f"2013-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:00:00 UTC"
            out.write(f"{fare:.2f},{stamp},{plon:.6f},{plat:.6f},{dlon:.6f},{dlat:.6f},{rng.randint(1, 4)},{key}\n")


def run_pandas(source: str, out: str) -> None:
    import zlib

    import pandas as pd

    sys.path.insert(0, str(SAMPLE))
    from trainer import analyze

    df = pd.read_csv(source, header=None, names=list(analyze.CSV_COLUMNS))
    lon_ok = df.pickup_longitude.between(*analyze.LON_RANGE) & df.dropoff_longitude.between(*analyze.LON_RANGE)
    lat_ok = df.pickup_latitude.between(*analyze.LAT_RANGE) & df.dropoff_latitude.between(*analyze.LAT_RANGE)
    df = df[lon_ok & lat_ok & (df.fare_amount >= analyze.MIN_FARE) & (df.passenger_count > 0)]
    is_eval = df.key.astype(str).map(lambda k: zlib.crc32(k.encode()) % 100 < 20)
    train = df[~is_eval]
    east = (train.dropoff_longitude - train.pickup_longitude) * analyze.KM_PER_DEG_LON
    north = (train.dropoff_latitude - train.pickup_latitude) * analyze.KM_PER_DEG_LAT
    dist = (east ** 2 + north ** 2) ** 0.5
    stats = {"lon_min": float(min(train.pickup_longitude.min(), train.dropoff_longitude.min())),
             "distance_mean": float(dist.mean()), "distance_std": float(dist.std(ddof=0))}
    train.to_csv(f"{out}/train.csv", header=False, index=False)
    df[is_eval].to_csv(f"{out}/eval.csv", header=False, index=False)
    Path(f"{out}/stats.json").write_text(json.dumps(stats))


def run_beam(source: str, out: str, options: list[str]) -> None:
    sys.path.insert(0, str(SAMPLE))
    from trainer import preprocess

    preprocess.run(["--input", source, "--job-dir", out, *options])


def run_dask(source: str, out: str, workers: int) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        run_beam(source, out, ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
                               f"--dask_client_address={cluster.scheduler_address}"])


def child(variant: str, source: str, out: str, workers: int) -> None:
    if variant == "pandas":
        run_pandas(source, out)
    elif variant == "beam-in-memory":
        run_beam(source, out, ["--runner=DirectRunner", "--direct_running_mode=in_memory"])
    elif variant == "beam-multi-processing":
        run_beam(source, out, ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                               f"--direct_num_workers={workers}"])
    elif variant == "beam-dask":
        run_dask(source, out, workers)
    else:
        raise SystemExit(f"unknown variant {variant}")


def beam_pythonpath(cache: Path) -> list[str]:
    """The Beam overlay preprocessing jobs run in (built once into ``cache``)."""
    sys.path.insert(0, str(REPO / "src"))
    from mlengine.core.environments import EnvironmentCache
    from mlengine.core.runtimes import BEAM_REQUIREMENTS

    return list(EnvironmentCache(cache / "envs").prepare([], requirements=BEAM_REQUIREMENTS).pythonpath)


def measure(variant: str, source: Path, rows: int, workers: int, beam: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{variant}-") as out:
        started = time.monotonic()
        # Beam's worker processes import the sample's modules by name: the sample on PYTHONPATH.
        extra = [] if variant == "pandas" else beam
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(SAMPLE), *extra, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run([sys.executable, __file__, "--child", variant, "--source", str(source),
                               "--out", out, "--workers", str(workers)], capture_output=True, text=True, env=env)
        seconds = time.monotonic() - started
    if proc.returncode != 0:
        return {"variant": variant, "error": proc.stderr[-800:]}
    peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"]
    return {"variant": variant, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
            "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variants", default="pandas,beam-in-memory,beam-multi-processing,beam-dask")
    parser.add_argument("--child", default=None)
    parser.add_argument("--source", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mlengine-bench")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.source, args.out, args.workers)
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(json.dumps({"peak_mb": round(max(own, kids) / 1024)}))
        return
    with tempfile.TemporaryDirectory(prefix="bench-prep-") as tmp:
        source = Path(tmp) / "rides.csv"
        generate(source, args.rows)
        beam = beam_pythonpath(args.cache) if args.variants != "pandas" else []
        results = [measure(v, source, args.rows, args.workers, beam) for v in args.variants.split(",")]
    print(json.dumps({"rows": args.rows, "workers": args.workers, "results": results}, indent=2))
    if not args.no_write:
        write(args.rows, args.workers, results)


NAMES = {"pandas": "pandas, one process", "beam-in-memory": "Beam DirectRunner, in_memory",
         "beam-multi-processing": "Beam DirectRunner, multi_processing ({w} processes)",
         "beam-dask": "Beam DaskRunner, local Dask cluster ({w} workers x 1 thread)"}


def write(rows: int, workers: int, results: list[dict[str, Any]]) -> None:
    sys.path.insert(0, str(REPO))
    from bench._report import machine, table, write_section

    body = [f"## Preprocessing (`bench/preprocessing.py`)\n\nThe taxifare sample's preprocessing (clean, "
            f"split, sharded CSV, analyze pass) over {rows:,} generated rides, each variant in its own "
            f"process ({machine()}). Peak memory: the largest resident set of the variant's process "
            "or its children.\n"]
    rows_out = []
    for r in results:
        name = NAMES.get(r["variant"], r["variant"]).format(w=workers)
        if "error" in r:
            rows_out.append([name, "failed", "", ""])
        else:
            rows_out.append([name, f"{r['seconds']:.2f}", f"{r['rows_per_s']:,}", str(r["peak_mb"])])
    body.append(table(["variant", "seconds", "rows/s", "peak MB"], rows_out))
    write_section("preprocessing", "\n".join(body))
    print("wrote docs/benchmarks.md (section preprocessing)")


if __name__ == "__main__":
    main()
