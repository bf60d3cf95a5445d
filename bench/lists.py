"""``jobs.list`` with filters over many jobs: the filter pushed down to SQL (issue 13.5) against
the same filter evaluated in Python over every rendered job (what the server did before).

    .venv/bin/python bench/lists.py [--jobs 20000] [--repeat 20] [--no-write]

Builds a SQLite store under bench/.work/lists with ``--jobs`` jobs (states, labels and create
times spread), then times ``JobService.list`` (server time, no HTTP) for a page of 50 with each
filter. Target (issue 13): a state filter under 50 ms p50 with 20,000 jobs. Writes
docs/benchmarks.md, section ``lists`` (unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import machine, table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "lists"
STATES = ["SUCCEEDED"] * 14 + ["FAILED"] * 3 + ["CANCELLED", "RUNNING", "QUEUED"]
FILTERS = ["", "state=RUNNING", "state=SUCCEEDED", "labels.team=vision", 'createTime>"2026-01-01T00:00:00Z"',
           "state=FAILED AND labels.team=nlp", "jobId:job_1999*"]


def build_store(path: Path, jobs: int) -> Any:
    from sqlalchemy import insert

    from mlengine.store.database import open_database
    from mlengine.store.models import JobRow

    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    db = open_database(f"sqlite:///{path / 'mlengine.db'}")
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    rows = [{
        "project": "bench", "job_id": f"job_{i}", "kind": "training", "state": STATES[i % len(STATES)],
        "create_time": start + dt.timedelta(minutes=30 * i), "error_message": "",
        "input": {"scaleTier": "BASIC", "pythonModule": "trainer.task", "region": "us-central1",
                  "packageUris": [f"file:///staging/{i}/trainer-0.1.tar.gz"], "args": ["--epochs", "3"]},
        "output": {}, "labels": {"team": ("vision", "nlp", "tabular")[i % 3], "run": str(i % 7)},
        "labels_version": 0, "scheduling": {}, "kind_state": {}, "version": 1,
    } for i in range(jobs)]
    with db.engine.begin() as conn:
        for chunk in range(0, len(rows), 2000):
            conn.execute(insert(JobRow), rows[chunk:chunk + 2000])
    return db


def timed(call: Any, repeat: int) -> float:
    call()  # warm
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from mlengine.config import load_settings
    from mlengine.jobs.kinds import KindContext
    from mlengine.jobs.service import JobService, render_job
    from mlengine.store.filters import compile_filter
    from mlengine.store.jobs import JobRepository
    from mlengine.training.kind import TrainingKind

    db = build_store(WORK, args.jobs)
    settings = load_settings(home=WORK / "home", database_url=f"sqlite:///{WORK / 'mlengine.db'}")
    repo = JobRepository(db)
    from mlengine.jobs.kinds import KindRegistry

    kinds = KindRegistry()
    kinds.register(TrainingKind(KindContext(settings, repo, db, lambda: None), None))
    service = JobService(settings, repo, kinds, lambda: None)

    def python_only(text: str) -> None:  # the previous path: render and test every row
        predicate = compile_filter(text)
        rows, _ = repo.list_page("bench", lambda r: predicate(render_job(r, kinds)), 50, None)
        [render_job(r, kinds, repo.queue_position(r)) for r in rows]

    results = []
    for text in FILTERS:
        pushed = timed(lambda text=text: service.list("bench", text, 50, None), args.repeat)
        before = timed(lambda text=text: python_only(text), max(1, args.repeat // 4))
        found = len(service.list("bench", text, 50, None)["jobs"])
        results.append([f"`{text or '(none)'}`", str(found), f"{pushed:.1f}", f"{before:.1f}"])
        print(f"{text or '(none)':40s} {found:3d} jobs  SQL {pushed:8.1f} ms   Python {before:8.1f} ms", flush=True)
    db.dispose()
    body = (f"## Lists (`bench/lists.py`)\n\n`jobs.list`, a page of 50, over {args.jobs:,} jobs in SQLite "
            f"(server time, median of {args.repeat}; {machine()}). Target: a state filter under 50 ms.\n\n"
            + table(["filter", "jobs on the page", "pushed down to SQL (ms)", "Python over every job (ms)"],
                    results))
    if not args.no_write:
        write_section("lists", body)
    print(body)


if __name__ == "__main__":
    main()
