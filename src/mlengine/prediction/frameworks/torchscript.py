"""PyTorch: a TorchScript module saved as ``model.pt`` (``torch.jit.save``). The PYTORCH
framework loads through :mod:`.torch_export`, which prefers a ``model.pt2`` and falls back here.

Instances are rows (nested lists of numbers, float32); the module is called once per batch
with a tensor of shape ``[batch, ...]`` and must return a tensor with one row per instance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlengine.prediction.frameworks._arrays import explain_values, split_rows
from mlengine.prediction.frameworks._base import (
    PYTORCH,
    LoadOptions,
    ModelLoadError,
    PredictionError,
    Predictor,
    Prepared,
)


class TorchScriptPredictor(Predictor):
    framework = PYTORCH

    def __init__(self, module: Any) -> None:
        import torch

        self.torch = torch
        self.module = module

    @classmethod
    def load(cls, model_dir: Path, options: LoadOptions) -> TorchScriptPredictor:
        import torch
        try:
            module = torch.jit.load(str(model_dir / "model.pt"), map_location="cpu")
            module.eval()
        except Exception as err:
            raise ModelLoadError(
                f"Could not load model.pt as TorchScript (save it with torch.jit.save): {type(err).__name__}: {err}"
            ) from None
        return cls(module)

    def prepare(self, instances: list[Any], kwargs: Mapping[str, Any]) -> Prepared:
        try:
            array = np.asarray(instances, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):
            raise explain_values(instances) from None
        return Prepared(len(array), array, key=array.shape[1:])

    def predict(self, batch: Sequence[Prepared]) -> list[Any]:
        array = batch[0].data if len(batch) == 1 else np.concatenate([p.data for p in batch])
        with self.torch.inference_mode():
            output = self.module(self.torch.from_numpy(array))
        if not isinstance(output, self.torch.Tensor):
            raise PredictionError(f"The module returned a {type(output).__name__}, not a tensor.", status=500)
        return split_rows(output.detach().cpu().numpy(), [p.count for p in batch])


PREDICTOR = TorchScriptPredictor
