"""Interactive explorers (ipywidgets) for the notebooks.

Every explorer is built in three layers, so that the logic is tested without a browser:

1. a pure function computing the explorer's state (tensors and numbers, no widgets);
2. a function drawing that state into a matplotlib ``Figure`` (no pyplot, no global style);
3. a builder wiring widgets to the two; its callbacks only read the controls, call 1 and 2,
   and put the figure into an ``ipywidgets.Image`` as PNG bytes.

Nothing happens at import time. Importing this module is only for notebooks.

Explorers: ``layer_explorer`` (notebook 03), ``compare_explorer`` and ``lrsweep_explorer``
(notebook 04, backed by the batched engine ``bnteach.sweep``).

The "inside the layer" explorer (names start with ``layer_``): one ``nn.BatchNorm1d`` of
``LAYER_FEATURES`` features fed with synthetic batches whose population mean and variance are
known, so the running statistics can be compared with the truth.
"""

import asyncio
import copy
import html
import io
import math
import numbers

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torch import nn

from bnteach import sweep
from bnteach.plots import plot_final_by_lr, plot_seed_spread

# ============================================================================= layer explorer

LAYER_FEATURES = 4
LAYER_POP_MEAN = torch.tensor([2.0, -1.0, 0.5, 0.0], dtype=torch.float64)
LAYER_POP_STD = torch.tensor([1.0, 0.5, 2.0, 1.5], dtype=torch.float64)
LAYER_MAX_STEPS = 1000
_LAYER_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def _layer_check(batch_size, momentum, steps, training):
    """Raise ValueError/TypeError with a teaching message for settings the layer rejects."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size must be a whole number, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be a whole number, got {steps!r}.")
    if not 0 <= steps <= LAYER_MAX_STEPS:
        raise ValueError(f"steps must be between 0 and {LAYER_MAX_STEPS}, got {steps}.")
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"momentum must be a number in [0, 1], got {momentum!r}.")
    if not 0 <= momentum <= 1:
        raise ValueError(
            f"momentum must be in [0, 1], got {momentum}. In PyTorch it is the weight of the "
            f"NEW batch: running = (1 - momentum) * running + momentum * batch."
        )
    if batch_size == 1 and (training or steps > 0):
        what = "showing a batch in train mode" if training else "the training steps"
        raise ValueError(
            f"Batch size 1 cannot be used for {what}: in training mode BatchNorm computes a "
            f"variance over the batch, and one sample has none. PyTorch raises "
            f"'Expected more than 1 value per channel when training'. Use a batch size of at "
            f"least 2 (drop_last=True in a DataLoader avoids a last batch of one), or predict a "
            f"single sample in eval mode (with 0 training steps here)."
        )


def layer_batches(batch_size, steps, seed=0):
    """The explorer's stream of synthetic batches: float64 tensor (steps + 1, N, C).

    N = batch_size, C = LAYER_FEATURES. Every sample is drawn independently from a normal
    distribution with mean LAYER_POP_MEAN and standard deviation LAYER_POP_STD (per feature).
    Batches 0 .. steps-1 are the training steps; the last one is the batch on display.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(steps + 1, batch_size, LAYER_FEATURES, generator=g, dtype=torch.float64)
    return z * LAYER_POP_STD + LAYER_POP_MEAN


def layer_state(batch_size=16, momentum=0.1, shift=0.0, training=True, steps=0, seed=0):
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
    _layer_check(batch_size, momentum, steps, training)
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


