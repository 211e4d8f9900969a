"""The explorers' computations, without any user interface (no ipywidgets here).

Each explorer of :mod:`bnteach.widgets` is a thin shell over these functions, which notebooks,
tests and the benchmark call directly:

- "inside the layer" (notebook 03): :func:`layer_state`, drawn by
  :func:`bnteach.plots.plot_layer_state`;
- comparison (notebook 04): :func:`compare_run` / :func:`compare_stream`,
  :func:`compare_summary`, :func:`compare_figure`, :func:`compare_caption`;
- learning-rate sweep (notebook 04): :func:`lrsweep_lrs`, :func:`lrsweep_run` /
  :func:`lrsweep_stream`, :func:`lrsweep_summary`, :func:`lrsweep_figure`.

The ``*_stream`` functions yield a partial :class:`bnteach.sweep.SweepResult` after each epoch,
so a caller can draw the curves as they grow; :class:`Redraws` decides when a redraw is worth
its cost.
"""

import copy
import io
import math
import time

import torch
from torch import nn

from bnteach import checks, sweep
from bnteach.plots import FIG_DPI, METRICS, plot_final_by_lr_pair, plot_seed_spread
from bnteach.stats import seeds as default_seeds

# ============================================================================= layer explorer

LAYER_FEATURES = 4
LAYER_POP_MEAN = torch.tensor([2.0, -1.0, 0.5, 0.0], dtype=torch.float64)
LAYER_POP_STD = torch.tensor([1.0, 0.5, 2.0, 1.5], dtype=torch.float64)
LAYER_MAX_STEPS = 1000


def _layer_check(batch_size, momentum, steps, training, shift=0.0, seed=None):
    """Raise ValueError/TypeError with a teaching message for settings the layer rejects."""
    checks.flag(training, "training")
    checks.finite_number(shift, "shift (added to sample 0)", example=3.0)
    if seed is not None:
        checks.seed(seed)
    checks.whole_number(batch_size, "batch_size", minimum=1, example=16)
    checks.whole_number(steps, "steps", example=10)
    if not 0 <= steps <= LAYER_MAX_STEPS:
        raise ValueError(f"steps must be between 0 and {LAYER_MAX_STEPS}, got {steps}.")
    checks.momentum(momentum, allow_none=False)
    if batch_size == 1 and (training or steps > 0):
        what = "showing a batch in train mode" if training else "the training steps"
        raise ValueError(
            f"Batch size 1 cannot be used for {what}: in training mode BatchNorm computes a "
            f"variance over the batch, and one sample has none. PyTorch raises "
            f"'Expected more than 1 value per channel when training'. Use a batch size of at "
            f"least 2 (drop_last=True in a DataLoader avoids a last batch of one), or predict a "
            f"single sample in eval mode (with 0 training steps here)."
        )


def layer_batches(batch_size, steps, seed=None):
    """The explorer's stream of synthetic batches: float64 tensor (steps + 1, N, C).

    ``seed=None`` takes the first of ``bnteach.stats.seeds(1)`` (BNTEACH_SEED_OFFSET shifts it).

    N = batch_size, C = LAYER_FEATURES. Every sample is drawn independently from a normal
    distribution with mean LAYER_POP_MEAN and standard deviation LAYER_POP_STD (per feature).
    Batches 0 .. steps-1 are the training steps; the last one is the batch on display.
    """
    checks.whole_number(batch_size, "batch_size", minimum=1, example=16)
    checks.whole_number(steps, "steps", minimum=0, example=10)
    if seed is not None:
        seed = checks.seed(seed)
    g = torch.Generator().manual_seed(default_seeds(1)[0] if seed is None else seed)
    z = torch.randn(steps + 1, batch_size, LAYER_FEATURES, generator=g, dtype=torch.float64)
    return z * LAYER_POP_STD + LAYER_POP_MEAN


