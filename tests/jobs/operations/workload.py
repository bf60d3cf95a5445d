"""Functions operation workers run in the runner tests (imported by a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlengine.errors import invalid


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return {"echo": payload, "pid": os.getpid()}


def refuse(payload: dict[str, Any]) -> None:
    raise invalid("deploymentUri", "nothing there")


def crash(payload: dict[str, Any]) -> None:
    raise ZeroDivisionError("boom")


def hold(payload: dict[str, Any]) -> dict[str, Any]:
    """Start a grandchild, then wait while the marker file exists (at most 60 s)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    Path(payload["childPidFile"]).write_text(str(child.pid))
    deadline = time.time() + 60
    while Path(payload["marker"]).exists() and time.time() < deadline:
        time.sleep(0.02)
    child.kill()
    return {"held": True, "pid": os.getpid()}
