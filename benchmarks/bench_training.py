"""How fast can the tutorial's experiment run? Prints a markdown table (paste into the README).

Trains the tutorial's pair (SimpleMLP and MLPWithBN, 25 epochs, Adam lr 0.01, batch 64) three
ways, in one process on one thread, and compares them with the matmul floor:

1. the starting tutorial's loop: DataLoader over a TensorDataset, per-batch validation;
2. ``bnteach.training.train_model`` with ``make_loaders`` (randperm indexing, whole-set
   validation);
3. ``bnteach.sweep.run`` with 8 seeds x 1 lr x 2 models (the explorers' default view), at
   batch 64 and at batch 4 (200 steps per epoch: per-step overhead);
4. the floor: the matmul FLOPs of one pair's training divided by a measured matmul rate.

It also measures what a learner waits for in the comparison explorer after moving a control,
computed as the explorer computes it (``bnteach.explore.compare_stream``, redrawn into the
figure it keeps when ``explore.Redraws`` says so): the time to the first visible figure (after
epoch 1) and to the final figure, for the default view and for batch size 4, as ratios to the
tutorial's pair; and, as a floor for the sweep, the time its matrix products and Adam steps
alone take.

Times are the best of a few repeats after a warm-up; repeats of the methods are interleaved so
that a busy machine slows all of them alike. No timing is asserted anywhere.

Run: ``python benchmarks/bench_training.py`` (``make bench``).
"""

import functools
import math
import time

import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

from bnteach import sweep
from bnteach.data import load_data, make_loaders
from bnteach.explore import Redraws, compare_figure, compare_stream, compare_summary, figure_png
from bnteach.models import MLPWithBN, SimpleMLP
from bnteach.training import train_model

EPOCHS, LR, BATCH, SEEDS = 25, 0.01, 64, 8
SIZES = (20, 128, 64, 1)  # input, hidden1, hidden2, output: the tutorial's nets


def tutorial_train(model, X_train, X_val, y_train, y_val, epochs=EPOCHS, lr=LR):
    """The starting tutorial's loop, as it was written (losses only, no printing)."""
    train_loader = DataLoader(TensorDataset(X_train, y_train), batch_size=BATCH, shuffle=True)
    val_loader = DataLoader(TensorDataset(X_val, y_val), batch_size=BATCH)
    criterion = nn.BCEWithLogitsLoss()
    optimizer = optim.Adam(model.parameters(), lr=lr)
    train_losses, val_losses = [], []
    for _ in range(epochs):
        model.train()
        running_loss = 0.0
        for inputs, labels in train_loader:
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * inputs.size(0)
        train_losses.append(running_loss / len(train_loader.dataset))
        model.eval()
        val_loss = 0.0
        with torch.no_grad():
            for inputs, labels in val_loader:
                outputs = model(inputs)
                val_loss += criterion(outputs, labels).item() * inputs.size(0)
        val_losses.append(val_loss / len(val_loader.dataset))
    return train_losses, val_losses


def pair_tutorial(data, epochs=EPOCHS):
    for cls in (SimpleMLP, MLPWithBN):
        torch.manual_seed(0)
        tutorial_train(cls(*SIZES), *data, epochs=epochs)


def pair_train_model(data, epochs=EPOCHS):
    for cls in (SimpleMLP, MLPWithBN):
        torch.manual_seed(0)
        train_model(cls(*SIZES), *make_loaders(*data, seed=0), epochs, LR, verbose=False)


def default_view(data, epochs=EPOCHS):
    return sweep.run(list(range(SEEDS)), [LR], epochs=epochs, data=data)


def batch4_view(data, epochs=EPOCHS):
    return sweep.run(list(range(SEEDS)), [LR], epochs=epochs, batch_size=4, data=data)


def explorer_view(batch_size=BATCH, kept=None):
    """What the comparison explorer does after a control change: train epoch by epoch, draw
    the first partial result at once, later ones when ``Redraws`` says so, then the final one
    with its table, redrawing into the figure it keeps (``kept["fig"]``, as the explorer's
    ``figure``). Returns (seconds to the first figure, seconds to the final figure, figures
    drawn)."""
    kept = {"fig": None} if kept is None else kept
    start = time.perf_counter()
    redraws, first, drawn = Redraws(), None, 0
    for result in compare_stream(lr=LR, epochs=EPOCHS, batch_size=batch_size, n_seeds=SEEDS):
        if result.finished or redraws.due(done=result.epochs_run, total=result.epochs):
            t = time.perf_counter()
            kept["fig"] = compare_figure(result, fig=kept["fig"])
            figure_png(kept["fig"])
            drawn += 1
            redraws.drew(time.perf_counter() - t)
            first = first or time.perf_counter() - start
    compare_summary(result)
    return first, time.perf_counter() - start, drawn


