"""Pickles are a documented trust boundary (issue 9.4): with ``MLE_MODEL_ALLOW_PICKLE=false``
a version whose model would be unpickled is refused when it is created (400 naming
``deploymentUri`` and the file), when it is staged (remote URIs), and by the replica's loader
(a version created before the setting changed); data formats still load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlengine.config import Settings, load_settings
from mlengine.errors import Code, MLEngineError
from mlengine.prediction import specs, staging
from mlengine.prediction.frameworks._base import LoadOptions, ModelLoadError, load_predictor, pickle_file


@pytest.fixture
def strict(tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    return load_settings(home=home, model_allow_pickle=False, database_url=f"sqlite:///{home / 'db'}")


def test_pickle_file_names_what_would_be_unpickled() -> None:
    assert pickle_file({"model.joblib"}, "SCIKIT_LEARN") == "model.joblib"
    assert pickle_file({"model.pkl", "notes.txt"}, "XGBOOST") == "model.pkl"
    assert pickle_file({"model.pkl", "model.json"}, "XGBOOST") is None  # the Booster is loaded from JSON
    assert pickle_file({"model.pkl", "saved_model.pb"}, "TENSORFLOW") is None
    assert pickle_file({"model.pt"}, "PYTORCH") is None  # TorchScript: see docs/serving.md
    assert pickle_file({"model.pkl"}, "CUSTOM") is None


def test_version_creation_refuses_a_local_pickle(strict: Settings, sk_model_dir: Path, tmp_path: Path) -> None:
    for body in ({}, {"framework": "SCIKIT_LEARN"}, {"framework": "XGBOOST"}):
        with pytest.raises(MLEngineError) as info:
            specs.validate_version({"name": "v", "deploymentUri": str(sk_model_dir), **body}, strict)
        assert info.value.code is Code.INVALID_ARGUMENT
        assert info.value.message.startswith(f"Field: deploymentUri Error: {sk_model_dir}: model.joblib is a "
                                             "Python pickle"), info.value.message
        assert "MLE_MODEL_ALLOW_PICKLE=false" in info.value.message
    # Allowed by default, and for custom prediction routines (code by definition).
    assert specs.validate_version({"name": "v", "deploymentUri": str(sk_model_dir)}, load_settings(
        home=tmp_path / "h2"))["deploymentUri"] == str(sk_model_dir)
    specs.validate_version({"name": "v", "deploymentUri": str(sk_model_dir), "predictionClass": "p.C",
                            "packageUris": [str(sk_model_dir / "model.joblib")]}, strict)


def test_staging_refuses_a_remote_pickle(strict: Settings, sk_model_dir: Path, tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(str(sk_model_dir / "model.joblib"), "/trust/model/model.joblib")
    uri = "memory://trust/model"
    specs.validate_version({"name": "v", "deploymentUri": uri}, strict)  # not listed when created
    payload = staging.stage_payload(tmp_path / "root", {"deploymentUri": uri}, max_files=10, max_bytes=10**8,
                                    envs_dir=tmp_path / "envs", allow_pickle=False)
    with pytest.raises(MLEngineError, match=f"Field: deploymentUri Error: {uri}: model.joblib is a Python pickle"):
        staging.stage_version(payload)
    payload["allowPickle"] = True
    assert staging.stage_version(payload)["framework"] == "SCIKIT_LEARN"
    fs.rm("/trust", recursive=True)


def test_the_loader_refuses_pickles_and_loads_data_formats(sk_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model.joblib is a Python pickle, .*MLE_MODEL_ALLOW_PICKLE=false"):
        load_predictor(sk_model_dir, "SCIKIT_LEARN", LoadOptions(allow_pickle=False))
    with pytest.raises(ModelLoadError, match="model.joblib is a Python pickle"):
        load_predictor(sk_model_dir, "XGBOOST", LoadOptions(allow_pickle=False))
    xgboost = pytest.importorskip("xgboost")
    import numpy as np

    both = tmp_path / "both"
    shutil.copytree(sk_model_dir, both)
    x = np.random.default_rng(0).random((20, 3))
    xgboost.XGBRegressor(n_estimators=2).fit(x, x.sum(axis=1)).get_booster().save_model(str(both / "model.ubj"))
    predictor = load_predictor(both, "XGBOOST", LoadOptions(allow_pickle=False))
    assert type(predictor).__name__ == "BoosterPredictor"
