"""What do processes standing in for devices cost? Prints a markdown table.

Measures, with ``bnteach.distributed``: starting ``launch`` with 2 and 4 processes (spawn,
import torch, join a gloo group, leave it; best of 3), one all_reduce of 257 float64 numbers
(2C + 1 for a 128-channel SyncBN layer; the median of 200 calls), and a DDP training step of
the tutorial's BN net (Adam, 4 samples per device, float64), with per-device BN and with
SyncBN, against the same step in one process on the whole global batch. On a machine with
fewer cores than processes, the processes take turns: collectives then wait for the scheduler.

Run: ``python benchmarks/bench_distributed.py``. No timing is asserted anywhere.
"""

import platform
import time

import torch
from torch import nn

from bnteach import distributed
from bnteach.data import load_data
from bnteach.models import MLP

PER_DEVICE, STEPS = 4, 30


def start_cost(world_size, repeats=3):
    """Best wall time of a launch whose work is one all_reduce."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        distributed.launch(distributed.time_all_reduce, world_size, repeats=1, timeout=300)
        times.append(time.perf_counter() - start)
    return min(times)


def one_process_step(X, y, global_batch):
    """Seconds per Adam step of the same net on the whole global batch, in this process."""
    torch.manual_seed(0)
    model = MLP(X.shape[1], (128, 64), norm="batch").double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.BCEWithLogitsLoss()
    rows = distributed.batch_indices(len(X), global_batch, STEPS + 5, seed=0)
    for i, r in enumerate(rows):
        if i == 5:
            start = time.perf_counter()  # after a warm-up
        optimizer.zero_grad()
        loss_fn(model(X[r].double()), y[r].double()).backward()
        optimizer.step()
    return (time.perf_counter() - start) / STEPS


def main():
    torch.set_num_threads(1)
    X, _, y, _ = load_data()
    rows = []
    for world_size in (2, 4):
        rows.append(
            (f"launch, {world_size} processes (start, join, leave)", start_cost(world_size))
        )
        reduce = distributed.launch(distributed.time_all_reduce, world_size, timeout=300)
        rows.append((f"one all_reduce of 257 float64, {world_size} processes", max(reduce)))
        for sync in (False, True):
            results = distributed.launch(
                distributed.ddp_train,
                world_size,
                X,
                y,
                seed=0,
                steps=STEPS,
                per_device=PER_DEVICE,
                sync_bn=sync,
                timeout=300,
            )
            step = max(r["seconds_per_step"] for r in results)
            name = "SyncBN" if sync else "per-device BN"
            rows.append((f"DDP step, {world_size} x {PER_DEVICE} samples, {name}", step))
        batch = world_size * PER_DEVICE
        rows.append((f"one process, a step on all {batch} samples", one_process_step(X, y, batch)))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    print("| what | time |\n|---|---|")
    for name, seconds in rows:
        shown = f"{seconds:.2f} s" if seconds >= 0.5 else f"{seconds * 1e3:.2f} ms"
        print(f"| {name} | {shown} |")


if __name__ == "__main__":
    main()