def best_views(repeats):
    """Best (first, final) of ``explorer_view`` for batch 64 and 4, repeats interleaved, each
    into a figure kept from a warm-up view (as the explorer keeps its figure)."""
    kept = {"fig": None}
    explorer_view(BATCH, kept)
    best = {64: [math.inf, math.inf, 0], 4: [math.inf, math.inf, 0]}
    for _ in range(repeats):
        for batch_size, b in best.items():
            first, final, drawn = explorer_view(batch_size, kept)
            b[:] = min(b[0], first), min(b[1], final), drawn
    return best


def products_floor(batch_size, n_train, replicas=SEEDS, epochs=EPOCHS, steps=200):
    """Seconds that the matrix products and Adam's fused step alone take in a default-view
    sweep at ``batch_size`` (two groups of ``replicas``): per step the 3 forward, 3
    weight-gradient and 2 input-gradient products as ``bmm`` over the replicas (which the CPU
    runs as one small product per replica) and one ``_fused_adam_`` over the parameters,
    timed for ``steps`` steps and scaled to the run's ``2 * epochs * ceil(n / batch)``."""
    n, (f, h1, h2, out) = batch_size, SIZES
    layers = [(f, h1), (h1, h2), (h2, out)]
    W = [torch.randn(replicas, o, i) for i, o in layers]
    b = [torch.randn(replicas, 1, o) for _, o in layers]
    gW = [torch.empty(replicas, o, i) for i, o in layers]
    x = [torch.randn(replicas, n, i) for i, _ in layers]
    g = [torch.randn(replicas, n, o) for _, o in layers]
    P = replicas * -(-sum(i * o + o for i, o in layers) // 64) * 64
    adam = [[torch.zeros(P)], [torch.randn(P)], [torch.zeros(P)], [torch.zeros(P)]]
    step = [torch.ones(())]

    def one_step():
        for k in range(3):
            torch.baddbmm(b[k], x[k], W[k].mT)
            torch.bmm(g[k].mT, x[k], out=gW[k])
            if k:
                torch.bmm(g[k], W[k])
        torch._fused_adam_(
            *adam, [], step, lr=LR, beta1=sweep.BETA1, beta2=sweep.BETA2, weight_decay=0.0,
            eps=sweep.ADAM_EPS, amsgrad=False, maximize=False,
        )  # fmt: skip

    per_step = _best_time(one_step, calls=steps, repeats=3)
    return per_step * 2 * epochs * math.ceil(n_train / batch_size)


def pair_flops(n_train, n_val, epochs=EPOCHS):
    """Matmul FLOPs of training one pair: forward + 2 backward products per training sample,
    one forward per validation sample, 2 FLOPs per multiply-add, both models alike."""
    macs = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))  # per sample, forward
    per_model = epochs * (3 * 2 * macs * n_train + 2 * macs * n_val)
    return 2 * per_model


def _best_time(fn, calls=50, repeats=5):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def matmul_rates(replicas=SEEDS):
    """GFLOP/s of (a) the training's matrix products, each as one bmm over ``replicas`` (as
    the default view batches them) with its faster operand layout, and (b) a 256x256 mm."""
    n, (f, h1, h2, out) = BATCH, SIZES
    shapes = [  # (rows, inner, cols) of the forward, grad-input and grad-weight products
        (n, f, h1), (n, h1, h2), (n, h2, out),
        (n, out, h2), (n, h2, h1),
        (out, n, h2), (h2, n, h1), (h1, n, f),
    ]  # fmt: skip
    flops = seconds = 0.0
    for m, k, c in shapes:
        a, b = torch.randn(replicas, m, k), torch.randn(replicas, k, c)
        b_t = b.mT.contiguous().mT  # same values, column-major operand
        seconds += min(_best_time(functools.partial(torch.bmm, a, rhs)) for rhs in (b, b_t))
        flops += 2 * replicas * m * k * c
    x, y = torch.randn(256, 256), torch.randn(256, 256)
    peak = 2 * 256**3 / _best_time(lambda: x @ y) / 1e9
    return flops / seconds / 1e9, peak


