"""Runtimes: pre-built image URIs, which runtime serves a request and its warnings, MLE_RUNTIMES,
and the environment builds that install a runtime's requirements and let the server's CPU builds
stand in for tensorflow/xgboost (real uv, offline)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
from tests.training.test_environments import make_sdist, make_wheel, run_in

from mlengine.config import load_settings
from mlengine.core import runtimes
from mlengine.core.environments import EnvironmentCache, cpu_stand_ins
from mlengine.core.runtimes import parse_image_uri, resolve
from mlengine.errors import Code, MLEngineError

PY = runtimes.server_python()
TF = runtimes.installed_version("tensorflow")


@pytest.mark.parametrize(("uri", "framework", "version", "python"), [
    ("gcr.io/cloud-ml-public/training/tf-cpu.2-11.py310:latest", "tensorflow", "2.11", "3.10"),
    ("gcr.io/cloud-ml-public/training/pytorch-xla.1-11", "pytorch", "1.11", None),
    ("gcr.io/cloud-ml-public/training/pytorch-gpu.1-13:latest", "pytorch", "1.13", None),
    ("gcr.io/cloud-ml-public/training/sklearn-cpu.1-0", "scikit-learn", "1.0", None),
    ("us-docker.pkg.dev/vertex-ai/training/xgboost-cpu.1-1:latest", "xgboost", "1.1", None),
    ("europe-docker.pkg.dev/vertex-ai/training/tf-gpu.2-14.py310:latest", "tensorflow", "2.14", "3.10"),
])
def test_google_prebuilt_images_are_recognised(uri: str, framework: str, version: str, python: str | None) -> None:
    image = parse_image_uri(uri)
    assert image is not None
    assert (image.framework, image.version, image.python) == (framework, version, python)


@pytest.mark.parametrize("uri", [
    "gcr.io/my-project/trainer:latest",
    "evil.example/cloud-ml-public/training/tf-cpu.2-11",
    "gcr.io/cloud-ml-public/training/tf-cpu.2-11/../../x",
    "gcr.io/cloud-ml-public/training/caffe-cpu.1-0",
])
def test_other_images_are_not_prebuilt(uri: str) -> None:
    assert parse_image_uri(uri) is None


def test_runtime_version_without_a_configured_runtime_warns_naming_both_sides() -> None:
    choice = resolve({}, runtime_version="1.15")
    assert choice.runtime is None and choice.requirements == ()
    (warning,) = choice.warnings
    assert warning.startswith("runtimeVersion 1.15 requested; served by ")
    assert f"/ Python {PY} of this server" in warning and "MLE_RUNTIMES" in warning
    if TF:
        assert f"TensorFlow {'.'.join(TF.split('.')[:2])}" in warning


@pytest.mark.skipif(TF is None, reason="TensorFlow is not installed")
def test_the_servers_own_tensorflow_version_is_served_silently() -> None:
    assert TF is not None
    assert resolve({}, runtime_version=".".join(TF.split(".")[:2])).warnings == ()


def test_a_configured_runtime_serves_with_its_requirements_and_python_still_warns() -> None:
    table = {"2.11": ("fakeruntime==1.0",)}
    choice = resolve(table, runtime_version="2.11", python_version="3.7")
    assert (choice.runtime, choice.requirements) == ("2.11", ("fakeruntime==1.0",))
    assert choice.warnings == (f"pythonVersion 3.7 requested; served by Python {PY} of this server",)
    assert choice.record() == {"runtime": "2.11", "requirements": ["fakeruntime==1.0"],
                               "warnings": list(choice.warnings)}
    assert resolve(table, runtime_version="2.11", python_version=PY).record() == {
        "runtime": "2.11", "requirements": ["fakeruntime==1.0"]}


def test_prebuilt_images_map_onto_runtimes() -> None:
    torch = parse_image_uri("gcr.io/cloud-ml-public/training/pytorch-gpu.1-13")
    tf = parse_image_uri("gcr.io/cloud-ml-public/training/tf-cpu.2-11.py310:latest")
    assert torch is not None and tf is not None
    assert resolve({"pytorch-1.13": ("torchfake",)}, image=torch).runtime == "pytorch-1.13"
    # TensorFlow images fall back to the runtime version of the same number.
    configured = resolve({"2.11": ("tffake",)}, image=tf, image_field="trainingInput.masterConfig.imageUri")
    assert configured.runtime == "2.11"
    assert all("TensorFlow 2.11 requested" not in w for w in configured.warnings)
    served = resolve({}, image=torch, image_field="trainingInput.masterConfig.imageUri")
    assert served.runtime is None
    assert served.warnings[0].startswith("trainingInput.masterConfig.imageUri gcr.io/cloud-ml-public/training/"
                                         "pytorch-gpu.1-13 (PyTorch 1.13) requested; served by ")
    assert "MLE_RUNTIMES has no pytorch-1.13" in served.warnings[0]
    if PY != "3.10":
        assert any("has Python 3.10; served by Python" in w for w in resolve({}, image=tf).warnings)


@pytest.mark.parametrize(("check", "value", "field"), [
    (runtimes.check_runtime_version, "latest", "trainingInput.runtimeVersion"),
    (runtimes.check_runtime_version, 2.11, "runtimeVersion"),
    (runtimes.check_python_version, "3", "pythonVersion"),
    (runtimes.check_python_version, "python3.7", "trainingInput.pythonVersion"),
])
def test_malformed_versions_name_the_field(check: object, value: object, field: str) -> None:
    with pytest.raises(MLEngineError) as err:
        check(value, field)  # type: ignore[operator]
    assert err.value.code == Code.INVALID_ARGUMENT and field in err.value.message


def test_mle_runtimes_from_json_text_or_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLE_RUNTIMES", '{"2.11": ["tensorflow-cpu==2.11.*", "scikit-learn==1.0.2"]}')
    assert load_settings().runtime_table == {"2.11": ("tensorflow-cpu==2.11.*", "scikit-learn==1.0.2")}
    path = tmp_path / "runtimes.json"
    path.write_text(json.dumps({"pytorch-1.13": ["torch==1.13.1"]}))
    monkeypatch.setenv("MLE_RUNTIMES", str(path))
    assert load_settings().runtime_table == {"pytorch-1.13": ("torch==1.13.1",)}
    hash(load_settings())  # settings stay hashable


@pytest.mark.parametrize("value", ['{"2.11": ["tensorflow-cpu=2.11"]}', '{"2.11": "tf"}', "[1]", "/no/such/file"])
def test_a_bad_mle_runtimes_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MLE_RUNTIMES", value)
    with pytest.raises(MLEngineError) as err:
        load_settings()
    assert err.value.code == Code.INVALID_ARGUMENT and "MLE_RUNTIMES" in err.value.message


# Environments -----------------------------------------------------------------------------------
@pytest.fixture()
def links(tmp_path: Path) -> Path:
    directory = tmp_path / "links"
    make_wheel(directory, "fakeruntime", "1.0", {"fakeruntime/__init__.py": "VERSION = '1.0'\n"})
    return directory


def offline(root: Path, links: Path) -> EnvironmentCache:
    return EnvironmentCache(root, uv_args=["--offline", "--find-links", str(links)])


def test_a_runtimes_requirements_are_installed_with_or_without_packages(tmp_path: Path, links: Path) -> None:
    cache = offline(tmp_path / "envs", links)
    env = cache.prepare([], requirements=["fakeruntime==1.0"])
    assert env.pythonpath and not env.cached
    assert run_in(env, "import fakeruntime; print(fakeruntime.VERSION)", tmp_path) == "1.0"
    sdist = make_sdist(tmp_path, "rtuser", [])
    with_package = cache.prepare([sdist], requirements=["fakeruntime==1.0"])
    assert with_package.key not in (env.key, cache.key_for([sdist]))
    assert run_in(with_package, "import fakeruntime, rtuser; print(rtuser.NAME, fakeruntime.VERSION)",
                  tmp_path) == "rtuser 1.0"
    assert cache.prepare([], requirements=["fakeruntime==1.0"]).cached


@pytest.mark.parametrize("name", ["tensorflow", "xgboost"])
def test_the_servers_cpu_build_satisfies_the_full_name(tmp_path: Path, links: Path, name: str) -> None:
    stand_in = cpu_stand_ins().get(name)
    if stand_in is None:
        pytest.skip(f"the server has no {name} CPU build standing in for {name}")
    build, version = stand_in
    major = version.split(".")[0]
    sdist = make_sdist(tmp_path, f"{name}user", [f"{name}>={major}"])
    lines: list[str] = []
    # Offline, with no wheel of the full distribution: any attempt to install it would fail.
    env = offline(tmp_path / "envs", links).prepare([sdist], log=lines.append)
    installed = {p.name.split("-")[0].lower() for p in Path(env.pythonpath[0]).iterdir()}
    assert name not in installed and f"{name}user" in installed
    assert f"{name} is provided by the server's {build} {version}" in lines
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version(name)  # nor was it installed on the server


def test_a_requirement_the_cpu_build_does_not_satisfy_installs_the_full_name(tmp_path: Path, links: Path) -> None:
    if "tensorflow" not in cpu_stand_ins():
        pytest.skip("the server has no tensorflow-cpu")
    sdist = make_sdist(tmp_path, "tfnew", ["tensorflow>=99"])
    lines: list[str] = []
    with pytest.raises(MLEngineError) as err:
        offline(tmp_path / "envs", links).prepare([sdist], log=lines.append)
    assert err.value.code == Code.FAILED_PRECONDITION and "tensorflow" in err.value.message
    assert any("does not satisfy the packages' tensorflow requirement: installing tensorflow" in ln for ln in lines)
