"""Online prediction throughput, latency, cold start and memory: mlengine against its peers.

    .venv/bin/python bench/serving.py [--seconds 5] [--models sklearn,tensorflow]
                                      [--servers http,floor,mlengine,mlflow,ray]

In one run, for (a) a scikit-learn pipeline on the taxi features and (b) the taxifare
SavedModel (trained with samples/taxifare on first use), every server gets the same requests
from the same load generator (``wrk``, one thread, closed loop, 127.0.0.1) at concurrency 1, 8
and 32, with 1 and with 100 instances per request:

- HTTP floor: a bare Starlette app that parses the JSON body and returns a constant;
- per-request floor: a bare Starlette app calling the model once per request;
- mlengine: ``mle server``, one replica (autoScaling min 1, max 1), through the router;
- mlengine's traffic (issue 15, ``--servers mlengine-model,mlengine-split,mlengine-shadow``):
  a 50/50 split and a shadow version against one version called on the model's name, and the
  ``ray`` replica backend on a two-node local Ray cluster (``mlengine-ray``, bench/_traffic_servers.py);
- ``mlflow models serve`` and Ray Serve (one replica), each in its own virtual environment
  under bench/.envs/ (``mlflow``, ``ray``), made by ``bash bench/setup_serving_envs.sh``
  (which also installs ``wrk``).

Start: process start to first prediction (mlengine: version creation to READY). Cold start:
mlengine's scale-from-zero, first request of a version with no replica. Memory: PSS/RSS.
Writes docs/benchmarks.md, section ``serving``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _serving_servers as servers  # noqa: E402
from bench import _traffic_servers as traffic_servers  # noqa: E402
from bench._report import machine, table, write_section  # noqa: E402

ROOT = servers.ROOT
WORK = ROOT / "bench" / ".work" / "serving"
DATA = ROOT / "samples" / "taxifare" / "data"
CONCURRENCY = (1, 8, 32)
SIZES = (1, 100)
RAW = ("pickup_datetime", "pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude",
       "passenger_count")


def taxi_rows(name: str, limit: int | None = None) -> list[dict[str, Any]]:
    rows = []
    with open(DATA / name) as f:
        for record in csv.reader(f):
            fare, when, plon, plat, dlon, dlat, passengers = record[:7]
            rows.append({"fare_amount": float(fare), "pickup_datetime": when, "pickup_longitude": float(plon),
                         "pickup_latitude": float(plat), "dropoff_longitude": float(dlon),
                         "dropoff_latitude": float(dlat), "passenger_count": float(passengers)})
            if limit and len(rows) >= limit:
                break
    return rows


def sk_features(ride: dict[str, Any]) -> list[float]:
    when = dt.datetime.strptime(ride["pickup_datetime"][:19], "%Y-%m-%d %H:%M:%S")
    return [ride["pickup_longitude"], ride["pickup_latitude"], ride["dropoff_longitude"], ride["dropoff_latitude"],
            ride["passenger_count"], float(when.hour), float(when.weekday())]


def sklearn_model() -> Path:
    path = WORK / "sklearn"
    if not (path / "model.joblib").exists():
        import joblib
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import PolynomialFeatures, StandardScaler

        rides = taxi_rows("taxi-train.csv")
        pipeline = make_pipeline(StandardScaler(), PolynomialFeatures(degree=2), Ridge(alpha=1.0))
        pipeline.fit([sk_features(r) for r in rides], [r["fare_amount"] for r in rides])
        path.mkdir(parents=True, exist_ok=True)
        joblib.dump(pipeline, path / "model.joblib")
    return path


def tensorflow_model() -> Path:
    job_dir = WORK / "taxifare"
    exports = sorted((job_dir / "export").glob("*/saved_model.pb")) if (job_dir / "export").exists() else []
    if not exports:
        subprocess.run([sys.executable, "-m", "trainer.task", "--job-dir", str(job_dir), "--train-steps", "200"],
                       cwd=ROOT / "samples" / "taxifare", check=True, capture_output=True)
        exports = sorted((job_dir / "export").glob("*/saved_model.pb"))
    return exports[-1].parent


def instances(kind: str, count: int) -> list[Any]:
    rides = taxi_rows("taxi-valid.csv", count)
    if kind == "sklearn":
        return [sk_features(r) for r in rides]
    return [{k: r[k] for k in RAW} for r in rides]


def start(server_kind: str, model_kind: str, model: Path, probe: dict[str, Any], idle: float) -> servers.Server:
    work = WORK / "logs"
    work.mkdir(parents=True, exist_ok=True)
    floor_kind = "sklearn" if model_kind == "sklearn" else "tensorflow"
    if server_kind == "http":
        return servers.start_floor("http", model, probe, work)
    if server_kind == "floor":
        return servers.start_floor(floor_kind, model, probe, work)
    if server_kind == "mlengine":
        return servers.start_mlengine(model_kind, model, probe, work, idle)
    if server_kind == "mlflow":
        return servers.start_mlflow(floor_kind, model, probe, work)
    if server_kind == "ray":
        return servers.start_ray(floor_kind, model, probe, work)
    if server_kind in traffic_servers.VARIANTS:
        return traffic_servers.start_variant(server_kind, model)
    raise SystemExit(f"unknown server {server_kind}")


def measure(server: servers.Server, model_kind: str, seconds: float) -> list[dict[str, Any]]:
    results = []
    for size in SIZES:
        body = servers.dumps({"instances": instances(model_kind, size)})
        for connections in CONCURRENCY:
            servers.run_wrk(server.url, body, server.headers, connections, 1, WORK)  # warm-up
            result = servers.run_wrk(server.url, body, server.headers, connections, seconds, WORK)
            result.update(server=server.name, instances=size, c=connections)
            print(f"  {server.name:<20} {size:>3} inst c={connections:<2} {result['rps']:>9.1f} req/s "
                  f"p50 {result['p50']:.2f} ms p99 {result['p99']:.2f} ms errors {result['errors']}", flush=True)
            results.append(result)
    return results


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def report(model_kind: str, rows: list[dict[str, Any]], starts: dict[str, Any], memory: dict[str, Any]) -> str:
    title = {"sklearn": "scikit-learn pipeline (taxi features: scaler, degree-2 polynomial, ridge)",
             "tensorflow": "taxifare SavedModel (Keras, feature engineering inside the graph)"}[model_kind]
    out = [f"### {title}", "", table(
        ["server", "instances/request", "concurrency", "requests/s", "instances/s", "p50 ms", "p99 ms", "errors"],
        [[r["server"], str(r["instances"]), str(r["c"]), f"{r['rps']:.0f}", f"{r['rps'] * r['instances']:.0f}",
          f"{r['p50']:.2f}", f"{r['p99']:.2f}", str(r["errors"])] for r in rows])]
    headers = ["server", "start to first prediction (s)", "cold start from zero (s)", "memory, PSS / RSS (MiB)"]
    out += ["", table(headers,
                      [[name, f"{starts[name]['start']:.2f}", starts[name].get("cold", "n/a"),
                        "; ".join(f"{part} {pss:.0f} / {rss:.0f}" if part != "replicas" else f"{int(pss)} replica(s)"
                                  for part, (pss, rss) in memory.get(name, {}).items())]
                       for name in starts])]
    get = {(r["server"], r["instances"], r["c"]): r for r in rows}

    def rps(name: str, size: int = 1, c: int = 32) -> float:
        return float(get[(name, size, c)]["rps"]) if (name, size, c) in get else 0.0

    mle, floor, http = rps("mlengine"), rps("per-request floor"), rps("HTTP floor")
    peers = max(rps("mlflow models serve"), rps("Ray Serve"))
    checks = [
        f"- 1 instance, c=32: mlengine {mle:.0f} req/s = {ratio(mle, peers)} the best of MLflow and Ray Serve "
        f"(target >= 5x), {ratio(mle, floor)} the per-request floor (target > 1x), {ratio(mle, http)} the HTTP "
        "floor (target >= 0.5x).",
    ]
    if ("mlengine", 1, 1) in get and ("per-request floor", 1, 1) in get:
        delta = get[("mlengine", 1, 1)]["p50"] - get[("per-request floor", 1, 1)]["p50"]
        checks.append(f"- p50 at c=1: mlengine {get[('mlengine', 1, 1)]['p50']:.2f} ms, per-request floor "
                      f"{get[('per-request floor', 1, 1)]['p50']:.2f} ms: {delta:+.2f} ms (target within +1 ms).")
    big = rps("mlengine", 100)
    checks.append(f"- 100 instances/request, c=32: mlengine {big:.0f} req/s ({big * 100:.0f} instances/s) vs the "
                  f"per-request floor's 1-instance {floor:.0f} req/s: {ratio(big, floor)} (target >= 1x); vs its "
                  f"100-instance {rps('per-request floor', 100):.0f} req/s: "
                  f"{ratio(big, rps('per-request floor', 100))}.")
    checks += traffic_checks(get, rps)
    if "cold" in starts.get("mlengine", {}):
        checks.append(f"- cold start (scale from zero to first prediction): {starts['mlengine']['cold']} s "
                      "(target < 1 s for scikit-learn).")
    return "\n".join(out + ["", *checks, ""])


def traffic_checks(get: dict[tuple[str, int, int], dict[str, Any]], rps: Any) -> list[str]:
    """Issue 15's targets: a split and a shadow against one version called on the model's name
    (p50 at c=1 within 0.1 ms, requests/s at c=32 within 5 %); the ray backend against the local
    backend and Ray Serve (ahead of Ray Serve by the local backend's margin)."""
    out = []
    base = traffic_servers.VARIANTS["mlengine-model"]
    for key in ("mlengine-split", "mlengine-shadow"):
        name = traffic_servers.VARIANTS[key]
        if (name, 1, 1) in get and (base, 1, 1) in get:
            delta = get[(name, 1, 1)]["p50"] - get[(base, 1, 1)]["p50"]
            out.append(f"- {name}: p50 at c=1 {delta:+.2f} ms against {base} (target within 0.1 ms); requests/s "
                       f"at c=32 {ratio(rps(name), rps(base))} of it (target >= 0.95x).")
    ray_backend, serve = rps(traffic_servers.VARIANTS["mlengine-ray"]), rps("Ray Serve")
    if ray_backend and serve:
        out.append(f"- ray backend, 1 instance, c=32: {ray_backend:.0f} req/s = {ratio(ray_backend, serve)} Ray Serve; "
                   f"the local backend: {ratio(rps('mlengine'), serve)} (target: the ray backend ahead of Ray Serve "
                   "by the local backend's margin).")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--models", default="sklearn,tensorflow")
    parser.add_argument("--servers", default="http,floor,mlengine,mlflow,ray",
                        help="also: mlengine-model, mlengine-split, mlengine-shadow (a 50/50 split and a shadow "
                             "version against one version on the model's name), mlengine-ray (the ray replica "
                             "backend on a two-node local Ray cluster)")
    parser.add_argument("--idle-seconds", type=float, default=2.0, help="mlengine scale-to-zero idle time")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    sections = [f"Machine: {machine()}. Load: wrk, 1 thread, closed loop, {args.seconds:g} s per cell after a 1 s "
                "warm-up, same request bodies for every server. One process/replica per server (mlengine: one "
                "replica behind the router, micro-batching on; Ray Serve: one replica, no @serve.batch; MLflow: "
                "its default single worker). mlengine start = version creation to READY (its zygote already had the "
                "framework imported only if an earlier version used it); cold start = first request to a version "
                "scaled to zero (median of 3). Memory after the load, idle.", ""]
    raw: dict[str, Any] = {}
    for model_kind in args.models.split(","):
        model = sklearn_model() if model_kind == "sklearn" else tensorflow_model()
        probe = {"instances": instances(model_kind, 1)}
        rows: list[dict[str, Any]] = []
        starts: dict[str, Any] = {}
        memory: dict[str, Any] = {}
        for server_kind in args.servers.split(","):
            print(f"{model_kind}: starting {server_kind}", flush=True)
            try:
                server = start(server_kind, model_kind, model, probe, args.idle_seconds)
            except Exception as err:  # a peer that cannot start is reported, not fatal
                print(f"  {server_kind} did not start: {err}", flush=True)
                continue
            try:
                starts[server.name] = {"start": server.start_seconds}
                rows += measure(server, model_kind, args.seconds)
                memory[server.name] = server.memory()
                if server_kind == "mlengine":
                    times = servers.cold_starts(server, probe)
                    starts[server.name]["cold"] = f"{statistics.median(times):.3f}"
                    print(f"  cold starts: {[round(t, 3) for t in times]}", flush=True)
            finally:
                server.stop()
        sections.append(report(model_kind, rows, starts, memory))
        raw[model_kind] = {"rows": rows, "starts": starts, "memory": memory}
    (WORK / "results.json").write_text(json.dumps(raw, indent=2))
    write_section("serving", "## Online prediction (bench/serving.py)\n\n" + "\n".join(sections))
    print("wrote docs/benchmarks.md (section serving)")


if __name__ == "__main__":
    main()