def best_times(tasks, repeats):
    """Best wall time of each task, repeats interleaved round-robin."""
    best = {name: float("inf") for name in tasks}
    for _ in range(repeats):
        for name, task in tasks.items():
            start = time.perf_counter()
            task()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(repeats=3):
    torch.set_num_threads(1)
    data = load_data()
    # Warm-up: lazy imports (the first torch.optim optimizer costs ~1 s), allocator, caches.
    pair_tutorial(data, epochs=1)
    pair_train_model(data, epochs=1)
    default_view(data, epochs=1)

    times = best_times(
        {
            "tutorial": lambda: pair_tutorial(data),
            "train_model": lambda: pair_train_model(data),
            "sweep": lambda: default_view(data),
            "sweep4": lambda: batch4_view(data),
        },
        repeats,
    )
    views = best_views(max(1, repeats // 2))
    rate, peak = matmul_rates()
    n_train, n_val = data[0].shape[0], data[1].shape[0]
    floors = {bs: products_floor(bs, n_train) for bs in (BATCH, 4)}
    flops = pair_flops(n_train, n_val)
    floor, peak_floor = flops / (rate * 1e9), flops / (peak * 1e9)
    tutorial, trainer, per_pair = times["tutorial"], times["train_model"], times["sweep"] / SEEDS

    def mark(ok):
        return "yes" if ok else "**no**"

    rows = [
        ("Tutorial loop (DataLoader), pair", f"{tutorial:.3f} s", ""),
        ("`train_model` + `make_loaders`, pair", f"{trainer:.3f} s", ""),
        (
            f"`sweep.run`, {SEEDS} seeds x 1 lr x 2 models (default view)",
            f"{times['sweep']:.3f} s",
            f"< 1 s: {mark(times['sweep'] < 1)}",
        ),
        ("`sweep.run`, per pair", f"{per_pair:.3f} s", ""),
        (
            f"`sweep.run`, {SEEDS} seeds x 2 models at batch 4 (200 steps per epoch)",
            f"{times['sweep4']:.3f} s",
            f"within 3x tutorial pair: {mark(times['sweep4'] <= 3 * tutorial)} "
            f"({times['sweep4'] / tutorial:.2f}x)",
        ),
    ]
    for batch_size, floor_s in floors.items():
        rows.append(
            (
                f"Its products and Adam steps alone, batch {batch_size} (8 `bmm` + 1 fused "
                "Adam per step and group)",
                f"{floor_s:.3f} s = {floor_s / tutorial:.2f}x tutorial pair",
                "",
            )
        )
    for batch_size, (first, final, drawn) in views.items():
        view = "default view" if batch_size == BATCH else f"batch size {batch_size}"
        target = 1 if batch_size == BATCH else 3
        rows += [
            (
                f"Comparison explorer, {view}: first figure after a change (epoch 1 trained, "
                "drawn)",
                f"{first:.3f} s = {first / tutorial:.2f}x tutorial pair",
                f"<= 0.25x: {mark(first <= 0.25 * tutorial)}",
            ),
            (
                f"Comparison explorer, {view}: final figure ({drawn} figures drawn in all)",
                f"{final:.3f} s = {final / tutorial:.2f}x tutorial pair",
                f"<= {target}x: {mark(final <= target * tutorial)}",
            ),
        ]
    rows += [
        (
            f"Matmul floor, pair: {flops / 1e9:.2f} GFLOP at {rate:.0f} GFLOP/s "
            f"(these shapes, batched)",
            f"{floor:.3f} s",
            "",
        ),
        (
            f"Same FLOPs at 256x256 mm peak ({peak:.0f} GFLOP/s)",
            f"{peak_floor:.3f} s",
            "",
        ),
        (
            "Speed-up tutorial / `train_model`",
            f"{tutorial / trainer:.1f}x",
            f">= 1.5x: {mark(tutorial / trainer >= 1.5)}",
        ),
        (
            "Speed-up tutorial / sweep per pair",
            f"{tutorial / per_pair:.1f}x",
            f">= 6x: {mark(tutorial / per_pair >= 6)}",
        ),
        (
            "Sweep per pair / floor",
            f"{per_pair / floor:.1f}x",
            f"<= 3x: {mark(per_pair / floor <= 3)}",
        ),
        ("Sweep per pair / peak floor", f"{per_pair / peak_floor:.1f}x", ""),
    ]
    print(
        f"Training the tutorial's pair (SimpleMLP + MLPWithBN), {EPOCHS} epochs, batch {BATCH}, "
        f"Adam lr {LR}; torch {torch.__version__}, 1 thread, best of {repeats}.\n"
    )
    print("| What | Time / ratio | Target |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