def layer_state(batch_size=16, momentum=0.1, shift=0.0, training=True, steps=0, seed=None):
    """What a fresh ``nn.BatchNorm1d(C, momentum=momentum)`` holds and outputs; a dict.

    The layer first sees ``steps`` training batches (train mode, running statistics updated).
    Then it gets the display batch ``x`` (N, C), whose sample 0 has ``shift`` added to every
    feature, in train mode (``training=True``; this also updates the running statistics) or eval
    mode. Keys (tensors are float64 on the CPU; C = LAYER_FEATURES, N = batch_size):

    - ``x``, ``y``: display batch and the layer's output, (N, C);
    - ``y_unshifted``: the output for the same batch without the shift, same layer state, (N, C);
    - ``batch_mean``, ``batch_var``: mean and biased variance of ``x`` over the batch, (C,);
    - ``used_mean``, ``used_var``: the statistics that normalized ``x`` (the batch's in train
      mode, the running ones in eval mode), (C,);
    - ``running_mean``, ``running_var``: the buffers after this forward pass, (C,);
    - ``running_mean_history``, ``running_var_history``: the buffers after 0, 1, 2, ... batches,
      (num_batches_tracked + 1, C);
    - ``pop_mean``, ``pop_var``: the population statistics of the input, (C,);
    - ``num_batches_tracked`` (int) and the arguments.

    Raises ValueError for a batch of one in training (with a message saying why and what to do).
    """
    _layer_check(batch_size, momentum, steps, training, shift, seed)
    seed = default_seeds(1)[0] if seed is None else seed
    batches = layer_batches(batch_size, steps, seed)
    layer = nn.BatchNorm1d(LAYER_FEATURES, momentum=float(momentum), dtype=torch.float64)
    means, variances = [layer.running_mean.clone()], [layer.running_var.clone()]
    with torch.no_grad():
        layer.train()
        for xb in batches[:-1]:
            layer(xb)
            means.append(layer.running_mean.clone())
            variances.append(layer.running_var.clone())

        layer.train(training)
        before = copy.deepcopy(layer)
        x = batches[-1].clone()
        x[0] += shift
        batch_mean, batch_var = x.mean(0), x.var(0, unbiased=False)
        if training:
            used_mean, used_var = batch_mean, batch_var
        else:
            used_mean, used_var = layer.running_mean.clone(), layer.running_var.clone()
        y = layer(x)
        y_unshifted = before(batches[-1])
        if training:
            means.append(layer.running_mean.clone())
            variances.append(layer.running_var.clone())

    return {
        "x": x,
        "y": y,
        "y_unshifted": y_unshifted,
        "batch_mean": batch_mean,
        "batch_var": batch_var,
        "used_mean": used_mean,
        "used_var": used_var,
        "running_mean": layer.running_mean.clone(),
        "running_var": layer.running_var.clone(),
        "running_mean_history": torch.stack(means),
        "running_var_history": torch.stack(variances),
        "pop_mean": LAYER_POP_MEAN.clone(),
        "pop_var": LAYER_POP_STD**2,
        "num_batches_tracked": int(layer.num_batches_tracked),
        "batch_size": batch_size,
        "momentum": float(momentum),
        "shift": float(shift),
        "training": bool(training),
        "steps": steps,
        "seed": seed,
    }


def layer_note(state):
    """One sentence on what the displayed forward pass did."""
    if state["training"]:
        note = (
            "Train mode: the output uses this batch's mean and variance, and this forward "
            "pass also moved the running statistics."
        )
    else:
        note = "Eval mode: the output uses the running statistics, which stay unchanged."
    return f"{note} num_batches_tracked = {state['num_batches_tracked']}."


# ======================================================================== shared plumbing


def figure_png(fig, dpi=FIG_DPI):
    """PNG bytes of a matplotlib ``Figure``, at the figure's own size: ``width_in * dpi``
    pixels wide (the plots here are 9.6 in at 100 dpi: 960 px, JupyterLab's cell width).
    Compressed at zlib level 1: a tenth less time than the default level 6 for a PNG a
    tenth larger (an explorer draws several while results stream in)."""
    if not hasattr(fig, "savefig"):
        raise TypeError(f"figure_png needs a matplotlib Figure, got {checks.describe(fig)}.")
    dpi = checks.positive_number(dpi, "dpi", example=FIG_DPI)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    return buf.getvalue()


