"""Monitoring: feature statistics against whylogs and Evidently, and the cost of request logging
on the serving path.

    .venv/bin/python bench/monitoring.py [--rows 1000000] [--columns 20] [--peers whylogs,evidently]
                                         [--serving-seconds 10] [--no-serving] [--write]

1. Statistics over ``--rows`` rows x ``--columns`` columns (60 % numeric: normal, log-normal
   long tails, integers; 40 % categorical with Zipf-distributed values; 5 % missing values
   everywhere), the same Parquet file for everyone, timed without reading it:
   - mlengine: ``mlengine.monitoring.stats.profile_table`` (Arrow + NumPy: counts, missing,
     min/max/mean/std, quantiles, quantile-edged histograms, category counts), target < 2 s
     for 1,000,000 x 20;
   - DuckDB: one ``SUMMARIZE`` pass (the engine we compared before choosing Arrow);
   - whylogs (``why.log(pandas=df)``) and Evidently (a data summary report), each in its own
     virtual environment that this script creates with uv under ``--cache``/venvs on first use.
2. Request logging: ``mle server`` with one scikit-learn version logging 0 % and one logging
   100 % of calls (one replica each); closed-loop load at concurrency 32 (``wrk`` when installed,
   else an asyncio client), alternating the two versions; target: no more than 10 % fewer
   requests/s at 100 %.

``--write`` replaces the ``monitoring`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._report import machine, table, write_section  # noqa: E402

PEERS = {
    # Pinned to what each was released against: whylogs 1.6 uses np.unicode_ (gone in NumPy 2),
    # Evidently 0.7 a pandas 2 internal (gone in pandas 3).
    "whylogs": ["whylogs==1.6.4", "numpy<2", "pandas<2.3", "pyarrow<18"],
    "evidently": ["evidently==0.7.14", "pandas<3", "pyarrow"],
}
PEER_SCRIPT = r'''
import json, sys, time
import pandas as pd
frame = pd.read_parquet(sys.argv[2])
name = sys.argv[1]
started = time.perf_counter()
if name == "whylogs":
    import whylogs as why
    why.log(pandas=frame).profile().view().to_pandas()
else:
    try:
        from evidently import Report
        from evidently.presets import DataSummaryPreset
        Report([DataSummaryPreset()]).run(frame, None)
    except ImportError:
        from evidently.report import Report
        from evidently.metric_preset import DataQualityPreset
        Report(metrics=[DataQualityPreset()]).run(reference_data=None, current_data=frame)
print(json.dumps({"seconds": time.perf_counter() - started}))
'''


# Data ---------------------------------------------------------------------------------------------
def make_data(path: Path, rows: int, columns: int, seed: int = 0) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    arrays: dict[str, Any] = {}
    numeric = round(columns * 0.6)
    for i in range(columns):
        missing = rng.random(rows) < 0.05
        if i < numeric:
            kind = i % 3
            values = (rng.normal(10, 3, rows) if kind == 0 else rng.lognormal(0.5, 1.2, rows) if kind == 1
                      else rng.integers(0, 100, rows).astype(float))
            arrays[f"num_{i}"] = pa.array(values, mask=missing)
        else:
            codes = np.minimum(rng.zipf(1.6, rows), 200)
            labels = np.array([f"value_{k}" for k in range(201)], dtype=object)
            arrays[f"cat_{i}"] = pa.array(labels[codes], pa.string(), mask=missing)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(arrays), path)
    return path


# Statistics -----------------------------------------------------------------------------------------
def time_mlengine(path: Path, repeat: int = 3) -> float:
    import pyarrow.parquet as pq

    from mlengine.monitoring import stats

    table = pq.read_table(path)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        stats.profile_table(table)
        best = min(best, time.perf_counter() - started)
    return best


def time_duckdb(path: Path) -> float:
    import duckdb
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    con = duckdb.connect()
    con.register("data", table)
    started = time.perf_counter()
    con.execute("SUMMARIZE data").fetchall()
    return time.perf_counter() - started


def peer_python(name: str, cache: Path) -> Path:
    venv = cache / "venvs" / name
    python = venv / "bin" / "python"
    stamp = venv / "mlengine-bench-requirements.txt"
    wanted = "\n".join(PEERS[name])
    if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
        if not python.exists():
            subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True)
        subprocess.run([uv, "pip", "install", "--python", str(python), *PEERS[name]], check=True)
        stamp.write_text(wanted)
    return python


def time_peer(name: str, path: Path, cache: Path) -> float | str:
    try:
        python = peer_python(name, cache)
        out = subprocess.run([str(python), "-c", PEER_SCRIPT, name, str(path)], capture_output=True, text=True,
                             timeout=3600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        return f"failed: {err}"
    if out.returncode != 0:
        return "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1]
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


# Logging cost ---------------------------------------------------------------------------------------
def serving_cost(seconds: float, rounds: int = 3) -> dict[str, float]:
    import httpx
    import joblib
    import numpy as np
    from sklearn.linear_model import Ridge

    home = Path(tempfile.mkdtemp(prefix="mle-bench-mon-", dir="/tmp"))
    model_dir = home.parent / (home.name + "-model")
    model_dir.mkdir()
    rng = np.random.default_rng(0)
    x = rng.random((200, 3))
    joblib.dump(Ridge().fit(x, x @ [1.0, 2.0, 3.0]), model_dir / "model.joblib")
    env = {**os.environ, "MLE_HOME": str(home)}
    env.pop("MLE_API_URL", None)
    env.pop("MLE_TOKEN", None)
    log = open(home.parent / (home.name + ".log"), "wb")  # noqa: SIM115 - closed with the server
    argv = [sys.executable, "-m", "mlengine.api.server", "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        info_file = home / "server.json"
        deadline = time.monotonic() + 60
        while not info_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        url = json.loads(info_file.read_text())["url"]
        token = (home / "admin_token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        models = "/v1/projects/bench/models"
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            client.post(models, json={"name": "m"}).raise_for_status()
            for name, rate in (("off", 0.0), ("on", 1.0)):
                op = client.post(f"{models}/m/versions", json={
                    "name": name, "deploymentUri": str(model_dir), "autoScaling": {"minNodes": 1, "maxNodes": 1},
                    "requestLoggingConfig": {"samplingPercentage": rate}}).json()
                while not op.get("done"):
                    time.sleep(0.2)
                    op = client.get("/v1/" + op["name"]).json()
        body = json.dumps({"instances": [[0.1, 0.2, 0.3]] * 5}).encode()
        results: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(rounds):
            for name in ("off", "on"):
                target = f"{url}{models}/m/versions/{name}:predict"
                results[name].append(load(target, body, headers, 32, seconds, home))
        return {name: sorted(values)[len(values) // 2] for name, values in results.items()}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def load(url: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float, work: Path) -> float:
    """Requests/s of a closed loop of ``concurrency`` clients (wrk when installed)."""
    if shutil.which("wrk"):
        from bench._serving_servers import run_wrk

        result = run_wrk(url, body, headers, concurrency, seconds, work)
        if result["errors"]:
            raise RuntimeError(f"{result['errors']} failed requests on {url}")
        return float(result["rps"])
    return asyncio.run(_load(url, body, headers, concurrency, seconds))


async def _load(url: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float) -> float:
    import httpx

    done = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(headers={**headers, "Content-Type": "application/json"}, limits=limits,
                                 timeout=60) as client:
        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop:
                (await client.post(url, content=body)).raise_for_status()
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds


# Main -------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--peers", default="whylogs,evidently", help="comma-separated; empty for none")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mlengine-bench")
    parser.add_argument("--serving-seconds", type=float, default=10.0)
    parser.add_argument("--no-serving", action="store_true")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md (section monitoring)")
    args = parser.parse_args()

    data = make_data(args.cache / f"monitoring-{args.rows}x{args.columns}.parquet", args.rows, args.columns)
    rows: list[list[str]] = []

    def add(name: str, seconds: float | str) -> None:
        if isinstance(seconds, str):
            rows.append([name, seconds, ""])
        else:
            rows.append([name, f"{seconds:.2f}", f"{args.rows / seconds:,.0f}"])
        print(rows[-1], flush=True)

    add("mlengine (Arrow + NumPy)", time_mlengine(data))
    add("DuckDB SUMMARIZE", time_duckdb(data))
    for peer in filter(None, args.peers.split(",")):
        add(peer, time_peer(peer, data, args.cache))
    text = (f"Statistics of {args.rows:,} rows x {args.columns} columns (numeric and categorical, 5 % missing), "
            f"{machine()}:\n\n" + table(["profiler", "seconds", "rows/s"], rows))
    if not args.no_serving:
        cost = serving_cost(args.serving_seconds)
        drop = 1 - cost["on"] / cost["off"]
        text += ("\n\nRequest logging at concurrency 32 (scikit-learn, 5 instances per request, median of 3 "
                 "alternating rounds):\n\n" + table(["sampling", "requests/s"], [
                     ["0 %", f"{cost['off']:,.0f}"], ["100 %", f"{cost['on']:,.0f}"]]) +
                 f"\n\nThroughput at 100 % is {drop:.1%} lower (target: at most 10 %).")
    print(text)
    if args.write:
        write_section("monitoring", text)


if __name__ == "__main__":
    main()
