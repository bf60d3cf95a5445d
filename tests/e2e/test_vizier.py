"""Issue 10.8: a Vizier client (googleapiclient on ``projects.locations.studies``) drives a study
on a real server: suggest -> addMeasurement -> complete, the optimum found, and the study
survives a restart of the server."""

from __future__ import annotations

from typing import Any

import pytest
from tests.e2e.helpers import ServerProcess
from tests.e2e.test_googleapiclient import ml_client

pytestmark = pytest.mark.e2e

PARENT = "projects/mlengine/locations/us-central1"
STUDY = {"studyConfig": {
    "algorithm": "RANDOM_SEARCH",
    "metrics": [{"metric": "loss", "goal": "MINIMIZE"}],
    "parameters": [
        {"parameter": "x", "type": "DOUBLE", "doubleValueSpec": {"minValue": -1.0, "maxValue": 1.0}},
        {"parameter": "shape", "type": "CATEGORICAL", "categoricalValueSpec": {"values": ["flat", "bowl"]}},
    ],
}}


def loss(parameters: list[dict[str, Any]]) -> float:
    values = {p["parameter"]: p.get("floatValue", p.get("stringValue")) for p in parameters}
    return float((values["x"] - 0.3) ** 2 + (0.5 if values["shape"] == "flat" else 0.0))


def run_trials(ml: Any, study: str, client_id: str, rounds: int) -> dict[str, float]:
    """What a Vizier worker does: suggest, report measurements, complete; trial name -> loss."""
    trials = ml.projects().locations().studies().trials()
    seen: dict[str, float] = {}
    for _ in range(rounds):
        op = trials.suggest(parent=study, body={"suggestionCount": 1, "clientId": client_id}).execute()
        if not op.get("done"):  # AI Platform may answer before it is done
            op = ml.projects().locations().operations().get(name=op["name"]).execute()
        (trial,) = op["response"]["trials"]
        value = loss(trial["parameters"])
        for step in (1, 2):
            trials.addMeasurement(name=trial["name"], body={"measurement": {
                "stepCount": str(step), "metrics": [{"metric": "loss", "value": value * (3 - step)}]}}).execute()
        done = trials.complete(name=trial["name"], body={"finalMeasurement": {
            "stepCount": "2", "metrics": [{"metric": "loss", "value": value}]}}).execute()
        assert done["state"] == "COMPLETED" and len(done["measurements"]) == 2
        seen[trial["name"]] = value
    return seen


def test_a_vizier_client_runs_a_study_that_survives_a_restart(server: ServerProcess) -> None:
    from googleapiclient.errors import HttpError

    ml = ml_client(server)
    studies = ml.projects().locations().studies()
    created = studies.create(parent=PARENT, studyId="quadratic", body=STUDY).execute()
    study = created["name"]
    assert study == f"{PARENT}/studies/quadratic" and created["state"] == "ACTIVE"

    losses = run_trials(ml, study, "worker-0", 5)
    optimal = studies.trials().listOptimalTrials(parent=study, body={}).execute()["trials"]
    assert [t["name"] for t in optimal] == [min(losses, key=losses.__getitem__)]

    with pytest.raises(HttpError) as bad:
        studies.trials().suggest(parent=study, body={"suggestionCount": 0, "clientId": "w"}).execute()
    assert bad.value.resp.status == 400 and b"suggestionCount" in bad.value.content
    with pytest.raises(HttpError) as late:
        studies.trials().addMeasurement(name=next(iter(losses)), body={"measurement": {
            "metrics": [{"metric": "loss", "value": 1.0}]}}).execute()
    assert late.value.resp.status == 400 and b"COMPLETED" in late.value.content
    config = ml.projects().getConfig(name="projects/mlengine").execute()
    assert config["serviceAccountProject"] == "mlengine" and config["serviceAccount"].endswith(".iam.mlengine")
    listed = ml.projects().locations().list(parent="projects/mlengine").execute()["locations"]
    assert [loc["name"] for loc in listed] == [PARENT]

    server.stop()
    server.start()
    ml = ml_client(server)
    studies = ml.projects().locations().studies()
    assert [s["name"] for s in studies.list(parent=PARENT).execute()["studies"]] == [study]
    kept = studies.trials().list(parent=study).execute()["trials"]
    assert {t["name"]: t["finalMeasurement"]["metrics"][0]["value"] for t in kept} == losses
    more = run_trials(ml, study, "worker-1", 1)
    assert list(more) == [f"{study}/trials/6"]
    studies.delete(name=study).execute()
    with pytest.raises(HttpError) as gone:
        studies.get(name=study).execute()
    assert gone.value.resp.status == 404
