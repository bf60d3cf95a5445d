"""PyTorch DistributedDataParallel (gloo) on taxi fares: every rank trains on its shard;
rank 0 checks that all ranks ended with the same parameters and writes the result.

    python -m disttrainer.torch_ddp --data taxi-train.csv --epochs 2 --job-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--depth", type=int, default=1, help="hidden layers")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the data per epoch (bench)")
    parser.add_argument("--job-dir", required=True)
    args = parser.parse_args()
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from disttrainer.data import load

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dist.init_process_group("gloo")  # MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK from mlengine
    rank, world = dist.get_rank(), dist.get_world_size()
    print(f"rank {rank} of {world} joined via {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}", flush=True)
    features, fares = load(args.data)
    x = torch.tensor(features[rank::world] * args.repeat)
    y = torch.tensor(fares[rank::world] * args.repeat)[:, None]
    layers: list[torch.nn.Module] = [torch.nn.Linear(3, args.hidden), torch.nn.ReLU()]
    for _ in range(args.depth - 1):
        layers += [torch.nn.Linear(args.hidden, args.hidden), torch.nn.ReLU()]
    model = DistributedDataParallel(torch.nn.Sequential(*layers, torch.nn.Linear(args.hidden, 1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    started = time.time()
    losses = []
    for _epoch in range(args.epochs):
        for i in range(0, len(x), args.batch_size):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x[i:i + args.batch_size]), y[i:i + args.batch_size])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(params) for _ in range(world)]
    dist.all_gather(gathered, params)
    in_sync = all(torch.allclose(gathered[0], g) for g in gathered)
    if rank == 0:
        record = {"world_size": world, "steps": len(losses), "first_loss": losses[0],
                  "last_loss": sum(losses[-10:]) / 10, "in_sync": in_sync, "seconds": time.time() - started}
        print("RESULT " + json.dumps(record), flush=True)
        os.makedirs(args.job_dir, exist_ok=True)
        with open(os.path.join(args.job_dir, "torch_ddp_result.json"), "w") as f:
            json.dump(record, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
