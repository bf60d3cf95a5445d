"""The floors of the serving benchmark: bare Starlette apps on uvicorn (one process).

    python bench/peers/floor.py --kind http|sklearn|tensorflow --model PATH --port P

``http`` parses the JSON body and returns a constant (the HTTP floor); ``sklearn`` and
``tensorflow`` call the model once per request, with no batching (the per-request floor).
"""

from __future__ import annotations

import argparse
import json
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def build(kind: str, model_path: str) -> Starlette:
    if kind == "http":
        async def constant(request: Request) -> Response:
            json.loads(await request.body())
            return Response(b'{"predictions": [0.0]}', media_type="application/json")

        return Starlette(routes=[Route("/predict", constant, methods=["POST"])])
    import numpy as np

    if kind == "sklearn":
        import joblib

        model = joblib.load(os.path.join(model_path, "model.joblib"))

        async def sklearn(request: Request) -> Response:
            body = json.loads(await request.body())
            predictions = model.predict(np.asarray(body["instances"], dtype=np.float64))
            return Response(json.dumps({"predictions": predictions.tolist()}), media_type="application/json")

        return Starlette(routes=[Route("/predict", sklearn, methods=["POST"])])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    signature = tf.saved_model.load(model_path).signatures["serving_default"]
    specs = signature.structured_input_signature[1]

    async def tensorflow(request: Request) -> Response:
        instances = json.loads(await request.body())["instances"]
        tensors = {name: tf.constant([i[name] for i in instances], dtype=spec.dtype) for name, spec in specs.items()}
        outputs = {k: v.numpy().tolist() for k, v in signature(**tensors).items()}
        rows = [dict(zip(outputs, values, strict=False)) for values in zip(*outputs.values(), strict=False)]
        return Response(json.dumps({"predictions": rows}), media_type="application/json")

    return Starlette(routes=[Route("/predict", tensorflow, methods=["POST"])])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", required=True)
    parser.add_argument("--model", default="")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(build(args.kind, args.model), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
