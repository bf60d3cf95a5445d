"""PyTorch: a program exported with ``torch.export`` and saved as ``model.pt2``
(``torch.export.save``), the format PyTorch recommends now that TorchScript is deprecated; a
directory without one is loaded as TorchScript (``model.pt``, :mod:`.torchscript`).

Instances are handled as for TorchScript (:mod:`.torchscript`): rows of numbers, one tensor
``[batch, ...]`` per call, one output row per instance. What ``torch.export`` adds is known
input shapes: the program's one tensor input has a dtype and, per dimension, a fixed size or a
dynamic one (``torch.export.Dim``). Instances are converted to that dtype and checked against
the fixed sizes (a 400 saying what the model expects, not a guard failure); a program exported with a
fixed batch size (no ``Dim`` on dimension 0) is run in chunks of exactly that size.

Trust: ``torch.export.load`` reads tensors with ``torch.load``'s weights-only unpickler but,
when that fails, falls back to a full unpickle (arbitrary Python, verified on torch 2.13). With
``MLE_MODEL_ALLOW_PICKLE=false`` the load runs with ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``, so such
a file is refused instead of unpickled.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlengine.prediction.frameworks._arrays import explain_values, split_rows
from mlengine.prediction.frameworks._base import LoadOptions, ModelLoadError, PredictionError, Prepared
from mlengine.prediction.frameworks.torchscript import TorchScriptPredictor

MODEL_FILE = "model.pt2"


def _input_spec(program: Any) -> tuple[Any, list[int | None]]:
    """The dtype and shape (None for a dynamic dimension) of the program's one tensor input."""
    import torch

    names = list(program.graph_signature.user_inputs)
    if len(names) != 1:
        raise ModelLoadError(f"{MODEL_FILE} takes {len(names)} inputs ({', '.join(names) or 'none'}); mlengine "
                             "feeds exported programs one tensor of instances, [batch, ...]")
    node = next((n for n in program.graph.nodes if n.op == "placeholder" and n.name == names[0]), None)
    value = node.meta.get("val") if node is not None else None
    if not isinstance(value, torch.Tensor):
        raise ModelLoadError(f"The input {names[0]} of {MODEL_FILE} is not a tensor; mlengine feeds one tensor "
                             "of instances, [batch, ...]")
    return value.dtype, [int(d) if isinstance(d, int) else None for d in value.shape]


@contextlib.contextmanager
def _weights_only(enforced: bool) -> Iterator[None]:
    """Make every ``torch.load`` weights-only while loading (torch reads the variable per call)."""
    if not enforced:
        yield
        return
    before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


class TorchExportPredictor(TorchScriptPredictor):
    def __init__(self, module: Any, dtype: Any, shape: list[int | None]) -> None:
        super().__init__(module)
        self.dtype = dtype
        try:
            self.numpy_dtype = self.torch.empty(0, dtype=dtype).numpy().dtype
        except TypeError:  # no numpy twin (bfloat16): convert float32 rows to it per call
            self.numpy_dtype = np.dtype(np.float32)
        self.shape = shape

    @classmethod
    def load(cls, model_dir: Path, options: LoadOptions) -> TorchScriptPredictor:
        """The program in ``model.pt2``; without one, the TorchScript ``model.pt``."""
        import torch

        if not (model_dir / MODEL_FILE).is_file():
            return TorchScriptPredictor.load(model_dir, options)
        try:
            with _weights_only(not options.allow_pickle):
                program = torch.export.load(str(model_dir / MODEL_FILE))
            module = program.module()
        except pickle.UnpicklingError as err:
            if options.allow_pickle:
                raise ModelLoadError(f"Could not load {MODEL_FILE}: {err}") from None
            raise ModelLoadError(f"{MODEL_FILE} holds Python pickles beyond tensors, which run code when they are "
                                 "loaded, and this server accepts no pickles (MLE_MODEL_ALLOW_PICKLE=false). Export "
                                 "the model with torch.export.save from plain tensors and parameters, or as ONNX "
                                 "(model.onnx)") from None
        except Exception as err:
            raise ModelLoadError(f"Could not load {MODEL_FILE} as a torch.export program (save it with "
                                 f"torch.export.save): {type(err).__name__}: {err}") from None
        dtype, shape = _input_spec(program)
        if not shape:
            raise ModelLoadError(f"{MODEL_FILE} takes a scalar; mlengine feeds one tensor of instances, [batch, ...]")
        return cls(module, dtype, shape)

    @property
    def batch_size(self) -> int | None:
        """The fixed batch size the program was exported with, or None when it is dynamic."""
        return self.shape[0]

    def prepare(self, instances: list[Any], kwargs: Mapping[str, Any]) -> Prepared:
        try:
            array = np.asarray(instances, dtype=self.numpy_dtype)
        except (TypeError, ValueError, OverflowError):
            raise explain_values(instances) from None
        expected = self.shape[1:]
        got = list(array.shape[1:])
        if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got, strict=False)):
            shown = ", ".join("any" if e is None else str(e) for e in expected)
            raise PredictionError(f"Instances have shape {got}, but the model expects instances of shape [{shown}].")
        return Prepared(len(array), array, key=array.shape[1:])

    def predict(self, batch: Sequence[Prepared]) -> list[Any]:
        array = batch[0].data if len(batch) == 1 else np.concatenate([p.data for p in batch])
        size = self.batch_size or len(array)
        if len(array) % size:
            raise PredictionError(f"The model was exported for batches of exactly {size} instance(s) and got "
                                  f"{len(array)}; send a multiple of {size}, or export it with a dynamic batch "
                                  "dimension (torch.export.Dim on dimension 0).")
        outputs = []
        with self.torch.inference_mode():
            for start in range(0, len(array), size):
                output = self.module(self.torch.from_numpy(array[start:start + size]).to(self.dtype))
                if isinstance(output, (tuple, list)) and len(output) == 1:
                    output = output[0]
                if not isinstance(output, self.torch.Tensor):
                    raise PredictionError(f"The program returned a {type(output).__name__}, not a tensor.", status=500)
                outputs.append(output.detach().cpu().numpy())
        return split_rows(np.concatenate(outputs) if len(outputs) > 1 else outputs[0], [p.count for p in batch])


PREDICTOR = TorchExportPredictor
