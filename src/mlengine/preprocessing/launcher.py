"""What a preprocessing replica runs (``python -m mlengine.preprocessing.launcher --config JSON``),
in the job's environment (Apache Beam and Dask on ``PYTHONPATH``), under the replica sandbox.

- ``driver``: runs the user's module as ``python -m MODULE ARGS RUNNER_OPTIONS [--job-dir DIR]``
  (through :mod:`runpy`, so ``if __name__ == "__main__"`` pipelines run unchanged; Beam reads the
  runner options from the arguments it does not know). With the DaskRunner and no
  ``daskAddress`` it first starts the job's Dask scheduler on its own port and waits for the
  job's worker replicas to join; the scheduler ends with the driver.
- ``worker``: becomes a Dask worker (one process, one thread) of that scheduler.

Only the standard library is imported here until the role needs Dask: the launcher must start
in any environment Beam runs in.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import time
from typing import Any

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
#: How long the driver waits for its Dask workers (placement already reserved them).
WORKERS_TIMEOUT_SECONDS = 300.0


def runner_options(config: dict[str, Any], address: str | None) -> list[str]:
    """Beam pipeline options selecting the job's runner."""
    if config["runner"] == "DirectRunner":
        mode = config.get("mode", "multi_processing")
        options = ["--runner=DirectRunner", f"--direct_running_mode={mode}"]
        if mode != "in_memory":
            options.append(f"--direct_num_workers={int(config['workers'])}")
        return options
    return [f"--runner={DASK_RUNNER}", f"--dask_client_address={address}"]


def user_argv(config: dict[str, Any], address: str | None) -> list[str]:
    argv = [config["module"], *config.get("args", []), *runner_options(config, address)]
    if config.get("jobDir"):
        argv += ["--job-dir", config["jobDir"]]
    return argv


def _start_scheduler(config: dict[str, Any]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", config["host"],
           "--port", str(config["port"]), "--no-dashboard"]
    return subprocess.Popen(cmd)


def _wait_for_workers(address: str, count: int) -> None:
    from distributed import Client

    deadline = time.monotonic() + WORKERS_TIMEOUT_SECONDS
    client = Client(address, timeout=WORKERS_TIMEOUT_SECONDS)
    try:
        client.wait_for_workers(count, timeout=max(1.0, deadline - time.monotonic()))
    finally:
        client.close()
    print(f"Dask cluster at {address}: {count} worker(s) ready", flush=True)


def driver(config: dict[str, Any]) -> int:
    address: str | None = None
    scheduler = None
    if config["runner"] != "DirectRunner":
        address = config["scheduler"]
        if config.get("ownScheduler"):
            scheduler = _start_scheduler(config)
        try:
            _wait_for_workers(str(address), int(config["workers"]) if config.get("ownScheduler") else 1)
        except Exception as exc:  # noqa: BLE001 - told to the user, the job fails
            print(f"The Dask cluster at {address} did not come up: {exc}", file=sys.stderr, flush=True)
            if scheduler is not None:
                scheduler.kill()
            return 1
    argv = user_argv(config, address)
    print(f"Running {' '.join(argv)}", flush=True)
    sys.argv = argv
    code: Any = 0
    try:
        runpy.run_module(config["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    finally:
        if scheduler is not None:
            scheduler.terminate()
            try:
                scheduler.wait(10)
            except subprocess.TimeoutExpired:
                scheduler.kill()
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def worker(config: dict[str, Any]) -> int:
    cmd = [sys.executable, "-m", "distributed.cli.dask_worker", config["scheduler"], "--nthreads", "1",
           "--no-nanny", "--no-dashboard", "--host", config["host"], "--worker-port", str(config["port"]),
           "--death-timeout", str(int(WORKERS_TIMEOUT_SECONDS))]
    os.execv(sys.executable, cmd)
    return 1  # pragma: no cover - execv does not return


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlengine.preprocessing.launcher")
    parser.add_argument("--config", required=True)
    config = json.loads(parser.parse_args(args).config)
    return driver(config) if config["role"] == "driver" else worker(config)


if __name__ == "__main__":
    sys.exit(main())