class Redraws:
    """When to redraw a figure while results stream in: the first partial result at once, then
    only once at least ``min_interval`` seconds, ``ratio`` times the last drawing's cost and
    ``growth`` times the time since the start have passed since the last drawing ended. So
    drawing takes at most ~1/(1+ratio) of the time (a quarter by default: twice a second is
    live enough, and each figure drawn in between delays the final one), and a long run is
    redrawn ever less often (a few times in all, not once per interval). Given the progress
    (``done`` of ``total`` steps), a redraw is also skipped when the final result is
    expected within ``min_interval`` at the pace so far: it will be drawn soon anyway. The
    final result is always drawn. ``clock`` may be injected for tests; times count from the
    construction."""

    def __init__(self, min_interval=0.5, ratio=3.0, growth=0.5, clock=time.perf_counter):
        self.min_interval, self.ratio, self.growth, self.clock = min_interval, ratio, growth, clock
        self._start, self._next = clock(), None

    def due(self, final=False, done=None, total=None):
        if final or self._next is None:
            return True
        now = self.clock()
        if now < self._next:
            return False
        if done and total is not None and total > done:
            remaining = (now - self._start) / done * (total - done)
            return remaining >= self.min_interval
        return True

    def drew(self, seconds):
        """Record that a drawing just ended, having taken ``seconds``."""
        now = self.clock()
        wait = max(self.min_interval, self.ratio * seconds, self.growth * (now - self._start))
        self._next = now + wait


def _seed_text(seeds):
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]})"
    return f"{len(seeds)} seed{'s' * (len(seeds) != 1)} ({', '.join(map(str, seeds))})"


def _hidden_text(depth):
    return "2 hidden layers (128, 64)" if depth == 2 else f"{depth} hidden layers of 64"


# ==================================================================== comparison explorer

COMPARE_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
COMPARE_ACTIVATIONS = ("relu", "tanh", "sigmoid")
COMPARE_LOSS_THRESHOLD = 0.2


def compare_models(depth=2, activation="relu"):
    """The sweep's ``models`` for a plain and a BN net with ``depth`` hidden layers.

    Depth 2 is the tutorial's (128, 64); other depths use 64 units per hidden layer.
    """
    hidden = (128, 64) if depth == 2 else (64,) * depth
    common = {"hidden_sizes": hidden, "activation": activation}
    return {"plain": {**common, "norm": "none"}, "BN": {**common, "norm": "batch"}}


def _compare_args(lr, epochs, batch_size, n_seeds, depth, activation, device):
    checks.whole_number(n_seeds, "n_seeds (how many seeds)", minimum=1)
    checks.whole_number(depth, "depth (hidden layers)", minimum=1)
    if batch_size == 1:
        raise ValueError(
            "batch size 1: a BN layer in training mode needs at least 2 samples per batch to "
            "compute a variance (the plain net could train, but there would be nothing to "
            "compare). Pick 2 or more."
        )
    return {
        "seeds": default_seeds(n_seeds),
        "lrs": [lr],
        "epochs": epochs,
        "batch_size": batch_size,
        "models": compare_models(depth, activation),
        "device": device,
    }


def compare_run(
    lr=0.01,
    epochs=25,
    batch_size=64,
    n_seeds=8,
    depth=2,
    activation="relu",
    device=None,
    on_epoch=None,
):
    """Train plain and BN nets for ``bnteach.stats.seeds(n_seeds)`` at one ``lr``: a
    ``SweepResult`` (``on_epoch`` as in :func:`bnteach.sweep.run`)."""
    args = _compare_args(lr, epochs, batch_size, n_seeds, depth, activation, device)
    return sweep.run(**args, on_epoch=on_epoch)


def compare_stream(
    lr=0.01, epochs=25, batch_size=64, n_seeds=8, depth=2, activation="relu", device=None
):
    """:func:`compare_run` as a generator of partial results, one per epoch."""
    return sweep.stream(**_compare_args(lr, epochs, batch_size, n_seeds, depth, activation, device))


def _compare_result(result, models=("plain", "BN")):
    """``result`` if it is a SweepResult holding ``models`` (what the explorers draw)."""
    if not isinstance(result, sweep.SweepResult):
        raise TypeError(
            f"result must be a SweepResult (from compare_run, lrsweep_run or sweep.run), got "
            f"{checks.describe(result)}."
        )
    missing = [m for m in models if m not in result.models]
    if missing:
        raise ValueError(
            f"result has the models {list(result.models)}, but this draws {list(models)}: "
            f"train it with sweep.run's default models (or compare_run / lrsweep_run)."
        )
    return result


