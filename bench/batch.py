"""Batch prediction throughput, side by side on the same model and the same instances:

- the floor: ``model.predict`` over the whole array in one call, in process (the data already
  parsed: the lowest possible cost of the model itself);
- mlengine batch prediction (a real server, local executor) with 1 and 2 workers: JSON lines
  in, JSON lines out, rows/s over the job's RUNNING time (model load and worker start included);
- a plain Ray Data pipeline as Ray's docs show it (``read_json`` → ``map_batches`` with a
  class that loads the model once → ``write_json``), with 1 and 2 model actors, on a Ray head
  started for it (token auth, as mlengine starts Ray); a head that does not come up on a loaded
  machine is started once more with a longer timeout.

Models: the scikit-learn pipeline and the taxifare SavedModel (``--savedmodel DIR``, else
trained once by the sample's trainer into ``--cache``, reused by later runs).

Peak memory: the largest peak resident set (``VmHWM``, the kernel's ``ru_maxrss``) of the
processes doing the work (the floor's process; mlengine's workers; the Ray node's worker
processes: the model actors and the read/write tasks), and of the driver (the Ray Data driver;
for mlengine the control plane, which only plans and watches). Run alone on an idle machine:

    python bench/batch.py --rows 1000000 [--savedmodel DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.batch.models import FEATURES, rides, sklearn_model  # noqa: E402
from tests.e2e.helpers import ServerProcess, short_home  # noqa: E402

from bench._report import machine, table, write_section  # noqa: E402

RAW = ["pickup_datetime", *FEATURES]


def write_data(directory: Path, rows: int, files: int = 4) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data = rides(min(rows, 50_000))
    paths = []
    per = -(-rows // files)
    for n in range(files):
        path = directory / f"part-{n}.json"
        with open(path, "w") as f:
            for i in range(n * per, min(rows, (n + 1) * per)):
                f.write(json.dumps({**data[i % len(data)], "key": i}) + "\n")
        paths.append(path)
    return paths


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hwm_mb(pid: int) -> float:
    """A process's peak resident set (``VmHWM``, what ``ru_maxrss`` reports for itself)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


class PeakSampler:
    """The largest ``VmHWM`` of the processes ``pids()`` names, sampled every ``every`` seconds
    in a thread (a peak is a high-water mark: sampling misses only processes that end between
    two samples)."""

    def __init__(self, pids: Any, every: float = 0.25) -> None:
        import threading

        self.pids, self.every, self.peak = pids, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.every):
                return

    def sample(self) -> None:
        for pid in self.pids():
            self.peak = max(self.peak, hwm_mb(pid))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def train_taxifare(cache: Path) -> Path:
    """The taxifare SavedModel, trained once by the sample's trainer into ``cache``."""
    job_dir = cache / "taxifare-job"
    exports = sorted((job_dir / "export").glob("*/saved_model.pb")) if (job_dir / "export").is_dir() else []
    if exports:
        return exports[-1].parent
    sample = Path(__file__).resolve().parents[1] / "samples" / "taxifare"
    print(f"Training the taxifare SavedModel into {job_dir} (once)...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "trainer.task", "--job-dir", str(job_dir), "--train-steps", "300",
                    "--batch-size", "64", "--eval-steps", "5",
                    "--train-data-paths", str(sample / "data" / "taxi-train.csv"),
                    "--eval-data-paths", str(sample / "data" / "taxi-valid.csv")],
                   cwd=sample, check=True, timeout=1800, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return sorted((job_dir / "export").glob("*/saved_model.pb"))[-1].parent


# Contenders run in their own process (``--contender``), so their peak memory is their own.
def floor(model_dir: Path, framework: str, paths: list[Path]) -> dict[str, float]:
    import pandas as pd

    frame = pd.concat([pd.read_json(p, lines=True) for p in paths])
    start = time.perf_counter()
    if framework == "SCIKIT_LEARN":
        import joblib

        joblib.load(model_dir / "model.joblib").predict(frame[FEATURES])
    else:
        import tensorflow as tf

        fn = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
        fn(**{c: tf.constant(frame[c].to_numpy().astype("float32") if c != "pickup_datetime"
                             else frame[c].astype(str).to_numpy()) for c in RAW})
    return {"seconds": time.perf_counter() - start, "rows": len(frame), "peak_mb": peak_mb(), "driver_mb": -1}


