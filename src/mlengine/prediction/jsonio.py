"""JSON in and out of the prediction path: orjson when installed, the stdlib otherwise.

- :func:`loads` accepts standard JSON, plus the ``NaN``/``Infinity`` tokens that Python's
  ``json`` (and many clients) write: orjson refuses them, so a body it rejects is parsed again
  by the stdlib before it is called invalid. Predictors then decide whether they can take
  non-finite numbers.
- :func:`dumps` writes numpy arrays of numbers directly (no ``tolist``); NaN and infinities
  come out as ``null`` with orjson (JSON has no NaN), as ``NaN`` with the stdlib fallback.
- Only JSON: nothing here ever unpickles or evaluates a payload.
"""

from __future__ import annotations

import json
from typing import Any

_orjson: Any
try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency, kept optional for safety
    _orjson = None

HAVE_ORJSON = _orjson is not None


class JSONError(ValueError):
    """The body is not JSON; the message says where."""


def _default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if tolist is not None:  # numpy arrays and scalars of any dtype
        return tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


if _orjson is not None:
    _OPTIONS = _orjson.OPT_SERIALIZE_NUMPY
    _orjson_loads = _orjson.loads
    _orjson_dumps = _orjson.dumps
    _OrjsonDecodeError = _orjson.JSONDecodeError

    def loads(data: bytes | str) -> Any:
        try:
            return _orjson_loads(data)
        except _OrjsonDecodeError:
            try:
                return json.loads(data)
            except (ValueError, UnicodeDecodeError) as err:
                raise JSONError(str(err)) from None

    def dumps(value: Any) -> bytes:
        return _orjson_dumps(value, default=_default, option=_OPTIONS)

else:  # pragma: no cover

    def loads(data: bytes | str) -> Any:
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as err:
            raise JSONError(str(err)) from None

    def dumps(value: Any) -> bytes:
        return json.dumps(value, default=_default, separators=(",", ":")).encode()


def error_body(message: str) -> bytes:
    """A prediction error in the flat shape ``{"error": "message"}``."""
    return dumps({"error": message})
