"""Figures for the notebooks. Each function returns a matplotlib ``Figure`` and changes no
global style; diverged runs (NaN/inf losses) are drawn up to the epoch where they diverged and
marked with an x. Every run given is drawn; input that cannot be drawn raises ValueError.

Sizes are for where the figures are shown: ``FIG_WIDTH`` inches at ``FIG_DPI`` is 960 px,
the width of a JupyterLab notebook cell, so nothing is scaled up; text is at least 9.5 pt,
13 px at that dpi (JupyterLab's body text is 13-14 px).
"""

import functools
import math

import matplotlib
import matplotlib.collections
import matplotlib.lines
import matplotlib.patches
import matplotlib.text
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from bnteach import checks

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
FIG_WIDTH, FIG_DPI = 9.6, 100  # 960 px
STYLE = {
    "font.size": 10.0,
    "axes.titlesize": 11.0,
    "axes.labelsize": 10.0,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "legend.fontsize": 9.5,
    "figure.titlesize": 11.5,
}


def styled(draw):
    """Decorator: draw under ``STYLE`` (a temporary ``rc_context``; the global style is left
    as it was)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def new_figure(height, width=FIG_WIDTH, layout="constrained"):
    """A ``Figure`` of ``width`` x ``height`` inches at ``FIG_DPI``."""
    height = checks.positive_number(height, "height (inches)", example=4.5)
    width = checks.positive_number(width, "width (inches)", example=FIG_WIDTH)
    return Figure(figsize=(width, height), dpi=FIG_DPI, layout=layout)


def color(i):
    """The ``i``-th color: ``COLORS`` first, then the rest of tab20 (any ``i`` >= 0)."""
    if i < len(COLORS):
        return COLORS[i]
    return matplotlib.colormaps["tab20"]((i - len(COLORS)) % 20)


def _need(mapping, name, what):
    if not hasattr(mapping, "items") or len(mapping) == 0:
        raise ValueError(f"Nothing to draw: {name} is empty (or not a dict); give {what}.")


METRICS = ("train_loss", "val_loss", "val_acc")


def _history(h, name):
    """``h`` if it looks like a :class:`bnteach.training.History` (per-epoch lists)."""
    if not all(hasattr(h, m) for m in (*METRICS, "diverged_at")):
        raise TypeError(
            f"{name} must be a History (what train_model returns, or one of "
            f"SweepResult.histories()), got {checks.describe(h)}."
        )
    return h


def _metric(metric):
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}.")
    return metric


def _epochs(values):
    return list(range(1, len(values) + 1))


def _finite(values):
    """The finite prefix of ``values`` (a diverged run's curve stops where it diverged)."""
    out = []
    for v in values:
        if not math.isfinite(v):
            break
        out.append(v)
    return out


def _mark_divergence(ax, history, color):
    if history.diverged_at is not None:
        last = _finite(history.train_loss)
        y = last[-1] if last else 1.0
        ax.plot([history.diverged_at], [y], "x", color=color, markersize=10, mew=2)


@styled
def plot_losses(histories, title="Training and validation loss", log_y=False):
    """Train (dashed) and validation (solid) loss per epoch for several runs.

    histories: dict name -> ``History``, e.g. ``{"Without BN": h1, "With BN": h2}``.
    """
    _need(histories, "histories", 'a dict name -> History, e.g. {"With BN": history}')
    for name, h in histories.items():
        _history(h, f"histories[{name!r}]")
    checks.flag(log_y, "log_y")
    fig = new_figure(4.6)
    ax = fig.add_subplot()
    for i, (name, h) in enumerate(histories.items()):
        c = color(i)
        train, val = _finite(h.train_loss), _finite(h.val_loss)
        ax.plot(_epochs(train), train, "--", color=c, label=f"{name}: train")
        ax.plot(_epochs(val), val, "-", color=c, label=f"{name}: validation")
        _mark_divergence(ax, h, c)
    ax.set(xlabel="epoch", ylabel="BCE loss", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    # Beside the panel, never over the curves (inside, it covered the first epochs' losses).
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper")
    return fig


def _spread(runs, metric):
    """Per-epoch (mean, min, max) over runs, ignoring non-finite values."""
    length = max(len(getattr(h, metric)) for h in runs)
    mean, low, high = [], [], []
    for e in range(length):
        vals = [getattr(h, metric)[e] for h in runs if e < len(getattr(h, metric))]
        vals = [v for v in vals if math.isfinite(v)]
        if not vals:
            break
        mean.append(sum(vals) / len(vals))
        low.append(min(vals))
        high.append(max(vals))
    return mean, low, high


_SPREAD_LABELS = {
    "train_loss": "train loss",
    "val_loss": "validation loss",
    "val_acc": "validation accuracy",
}


def _spread_inputs(groups, metrics, log_y):
    """``plot_seed_spread``'s input checks; returns ``metrics`` as a tuple."""
    _need(groups, "groups", 'a dict name -> list of History, e.g. {"With BN": [h1, h2]}')
    for name, runs in groups.items():
        if isinstance(runs, (str, bytes)) or not isinstance(runs, (list, tuple)):
            raise TypeError(
                f"groups[{name!r}] must be a list of History (one per seed), got "
                f"{checks.describe(runs)}."
            )
        if len(runs) == 0:
            raise ValueError(f"Nothing to draw for group {name!r}: its list of runs is empty.")
        for k, h in enumerate(runs):
            _history(h, f"groups[{name!r}][{k}]")
    if isinstance(metrics, str):
        metrics = (metrics,)
    if not isinstance(metrics, (list, tuple)) or not metrics:
        raise ValueError(f"metrics must be a non-empty list from {list(METRICS)}, got {metrics!r}.")
    for metric in metrics:
        _metric(metric)
    checks.flag(log_y, "log_y")
    return tuple(metrics)


def _spread_axes(fig, metrics):
    """The panels to draw into: a new figure's, or ``fig``'s emptied of curves and legend."""
    if fig is None:
        fig = new_figure(4.2 if len(metrics) > 1 else 4.6)
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, metric in zip(axes, metrics):
            ax.set(xlabel="epoch", ylabel=_SPREAD_LABELS[metric])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        fig.bnteach_spread_metrics = metrics
        return list(axes)
    if getattr(fig, "bnteach_spread_metrics", None) != metrics:
        raise ValueError(
            f"fig must be a figure that plot_seed_spread drew for the same metrics "
            f"{list(metrics)}; got {checks.describe(fig)}. Leave fig out for a new figure."
        )
    for ax in fig.axes:  # keep the panels and their ticks, drop the curves and the legend
        for artist in [*ax.lines, *ax.collections]:
            artist.remove()
    for legend in list(fig.legends):
        legend.remove()
    return list(fig.axes)


def _draw_spread(ax, name, runs, metric, c):
    """One group's curves in one panel: every seed thin, the mean thick, the min-max band."""
    for h in runs:
        vals = _finite(getattr(h, metric))
        ax.plot(_epochs(vals), vals, "-", color=c, alpha=0.25, lw=0.8)
        if metric != "val_acc":
            _mark_divergence(ax, h, c)
    mean, low, high = _spread(runs, metric)
    x = _epochs(mean)
    n_div = sum(h.diverged for h in runs)
    label = f"{name} (mean of {len(runs)} seeds"
    label += f", {n_div} diverged)" if n_div else ")"
    ax.fill_between(x, low, high, color=c, alpha=0.15)
    marker = "o" if len(x) == 1 else None  # one epoch: a point, not an invisible line
    ax.plot(x, mean, "-", color=c, lw=2.2, marker=marker, label=label)


@styled
def plot_seed_spread(groups, metrics=("train_loss", "val_loss"), title=None, log_y=False, fig=None):
    """Mean over seeds (line), min-max band (shaded) and every seed (thin lines).

    groups: dict name -> list of ``History`` (one per seed); every group and every run is
    drawn. metrics: one panel per metric, any of ``train_loss``, ``val_loss``, ``val_acc``.
    log_y: loss panels on a log scale (for runs whose early loss is huge).
    fig: a figure that an earlier call returned for the same metrics, to draw into again:
    its panels, ticks and labels are kept and only the curves are replaced, which renders
    about a third faster (for explorers that redraw as results stream in).
    """
    metrics = _spread_inputs(groups, metrics, log_y)
    axes = _spread_axes(fig, metrics)
    fig = axes[0].figure
    for ax, metric in zip(axes, metrics):
        for i, (name, runs) in enumerate(groups.items()):
            _draw_spread(ax, name, runs, metric, color(i))
        scale = "log" if log_y and metric != "val_acc" else "linear"
        if ax.get_yscale() != scale:
            ax.set_yscale(scale)
        # The data limits again from the new curves alone (every band lies within its runs'
        # thin lines), for a redrawn figure as for a new one.
        ax.relim()
        ax.autoscale_view()
    # One legend for all panels (the groups are the same in each), above them: inside a panel
    # it would cover data somewhere (the first epochs' high losses, a late accuracy peak).
    # The title is the legend's: a suptitle and a legend "outside upper center" would overlap.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside upper center",
        ncol=min(len(labels), 3),
        frameon=False,
        title=title or None,
        title_fontsize=STYLE["figure.titlesize"],
    )
    return fig


def final_by_lr_axes(ax, summary, metric="val_acc"):
    """Draw ``plot_final_by_lr``'s content into ``ax`` (see there)."""
    _need(summary, "summary", "a dict name -> {lr: [final values]}")
    _metric(metric)
    for name, by_lr in summary.items():
        _need(by_lr, f"summary[{name!r}]", "a dict lr -> list of final values (one per seed)")
        for lr, vals in by_lr.items():
            if isinstance(vals, (str, bytes)) or not isinstance(vals, (list, tuple)):
                raise TypeError(
                    f"summary[{name!r}][{lr!r}] must be a list of final values (one per seed), "
                    f"got {checks.describe(vals)}."
                )
        bad = [lr for lr in by_lr if not (isinstance(lr, (int, float)) and lr > 0)]
        if bad:
            raise ValueError(
                f"summary[{name!r}] has learning rate(s) {bad}: a log axis can only show "
                f"positive numbers. Leave them out or plot them separately."
            )
    for i, (name, by_lr) in enumerate(summary.items()):
        c = color(i)
        lrs = sorted(by_lr)
        shown, empty = [], []
        for lr in lrs:
            vals = [v for v in by_lr[lr] if math.isfinite(v)]
            if not vals:
                empty.append(lr)
                continue
            x = lr * (1 + 0.06 * (i - 0.5))
            ax.plot([x] * len(vals), vals, "o", color=c, alpha=0.4, ms=4)
            shown.append((lr, sum(vals) / len(vals)))
        label = f"{name} (mean; dots = seeds)"
        if empty:
            label += f"; no finite value at lr {', '.join(f'{lr:.3g}' for lr in empty)}"
        ax.plot([p[0] for p in shown], [p[1] for p in shown], "-", color=c, lw=2, label=label)
    ax.set_xscale("log")
    # Learning rates as one types them (0.001, 0.01, ...), not as 10^-3 (mathtext, which
    # would also cost a third of the drawing time); no minor ticks (each is an artist, and
    # together they cost about half of it).
    ax.xaxis.set_major_formatter(FuncFormatter(lambda lr, _: f"{lr:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    labels = {"val_acc": "final validation accuracy", "val_loss": "final validation loss"}
    ax.set(xlabel="learning rate", ylabel=labels.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend()


@styled
def plot_final_by_lr_pair(summaries, title=None):
    """Two panels side by side, 960 px wide: ``summaries`` is ``{metric: summary}`` (e.g.
    ``{"val_acc": ..., "val_loss": ...}``), each drawn as in :func:`plot_final_by_lr`."""
    _need(summaries, "summaries", "a dict metric -> summary")
    fig = new_figure(4.2)
    axes = fig.subplots(1, len(summaries), squeeze=False)[0]
    for ax, (metric, summary) in zip(axes, summaries.items()):
        final_by_lr_axes(ax, summary, metric)
    if title:
        fig.suptitle(title)
    return fig


LAYER_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def _layer_bars(ax, batch, running, pop, title):
    """Grouped bars per feature: this batch's statistic vs the running one; population dashes."""
    idx = list(range(len(batch)))
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
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.08), frameon=False)


@styled
def plot_layer_state(state):
    """Draw a :func:`bnteach.explore.layer_state` dict: a 2x2 ``Figure``, 960 px wide.

    Top: per-feature mean and variance of the displayed batch vs the running statistics, with
    the population values dashed. Bottom left: running_mean after each batch (integer x axis).
    Bottom right: the outputs of sample 0 (which carries the shift) and sample 1, with and
    without the shift.
    """
    needed = ("x", "batch_mean", "running_mean", "pop_mean", "running_mean_history")
    if not isinstance(state, dict) or any(k not in state for k in needed):
        raise TypeError(
            f"plot_layer_state draws the dict of bnteach.explore.layer_state(...), got "
            f"{checks.describe(state)}."
        )
    s = state
    features = s["x"].shape[1]
    # A fixed layout: constrained layout would cost about half of the rendering time.
    fig = new_figure(7.4, layout=None)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.17, top=0.84, wspace=0.16, hspace=0.62)
    (ax_mean, ax_var), (ax_hist, ax_out) = fig.subplots(2, 2)
    _layer_bars(ax_mean, s["batch_mean"], s["running_mean"], s["pop_mean"], "mean")
    _layer_bars(ax_var, s["batch_var"], s["running_var"], s["pop_var"], "variance")

    hist = s["running_mean_history"]
    steps = list(range(hist.shape[0]))
    style = ".-" if len(steps) <= 30 else "-"
    for c in range(features):
        col = LAYER_COLORS[c % len(LAYER_COLORS)]
        ax_hist.plot(steps, hist[:, c].tolist(), style, color=col, lw=1.6, label=f"feature {c}")
        ax_hist.axhline(float(s["pop_mean"][c]), color=col, ls="--", lw=1)
    ax_hist.set_xlim(-0.5, max(len(steps) - 1, 10) + 0.5)
    ax_hist.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_hist.set(xlabel="batches seen in train mode (num_batches_tracked)")
    ax_hist.set_title("running_mean after each batch (dashed: population mean)")
    ax_hist.grid(alpha=0.3)
    # Below the panel, as the output panel's: inside it covered the curves.
    ax_hist.legend(ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)

    idx = list(range(features))
    for sample, dx, marker, col in ((0, -0.12, "o", "tab:purple"), (1, 0.12, "s", "tab:gray")):
        if sample >= s["y"].shape[0]:
            continue
        xs = [i + dx for i in idx]
        ax_out.plot(xs, s["y"][sample].tolist(), marker, color=col, ms=8, ls="none",
                    label=f"sample {sample}")  # fmt: skip
        ax_out.plot(xs, s["y_unshifted"][sample].tolist(), marker, color=col, ms=8, ls="none",
                    mfc="none", label=f"sample {sample}, no shift")  # fmt: skip
    ax_out.axhline(0, color="gray", lw=0.6)
    ax_out.set_xticks(idx, [f"feature {i}" for i in idx])
    ax_out.set_xlim(-0.6, features - 0.4)
    others = (s["y"][1:] - s["y_unshifted"][1:]).abs()
    moved = float(others.max()) if others.numel() else 0.0
    ax_out.set_title(
        f"layer output (hollow: without the shift)\nshift {s['shift']:+.1f} on sample 0 "
        f"moved the others by up to {moved:.2f}"
    )
    ax_out.grid(alpha=0.3)
    ax_out.legend(ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)

    mode = (
        "TRAIN mode: normalized with this batch's statistics"
        if s["training"]
        else "EVAL mode: normalized with the running statistics"
    )
    fig.suptitle(
        f"{mode}  ·  batch size {s['batch_size']}  ·  momentum {s['momentum']:g}  ·  "
        f"num_batches_tracked {s['num_batches_tracked']}"
    )
    return fig


@styled
def plot_final_by_lr(summary, metric="val_acc", title=None):
    """Final ``metric`` against learning rate (log x axis), one marker per seed.

    summary: dict name -> dict lr -> list of final values (one per seed); every name and lr
    is drawn; an lr without a finite value is named in the legend; lr <= 0 raises ValueError.
    """
    fig = new_figure(4.4, width=FIG_WIDTH * 0.7)
    ax = fig.add_subplot()
    final_by_lr_axes(ax, summary, metric)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


@styled
def plot_paired(comparisons, margin=None, xlabel="difference (A - B)", title=None, scale=1.0):
    """Paired differences over seeds, one row per comparison: every seed (dots), the mean
    (diamond) and its confidence interval (bar), 0 (line) and the ``+/- margin`` band.

    comparisons: dict label -> :class:`bnteach.stats.Paired`.
    scale: multiply the differences for display (e.g. 100 to show accuracy in points).
    """
    if not isinstance(comparisons, dict) or not comparisons:
        raise ValueError(
            "plot_paired needs a non-empty dict label -> Paired, e.g. "
            "{'lr 0.01': paired(bn_acc, plain_acc)}."
        )
    for label, p in comparisons.items():
        if not all(hasattr(p, a) for a in ("diffs", "mean", "low", "high", "n", "confidence")):
            raise TypeError(
                f"comparisons[{label!r}] must be a Paired (from bnteach.stats.paired(a, b)), "
                f"got {checks.describe(p)}."
            )
    if margin is not None:
        margin = checks.positive_number(margin, "margin", example=0.02, allow_zero=True)
    scale = checks.positive_number(scale, "scale", example=100)
    rows = list(comparisons.items())
    fig = new_figure(1.3 + 0.55 * len(rows))
    ax = fig.add_subplot()
    if margin is not None:
        ax.axvspan(
            -margin * scale,
            margin * scale,
            color="tab:green",
            alpha=0.12,
            label=f"+/- margin ({margin * scale:g})",
        )
    ax.axvline(0, color="black", lw=1)
    for y, (_label, p) in enumerate(reversed(rows)):
        jitter = [((i * 0.618) % 1 - 0.5) * 0.35 for i in range(p.n)]
        ax.plot(
            [d * scale for d in p.diffs],
            [y + j for j in jitter],
            "o",
            color="tab:blue",
            alpha=0.35,
            ms=4,
            label="one seed" if y == 0 else None,
        )
        ax.plot(
            [p.low * scale, p.high * scale],
            [y, y],
            "-",
            color="tab:red",
            lw=4,
            solid_capstyle="butt",
            label=f"{p.confidence:.0%} interval" if y == 0 else None,
        )
        ax.plot(
            [p.mean * scale],
            [y],
            "D",
            color="tab:red",
            ms=8,
            mec="black",
            label="mean" if y == 0 else None,
        )
    ax.set_yticks(range(len(rows)), [f"{label}\n({p.n} seeds)" for label, p in reversed(rows)])
    ax.set(xlabel=xlabel, title=title)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(loc="best", fontsize=9)
    return fig


# ======================================================================= checking a figure


def _spans_the_panel(artist, ax):
    """A reference line or band across the whole panel (``axhline``, ``axvspan``, ...)."""
    data = getattr(artist, "get_data_transform", artist.get_transform)()
    across = (ax.get_xaxis_transform(), ax.get_yaxis_transform())
    return any(t is a for a in across for t in (artist.get_transform(), data))


def _covers(artist, box):
    """Whether ``artist`` (a line, markers, a band, bars) has data inside ``box`` (pixels)."""
    if isinstance(artist, matplotlib.lines.Line2D):
        path = artist.get_transform().transform_path(artist.get_path())
        if artist.get_linestyle() not in ("None", "none", "", " "):
            if path.intersects_bbox(box, filled=False):
                return True
        return artist.get_marker() not in (None, "None", "none", "", " ") and bool(
            box.count_contains(path.vertices[np.isfinite(path.vertices).all(axis=1)])
        )
    if isinstance(artist, matplotlib.collections.Collection):
        offsets = artist.get_offsets()
        if len(artist.get_paths()) and len(offsets) > 1:  # markers: scatter points
            points = artist.get_offset_transform().transform(offsets)
            return bool(box.count_contains(points[np.isfinite(points).all(axis=1)]))
        filled = len(artist.get_facecolor()) > 0 and artist.get_facecolor()[0][3] > 0
        paths = [artist.get_transform().transform_path(p) for p in artist.get_paths()]
        return any(p.intersects_bbox(box, filled) for p in paths)
    if isinstance(artist, matplotlib.patches.Patch):
        return artist.get_window_extent().overlaps(box)
    return False


def _labels(fig):
    """The figure's titles, axis labels and tick labels (what a legend must not cover)."""
    texts = [fig._suptitle, fig._supxlabel, fig._supylabel, *fig.texts]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        for axis, labels, coord in (
            (ax.xaxis, ax.get_xticklabels(), 0),
            (ax.yaxis, ax.get_yticklabels(), 1),
        ):
            low, high = sorted(axis.get_view_interval())
            texts += [t for t in labels if low <= t.get_position()[coord] <= high]  # drawn ones
    return [t for t in texts if t is not None and t.get_visible() and t.get_text().strip()]


def legend_overlaps(fig):
    """Where a legend covers data or text: one line per legend and panel or text, empty when
    none does.

    Data are a panel's lines, markers, bands, bars and error bars; reference lines and bands
    across the whole panel (``axhline``, ``axvspan``) are not. Text is the figure's titles and
    axis and tick labels (constrained layout, for one, puts a legend placed "outside upper
    center" over the figure's suptitle). Lays the figure out first.
    """
    if not hasattr(fig, "draw_without_rendering"):
        raise TypeError(f"legend_overlaps needs a matplotlib Figure, got {checks.describe(fig)}.")
    fig.draw_without_rendering()
    legends = [(ax.get_legend(), [ax]) for ax in fig.axes] + [(lg, fig.axes) for lg in fig.legends]
    found = []
    for legend, axes in legends:
        if legend is None or not legend.get_visible():
            continue
        box = legend.get_window_extent()
        for ax in axes:
            if not ax.get_visible() or not ax.bbox.overlaps(box):
                continue
            drawn = [*ax.lines, *ax.collections, *ax.patches]
            hit = [a for a in drawn if a.get_visible() and not _spans_the_panel(a, ax)]
            hit = [a for a in hit if _covers(a, box)]
            if hit:
                labels = sorted({a.get_label() for a in hit if not a.get_label().startswith("_")})
                title = ax.get_title() or ax.get_ylabel() or f"panel {fig.axes.index(ax) + 1}"
                what = ", ".join(labels) if labels else f"{len(hit)} unlabelled artists"
                found.append(f"legend over data in {title!r}: {what}")
        for text in _labels(fig):
            if text.get_window_extent().overlaps(box):
                found.append(f"legend over the text {text.get_text()[:50]!r}")
    return found


def figure_report(fig):
    """What a reader gets from ``fig`` at its drawn size: ``{"width_px": figure width in
    pixels at its dpi, "min_text_px": its smallest visible text in pixels, "legend_overlaps":
    legend_overlaps(fig)}``. Notebook figures should be at most ``FIG_WIDTH * FIG_DPI`` wide
    (the cell width) with text of at least 9 pt at 100 dpi (12.5 px)."""
    overlaps = legend_overlaps(fig)  # lays the figure out
    sizes = [
        t.get_fontsize()
        for t in fig.findobj(matplotlib.text.Text)
        if t.get_visible() and t.get_text().strip() and t.get_figure(root=True) is fig
    ]
    return {
        "width_px": round(fig.get_figwidth() * fig.dpi),
        "min_text_px": round(min(sizes) * fig.dpi / 72, 2) if sizes else None,
        "legend_overlaps": overlaps,
    }
