"""preprocessingInput validation (each refusal names its field), the replica plan, the runner
options the launcher gives a pipeline, and the transform file read on success."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlengine.errors import MLEngineError
from mlengine.preprocessing import launcher
from mlengine.preprocessing.kind import PreprocessingKind, read_transform
from mlengine.preprocessing.spec import validate_preprocessing_input

BASE = {"packageUris": ["/tmp/p.tar.gz"], "pythonModule": "trainer.preprocess"}


def test_defaults_are_filled_in() -> None:
    spec = validate_preprocessing_input(BASE)
    assert spec.input["runner"] == "DirectRunner"
    assert spec.input["directRunningMode"] == "multi_processing"
    assert spec.input["workerCount"] == "2" and spec.input["args"] == []
    spec = validate_preprocessing_input({**BASE, "runner": "DaskRunner", "workerCount": 3,
                                         "scheduling": {"maxRunningTime": "60s"}})
    assert spec.input["workerCount"] == "3" and "directRunningMode" not in spec.input
    assert spec.max_running_seconds == 60.0


def test_a_serialized_pipeline_needs_no_module_nor_package() -> None:
    spec = validate_preprocessing_input({"pipelineUri": "/tmp/p.pb", "runner": "DaskRunner"})
    assert spec.input["pipelineUri"] == "/tmp/p.pb" and spec.input["packageUris"] == []
    assert "pythonModule" not in spec.input


@pytest.mark.parametrize(("body", "field"), [
    ({"pythonModule": "m"}, "preprocessingInput.packageUris"),
    ({**BASE, "pythonModule": "no such"}, "preprocessingInput.pythonModule"),
    ({**BASE, "runner": "SparkRunner"}, "preprocessingInput.runner"),
    ({**BASE, "workerCount": "0"}, "preprocessingInput.workerCount"),
    ({**BASE, "workerCount": "many"}, "preprocessingInput.workerCount"),
    ({**BASE, "daskAddress": "tcp://h:1"}, "preprocessingInput.daskAddress"),
    ({**BASE, "runner": "DaskRunner", "daskAddress": "http://h:1"}, "preprocessingInput.daskAddress"),
    ({**BASE, "directRunningMode": "fast"}, "preprocessingInput.directRunningMode"),
    ({**BASE, "args": "--x"}, "preprocessingInput.args"),
    ({**BASE, "extra": 1}, "preprocessingInput.extra"),
    ({**BASE, "scheduling": {"maxRunningTime": "soon"}}, "preprocessingInput.scheduling.maxRunningTime"),
    ({**BASE, "pipelineUri": "/tmp/p.pb"}, "preprocessingInput.pythonModule"),
    ({"pipelineUri": 3}, "preprocessingInput.pipelineUri"),
])
def test_bad_fields_are_named(body: dict[str, Any], field: str) -> None:
    with pytest.raises(MLEngineError) as info:
        validate_preprocessing_input(body)
    assert info.value.code.http_status == 400 and f"Field: {field} " in info.value.message


class _Row:
    def __init__(self, pi: dict[str, Any]) -> None:
        self.input = validate_preprocessing_input(pi).input


def test_plan_direct_dask_and_existing_cluster() -> None:
    kind = PreprocessingKind.__new__(PreprocessingKind)
    direct = kind.plan(_Row({**BASE, "workerCount": "3"}))  # type: ignore[arg-type]
    assert [(r.task_type, r.resources.cpus) for r in direct] == [("driver", 3.0)]
    dask = kind.plan(_Row({**BASE, "runner": "DaskRunner", "workerCount": "2"}))  # type: ignore[arg-type]
    assert [(r.task_type, r.index) for r in dask] == [("driver", 0), ("worker", 0), ("worker", 1)]
    existing = kind.plan(_Row({**BASE, "runner": "DaskRunner", "daskAddress": "tcp://d:8786"}))  # type: ignore[arg-type]
    assert [r.task_type for r in existing] == ["driver"]


def test_runner_options_reach_the_pipeline_before_job_dir() -> None:
    config = {"module": "m", "args": ["--input", "x"], "runner": "DirectRunner", "workers": 3,
              "mode": "multi_processing", "jobDir": "/out"}
    assert launcher.user_argv(config, None) == [
        "m", "--input", "x", "--runner=DirectRunner", "--direct_running_mode=multi_processing",
        "--direct_num_workers=3", "--job-dir", "/out"]
    assert "--direct_num_workers=3" not in launcher.runner_options({**config, "mode": "in_memory"}, None)
    dask = launcher.runner_options({**config, "runner": "DaskRunner"}, "tcp://h:1")
    assert dask == [f"--runner={launcher.DASK_RUNNER}", "--dask_client_address=tcp://h:1"]


def test_transform_file_is_read_only_when_it_has_a_fingerprint(tmp_path: Path) -> None:
    assert read_transform(str(tmp_path)) is None
    (tmp_path / "transform").mkdir()
    (tmp_path / "transform" / "transform.json").write_text(json.dumps({"nbuckets": 4}))
    assert read_transform(str(tmp_path)) is None
    (tmp_path / "transform" / "transform.json").write_text(json.dumps({"fingerprint": "abc"}))
    assert read_transform(str(tmp_path)) == {"transformFingerprint": "abc",
                                             "transformUri": str(tmp_path / "transform")}