def _layer_bars(ax, batch, running, pop, title):
    """Grouped bars per feature: this batch's statistic vs the running one; population dashes."""
    idx = torch.arange(LAYER_FEATURES).tolist()
    w = 0.38
    ax.bar([i - w / 2 for i in idx], batch.tolist(), w, color="tab:blue", label="this batch")
    ax.bar([i + w / 2 for i in idx], running.tolist(), w, color="tab:orange", label="running")
    ax.hlines(
        pop.tolist(),
        [i - w for i in idx],
        [i + w for i in idx],
        colors="black",
        linestyles="--",
        lw=1.5,
        label="population",
    )
    ax.axhline(0, color="gray", lw=0.6)
    ax.set_xticks(idx, [f"feature {i}" for i in idx])
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def layer_figure(state):
    """Draw a ``layer_state`` dict: a 2x2 ``Figure``.

    Top: per-feature mean and variance of the displayed batch vs the running statistics, with
    the population values dashed. Bottom left: running_mean after each batch. Bottom right: the
    outputs of sample 0 (which carries the shift) and sample 1, with and without the shift.
    """
    s = state
    fig = Figure(figsize=(10, 6.2), layout="constrained")
    (ax_mean, ax_var), (ax_hist, ax_out) = fig.subplots(2, 2)
    _layer_bars(ax_mean, s["batch_mean"], s["running_mean"], s["pop_mean"], "mean")
    _layer_bars(ax_var, s["batch_var"], s["running_var"], s["pop_var"], "variance")

    hist = s["running_mean_history"]
    steps = list(range(hist.shape[0]))
    style = ".-" if len(steps) <= 30 else "-"
    for c, color in zip(range(LAYER_FEATURES), _LAYER_COLORS):
        ax_hist.plot(steps, hist[:, c].tolist(), style, color=color, lw=1.6, label=f"feature {c}")
        ax_hist.axhline(float(s["pop_mean"][c]), color=color, ls="--", lw=1)
    ax_hist.set_xlim(-0.5, max(len(steps) - 1, 10) + 0.5)
    ax_hist.set(xlabel="batches seen in train mode (num_batches_tracked)")
    ax_hist.set_title("running_mean after each batch (dashed: population mean)", fontsize=10)
    ax_hist.grid(alpha=0.3)
    ax_hist.legend(fontsize=8, ncol=2)

    idx = list(range(LAYER_FEATURES))
    for sample, dx, marker, color in ((0, -0.12, "o", "tab:purple"), (1, 0.12, "s", "tab:gray")):
        if sample >= s["y"].shape[0]:
            continue
        xs = [i + dx for i in idx]
        ax_out.plot(
            xs,
            s["y"][sample].tolist(),
            marker,
            color=color,
            ms=8,
            ls="none",
            label=f"sample {sample}",
        )
        ax_out.plot(
            xs,
            s["y_unshifted"][sample].tolist(),
            marker,
            color=color,
            ms=8,
            ls="none",
            mfc="none",
            label=f"sample {sample}, no shift",
        )
    ax_out.axhline(0, color="gray", lw=0.6)
    ax_out.set_xticks(idx, [f"feature {i}" for i in idx])
    ax_out.set_xlim(-0.6, LAYER_FEATURES - 0.4)
    others = (s["y"][1:] - s["y_unshifted"][1:]).abs()
    moved = float(others.max()) if others.numel() else 0.0
    ax_out.set_title(
        f"layer output (hollow: same batch, no shift)\nshift {s['shift']:+.1f} on sample 0 "
        f"moved the other samples by up to {moved:.2f}",
        fontsize=10,
    )
    ax_out.grid(alpha=0.3)
    ax_out.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))

    mode = (
        "TRAIN mode: normalized with this batch's statistics"
        if s["training"]
        else ("EVAL mode: normalized with the running statistics")
    )
    fig.suptitle(
        f"{mode}  ·  batch size {s['batch_size']}  ·  momentum {s['momentum']:g}  ·  "
        f"num_batches_tracked {s['num_batches_tracked']}",
        fontsize=11,
    )
    return fig


def layer_png(state, dpi=72):
    """PNG bytes of ``layer_figure(state)``."""
    return figure_png(layer_figure(state), dpi=dpi)


