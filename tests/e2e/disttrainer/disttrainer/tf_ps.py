"""TensorFlow ParameterServerStrategy on taxi fares: the chief coordinates, workers and
parameter servers run ``tf.distribute.Server`` until they are stopped.

    python -m disttrainer.tf_ps --data taxi-train.csv --steps 40 --job-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--job-dir", required=True)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    print(f"{task['type']} {task['index']} starting; cluster {resolver.cluster_spec().as_dict()}", flush=True)
    if resolver.task_type in ("worker", "ps"):
        server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                      task_index=resolver.task_id, protocol="grpc", start=True)
        print(f"{resolver.task_type} {resolver.task_id} serving", flush=True)
        server.join()
        return

    from disttrainer.data import load

    features, fares = load(args.data)
    strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        weights = tf.Variable(tf.zeros([3, 1]), name="weights")
        bias = tf.Variable(tf.zeros([1]), name="bias")

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        data = tf.data.Dataset.from_tensor_slices((tf.constant(features, tf.float32),
                                                   tf.constant(fares, tf.float32)[:, None]))
        data = data.shard(context.num_input_pipelines, context.input_pipeline_id)
        return data.shuffle(1024, seed=1).repeat().batch(args.batch_size)

    @tf.function
    def per_worker_dataset_fn() -> object:
        return strategy.distribute_datasets_from_function(dataset_fn)

    iterator = iter(coordinator.create_per_worker_dataset(per_worker_dataset_fn))

    @tf.function
    def step(it: object) -> tf.Tensor:
        def replica_fn(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(tf.matmul(x, weights) + bias - y))
            grad_w, grad_b = tape.gradient(loss, [weights, bias])
            weights.assign_sub(args.learning_rate * grad_w)
            bias.assign_sub(args.learning_rate * grad_b)
            return loss

        x, y = next(it)  # type: ignore[call-overload]
        return strategy.run(replica_fn, args=(x, y))

    started = time.time()
    results = [coordinator.schedule(step, args=(iterator,)) for _ in range(args.steps)]
    coordinator.join()
    losses = [float(r.fetch()) for r in results]
    record = {
        "strategy": type(strategy).__name__, "steps": len(losses), "first_loss": losses[0],
        "last_loss": sum(losses[-5:]) / 5, "seconds": time.time() - started,
        "variable_device": weights.device, "workers": len(resolver.cluster_spec().as_dict().get("worker", [])),
        "ps": len(resolver.cluster_spec().as_dict().get("ps", [])),
    }
    print("RESULT " + json.dumps(record), flush=True)
    os.makedirs(args.job_dir, exist_ok=True)
    with open(os.path.join(args.job_dir, "tf_ps_result.json"), "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main()
