"""Run a serialized Beam pipeline (``preprocessingInput.pipelineUri``): the runner API proto a
notebook's :class:`mlengine.client.beam.MLEngineRunner` wrote, rebuilt with the runner the job's
launcher names in the arguments (``python -m mlengine.preprocessing.portable --pipeline FILE
--runner=... [--job-dir DIR]``). Runs in the job's environment (Apache Beam importable)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlengine.preprocessing.portable")
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--job-dir", default=None)
    known, beam_args = parser.parse_known_args(argv)
    if any("DaskRunner" in arg for arg in beam_args):
        import apache_beam.runners.dask.dask_runner  # noqa: F401 - registers the Dask options

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.runner import create_runner

    options = PipelineOptions(beam_args)
    runner = create_runner(options.view_as(StandardOptions).runner or "DirectRunner")
    proto = beam_runner_api_pb2.Pipeline.FromString(Path(known.pipeline).read_bytes())
    pipeline = beam.Pipeline.from_runner_api(proto, runner, options)
    state = pipeline.run().wait_until_finish()
    print(f"Pipeline {known.pipeline}: {state}", flush=True)
    return 0 if str(state) in ("DONE", "PipelineState.DONE") else 1


if __name__ == "__main__":
    sys.exit(main())
