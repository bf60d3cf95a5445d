"""A Ray Serve deployment of the benchmark's model (run with the Ray environment's Python).

    python bench/peers/ray_app.py --kind sklearn|tensorflow --model PATH --port P

One replica, no @serve.batch: the deployment a user writes first. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})

    @serve.deployment(num_replicas=1, max_ongoing_requests=64)
    class Model:
        def __init__(self, kind: str, path: str) -> None:
            import numpy as np

            self.np = np
            self.kind = kind
            if kind == "sklearn":
                import joblib

                self.model = joblib.load(os.path.join(path, "model.joblib"))
            else:
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
                import tensorflow as tf

                self.tf = tf
                self.signature = tf.saved_model.load(path).signatures["serving_default"]
                self.specs = self.signature.structured_input_signature[1]

        async def __call__(self, request: Request) -> Response:
            instances = json.loads(await request.body())["instances"]
            if self.kind == "sklearn":
                predictions = self.model.predict(self.np.asarray(instances, dtype=self.np.float64)).tolist()
            else:
                tf = self.tf
                tensors = {n: tf.constant([i[n] for i in instances], dtype=s.dtype) for n, s in self.specs.items()}
                outputs = {k: v.numpy().tolist() for k, v in self.signature(**tensors).items()}
                columns = zip(*outputs.values(), strict=True)
                predictions = [dict(zip(outputs, values, strict=True)) for values in columns]
            return Response(json.dumps({"predictions": predictions}), media_type="application/json")

    serve.run(Model.bind(args.kind, os.path.abspath(args.model)), route_prefix="/predict", blocking=False)
    print("READY", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