class LayerExplorer(widgets.VBox):
    """The "inside the layer" explorer: controls, a message line and the figure as an Image.

    Controls (attributes): ``layer_batch_size``, ``layer_momentum``, ``layer_shift`` (sliders),
    ``layer_mode`` (train/eval), ``layer_steps`` (training batches seen before the display
    batch) with buttons ``layer_step1``, ``layer_step10``, ``layer_reset``. Output:
    ``layer_message`` (HTML) and ``layer_image`` (PNG). ``layer_renders`` counts refreshes.
    """

    def __init__(self, batch_size=16, momentum=0.1, shift=0.0, training=True, seed=0):
        style = {"description_width": "110px"}
        batch = widgets.IntSlider(
            value=batch_size,
            min=1,
            max=64,
            description="batch size",
            continuous_update=False,
            style=style,
        )
        mom = widgets.FloatSlider(
            value=momentum,
            min=0.0,
            max=1.0,
            step=0.01,
            description="momentum",
            continuous_update=False,
            style=style,
        )
        shift_w = widgets.FloatSlider(
            value=shift,
            min=-10.0,
            max=10.0,
            step=0.5,
            description="shift sample 0",
            continuous_update=False,
            style=style,
        )
        mode = widgets.ToggleButtons(
            options=[("train", True), ("eval", False)],
            value=training,
            description="mode",
            style=style,
        )
        steps = widgets.BoundedIntText(
            value=0,
            min=0,
            max=LAYER_MAX_STEPS,
            description="steps seen",
            style=style,
            layout=widgets.Layout(width="180px"),
        )
        step1 = widgets.Button(description="+1 training step")
        step10 = widgets.Button(description="+10 training steps")
        reset = widgets.Button(description="reset (fresh layer)")
        message = widgets.HTML()
        image = widgets.Image(format="png")
        super().__init__(
            children=[
                widgets.HBox([batch, mom]),
                widgets.HBox([shift_w, mode]),
                widgets.HBox([steps, step1, step10, reset]),
                message,
                image,
            ]
        )
        self.layer_batch_size, self.layer_momentum, self.layer_shift = batch, mom, shift_w
        self.layer_mode, self.layer_steps = mode, steps
        self.layer_step1, self.layer_step10, self.layer_reset = step1, step10, reset
        self.layer_message, self.layer_image = message, image
        self.layer_seed = seed
        self.layer_renders = 0

        for w in (batch, mom, shift_w, mode, steps):
            w.observe(self._layer_changed, names="value")
        step1.on_click(lambda _: self._layer_add_steps(1))
        step10.on_click(lambda _: self._layer_add_steps(10))
        reset.on_click(lambda _: setattr(steps, "value", 0))
        self.layer_refresh()

    def _layer_changed(self, _change):
        self.layer_refresh()

    def _layer_add_steps(self, k):
        self.layer_steps.value = min(self.layer_steps.value + k, LAYER_MAX_STEPS)

    def layer_refresh(self):
        """Recompute the state for the current controls and redraw (or show why not)."""
        self.layer_renders += 1
        try:
            state = layer_state(
                batch_size=self.layer_batch_size.value,
                momentum=self.layer_momentum.value,
                shift=self.layer_shift.value,
                training=self.layer_mode.value,
                steps=self.layer_steps.value,
                seed=self.layer_seed,
            )
        except (ValueError, TypeError) as err:
            self.layer_message.value = error_html(err)
            self.layer_image.layout.display = "none"
            return
        self.layer_image.value = layer_png(state)
        self.layer_image.layout.display = None
        if state["training"]:
            note = (
                "Train mode: the output uses this batch's mean and variance, and this forward "
                "pass also moved the running statistics."
            )
        else:
            note = "Eval mode: the output uses the running statistics, which stay unchanged."
        self.layer_message.value = f"{note} num_batches_tracked = {state['num_batches_tracked']}."


