"""Turning JSON instances into numeric matrices, with messages that name the bad value.

The fast path is one ``numpy.asarray`` call; only when it fails (or gives the wrong shape or a
non-numeric dtype) are the instances walked one by one to say exactly what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlengine.prediction.frameworks._base import PredictionError


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))  # bool is an int: True/False are 1/0


def json_kind(value: Any) -> str:
    """How a JSON value is called in messages (``null``, ``str 'abc'``, ``object {...}``)."""
    if value is None:
        return "null"
    kind = "object" if isinstance(value, dict) else "list" if isinstance(value, list) else type(value).__name__
    return f"{kind} {_describe(value)}"


def _explain(instances: Sequence[Any], width: int | None, names: Sequence[str] | None,
             what: str = "") -> PredictionError:
    """The first concrete problem in ``instances`` (the slow path, used only on failure)."""
    first_width: int | None = None
    label = f" ({what})" if what else ""
    for i, row in enumerate(instances):
        if isinstance(row, dict):
            hint = (f"send a list of {width} numbers" if width else "send a list of numbers")
            return PredictionError(f"Instance {i}{label} is an object, but this model takes rows of numbers: {hint}.")
        values = row if isinstance(row, list) else [row]
        if width is not None and len(values) != width:
            return PredictionError(
                f"Instance {i}{label} has {len(values)} values, but the model expects {width} features"
                + (f" ({', '.join(names)})" if names else "") + "."
            )
        if first_width is None:
            first_width = len(values)
        elif len(values) != first_width:
            return PredictionError(
                f"Instance {i}{label} has {len(values)} values, but instance 0 has {first_width}: every instance "
                "must have the same number of features."
            )
        for j, value in enumerate(values):
            if not _is_number(value):
                feature = f"feature {j}" + (f" ({names[j]})" if names and j < len(names) else "")
                prefix = f"Instance {i}, {what}, {feature}" if what else f"Instance {i}, {feature}"
                return PredictionError(f"{prefix}: expected a number, got {json_kind(value)}.")
    return PredictionError("The instances are not a matrix of numbers.")


def numeric_matrix(
    instances: Sequence[Any],
    width: int | None,
    *,
    names: Sequence[str] | None = None,
    dtype: Any = np.float64,
    allow_nonfinite: bool = True,
    what: str = "",
) -> np.ndarray:
    """A 2-D ``dtype`` array with one row per instance; ``width`` is the expected number of
    features (None: any, but the same for every row). Scalar instances are one-feature rows.
    ``what`` names the rows in messages (``input 'x'`` of a model with several inputs)."""
    try:
        array = np.asarray(instances)
    except (ValueError, TypeError):
        raise _explain(instances, width, names, what) from None
    if array.dtype.kind not in "fiub":
        raise _explain(instances, width, names, what)
    if array.ndim == 1 and (width in (None, 1)):
        array = array.reshape(-1, 1)
    if array.ndim != 2 or (width is not None and array.shape[1] != width):
        raise _explain(instances, width, names, what)
    if array.dtype != dtype:
        array = array.astype(dtype)
    if not allow_nonfinite and array.dtype.kind == "f" and not np.isfinite(array).all():
        rows, cols = np.nonzero(~np.isfinite(array))
        i, j = int(rows[0]), int(cols[0])
        value = float(array[i, j])
        kind = "NaN" if math.isnan(value) else "Infinity"
        feature = f"feature {j}" + (f" ({names[j]})" if names and j < len(names) else "")
        raise PredictionError(
            f"Instance {i}, {feature}: {kind} is not accepted by this model (it cannot take missing or "
            "infinite values)."
        )
    return array


def _first_non_number(value: Any, path: tuple[int, ...] = ()) -> tuple[tuple[int, ...], Any] | None:
    if isinstance(value, list):
        for j, item in enumerate(value):
            found = _first_non_number(item, (*path, j))
            if found is not None:
                return found
        return None
    return None if _is_number(value) else (path, value)


def _regular_shape(value: Any) -> tuple[int, ...] | None:
    """The shape of nested lists ``value`` (``()`` for a scalar), None when ragged."""
    if not isinstance(value, list):
        return ()
    shapes = {_regular_shape(item) for item in value}
    if len(shapes) > 1:
        return None
    inner = shapes.pop() if shapes else ()
    return None if inner is None else (len(value), *inner)


def explain_values(values: Sequence[Any], what: str = "", expected: str = "number") -> PredictionError:
    """Why ``values`` (one entry per instance, numbers or nested lists of numbers) are not a
    regular numeric array: the first value that is not a number (instance, ``what`` (e.g.
    ``input 'x'``) and position), or the first instance shaped unlike instance 0. The slow
    path: called only once a conversion has failed."""
    label = f", {what}" if what else ""
    first: tuple[int, ...] | None = None
    for i, value in enumerate(values):
        found = _first_non_number(value)
        if found is not None:
            path, item = found
            position = f", position {''.join(f'[{k}]' for k in path)}" if path else ""
            return PredictionError(f"Instance {i}{label}{position}: expected a {expected}, got {json_kind(item)}.")
        shape = _regular_shape(value)
        if shape is None:
            return PredictionError(f"Instance {i}{label} is a ragged array: its lists have different lengths.")
        if first is None:
            first = shape
        elif shape != first:
            return PredictionError(f"Instance {i}{label} has shape {list(shape)}, but instance 0 has shape "
                                   f"{list(first)}: every instance must have the same shape.")
    return PredictionError(f"The instances{label} cannot be converted to {expected}s: a value may be out of range.")


def rows_from_objects(instances: Sequence[Any], names: Sequence[str]) -> list[list[Any]]:
    """Instances given as objects ``{feature: value}`` → rows in ``names`` order, checking that
    every instance has exactly those features."""
    wanted = list(names)
    wanted_set = set(wanted)
    rows: list[list[Any]] = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise PredictionError(
                f"Instance {i} is a {type(instance).__name__}, but instance 0 is an object: send every "
                "instance in the same form."
            )
        if instance.keys() != wanted_set:
            missing = [n for n in wanted if n not in instance]
            unknown = [k for k in instance if k not in wanted_set]
            parts = []
            if missing:
                parts.append("is missing feature" + ("s " if len(missing) > 1 else " ") + ", ".join(map(repr, missing)))
            if unknown:
                plural = "s " if len(unknown) > 1 else " "
                parts.append("has unknown feature" + plural + ", ".join(map(repr, unknown)))
            raise PredictionError(
                f"Instance {i} {' and '.join(parts)}; the model expects the features: {', '.join(wanted)}."
            )
        rows.append([instance[n] for n in wanted])
    return rows


def split_rows(values: Any, counts: Sequence[int]) -> list[Any]:
    """Cut a batch result (array or list, one row per instance) back into per-request parts."""
    parts: list[Any] = []
    start = 0
    for n in counts:
        parts.append(values[start:start + n])
        start += n
    return parts
