"""Figures for the notebooks. Each function returns a matplotlib ``Figure`` and changes no
global style; diverged runs (NaN/inf losses) are drawn up to the epoch where they diverged and
marked with an x."""

import math

from matplotlib.figure import Figure

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


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


def plot_losses(histories, title="Training and validation loss", log_y=False):
    """Train (dashed) and validation (solid) loss per epoch for several runs.

    histories: dict name -> ``History``, e.g. ``{"Without BN": h1, "With BN": h2}``.
    """
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for (name, h), color in zip(histories.items(), COLORS):
        train, val = _finite(h.train_loss), _finite(h.val_loss)
        ax.plot(_epochs(train), train, "--", color=color, label=f"{name}: train")
        ax.plot(_epochs(val), val, "-", color=color, label=f"{name}: validation")
        _mark_divergence(ax, h, color)
    ax.set(xlabel="epoch", ylabel="BCE loss", title=title)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
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


def plot_seed_spread(groups, metrics=("train_loss", "val_loss"), title=None, log_y=False):
    """Mean over seeds (line), min-max band (shaded) and every seed (thin lines).

    groups: dict name -> list of ``History`` (one per seed).
    metrics: one panel per metric, any of ``train_loss``, ``val_loss``, ``val_acc``.
    log_y: loss panels on a log scale (for runs whose early loss is huge).
    """
    labels = {
        "train_loss": "train loss",
        "val_loss": "validation loss",
        "val_acc": "validation accuracy",
    }
    fig = Figure(figsize=(5 * len(metrics), 4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for (name, runs), color in zip(groups.items(), COLORS):
            for h in runs:
                vals = _finite(getattr(h, metric))
                ax.plot(_epochs(vals), vals, "-", color=color, alpha=0.25, lw=0.8)
                if metric != "val_acc":
                    _mark_divergence(ax, h, color)
            mean, low, high = _spread(runs, metric)
            x = _epochs(mean)
            n_div = sum(h.diverged for h in runs)
            label = f"{name} (mean of {len(runs)} seeds"
            label += f", {n_div} diverged)" if n_div else ")"
            ax.fill_between(x, low, high, color=color, alpha=0.15)
            ax.plot(x, mean, "-", color=color, lw=2.2, label=label)
        ax.set(xlabel="epoch", ylabel=labels.get(metric, metric))
        if log_y and metric != "val_acc":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_final_by_lr(summary, metric="val_acc", title=None):
    """Final ``metric`` against learning rate (log x axis), one marker per seed.

    summary: dict name -> dict lr -> list of final values (one per seed).
    """
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.add_subplot()
    for i, ((name, by_lr), color) in enumerate(zip(summary.items(), COLORS)):
        lrs = sorted(by_lr)
        for lr in lrs:
            vals = by_lr[lr]
            ax.plot(
                [lr * (1 + 0.06 * (i - 0.5))] * len(vals), vals, "o", color=color, alpha=0.4, ms=4
            )
        means = [sum(by_lr[lr]) / len(by_lr[lr]) for lr in lrs]
        ax.plot(lrs, means, "-", color=color, lw=2, label=f"{name} (mean; dots = seeds)")
    ax.set_xscale("log")
    labels = {"val_acc": "final validation accuracy", "val_loss": "final validation loss"}
    ax.set(xlabel="learning rate", ylabel=labels.get(metric, metric), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


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
    rows = list(comparisons.items())
    fig = Figure(figsize=(9, 1.2 + 0.75 * len(rows)), layout="constrained")
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
