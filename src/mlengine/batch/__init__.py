"""Batch prediction: ``jobs.create`` with ``predictionInput`` scores whole files with the
predictor code online prediction and ``mle local predict`` use.

- :mod:`.spec`: validating ``predictionInput`` (formats, paths, workers, batch size);
- :mod:`.kind`: the ``batch_prediction`` job kind (model resolution, sharding, outcome, live
  ``predictionOutput``);
- :mod:`.shards`: splitting the inputs into shards and reading one shard in columnar batches;
- :mod:`.layout`: the output directory (results, error stats, the resumable shard records);
- :mod:`.scoring`: running a predictor over a batch, instance errors pinned on the instance;
- :mod:`.worker`: the worker process (one replica of the job).
"""
