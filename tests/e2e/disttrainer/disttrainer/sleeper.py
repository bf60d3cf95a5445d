"""A replica that records itself (pid, TF_CONFIG, rendezvous) in --out and sleeps: the master
for --sleep seconds, every other task until it is stopped."""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--job-dir")
    args = parser.parse_args()
    config = json.loads(os.environ["TF_CONFIG"])
    task = f"{config['task']['type']}-replica-{config['task']['index']}"
    record = {"pid": os.getpid(), "tf_config": config,
              "env": {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK",
                                                     "CLUSTER_SPEC", "CUDA_VISIBLE_DEVICES")}}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{task}.json.tmp"), "w") as f:
        json.dump(record, f)
    os.replace(os.path.join(args.out, f"{task}.json.tmp"), os.path.join(args.out, f"{task}.json"))
    print(f"{task} up (pid {os.getpid()})", flush=True)
    time.sleep(args.sleep if config["task"]["type"] in ("master", "chief") else 3600)
    print(f"{task} done", flush=True)


if __name__ == "__main__":
    main()