def layer_explorer(batch_size=16, momentum=0.1, shift=0.0, training=True, seed=0):
    """Build the "inside the layer" explorer (a ``LayerExplorer``, an ipywidgets VBox)."""
    return LayerExplorer(batch_size, momentum, shift, training, seed)


# ======================================================================== shared plumbing


def figure_png(fig, dpi=72):
    """PNG bytes of a matplotlib ``Figure``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def error_html(err):
    """An in-widget message for an impossible combination of settings."""
    return (
        f'<div style="color:#a40000;border:1px solid #a40000;padding:4px">'
        f"<b>Not possible:</b> {html.escape(str(err))}</div>"
    )


class Debouncer:
    """Run ``action`` once, ``delay`` seconds after the last of a burst of ``trigger()`` calls.

    While a learner drags a slider or holds an arrow key, each change would otherwise queue a
    full recomputation for a value already left behind. Inside a Jupyter kernel the delayed call
    goes through the kernel's asyncio loop; where no loop runs (plain Python, tests) or with
    ``delay=0`` the action runs at once. ``call_later(delay, fn)`` may be injected for tests;
    it must return an object with ``cancel()``.
    """

    def __init__(self, action, delay=0.3, call_later=None):
        self.action, self.delay, self._call_later = action, delay, call_later
        self._pending = None

    def trigger(self):
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        call_later = self._call_later
        if call_later is None and self.delay > 0:
            try:
                call_later = asyncio.get_running_loop().call_later
            except RuntimeError:
                call_later = None
        if call_later is None or self.delay <= 0:
            self.action()
        else:
            self._pending = call_later(self.delay, self._fire)

    def _fire(self):
        self._pending = None
        self.action()


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


def compare_run(
    lr=0.01, epochs=25, batch_size=64, n_seeds=8, depth=2, activation="relu", device=None
):
    """Train plain and BN nets for seeds ``0 .. n_seeds-1`` at one ``lr``: a ``SweepResult``."""
    if not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"n_seeds must be a whole number >= 1, got {n_seeds!r}.")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth (hidden layers) must be a whole number >= 1, got {depth!r}.")
    if batch_size == 1:
        raise ValueError(
            "batch size 1: a BN layer in training mode needs at least 2 samples per batch to "
            "compute a variance (the plain net could train, but there would be nothing to "
            "compare). Pick 2 or more."
        )
    return sweep.run(
        seeds=list(range(n_seeds)),
        lrs=[lr],
        epochs=epochs,
        batch_size=batch_size,
        models=compare_models(depth, activation),
        device=device,
    )


def epochs_to_reach(history, threshold=COMPARE_LOSS_THRESHOLD):
    """First epoch (1-based) whose validation loss is below ``threshold``, or ``None``."""
    return next((e for e, v in enumerate(history.val_loss, 1) if v < threshold), None)


def compare_summary(result, threshold=COMPARE_LOSS_THRESHOLD):
    """Per model: final validation accuracy (mean, min, max), median epochs until the
    validation loss falls below ``threshold`` (``None`` if most seeds never get there), and
    how many replicas diverged."""
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


def compare_figure(result):
    """Train/validation loss and validation accuracy, mean and spread over seeds."""
    groups = {
        "Without BN": result.histories(model="plain"),
        "With BN": result.histories(model="BN"),
    }
    worst = max((v for h in result.histories() for v in h.train_loss if v == v), default=1.0)
    fig = plot_seed_spread(groups, metrics=("train_loss", "val_loss", "val_acc"), log_y=worst > 10)
    # A fixed layout: constrained layout would cost a third of the PNG rendering time.
    fig.set_layout_engine(None)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.97, wspace=0.22)
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


class SettingsExplorer(widgets.VBox):
    """Base of the training explorers: rows of controls, a message line, then the outputs.

    A subclass lists its ``controls`` and ``outputs`` and implements ``settings()`` (the
    control values) and ``render(settings)`` (compute and fill the outputs; raise
    ``ValueError`` for an impossible combination, which is then shown inside the widget).
    Changes are debounced by ``debounce`` seconds; a refresh whose settings equal the last
    rendered ones does nothing. ``renders`` counts real recomputations.
    """

    def __init__(self, controls, outputs, debounce=0.3, per_row=3):
        self.message = widgets.HTML()
        self.outputs = widgets.VBox(outputs)
        self.renders = 0
        self._last = None
        rows = [widgets.HBox(controls[i : i + per_row]) for i in range(0, len(controls), per_row)]
        super().__init__(children=[*rows, self.message, self.outputs])
        self._debouncer = Debouncer(self.refresh, delay=debounce)
        for w in controls:
            w.observe(lambda _change: self._debouncer.trigger(), names="value")
        self.refresh()

    def settings(self):
        raise NotImplementedError

    def render(self, settings):
        raise NotImplementedError

    def refresh(self):
        """Recompute and redraw for the current settings, or say why that is not possible."""
        settings = self.settings()
        if settings == self._last:
            return
        self._last = settings
        self.renders += 1
        try:
            self.message.value = self.render(settings)
        except (ValueError, TypeError) as err:
            self.message.value = error_html(err)
            self.outputs.layout.display = "none"
            return
        self.outputs.layout.display = None


class CompareExplorer(SettingsExplorer):
    """Plain vs BN over seeds: the figure (``image``, PNG) and a summary ``table``.

    Controls (attributes): ``lr`` (log slider), ``epochs``, ``batch_size``, ``seeds``,
    ``depth``, ``activation``.
    """

    def __init__(
        self,
        lr=0.01,
        epochs=25,
        batch_size=64,
        n_seeds=8,
        depth=2,
        activation="relu",
        debounce=0.3,
        device=None,
    ):
        style = {"description_width": "110px"}
        self.lr = widgets.FloatLogSlider(
            value=lr,
            base=10,
            min=-4,
            max=0.5,
            step=0.125,
            description="learning rate",
            continuous_update=False,
            readout_format=".3g",
            style=style,
        )
        self.epochs = widgets.IntSlider(
            value=epochs, min=1, max=60, description="epochs", continuous_update=False, style=style
        )
        self.batch_size = widgets.SelectionSlider(
            options=COMPARE_BATCH_SIZES,
            value=batch_size,
            description="batch size",
            continuous_update=False,
            style=style,
        )
        self.seeds = widgets.IntSlider(
            value=n_seeds, min=1, max=16, description="seeds", continuous_update=False, style=style
        )
        self.depth = widgets.IntSlider(
            value=depth,
            min=1,
            max=8,
            description="hidden layers",
            continuous_update=False,
            style=style,
        )
        self.activation = widgets.Dropdown(
            options=COMPARE_ACTIVATIONS, value=activation, description="activation", style=style
        )
        self.image = widgets.Image(format="png")
        self.table = widgets.HTML()
        self.device = device
        controls = [self.lr, self.epochs, self.batch_size, self.seeds, self.depth, self.activation]
        super().__init__(controls, [self.image, self.table], debounce)

    def settings(self):
        """The current control values as keyword arguments of ``compare_run``."""
        return {
            "lr": self.lr.value,
            "epochs": self.epochs.value,
            "batch_size": self.batch_size.value,
            "n_seeds": self.seeds.value,
            "depth": self.depth.value,
            "activation": self.activation.value,
        }

    def render(self, settings):
        result = compare_run(**settings, device=self.device)
        self.image.value = figure_png(compare_figure(result))
        self.table.value = compare_html(compare_summary(result))
        return (
            f"{len(result)} models trained: plain and BN, seeds 0-{settings['n_seeds'] - 1}, "
            f"lr {settings['lr']:.3g}. Thick line: mean over seeds; band: min to max."
        )


def compare_explorer(**settings):
    """Build the comparison explorer (a ``CompareExplorer``); see its arguments."""
    return CompareExplorer(**settings)


# ============================================================== learning-rate sweep explorer


def lrsweep_lrs(low_exp=-3.0, high_exp=0.0, points=7):
    """``points`` learning rates evenly spaced on a log scale from 10**low_exp to 10**high_exp."""
    if not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be a whole number >= 2, got {points!r}.")
    if not low_exp < high_exp:
        raise ValueError(
            f"the lowest learning rate must be below the highest ({low_exp} vs "
            f"{high_exp} as powers of 10)."
        )
    step = (high_exp - low_exp) / (points - 1)
    return [float(10 ** (low_exp + i * step)) for i in range(points)]


def lrsweep_summary(result, metric):
    """``{"Without BN"|"With BN": {lr: [final metric per seed]}}`` for ``plot_final_by_lr``.

    A diverged replica counts as accuracy 0.5 (guessing) and is left out of losses."""
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
            by_lr[lr] = vals or [float("nan")]
        out[label] = by_lr
    return out


class LrSweepExplorer(SettingsExplorer):
    """Final validation accuracy and loss against learning rate, plain vs BN, over seeds.

    Controls: ``lr_range`` (powers of 10), ``points``, ``epochs``, ``seeds``, ``depth``.
    Outputs: ``acc_image`` and ``loss_image`` (PNG).
    """

    def __init__(
        self,
        low_exp=-3.0,
        high_exp=0.0,
        points=7,
        epochs=15,
        n_seeds=4,
        depth=2,
        debounce=0.3,
        device=None,
    ):
        style = {"description_width": "110px"}
        self.lr_range = widgets.FloatRangeSlider(
            value=(low_exp, high_exp),
            min=-4,
            max=0.5,
            step=0.25,
            description="lr from 10^ to 10^",
            continuous_update=False,
            style=style,
        )
        self.points = widgets.IntSlider(
            value=points,
            min=2,
            max=12,
            description="learning rates",
            continuous_update=False,
            style=style,
        )
        self.epochs = widgets.IntSlider(
            value=epochs, min=1, max=40, description="epochs", continuous_update=False, style=style
        )
        self.seeds = widgets.IntSlider(
            value=n_seeds, min=1, max=10, description="seeds", continuous_update=False, style=style
        )
        self.depth = widgets.IntSlider(
            value=depth,
            min=1,
            max=8,
            description="hidden layers",
            continuous_update=False,
            style=style,
        )
        self.acc_image = widgets.Image(format="png")
        self.loss_image = widgets.Image(format="png")
        self.device = device
        controls = [self.lr_range, self.points, self.epochs, self.seeds, self.depth]
        super().__init__(controls, [widgets.HBox([self.acc_image, self.loss_image])], debounce)

    def settings(self):
        return (
            self.lr_range.value,
            self.points.value,
            self.epochs.value,
            self.seeds.value,
            self.depth.value,
        )

    def render(self, settings):
        (low, high), points, epochs, n_seeds, depth = settings
        result = sweep.run(
            seeds=list(range(n_seeds)),
            lrs=lrsweep_lrs(low, high, points),
            epochs=epochs,
            models=compare_models(depth),
            device=self.device,
        )
        for image, metric in ((self.acc_image, "val_acc"), (self.loss_image, "val_loss")):
            image.value = figure_png(plot_final_by_lr(lrsweep_summary(result, metric), metric))
        n_div = sum(d is not None for d in result.diverged_at)
        return (
            f"{len(result)} models: {points} learning rates x {n_seeds} seeds x 2 models, "
            f"{epochs} epochs, {depth} hidden layers; {n_div} diverged. Dots: seeds; line: mean."
        )


def lrsweep_explorer(**settings):
    """Build the learning-rate sweep explorer (a ``LrSweepExplorer``)."""
    return LrSweepExplorer(**settings)
