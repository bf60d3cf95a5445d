"""Every field of ml v1's Version and Model either works or is refused with 501 (none is
accepted and dropped), machine types, and the CPU hint a machine type gives a replica."""

from __future__ import annotations

import json
import os

import pytest

from mlengine.api.discovery import document_path
from mlengine.errors import Code, MLEngineError
from mlengine.prediction import specs
from mlengine.prediction.replica import apply_cpu_hint


def schema(name: str) -> dict[str, dict[str, object]]:
    path = document_path()
    assert path is not None
    return dict(json.loads(path.read_text())["schemas"][name]["properties"])


@pytest.mark.parametrize(("name", "inputs", "outputs", "refused"), [
    ("GoogleCloudMlV1__Version", specs.VERSION_INPUT, specs.VERSION_OUTPUT, set(specs.UNIMPLEMENTED_VERSION_FIELDS)),
    ("GoogleCloudMlV1__Model", specs.MODEL_INPUT, specs.MODEL_OUTPUT, set(specs.UNIMPLEMENTED_MODEL_FLAGS)),
])
def test_every_field_of_the_discovery_schema_is_decided(name: str, inputs: frozenset[str], outputs: frozenset[str],
                                                        refused: set[str]) -> None:
    fields = set(schema(name))
    undecided = fields - inputs - outputs - refused
    assert not undecided, f"{name} fields neither implemented nor refused: {sorted(undecided)}"
    # mlengine's own output: ready and starting replicas of a version; how its runtime differs
    extensions = {"replicas", "warnings", *specs.TRAFFIC_FIELDS,  # and the model's traffic (issue 15)
                  "monitoringConfig", "trainingData",  # and monitoring (issue 12)
                  "transformFingerprint"}  # the preprocessing transform it serves (issue 16)
    assert not (inputs | outputs | refused) - fields - extensions, "fields that ml v1 does not have"


def test_unimplemented_version_fields_are_501_naming_the_field() -> None:
    for field in specs.UNIMPLEMENTED_VERSION_FIELDS:
        with pytest.raises(MLEngineError) as info:
            specs.validate_version({"name": "v", "deploymentUri": "/tmp", field: {"x": 1}})
        assert info.value.code is Code.UNIMPLEMENTED and info.value.code.http_status == 501
        assert info.value.message.startswith(f"Field: {field} Error: not implemented by mlengine: ")
        assert field not in specs.validate_version({"name": "v", "deploymentUri": "/tmp", field: None})


def test_machine_types() -> None:
    spec = specs.validate_version({"name": "v", "deploymentUri": "/tmp", "machineType": "n1-highcpu-8"})
    assert spec["machineType"] == "n1-highcpu-8" and specs.machine_cpus("n1-highcpu-8") == 8.0
    assert specs.machine_cpus("mls1-c1-m2") == 1.0 and specs.machine_cpus(None) is None
    with pytest.raises(MLEngineError, match="'e2-micro' is not a prediction machine type"):
        specs.validate_version({"name": "v", "deploymentUri": "/tmp", "machineType": "e2-micro"})


def test_cpu_hint_caps_thread_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    apply_cpu_hint(None)
    assert "OMP_NUM_THREADS" not in os.environ
    apply_cpu_hint(1.0)
    assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == "1"
    from threadpoolctl import threadpool_info, threadpool_limits

    assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    threadpool_limits(limits=None)
