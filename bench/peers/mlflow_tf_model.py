"""An MLflow pyfunc model (models-from-code) that serves a TensorFlow SavedModel."""

from __future__ import annotations

import os

import mlflow.pyfunc


class SavedModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):  # type: ignore[no-untyped-def]
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self.tf = tf
        self.signature = tf.saved_model.load(context.artifacts["saved_model"]).signatures["serving_default"]
        self.specs = self.signature.structured_input_signature[1]

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        columns = model_input if isinstance(model_input, dict) else {c: model_input[c].tolist() for c in model_input}
        tensors = {name: self.tf.constant(list(columns[name]), dtype=spec.dtype) for name, spec in self.specs.items()}
        outputs = {k: v.numpy().tolist() for k, v in self.signature(**tensors).items()}
        return [dict(zip(outputs, values, strict=False)) for values in zip(*outputs.values(), strict=False)]


mlflow.models.set_model(SavedModel())
