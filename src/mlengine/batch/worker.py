"""One worker of a batch prediction job: ``python -m mlengine.batch.worker --config JSON``.

A replica of the job like a trainer (started by the executor's supervisor, confined by its
sandbox: it reads the job's model copy and the inputs, and writes only the output
directory). It loads the model once with the predictor online prediction uses, then does
the shards the plan gives it (shard ``i`` goes to worker ``i mod workers``) that have no
``done`` record yet, each decoded, scored and committed atomically (:mod:`mlengine.batch.layout`).
It exits 0 when its shards are done, 2 when the model cannot be loaded (the job fails with
that message); killed, it leaves nothing a retry would take for done.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from mlengine.batch.decode import decode
from mlengine.batch.layout import Counts, Output
from mlengine.batch.scoring import Scorer
from mlengine.batch.shards import Shard
from mlengine.prediction.frameworks._base import LoadOptions, ModelLoadError, Predictor, load_predictor

PROGRESS_EVERY = 1.0


def load(config: dict[str, Any]) -> Predictor:
    for entry in reversed(config.get("pythonpath") or []):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    options = LoadOptions(prediction_class=config.get("predictionClass"), framework_hint=config.get("frameworkHint"),
                          allow_pickle=bool(config.get("allowPickle", True)))
    return load_predictor(Path(config["modelDir"]), config["framework"], options)


def wants_raw_records(predictor: Predictor, signature_name: str | None) -> bool:
    """A SavedModel whose signature takes one string: TFRecord records go in as they are."""
    signatures = getattr(predictor, "signatures", None)
    if not signatures:
        return False
    signature = signatures.get(signature_name or "serving_default")
    if signature is None or len(signature.inputs) != 1:
        return False
    return bool(signature.inputs[0][1].dtype == predictor.tf.string)  # type: ignore[attr-defined]


def run(config: dict[str, Any]) -> int:
    worker, workers = int(config["worker"]), int(config["workers"])
    name = f"worker-{worker}"
    try:
        predictor = load(config)
    except ModelLoadError as err:
        print(f"Failed to load the model: {err}", file=sys.stderr)
        return 2
    except BaseException as err:  # user code (a custom routine) may raise anything
        print(f"Failed to load the model: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    output = Output(config["outputPath"])
    plan = output.plan()
    if plan is None:
        print("The job's shard plan is missing from the output directory.", file=sys.stderr)
        return 3
    shards = [Shard.from_json(s) for s in plan["shards"]]
    done = output.done()
    mine = [s for s in shards if s.index % workers == worker and s.index not in done]
    host = config.get("host") or "?"
    print(f"{name} on {host}: {len(mine)} shard(s) to do of {len(shards)} ({len(done)} already done).", flush=True)
    kwargs = {"signature_name": config["signatureName"]} if config.get("signatureName") else {}
    scorer = Scorer(predictor, int(config["batchSize"]), kwargs)
    raw = config["dataFormat"].startswith("TF_RECORD") and wants_raw_records(predictor, config.get("signatureName"))
    for shard in mine:
        started = time.monotonic()

        def progress(count: int, shard: Shard = shard, last: list[float] = [0.0]) -> None:  # noqa: B006
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY:
                last[0] = now
                output.report(name, {"shard": shard.index, "done": count})

        output.report(name, {"shard": shard.index, "done": 0})
        decoded = decode(shard, config["dataFormat"], config.get("keyField"), raw)
        predictions, errors = scorer.score(decoded, progress)
        counts = Counts(decoded.count - len(errors), len(errors))
        rows = None
        for position, message in errors.items():
            if message in counts.stats:
                counts.stats[message][0] += 1
            else:
                if rows is None:
                    rows = decoded.rows()
                example = rows[position] if position < len(rows) else None
                counts.stats[message] = [1, example]
        from mlengine.batch.layout import encode_results

        results = encode_results(predictions, errors, decoded.keys, config["outputDataFormat"])
        output.commit_shard(shard.index, len(shards), config["outputDataFormat"], results, counts)
        output.report(name, {"shard": None, "done": 0})
        print(f"{name}: shard {shard.index + 1} of {len(shards)}: {counts.predictions} predictions, "
              f"{counts.errors} errors in {time.monotonic() - started:.2f}s.", flush=True)
    print(f"{name}: done.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlengine.batch.worker")
    parser.add_argument("--config", required=True, help="the worker's configuration (JSON)")
    args = parser.parse_args(argv)
    return run(json.loads(args.config))


if __name__ == "__main__":
    sys.exit(main())