def compare_caption(result, depth=None, activation=None):
    """Every setting a comparison figure belongs to, as one line of text."""
    _compare_result(result)
    spec = result.models["BN"]
    depth = len(spec["hidden_sizes"]) if depth is None else depth
    activation = spec["activation"] if activation is None else activation
    done = "" if result.finished else f" (so far {result.epochs_run})"
    return (
        f"plain vs BN, {_seed_text(result.seeds)}, lr {result.lrs[0]:.3g}, "
        f"batch size {result.batch_size}, {result.epochs} epochs{done}, {_hidden_text(depth)}, "
        f"{activation}, on {result.device.type}"
    )


def epochs_to_reach(history, threshold=COMPARE_LOSS_THRESHOLD):
    """First epoch (1-based) whose validation loss is below ``threshold``, or ``None``."""
    if not hasattr(history, "val_loss"):
        raise TypeError(f"history must be a History, got {checks.describe(history)}.")
    checks.positive_number(threshold, "threshold", example=COMPARE_LOSS_THRESHOLD)
    return next((e for e, v in enumerate(history.val_loss, 1) if v < threshold), None)


def compare_summary(result, threshold=COMPARE_LOSS_THRESHOLD):
    """Per model: final validation accuracy (mean, min, max), median epochs until the
    validation loss falls below ``threshold`` (``None`` if most seeds never get there), and
    how many replicas diverged."""
    _compare_result(result)
    checks.positive_number(threshold, "threshold", example=COMPARE_LOSS_THRESHOLD)
    out = {}
    for model in result.models:
        hs = result.histories(model=model)
        acc = [h.val_acc[-1] if not h.diverged else float("nan") for h in hs]
        finite = [a for a in acc if a == a]
        reach = [epochs_to_reach(h, threshold) for h in hs]
        reach = sorted(math.inf if e is None else e for e in reach)
        median = reach[(len(reach) - 1) // 2]
        out[model] = {
            "acc_mean": sum(finite) / len(finite) if finite else float("nan"),
            "acc_min": min(finite, default=float("nan")),
            "acc_max": max(finite, default=float("nan")),
            "epochs_to_threshold": None if median == math.inf else median,
            "diverged": sum(h.diverged for h in hs),
            "seeds": len(hs),
        }
    return out


def compare_figure(result, fig=None):
    """Train/validation loss and validation accuracy, mean and spread over seeds; the x axis
    spans all ``result.epochs`` so that a partial result's curves grow into a fixed frame.
    fig: a figure this function returned before, to redraw into (its panels and ticks are
    kept: a third cheaper, which is what an explorer needs while results stream in)."""
    _compare_result(result)
    groups = {
        "Without BN": result.histories(model="plain"),
        "With BN": result.histories(model="BN"),
    }
    worst = max((v for h in result.histories() for v in h.train_loss if v == v), default=1.0)
    metrics = ("train_loss", "val_loss", "val_acc")
    new = fig is None
    fig = plot_seed_spread(groups, metrics=metrics, log_y=worst > 10, fig=fig)
    for ax in fig.axes:
        ax.set_xlim(0.5, result.epochs + 0.5)
    if new:
        # A fixed layout: constrained layout would cost a third of the PNG rendering time.
        fig.set_layout_engine(None)
        fig.subplots_adjust(left=0.065, right=0.99, bottom=0.13, top=0.9, wspace=0.25)
    return fig


def compare_html(summary, threshold=COMPARE_LOSS_THRESHOLD):
    """A small HTML table of ``compare_summary``."""
    rows = []
    for model, s in summary.items():
        reach = s["epochs_to_threshold"]
        rows.append(
            f"<tr><td>{'Without BN' if model == 'plain' else 'With BN'}</td>"
            f"<td>{s['acc_mean']:.3f} ({s['acc_min']:.3f} to {s['acc_max']:.3f})</td>"
            f"<td>{reach if reach is not None else 'not reached'}</td>"
            f"<td>{s['diverged']} of {s['seeds']}</td></tr>"
        )
    head = (
        "<tr><th>model</th><th>final val accuracy: mean (min to max over seeds)</th>"
        f"<th>epochs until val loss &lt; {threshold} (median)</th><th>diverged</th></tr>"
    )
    style = "<style>.bnteach-summary td, .bnteach-summary th {padding: 2px 10px}</style>"
    return f'{style}<table class="bnteach-summary">{head}{"".join(rows)}</table>'


# ============================================================== learning-rate sweep explorer


def lrsweep_lrs(low_exp=-3.0, high_exp=0.0, points=7):
    """``points`` learning rates evenly spaced on a log scale from 10**low_exp to 10**high_exp."""
    checks.whole_number(points, "points", minimum=2)
    for value, name in ((low_exp, "low_exp"), (high_exp, "high_exp")):
        checks.finite_number(value, f"{name} (the learning rate is 10**{name})", example=-3)
        if not -30 <= value <= 30:  # also keeps 10 ** value a finite float
            raise ValueError(
                f"{name} must be an exponent between -30 and 30 (useful learning rates lie "
                f"between 1e-5 and 10: exponents -5 to 1), got {value!r}."
            )
    if not low_exp < high_exp:
        raise ValueError(
            f"the lowest learning rate must be below the highest ({low_exp} vs "
            f"{high_exp} as powers of 10)."
        )
    step = (high_exp - low_exp) / (points - 1)
    return [float(10 ** (low_exp + i * step)) for i in range(points)]


def _lrsweep_args(low_exp, high_exp, points, epochs, n_seeds, depth, device):
    checks.whole_number(n_seeds, "n_seeds (how many seeds)", minimum=1)
    checks.whole_number(depth, "depth (hidden layers)", minimum=1)
    return {
        "seeds": default_seeds(n_seeds),
        "lrs": lrsweep_lrs(low_exp, high_exp, points),
        "epochs": epochs,
        "models": compare_models(depth),
        "device": device,
    }


def lrsweep_run(
    low_exp=-3.0, high_exp=0.0, points=7, epochs=15, n_seeds=4, depth=2, device=None, on_epoch=None
):
    """Plain and BN nets at ``lrsweep_lrs(low_exp, high_exp, points)``: a ``SweepResult``."""
    args = _lrsweep_args(low_exp, high_exp, points, epochs, n_seeds, depth, device)
    return sweep.run(**args, on_epoch=on_epoch)


def lrsweep_stream(
    low_exp=-3.0, high_exp=0.0, points=7, epochs=15, n_seeds=4, depth=2, device=None
):
    """:func:`lrsweep_run` as a generator of partial results, one per epoch."""
    return sweep.stream(**_lrsweep_args(low_exp, high_exp, points, epochs, n_seeds, depth, device))


def lrsweep_summary(result, metric):
    """``{"Without BN"|"With BN": {lr: [final metric per seed]}}`` for ``plot_final_by_lr``.

    A diverged replica counts as accuracy 0.5 (guessing) and is left out of losses; an lr whose
    replicas all diverged has the empty list (``plot_final_by_lr`` says so in its legend)."""
    _compare_result(result)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}.")
    out = {}
    for model, label in (("plain", "Without BN"), ("BN", "With BN")):
        by_lr = {}
        for lr in result.lrs:
            vals = []
            for h in result.histories(model=model, lr=lr):
                if not h.diverged:
                    vals.append(getattr(h, metric)[-1])
                elif metric == "val_acc":
                    vals.append(0.5)
            by_lr[lr] = vals
        out[label] = by_lr
    return out


def lrsweep_figure(result):
    """Final validation accuracy (left) and loss (right) against the learning rate."""
    done = "" if result.finished else f" ({result.epochs_run} so far)"
    summaries = {m: lrsweep_summary(result, m) for m in ("val_acc", "val_loss")}
    fig = plot_final_by_lr_pair(summaries, title=f"after {result.epochs} epochs{done}")
    # A fixed layout: constrained layout would cost more than half the rendering time.
    fig.set_layout_engine(None)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.12, top=0.92, wspace=0.2)
    return fig


def lrsweep_caption(result, depth=None):
    _compare_result(result)
    spec = result.models["BN"]
    depth = len(spec["hidden_sizes"]) if depth is None else depth
    lrs = result.lrs
    return (
        f"plain vs BN, {len(lrs)} learning rates from {lrs[0]:.3g} to {lrs[-1]:.3g}, "
        f"{_seed_text(result.seeds)}, batch size {result.batch_size}, {result.epochs} epochs, "
        f"{_hidden_text(depth)}, relu, on {result.device.type}"
    )