def start_ray(cpus: int, root: Path) -> Any:
    """A Ray head for the pipeline (token auth, no dashboard), and this process connected to it.
    A head that does not come up in time (a loaded machine) is started once more, waiting 3x
    longer."""
    from mlengine.errors import MLEngineError
    from mlengine.jobs.executors.ray_cluster import START_TIMEOUT, ensure_token, security_env, start_node

    token = ensure_token(root / "token")
    os.environ.update(security_env(token))  # before Ray is imported: it reads them once
    for attempt, timeout in enumerate((START_TIMEOUT, 3 * START_TIMEOUT)):
        try:
            return start_node(token_file=token, temp_dir=root / f"t{attempt}", log_file=root / f"ray{attempt}.log",
                              num_cpus=cpus, object_store_mb=512, timeout=timeout)
        except MLEngineError as err:
            if attempt:
                raise
            print(f"Ray did not start ({str(err).splitlines()[0]}); once more, waiting {3 * timeout:.0f} s.",
                  file=sys.stderr, flush=True)
    raise AssertionError("unreachable")


def ray_data(model_dir: Path, framework: str, paths: list[Path], workers: int, out: Path) -> dict[str, float]:
    from mlengine.jobs.executors.ray_cluster import session_members, stop_node

    # Logical CPUs for the model actors plus the read and write tasks (fewer starve the reads).
    node = start_ray(workers + 2, Path(tempfile.mkdtemp(prefix="mlb-ray-", dir="/tmp")))
    import ray

    ray.init(address=node.address, log_to_driver=False)

    class Model:
        def __init__(self) -> None:
            if framework == "SCIKIT_LEARN":
                import joblib

                self.model = joblib.load(model_dir / "model.joblib")
            else:
                import tensorflow as tf

                self.fn = tf.saved_model.load(str(model_dir)).signatures["serving_default"]

        def __call__(self, batch: Any) -> Any:
            if framework == "SCIKIT_LEARN":
                batch["prediction"] = self.model.predict(batch[FEATURES])
            else:
                import tensorflow as tf

                result = self.fn(**{c: tf.constant(batch[c].to_numpy().astype("float32") if c != "pickup_datetime"
                                                   else batch[c].astype(str).to_numpy()) for c in RAW})
                batch["prediction"] = next(iter(result.values())).numpy().ravel()
            return batch[["key", "prediction"]]

    def ray_workers() -> list[int]:  # the node's worker processes: model actors, read/write tasks
        found = []
        for pid in session_members(node.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::") or b"default_worker.py" in cmdline:
                found.append(pid)
        return found

    try:
        with PeakSampler(ray_workers) as sampler:
            start = time.perf_counter()
            ds = ray.data.read_json([str(p) for p in paths])
            ds.map_batches(Model, batch_format="pandas", concurrency=workers, batch_size=4096).write_json(str(out))
            seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
        stop_node(node)
    return {"seconds": seconds, "rows": -1, "peak_mb": sampler.peak, "driver_mb": peak_mb()}


def run_contender(argv: list[str]) -> dict[str, float]:
    result = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=False,
                            timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def worker_pids(out: str) -> list[int]:
    """mlengine's batch workers writing to ``out``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"mlengine.batch.worker" in cmdline and out.encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def mlengine(server: ServerProcess, model_dir: Path, paths: list[Path], workers: int, out: Path,
             job_id: str) -> dict[str, float]:
    import datetime as dt

    body = {"jobId": job_id, "predictionInput": {
        "uri": str(model_dir), "dataFormat": "JSON", "inputPaths": [str(paths[0].parent / "part-*")],
        "outputPath": str(out), "maxWorkerCount": str(workers), "keyField": "key"}}
    response = server.api("POST", "/v1/projects/mlengine/jobs", json=body)
    response.raise_for_status()
    with PeakSampler(lambda: worker_pids(str(out)), every=0.1) as sampler:
        while True:
            job = server.job(job_id)
            if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            time.sleep(0.2)
    if job["state"] != "SUCCEEDED":
        raise RuntimeError(f"{job_id}: {job}")

    def parse(ts: str) -> float:
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()

    return {"seconds": parse(job["endTime"]) - parse(job["startTime"]),
            "rows": int(job["predictionOutput"]["predictionCount"]), "peak_mb": sampler.peak,
            "driver_mb": hwm_mb(server.proc.pid) if server.proc else -1}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--savedmodel", type=Path, default=None,
                        help="a taxifare SavedModel directory (default: trained once into --cache)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mlengine-bench",
                        help="where the taxifare SavedModel is trained once and kept")
    parser.add_argument("--no-savedmodel", action="store_true", help="only the scikit-learn pipeline")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Data pipeline")
    parser.add_argument("--contender", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--framework", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        paths = sorted(args.data.glob("part-*"))
        if args.contender == "floor":
            print(json.dumps(floor(args.model, args.framework, paths)))
        else:
            print(json.dumps(ray_data(args.model, args.framework, paths, args.workers, args.out)))
        return

    work = Path(tempfile.mkdtemp(prefix="mle-bench-batch-"))
    data = work / "data"
    paths = write_data(data, args.rows)
    models = [("scikit-learn pipeline", sklearn_model(work / "sk"), "SCIKIT_LEARN")]
    if not args.no_savedmodel:
        models.append(("taxifare SavedModel", args.savedmodel or train_taxifare(args.cache), "TENSORFLOW"))
    server = ServerProcess(short_home(), {"MLE_SCHEDULER_INTERVAL_SECONDS": "0.1"}).start()
    rows_out: list[list[str]] = []
    try:
        for label, model_dir, framework in models:
            common = ["--model", str(model_dir), "--framework", framework, "--data", str(data)]
            base = run_contender(["--contender", "floor", *common])
            results = [("in-process `model.predict`, one call (floor)", base)]
            for workers in (1, 2):
                out = work / f"out-{framework}-{workers}"
                results.append((f"mlengine, {workers} worker(s)",
                                mlengine(server, model_dir, paths, workers, out, f"b_{framework.lower()}_{workers}")))
            if not args.no_ray:
                for workers in (1, 2):
                    out = work / f"ray-{framework}-{workers}"
                    name = f"Ray Data `map_batches`, {workers} actor(s)"
                    try:
                        results.append((name, run_contender(
                            ["--contender", "ray", *common, "--workers", str(workers), "--out", str(out)])))
                    except (RuntimeError, subprocess.TimeoutExpired) as err:  # Ray could not start here
                        last = str(err).strip().splitlines()[-1:] or [""]
                        rows_out.append([label, name, "did not run", last[0][:80], "-", "-"])
            floor_rate = args.rows / base["seconds"]
            one = None
            for name, r in results:
                rate = args.rows / r["seconds"]
                one = rate if name.startswith("mlengine, 1") else one
                versus = f"{rate / floor_rate:.0%}" + (f" ({rate / one:.2f}x 1 worker)" if one and
                                                      name.startswith("mlengine, 2") else "")
                driver = f"{r['driver_mb']:,.0f}" if r.get("driver_mb", -1) >= 0 else "-"
                rows_out.append([label, name, f"{rate:,.0f}", versus, f"{r['peak_mb']:,.0f}", driver])
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)  # the inputs and every contender's output
    body = "\n".join([
        "## Batch prediction (`bench/batch.py`)",
        "",
        f"Machine: {machine()}. {args.rows:,} taxi rides as JSON lines (4 files), the same model for every",
        "contender. mlengine: rows/s over the job's RUNNING time (workers start and load the model inside it),",
        "JSON results written. The floor predicts an already parsed DataFrame in one call. Targets: 1 worker at",
        "least 70 % of the floor, 2 workers at least 1.8x one worker, ahead of plain Ray Data.",
        "",
        "Peak memory: the largest peak RSS (VmHWM) of a process doing the work (floor: itself; mlengine: a",
        "worker; Ray Data: a Ray worker process, model actors and read/write tasks), and of the driver",
        "(Ray Data's driver; mlengine's control plane, which plans and watches).",
        "",
        table(["model", "contender", "rows/s", "vs floor", "peak worker (MB)", "peak driver (MB)"], rows_out),
    ])
    write_section("batch", body)
    print(body)


if __name__ == "__main__":
    main()
