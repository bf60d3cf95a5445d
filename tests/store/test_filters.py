from __future__ import annotations

import pytest

from mlengine.errors import MLEngineError
from mlengine.store.filters import compile_filter

JOB = {"jobId": "tune_1", "state": "RUNNING", "labels": {"team": "ml"},
       "trainingInput": {"scaleTier": "BASIC"}, "createTime": "2026-11-23T10:00:00Z"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("state=RUNNING", True),
        ("state = QUEUED", False),
        ("state=QUEUED OR labels.team=ml", True),
        ("state=RUNNING AND labels.team=data", False),
        ("NOT state=RUNNING", False),
        ("-state=FAILED", True),
        ("jobId:tune*", True),
        ("jobId=tune*", True),
        ("labels:team", True),
        ("labels:owner", False),
        ('labels.team="ml"', True),
        ("trainingInput.scaleTier=BASIC state=RUNNING", True),
        ('createTime>"2026-01-01T00:00:00Z"', True),
        ("(state=QUEUED OR state=RUNNING) AND jobId:tune", True),
    ],
)
def test_filter(text: str, expected: bool) -> None:
    assert compile_filter(text)(JOB) is expected


@pytest.mark.parametrize("text", ["state=", "=RUNNING", "state RUNNING", "(state=RUNNING", "state=RUNNING)"])
def test_bad_filter_names_the_field(text: str) -> None:
    with pytest.raises(MLEngineError) as info:
        compile_filter(text)
    assert "filter" in info.value.message
