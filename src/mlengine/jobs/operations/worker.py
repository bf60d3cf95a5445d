"""The worker process of an operation step: ``python -m mlengine.jobs.operations.worker SPEC``.

``SPEC`` is a JSON file ``{"function": "package.module:name", "payload": {...}, "result": PATH,
"pidFile": PATH}``. The worker records its pid and process start time in ``pidFile``, calls
``function(payload)`` and writes ``{"response": <its return value>}`` to ``result``, or
``{"error": {"code": <rpc code>, "message": ...}}`` when it raised (an
:class:`~mlengine.errors.MLEngineError` keeps its code and message; anything else is INTERNAL
with the exception's type and message). Both files are written atomically (temporary file,
fsync, rename). It is started by :class:`~mlengine.jobs.operations.runner.OperationRunner`
as the leader of its own session, so killing its process group stops everything it started.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from mlengine.errors import Code, MLEngineError

    module, _, name = str(spec["function"]).partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
        return {"response": function(spec.get("payload") or {})}
    except MLEngineError as err:
        return {"error": err.status()}
    except Exception as err:  # the operation's error must say what happened, not crash silently
        traceback.print_exc()
        return {"error": {"code": Code.INTERNAL.rpc_code, "message": f"Internal error: {type(err).__name__}: {err}"}}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mlengine.jobs.operations.worker SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    from mlengine.core.processes import proc_start_ticks

    ticks = proc_start_ticks(os.getpid())
    write_atomic(Path(spec["pidFile"]), {"pid": os.getpid(), "startTicks": ticks[0] if ticks else None})
    outcome = run(spec)
    write_atomic(Path(spec["result"]), outcome)
    return 0 if "response" in outcome else 1


if __name__ == "__main__":
    sys.exit(main())
