"""The Optimizer (Vizier) API: study configs, the service over Optuna in a real SQLite store,
and its routes in the real app (in process)."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import pytest

from mlengine.config import load_settings
from mlengine.errors import Code, MLEngineError
from mlengine.store.database import open_database
from mlengine.testing.inprocess import InProcessServer
from mlengine.tuning.vizier.config import parse_study_config, to_internal, to_vizier
from mlengine.tuning.vizier.service import VizierService

LOC = "us-central1"
CONFIG: dict[str, Any] = {
    "algorithm": "GAUSSIAN_PROCESS_BANDIT",
    "metrics": [{"metric": "loss", "goal": "MINIMIZE"}],
    "parameters": [
        {"parameter": "lr", "type": "DOUBLE", "doubleValueSpec": {"minValue": 1e-4, "maxValue": 1.0},
         "scaleType": "UNIT_LOG_SCALE"},
        {"parameter": "units", "type": "INTEGER", "integerValueSpec": {"minValue": "8", "maxValue": "64"}},
        {"parameter": "opt", "type": "CATEGORICAL", "categoricalValueSpec": {"values": ["adam", "sgd"]}},
        {"parameter": "batch", "type": "DISCRETE", "discreteValueSpec": {"values": [16, 32, 64]}},
    ],
}


def config(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(CONFIG)
    out.update(changes)
    return out


def error_of(fn: Any, *args: Any) -> MLEngineError:
    with pytest.raises(MLEngineError) as info:
        fn(*args)
    return info.value


# Study configs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "field"), [
    ({"parameters": []}, "studyConfig.parameters"),
    ({"parameters": [{"parameter": "x", "type": "FLOAT", "doubleValueSpec": {}}]}, "studyConfig.parameters[0].type"),
    ({"parameters": [{"parameter": "x", "type": "DOUBLE", "doubleValueSpec": {"minValue": 2, "maxValue": 1}}]},
     "studyConfig.parameters[0].doubleValueSpec.maxValue"),
    ({"parameters": [{"parameter": "x", "type": "INTEGER", "integerValueSpec": {"minValue": "a", "maxValue": 1}}]},
     "studyConfig.parameters[0].integerValueSpec.minValue"),
    ({"parameters": [{"parameter": "x", "type": "DISCRETE", "discreteValueSpec": {"values": [2, 1]}}]},
     "studyConfig.parameters[0].discreteValueSpec.values[1]"),
    ({"parameters": [{"parameter": "x", "type": "DOUBLE", "integerValueSpec": {"minValue": 1, "maxValue": 2}}]},
     "studyConfig.parameters[0].integerValueSpec"),
    ({"parameters": [{"parameter": "9x", "type": "CATEGORICAL", "categoricalValueSpec": {"values": ["a"]}}]},
     "studyConfig.parameters[0].parameter"),
    ({"algorithm": "GRID_SEARCH"}, "studyConfig.parameters[0].type"),  # a DOUBLE has no grid
    ({"algorithm": "SIMULATED_ANNEALING"}, "studyConfig.algorithm"),
    ({"metrics": []}, "studyConfig.metrics"),
    ({"metrics": [{"metric": "loss", "goal": "GOAL_TYPE_UNSPECIFIED"}]}, "studyConfig.metrics[0].goal"),
    ({"metrics": [{"metric": "a", "goal": "MINIMIZE"}, {"metric": "b", "goal": "MAXIMIZE"}],
      "automatedStoppingConfig": {"medianAutomatedStoppingConfig": {}}}, "studyConfig.automatedStoppingConfig"),
    ({"maxTrials": 3}, "studyConfig.maxTrials"),
])
def test_bad_study_configs_name_the_field(changes: dict[str, Any], field: str) -> None:
    error = error_of(parse_study_config, config(**changes))
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message.startswith(f"Field: {field} Error:"), error.message


def test_what_mlengine_lacks_is_501_naming_the_field() -> None:
    child = config(parameters=[{"parameter": "x", "type": "CATEGORICAL", "categoricalValueSpec": {"values": ["a"]},
                                "childParameterSpecs": [{"parameter": "y", "type": "DOUBLE"}]}])
    error = error_of(parse_study_config, child)
    assert error.code is Code.UNIMPLEMENTED and "studyConfig.parameters[0].childParameterSpecs" in error.message
    elapsed = config(automatedStoppingConfig={"decayCurveStoppingConfig": {"useElapsedTime": True}})
    error = error_of(parse_study_config, elapsed)
    assert error.code is Code.UNIMPLEMENTED and "decayCurveStoppingConfig.useElapsedTime" in error.message


def test_configs_map_onto_tuning_specs_samplers_and_pruners() -> None:
    import optuna

    parsed = parse_study_config(CONFIG)
    assert parsed.spec.algorithm == "ALGORITHM_UNSPECIFIED"  # GP bandit: the Bayesian sampler of tuning jobs
    assert isinstance(parsed.sampler("tpe"), optuna.samplers.TPESampler)
    assert isinstance(parsed.pruner(), optuna.pruners.NopPruner)
    assert parsed.directions == ["minimize"]
    random = parse_study_config(config(algorithm="RANDOM_SEARCH"))
    assert isinstance(random.sampler("tpe"), optuna.samplers.RandomSampler)
    median = parse_study_config(config(automatedStoppingConfig={"medianAutomatedStoppingConfig": {}}))
    assert isinstance(median.pruner(), optuna.pruners.MedianPruner)
    decay = parse_study_config(config(automatedStoppingConfig={"decayCurveStoppingConfig": {}}))
    assert isinstance(decay.pruner(), optuna.pruners.PercentilePruner)
    assert not isinstance(decay.pruner(), optuna.pruners.MedianPruner)


def test_values_round_trip_through_optuna() -> None:
    parsed = parse_study_config(config(parameters=[
        {"parameter": "r", "type": "DOUBLE", "doubleValueSpec": {"minValue": 1, "maxValue": 100},
         "scaleType": "UNIT_REVERSE_LOG_SCALE"},
        {"parameter": "d", "type": "DISCRETE", "discreteValueSpec": {"values": [0.5, 1, 4]}}]))
    r, d = parsed.params
    internal = to_internal(r, {"floatValue": 90.0}, "p")
    assert math.isclose(internal, 11.0) and math.isclose(to_vizier(r, internal)["floatValue"], 90.0)
    assert to_internal(d, {"floatValue": 4}, "p") == 2 and to_vizier(d, 2) == {"parameter": "d", "floatValue": 4.0}
    assert "p.floatValue" in error_of(to_internal, d, {"floatValue": 3}, "p").message
    assert "p.floatValue" in error_of(to_internal, r, {"floatValue": 101}, "p").message


# The service -----------------------------------------------------------------------------------
@pytest.fixture
def service(database_url: str) -> Iterator[VizierService]:
    """The service over an empty store: SQLite, and PostgreSQL (tests/conftest.py)."""
    db = open_database(database_url)
    vizier = VizierService(db)
    yield vizier
    vizier.close()
    db.dispose()


def suggest(service: VizierService, study: str, count: int = 1, client: str = "worker-0") -> list[dict[str, Any]]:
    op = service.suggest("p", LOC, study, {"suggestionCount": count, "clientId": client})
    assert op["done"] is True and op["metadata"]["clientId"] == client
    return list(op["response"].get("trials", []))


def trial_id(trial: dict[str, Any]) -> str:
    return str(trial["name"].rsplit("/", 1)[1])


def measure(value: float, step: int) -> dict[str, Any]:
    return {"measurement": {"stepCount": str(step), "metrics": [{"metric": "loss", "value": value}]}}


def test_suggest_measure_complete_and_the_optimum(service: VizierService) -> None:
    created = service.create_study("p", LOC, "s1", {"studyConfig": CONFIG})
    assert created["name"] == f"projects/p/locations/{LOC}/studies/s1" and created["state"] == "ACTIVE"
    assert error_of(service.create_study, "p", LOC, "s1", {"studyConfig": CONFIG}).code is Code.ALREADY_EXISTS
    losses = {}
    for round_ in range(4):
        (trial,) = suggest(service, "s1", client=f"w{round_}")
        values = {p["parameter"]: p.get("floatValue", p.get("intValue", p.get("stringValue")))
                  for p in trial["parameters"]}
        assert 1e-4 <= values["lr"] <= 1 and 8 <= int(values["units"]) <= 64
        assert values["opt"] in ("adam", "sgd") and values["batch"] in (16.0, 32.0, 64.0)
        tid = trial_id(trial)
        measured = service.add_measurement("p", LOC, "s1", tid, measure(1.0 + round_, 1))
        assert measured["measurements"][0]["metrics"] == [{"metric": "loss", "value": 1.0 + round_}]
        done = service.complete("p", LOC, "s1", tid, {})  # the last measurement becomes the final one
        assert done["state"] == "COMPLETED" and done["finalMeasurement"]["metrics"][0]["value"] == 1.0 + round_
        losses[tid] = 1.0 + round_
    optimal = service.list_optimal("p", LOC, "s1")["trials"]
    assert [trial_id(t) for t in optimal] == [min(losses, key=losses.__getitem__)]
    assert len(service.list_trials("p", LOC, "s1")["trials"]) == 4


def test_a_client_gets_its_pending_trial_again(service: VizierService) -> None:
    service.create_study("p", LOC, "s2", {"studyConfig": CONFIG})
    first = suggest(service, "s2", 2, "a")
    again = suggest(service, "s2", 3, "a")
    assert [trial_id(t) for t in again][:2] == [trial_id(t) for t in first] and len(again) == 3
    other = suggest(service, "s2", 1, "b")
    assert trial_id(other[0]) not in {trial_id(t) for t in again}


def test_bad_trial_calls_answer_400_404_naming_what(service: VizierService) -> None:
    service.create_study("p", LOC, "s3", {"studyConfig": CONFIG})
    service.create_study("p", LOC, "other", {"studyConfig": CONFIG})
    for count in (0, -1, "2", None, 101):
        error = error_of(service.suggest, "p", LOC, "s3", {"suggestionCount": count, "clientId": "c"})
        assert error.code is Code.INVALID_ARGUMENT and "suggestionCount" in error.message
    assert "clientId" in error_of(service.suggest, "p", LOC, "s3", {"suggestionCount": 1}).message
    (trial,) = suggest(service, "s3")
    tid = trial_id(trial)
    # A trial of another study: that study has no trial 1.
    assert error_of(service.get_trial, "p", LOC, "other", tid).code is Code.NOT_FOUND
    assert error_of(service.get_trial, "p", LOC, "missing", tid).code is Code.NOT_FOUND
    bad = {"measurement": {"metrics": [{"metric": "loss", "value": "high"}]}}
    assert "measurement.metrics[0].value" in error_of(service.add_measurement, "p", LOC, "s3", tid, bad).message
    wrong_metric = {"finalMeasurement": {"metrics": [{"metric": "acc", "value": 1}]}}
    error = error_of(service.complete, "p", LOC, "s3", tid, wrong_metric)
    assert "finalMeasurement.metrics" in error.message and "'loss'" in error.message
    assert "finalMeasurement" in error_of(service.complete, "p", LOC, "s3", tid, {}).message  # nothing measured
    service.complete("p", LOC, "s3", tid, {"finalMeasurement": {"metrics": [{"metric": "loss", "value": 2}]}})
    late = error_of(service.add_measurement, "p", LOC, "s3", tid, measure(1, 2))
    assert late.code is Code.FAILED_PRECONDITION and "COMPLETED" in late.message and f"trials/{tid}" in late.message
    assert error_of(service.complete, "p", LOC, "s3", tid, {}).code is Code.FAILED_PRECONDITION
    assert error_of(service.stop, "p", LOC, "s3", tid).code is Code.FAILED_PRECONDITION


def test_user_trials_infeasible_stop_and_delete(service: VizierService) -> None:
    service.create_study("p", LOC, "s4", {"studyConfig": CONFIG})
    params = [{"parameter": "lr", "floatValue": 0.01}, {"parameter": "units", "intValue": "16"},
              {"parameter": "opt", "stringValue": "sgd"}, {"parameter": "batch", "floatValue": 32}]
    done = service.create_trial("p", LOC, "s4", {"parameters": params, "finalMeasurement": {
        "metrics": [{"metric": "loss", "value": 0.1}]}})
    assert done["state"] == "COMPLETED" and done["parameters"] == params
    requested = service.create_trial("p", LOC, "s4", {"parameters": params, "state": "REQUESTED"})
    assert requested["state"] == "REQUESTED"
    (handed,) = suggest(service, "s4", client="c")  # the requested trial is handed out first
    assert trial_id(handed) == trial_id(requested) and handed["state"] == "ACTIVE" and handed["parameters"] == params
    assert "parameters[0].parameter" in error_of(
        service.create_trial, "p", LOC, "s4", {"parameters": [{"parameter": "nope", "floatValue": 1}]}).message
    stopping = service.stop("p", LOC, "s4", trial_id(handed))
    assert stopping["state"] == "STOPPING"
    infeasible = service.complete("p", LOC, "s4", trial_id(handed),
                                  {"trialInfeasible": True, "infeasibleReason": "out of memory"})
    assert infeasible["trialInfeasible"] is True and infeasible["infeasibleReason"] == "out of memory"
    assert [trial_id(t) for t in service.list_optimal("p", LOC, "s4")["trials"]] == [trial_id(done)]
    service.delete_trial("p", LOC, "s4", trial_id(done))
    assert error_of(service.get_trial, "p", LOC, "s4", trial_id(done)).code is Code.NOT_FOUND
    assert service.list_optimal("p", LOC, "s4") == {}
    service.delete_study("p", LOC, "s4")
    assert error_of(service.get_study, "p", LOC, "s4").code is Code.NOT_FOUND


def test_median_stopping_stops_a_trial_worse_than_the_completed_ones(service: VizierService) -> None:
    service.create_study("p", LOC, "s5", {"studyConfig": config(
        automatedStoppingConfig={"medianAutomatedStoppingConfig": {}})})
    for loss in (1.0, 1.1, 1.2):
        (trial,) = suggest(service, "s5", client=f"c{loss}")
        service.add_measurement("p", LOC, "s5", trial_id(trial), measure(loss, 1))
        service.complete("p", LOC, "s5", trial_id(trial), {})
    (good,) = suggest(service, "s5", client="good")
    (bad,) = suggest(service, "s5", client="bad")
    service.add_measurement("p", LOC, "s5", trial_id(good), measure(0.5, 1))
    service.add_measurement("p", LOC, "s5", trial_id(bad), measure(9.0, 1))
    verdict = [service.check_early_stopping("p", LOC, "s5", trial_id(t))["response"]["shouldStop"]
               for t in (good, bad)]
    assert verdict == [False, True]


def test_grid_search_completes_the_study_and_multi_objective_lists_the_front(service: VizierService) -> None:
    grid = config(algorithm="GRID_SEARCH", parameters=[
        {"parameter": "opt", "type": "CATEGORICAL", "categoricalValueSpec": {"values": ["adam", "sgd"]}},
        {"parameter": "n", "type": "INTEGER", "integerValueSpec": {"minValue": 1, "maxValue": 2}}])
    service.create_study("p", LOC, "g", {"studyConfig": grid})
    trials = suggest(service, "g", 10)
    assert sorted((t["parameters"][0]["stringValue"], t["parameters"][1]["intValue"]) for t in trials) == [
        ("adam", "1"), ("adam", "2"), ("sgd", "1"), ("sgd", "2")]
    assert service.get_study("p", LOC, "g")["state"] == "COMPLETED"

    two = config(metrics=[{"metric": "loss", "goal": "MINIMIZE"}, {"metric": "speed", "goal": "MAXIMIZE"}])
    service.create_study("p", LOC, "mo", {"studyConfig": two})
    scores = {}
    for loss, speed in ((1.0, 1.0), (2.0, 3.0), (2.0, 0.5)):  # the last is dominated by the first
        (trial,) = suggest(service, "mo", client=f"{loss}-{speed}")
        service.complete("p", LOC, "mo", trial_id(trial), {"finalMeasurement": {
            "metrics": [{"metric": "loss", "value": loss}, {"metric": "speed", "value": speed}]}})
        scores[(loss, speed)] = trial_id(trial)
    front = {trial_id(t) for t in service.list_optimal("p", LOC, "mo")["trials"]}
    assert front == {scores[(1.0, 1.0)], scores[(2.0, 3.0)]}


# Routes in the real app --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("vizier")
    settings = load_settings(home=home, database_url=f"sqlite:///{home / 'mlengine.db'}", capacity_slots=1)
    with InProcessServer(settings) as server, server.client() as client:
        yield client._http


def test_routes_answer_in_the_google_shape(http: Any) -> None:
    base = f"/v1/projects/p/locations/{LOC}/studies"
    assert http.post(base, json={"studyConfig": CONFIG}).json()["error"]["message"].startswith("Field: studyId")
    created = http.post(base, params={"studyId": "web"}, json={"studyConfig": CONFIG})
    assert created.status_code == 200, created.text
    bad = http.post(base, params={"studyId": "web2"}, json={"studyConfig": config(parameters=[
        {"parameter": "x", "type": "COMPLEX"}])})
    assert bad.status_code == 400 and "studyConfig.parameters[0].type" in bad.json()["error"]["message"]
    op = http.post(f"{base}/web/trials:suggest", json={"suggestionCount": 1, "clientId": "c"}).json()
    got = http.get(f"/v1/{op['name']}").json()
    assert got == op and op["name"].startswith(f"projects/p/locations/{LOC}/operations/")
    assert http.get(f"/v1/projects/p/locations/europe-west1/operations/{op['name'].rsplit('/', 1)[1]}"
                    ).status_code == 404
    assert http.post(f"/v1/{op['name']}:cancel", json={}).status_code == 400
    assert http.get(f"{base}/web/trials/x").status_code == 400  # trial ids are numbers
    assert http.get(f"{base}/web/trials/99").status_code == 404
    assert http.post(f"{base}/web/trials:suggest", json={"suggestionCount": 0, "clientId": "c"}).status_code == 400
    locations = http.get("/v1/projects/p/locations").json()["locations"]
    assert [loc["name"] for loc in locations] == [f"projects/p/locations/{LOC}"]
    assert http.get("/v1/projects/p/locations/asia-east1").json()["name"] == "projects/p/locations/asia-east1"
    config_ = http.get("/v1/projects/p:getConfig").json()
    assert config_["serviceAccount"] == "mlengine@p.iam.mlengine" and config_["serviceAccountProject"] == "p"
    assert config_["config"]["tpuServiceAccount"] == config_["serviceAccount"]
