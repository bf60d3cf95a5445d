"""List filters pushed down to SQL (issue 13.5) answer exactly as the Python evaluator does over
the rendered jobs: random AIP-160 filters (hypothesis) over a fixed set of jobs, on SQLite and
on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlengine.jobs.kinds import KindRegistry
from mlengine.jobs.service import render_job
from mlengine.store.database import Database, open_database
from mlengine.store.filters import Comparison, compile_filter, evaluate, parse_timestamp
from mlengine.store.jobs import JobRepository, compile_job_filter, job_field
from mlengine.store.models import JobRow

STATES = ["QUEUED", "PREPARING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED"]
BASE = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
TIMES = [BASE + dt.timedelta(seconds=s, microseconds=us)
         for s in (0, 1, 3600) for us in (0, 1, 500_000, 999_999)]
PROJECT = f"p{uuid.uuid4().hex[:12]}"  # PostgreSQL's test database is shared by the session
LABELS = [{}, {"team": "ml"}, {"team": "mlops", "env": "prod"}, {"env": ""}, {"env": "dev", "team-x": "a_b"}]


def _fill(db: Database) -> list[JobRow]:
    repo = JobRepository(db)
    rows = []
    for i in range(48):
        job_id = f"{'tune' if i % 3 == 0 else 'job'}_{i:02d}"
        row = repo.create(PROJECT, job_id, kind="toy", state=STATES[i % len(STATES)], input={},
                          labels=LABELS[i % len(LABELS)])
        when = TIMES[(i * 5) % len(TIMES)]
        rows.append(repo.update(row.id, lambda r, when=when: setattr(r, "create_time", when)))
    repo.create(PROJECT + "x", "job_00", kind="toy", state="RUNNING", input={}, labels={"team": "ml"})
    return rows


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    if request.param == "sqlite":
        url = f"sqlite:///{Path(tmp_path_factory.mktemp('filters')) / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = open_database(url)
    yield JobRepository(db), _fill(db)
    db.dispose()


def _python_answer(rows: list[JobRow], text: str) -> list[str]:
    predicate = compile_filter(text)
    kinds = KindRegistry([])
    return [r.job_id for r in sorted(rows, key=lambda r: -r.id) if predicate(render_job(r, kinds))]


def _sql_answer(repo: JobRepository, text: str) -> tuple[list[str], bool]:
    where = compile_job_filter(text)
    node = where.node
    kinds = KindRegistry([])
    predicate = ((lambda r: evaluate(node, render_job(r, kinds)))  # noqa: E731
                 if where.needs_python and node is not None else None)
    found, token = repo.list_page(PROJECT, predicate, 1000, None, where=where)
    assert token is None
    return [r.job_id for r in found], where.needs_python


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_VALUES = st.one_of(
    st.sampled_from(STATES + ["RUN*", "SUCC*", "*", "", "running", "job_0*", "tune*", "job_07", "ml", "ml*", "prod",
                              "dev", "a_b", "team", "env", "team-x", "absent", "2026-03-01", "x*"]),
    st.sampled_from(TIMES).map(_stamp),
    st.sampled_from(TIMES).map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.sampled_from(TIMES).map(lambda t: (t + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%f+02:00")),
    st.text(alphabet="abcdeglmnoprstuxQRUN_-0123456789*", max_size=6),
)
_FIELDS = st.sampled_from(["state", "jobId", "createTime", "labels.team", "labels.env", "labels.team-x",
                           "labels.absent", "labels", "etag", "trainingInput.region"])
_OPS = st.sampled_from(["=", "!=", "<", "<=", ">", ">=", ":"])
_COMPARISONS = st.builds(lambda f, o, v: f'{f}{o}"{v}"', _FIELDS, _OPS, _VALUES)
_FILTERS = st.recursive(
    _COMPARISONS,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} AND {b}", inner, inner),
        st.builds(lambda a, b: f"({a} OR {b})", inner, inner),
        st.builds(lambda a: f"NOT ({a})", inner),
        st.builds(lambda a, b: f"{a} {b}", inner, inner),
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_FILTERS)
def test_sql_and_python_give_the_same_jobs(filled: tuple[Any, ...], text: str) -> None:
    repo, rows = filled
    assert _sql_answer(repo, text)[0] == _python_answer(rows, text), text


@pytest.mark.parametrize("text", [
    "state=RUNNING", "state=RUNNING OR state=QUEUED", "labels.team=ml", "-labels.env=prod", "labels:env",
    'createTime>"2026-03-01T12:00:00.5Z"', 'createTime<="2026-03-01T14:00:00+02:00"', "jobId:tune*",
    "state!=FAILED AND labels.team:ml*", "NOT (state=RUNNING AND labels.env=\"\")",
])
def test_these_filters_run_entirely_in_sql(filled: tuple[Any, ...], text: str) -> None:
    repo, rows = filled
    found, needs_python = _sql_answer(repo, text)
    assert not needs_python, text
    assert found == _python_answer(rows, text) and found, text


def test_what_sql_cannot_decide_falls_back_to_python(filled: tuple[Any, ...]) -> None:
    repo, rows = filled
    for text in ("state:UNN", "state>Q", "etag:*", "labels.team=ml AND jobId:07"):
        found, needs_python = _sql_answer(repo, text)
        assert needs_python, text
        assert found == _python_answer(rows, text), text


def test_timestamps_compare_as_instants() -> None:
    later = {"createTime": "2026-03-01T12:00:00.500000Z"}
    assert compile_filter('createTime>"2026-03-01T12:00:00Z"')(later)  # a string compare says no
    assert compile_filter('createTime<"2026-03-01T13:00:01+01:00"')(later)
    assert parse_timestamp("2026-03-01T12:00:00.123456789Z") == dt.datetime(2026, 3, 1, 12, 0, 0, 123456,
                                                                            tzinfo=dt.timezone.utc)
    assert parse_timestamp("2026-03-01") is None and parse_timestamp("2026-02-30T00:00:00Z") is None


def test_only_known_fields_compile() -> None:
    assert job_field("labels.Team") is None and job_field("labels.a.b") is None and job_field("etag") is None
    compiler = job_field("state")
    assert compiler is not None and compiler(Comparison("state", "<", "R")) is None
