"""gcloud's --format grammar and printers (mlengine.cli.formats), on plain resources."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from mlengine.cli import formats
from mlengine.cli.core import GcloudChoice, join_bool_values

JOBS: list[dict[str, Any]] = [
    {"jobId": "j1", "state": "SUCCEEDED", "createTime": "2024-05-01T12:00:00.123456Z",
     "trainingInput": {"scaleTier": "BASIC", "args": ["--epochs", "2"], "masterConfig": {"count": 0.5}},
     "labels": {"team": "ml", "owner": "ann"}, "trainingOutput": {"isHyperparameterTuningJob": False}},
    {"jobId": "j2", "state": "FAILED", "trainingInput": {"scaleTier": "CUSTOM", "args": []},
     "errorMessage": "it failed, badly"},
]


def show(text: str, value: Any = JOBS, many: bool = True, default: str = "") -> str:
    return formats.render(value, formats.parse(text), many=many,
                          default_columns=formats.columns_of(default) if default else ())


def test_value_is_tab_separated_with_lists_and_mappings_joined_by_semicolons() -> None:
    assert show("value(state)") == "SUCCEEDED\nFAILED\n"
    assert show("value(jobId, trainingInput.scaleTier, trainingInput.args, labels)") == (
        "j1\tBASIC\t--epochs;2\towner=ann;team=ml\n"
        "j2\tCUSTOM\t\t\n")
    assert show("value(state)", JOBS[0], many=False) == "SUCCEEDED\n"
    assert show("value(trainingOutput.isHyperparameterTuningJob, missing.key)", JOBS[0], many=False) == "False\t\n"
    # list indices, negative ones too, and attributes
    assert show("value[separator=','](jobId,trainingInput.args[0],trainingInput.args[-1])") == "j1,--epochs,2\nj2,,\n"
    assert show("value[separator='\\n'](jobId,state)", JOBS[0], many=False) == "j1\nSUCCEEDED\n"
    assert show("value[quote](errorMessage)", JOBS[1], many=False) == "it failed, badly\n"


def test_csv_has_a_lower_case_heading_and_quotes_what_needs_it() -> None:
    assert show("csv(jobId,trainingInput.scaleTier,errorMessage)") == (
        "job_id,scale_tier,error_message\n"
        "j1,BASIC,\n"
        'j2,CUSTOM,"it failed, badly"\n')
    assert show("csv[no-heading](jobId)") == "j1\nj2\n"
    assert show("csv[no-heading,separator=';'](jobId,state)") == "j1;SUCCEEDED\nj2;FAILED\n"


def test_table_headings_are_angry_snake_case_of_the_last_key_part() -> None:
    assert show("table(jobId,state,trainingInput.scaleTier)") == (
        "JOB_ID  STATE      SCALE_TIER\n"
        "j1      SUCCEEDED  BASIC\n"
        "j2      FAILED     CUSTOM\n")
    # a repeated heading gains parts from the right; labels win; transforms apply
    table = show("table(trainingInput.masterConfig.count, count.x.count, jobId:label=JOB, createTime.date())",
                 JOBS[0], many=False)
    assert table.splitlines() == ["COUNT  X_COUNT  JOB  CREATE_TIME",
                                  "0.5" + " " * 13 + "j1   2024-05-01T12:00:00Z"]
    assert show("table[no-heading](jobId)") == "j1\nj2\n"
    boxed = show("table[box](jobId)").splitlines()
    assert boxed == ["┌────────┐", "│ JOB_ID │", "├────────┤", "│ j1     │", "│ j2     │", "└────────┘"]


def test_transforms() -> None:
    model = {"name": "projects/p/models/m", "defaultVersion": {"name": "projects/p/models/m/versions/v1"},
             "regions": ["a", "b"], "isDefault": True}
    assert show("value(name.basename(), defaultVersion.name.basename(), regions.join('+'), regions.len(), "
                "isDefault.yesno('*', ''), missing.yesno(yes=Y, no=N), name.basename().upper())",
                model, many=False) == "m\tv1\ta+b\t2\t*\tN\tM\n"


def test_json_and_yaml_project_the_chosen_keys_and_keep_whole_resources_otherwise() -> None:
    assert json.loads(show("json")) == JOBS
    assert json.loads(show("json(jobId,trainingInput.scaleTier)", JOBS[0], many=False)) == {
        "jobId": "j1", "trainingInput": {"scaleTier": "BASIC"}}
    assert yaml.safe_load(show("yaml", JOBS[0], many=False)) == JOBS[0]
    # a list is printed as YAML documents, as gcloud does
    assert list(yaml.safe_load_all(show("yaml(jobId)"))) == [{"jobId": "j1"}, {"jobId": "j2"}]
    assert show("none") == ""


def test_bare_formats_take_the_commands_default_columns_or_need_a_projection() -> None:
    default = "table(jobId, state:label=STATUS)"
    assert show("csv", default=default) == "job_id,status\nj1,SUCCEEDED\nj2,FAILED\n"
    assert show("value", default=default) == "j1\tSUCCEEDED\nj2\tFAILED\n"
    assert show("table[box]", default=default).startswith("┌")
    with pytest.raises(formats.FormatError, match=r"Format \[value\] requires a non-empty projection"):
        show("value", JOBS[0], many=False)


@pytest.mark.parametrize(("text", "message"), [
    ("xml", r"Format must be one of csv, default, json, none, table, value, yaml; received \[xml\]"),
    ("value(state", "no closing"),
    ("value(state.frobnicate())", "unknown transform 'frobnicate\\(\\)'"),
    ("value(a,,b)", None),  # empty columns are skipped, as gcloud does
    ("table(jobId:colour=red)", "unknown column attribute 'colour'"),
    ("value(a.basename().b)", "a key cannot follow a transform"),
    ("value(state) junk", "unexpected"),
])
def test_parse_errors_name_the_problem(text: str, message: str | None) -> None:
    if message is None:
        assert [c.key for c in formats.parse(text).columns] == [("a",), ("b",)]
        return
    with pytest.raises(formats.FormatError, match=message):
        formats.parse(text)


def test_gcloud_choice_accepts_any_case_and_dashes_or_underscores() -> None:
    choice = GcloudChoice(("TENSORFLOW", "SCIKIT_LEARN", "XGBOOST"))
    for spelling in ("scikit-learn", "SCIKIT_LEARN", "Scikit_Learn", "scikit_learn", " SCIKIT-LEARN "):
        assert choice.convert(spelling, None, None) == "SCIKIT_LEARN"
    with pytest.raises(Exception, match="'sklearn' is not one of tensorflow, scikit-learn, xgboost"):
        choice.convert("sklearn", None, None)


def test_boolean_flag_values_are_joined_before_parsing() -> None:
    flags = {"--use-chief-in-tf-config"}
    assert join_bool_values(["--use-chief-in-tf-config", "JOB"], flags) == ["--use-chief-in-tf-config=true", "JOB"]
    assert join_bool_values(["--use-chief-in-tf-config", "False", "JOB"], flags) == [
        "--use-chief-in-tf-config=False", "JOB"]
    assert join_bool_values(["--use-chief-in-tf-config=false"], flags) == ["--use-chief-in-tf-config=false"]
    # after `--`, everything is the trainer's
    assert join_bool_values(["--", "--use-chief-in-tf-config"], flags) == ["--", "--use-chief-in-tf-config"]
