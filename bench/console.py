"""The console's pages over a large store: server time per page (issue 13's targets).

    .venv/bin/python bench/console.py [--jobs 20000] [--trials 2000] [--versions 200]
                                      [--log-lines 100000] [--repeat 20] [--no-write]

Builds a SQLite store under bench/.work/console with ``--jobs`` finished jobs, one tuning job
with ``--trials`` trials, one job with ``--log-lines`` log lines and a model with
``--versions`` versions (FAILED: no replica starts), then runs the real control plane in
process (no socket) and times each console page as a signed-in browser gets it, plus
``jobs.list`` with a state filter through the API. Targets: p50 under 100 ms per page, the
filtered list under 50 ms. Writes docs/benchmarks.md, section ``console`` (unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import machine, table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "console"
PROJECT = "bench"
STATES = ["SUCCEEDED"] * 14 + ["FAILED"] * 4 + ["CANCELLED"] * 2
INPUT = {"scaleTier": "BASIC", "pythonModule": "trainer.task", "region": "us-central1",
         "packageUris": ["file:///staging/trainer-0.1.tar.gz"], "args": ["--epochs", "3"]}


def _job(job_id: str, i: int, start: dt.datetime, **fields: Any) -> dict[str, Any]:
    row = {"project": PROJECT, "job_id": job_id, "kind": "training", "state": STATES[i % len(STATES)],
           "create_time": start + dt.timedelta(minutes=i), "end_time": start + dt.timedelta(minutes=i + 5),
           "error_message": "", "input": INPUT, "output": {}, "labels": {"team": ("vision", "nlp", "tabular")[i % 3]},
           "labels_version": 0, "scheduling": {}, "kind_state": {}, "version": 1}
    row.update(fields)
    return row


def build(settings: Any, args: argparse.Namespace) -> None:
    from sqlalchemy import insert

    from mlengine.jobs.paths import JobPaths
    from mlengine.store.database import open_database
    from mlengine.store.models import JobRow
    from mlengine.store.serving import ModelRow, VersionRow

    db = open_database(settings.database_url)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rows = [_job(f"job_{i}", i, start) for i in range(args.jobs)]
    spec = {"goal": "MINIMIZE", "hyperparameterMetricTag": "loss", "maxTrials": args.trials,
            "params": [{"parameterName": "lr", "type": "DOUBLE", "minValue": 1e-4, "maxValue": 1},
                       {"parameterName": "layers", "type": "INTEGER", "minValue": 1, "maxValue": 8},
                       {"parameterName": "opt", "type": "CATEGORICAL", "categoricalValues": ["adam", "sgd"]}]}
    trials = [{"trialId": str(n), "state": "SUCCEEDED",
               "hyperparameters": {"lr": str(1 / n), "layers": str(n % 8 + 1), "opt": ("adam", "sgd")[n % 2]},
               "finalMetric": {"trainingStep": "10", "objectiveValue": (n * 7919 % 1000) / 1000}}
              for n in range(1, args.trials + 1)]
    rows.append(_job("tuned", 0, start, kind="tuning", state="SUCCEEDED", input={**INPUT, "hyperparameters": spec},
                     output={"completedTrialCount": str(args.trials), "trials": trials,
                             "isHyperparameterTuningJob": True}))
    rows.append(_job("logged", 0, start, state="SUCCEEDED"))
    with db.engine.begin() as conn:
        for chunk in range(0, len(rows), 2000):
            conn.execute(insert(JobRow), rows[chunk:chunk + 2000])
        model = conn.execute(insert(ModelRow).values(project=PROJECT, name="bench_model", description="", labels={},
                                                     spec={}, create_time=start, version=1)).inserted_primary_key[0]
        conn.execute(insert(VersionRow), [{
            "model_pk": model, "name": f"v{i}", "state": "FAILED", "error_message": "benchmark row",
            "spec": {"deploymentUri": "/nonexistent"}, "internal": {}, "create_time": start, "version": 1,
        } for i in range(args.versions)])
    db.dispose()
    logs = JobPaths.of(settings, PROJECT, "logged").logs_dir
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "master-replica-0.jsonl", "w") as f:
        for i in range(args.log_lines):
            stamp = f"2026-01-01T00:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i % 100:02d}0000Z"
            f.write(json.dumps({"timestamp": stamp, "severity": "INFO", "taskName": "master-replica-0",
                                "message": f"step {i} loss {1 / (i + 1):.6f}"}) + "\n")


def timed(call: Any, repeat: int) -> tuple[float, float]:
    call()  # warm
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.9))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--log-lines", type=int, default=100000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import httpx

    from mlengine.config import load_settings
    from mlengine.testing.inprocess import InProcessServer

    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    settings = load_settings(home=WORK / "home", executor="local", database_url=f"sqlite:///{WORK / 'mlengine.db'}",
                             capacity_slots=1)
    build(settings, args)
    pages = {
        "jobs page (newest 50)": "/console/projects/bench/jobs",
        "jobs page, state=FAILED": "/console/projects/bench/jobs?state=FAILED",
        "jobs page, label and id prefix": "/console/projects/bench/jobs?label=team%3Dnlp&q=job_19",
        f"job page ({args.log_lines:,} log lines)": "/console/projects/bench/jobs/logged",
        "its first logs.json (the tail)": "/console/projects/bench/jobs/logged/logs.json",
        f"trials page ({args.trials:,} trials)": "/console/projects/bench/jobs/tuned/trials",
        f"model page ({args.versions} versions)": "/console/projects/bench/models/bench_model",
        "version page": "/console/projects/bench/models/bench_model/versions/v0",
    }
    results = []
    with InProcessServer(settings) as server:
        browser = httpx.Client(base_url=server.url, transport=server._transport())
        page = browser.get("/console/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, "no sign-in form"
        signed = browser.post("/console/signin", data={"csrf": csrf.group(1), "token": server.token},
                              headers={"origin": server.url})
        assert signed.status_code == 303, signed.text
        for name, path in pages.items():
            def get(path: str = path) -> None:
                response = browser.get(path)
                assert response.status_code == 200, (path, response.status_code, response.text[:300])
            p50, p90 = timed(get, args.repeat)
            results.append([name, f"{p50:.1f}", f"{p90:.1f}"])
            print(f"{name:40s} p50 {p50:7.1f} ms  p90 {p90:7.1f} ms", flush=True)
        with server.client(retries=0) as api:
            p50, p90 = timed(lambda: api.request("GET", f"/v1/projects/{PROJECT}/jobs",
                                                 params={"filter": "state=FAILED", "pageSize": 50}), args.repeat)
        results.append(["API jobs.list, state=FAILED (page of 50)", f"{p50:.1f}", f"{p90:.1f}"])
        print(f"{'API jobs.list state=FAILED':40s} p50 {p50:7.1f} ms  p90 {p90:7.1f} ms", flush=True)
    body = (f"## Console (`bench/console.py`)\n\nServer time of console pages as a signed-in browser gets them "
            f"(the control plane in process, no socket; SQLite), over {args.jobs:,} jobs, a tuning job of "
            f"{args.trials:,} trials, a job with {args.log_lines:,} log lines and {args.versions} versions "
            f"({args.repeat} requests each; {machine()}). Targets: p50 under 100 ms per page, the filtered "
            "list under 50 ms.\n\n" + table(["page", "p50 (ms)", "p90 (ms)"], results))
    if not args.no_write:
        write_section("console", body)
    print(body)


if __name__ == "__main__":
    main()
