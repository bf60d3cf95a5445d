"""Small real models written to disk, for the predictor and engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sk_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scikit-learn pipeline (scaler + ridge) on 3 numeric features, fitted on an array."""
    import joblib
    import numpy as np
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.random((200, 3))
    model = make_pipeline(StandardScaler(), Ridge()).fit(x, x @ [1.0, 2.0, 3.0])
    path = tmp_path_factory.mktemp("sk") / "model"
    path.mkdir()
    joblib.dump(model, path / "model.joblib")
    return path


@pytest.fixture(scope="session")
def sk_frame_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pipeline fitted on a DataFrame with a categorical column (pickled as model.pkl)."""
    import pickle

    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.DataFrame({"distance": [1.0, 2.0, 3.0, 4.0], "payment": ["cash", "card", "cash", "card"]})
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["payment"]), remainder="passthrough"),
        LinearRegression(),
    ).fit(frame, [3.0, 6.0, 7.0, 10.0])
    path = tmp_path_factory.mktemp("skframe") / "model"
    path.mkdir()
    with open(path / "model.pkl", "wb") as f:
        pickle.dump(model, f)
    return path


@pytest.fixture(scope="session")
def tf_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel with two signatures: serving_default (x float[3], tag string, blob string)
    and 'double' (one input)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    class Module(tf.Module):
        @tf.function(input_signature=[
            tf.TensorSpec([None, 3], tf.float32, name="x"),
            tf.TensorSpec([None], tf.string, name="tag"),
            tf.TensorSpec([None], tf.string, name="blob"),
        ])
        def serve(self, x: tf.Tensor, tag: tf.Tensor, blob: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"total": tf.reduce_sum(x, axis=1), "tag": tf.strings.upper(tag),
                    "size": tf.strings.length(blob)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="value")])
        def double(self, value: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"doubled": value * 2.0}

    module = Module()
    path = tmp_path_factory.mktemp("tf") / "model"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, "double": module.double})
    return path
