import math

import matplotlib
import pytest
from matplotlib.figure import Figure

from bnteach.plots import plot_final_by_lr, plot_final_by_lr_pair, plot_losses, plot_seed_spread
from bnteach.training import History

matplotlib.use("Agg")


def hist(scale, diverge=False):
    h = History(lr=0.1, epochs=5)
    h.train_loss = [scale / e for e in range(1, 6)]
    h.val_loss = [scale / e + 0.1 for e in range(1, 6)]
    h.val_acc = [0.5 + e / 20 for e in range(1, 6)]
    if diverge:
        h.train_loss[3:] = [math.nan]
        h.val_loss[3:] = [math.nan]
        h.val_acc[3:] = [0.5]
        h.diverged_at = 4
        del h.train_loss[4:], h.val_loss[4:], h.val_acc[4:]
    return h


def test_plot_losses_draws_train_and_val_per_model():
    fig = plot_losses({"Without BN": hist(1.0), "With BN": hist(0.5)})
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == [
        "Without BN: train",
        "Without BN: validation",
        "With BN: train",
        "With BN: validation",
    ]


def test_diverged_run_is_drawn_up_to_divergence_and_marked():
    fig = plot_losses({"big lr": hist(1.0, diverge=True)})
    train_line, val_line, marker = fig.axes[0].get_lines()
    assert len(train_line.get_xdata()) == 3
    assert list(marker.get_xdata()) == [4] and marker.get_marker() == "x"


def test_seed_spread_has_mean_and_band_per_group():
    groups = {"plain": [hist(1.0), hist(1.2), hist(0.8, diverge=True)], "BN": [hist(0.5)] * 2}
    fig = plot_seed_spread(groups, metrics=("val_loss", "val_acc"))
    assert len(fig.axes) == 2
    (legend,) = fig.legends  # one legend for both panels, outside them
    legend = [t.get_text() for t in legend.get_texts()]
    assert legend == ["plain (mean of 3 seeds, 1 diverged)", "BN (mean of 2 seeds)"]
    mean_line = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("plain")][0]
    assert mean_line.get_ydata()[0] == pytest.approx((1.1 + 1.3 + 0.9) / 3)


def test_seed_spread_log_scale_applies_to_losses_only():
    fig = plot_seed_spread({"a": [hist(1.0)]}, metrics=("train_loss", "val_acc"), log_y=True)
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "linear"]


def test_final_by_lr_uses_log_axis():
    fig = plot_final_by_lr({"plain": {0.01: [0.9, 0.95], 1.0: [0.5, 0.6]}})
    assert fig.axes[0].get_xscale() == "log"


def test_plots_leave_pyplot_state_alone():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_losses({"a": hist(1.0)})
    assert plt.get_fignums() == before


# -- drawn for the cell width, every run drawn or a reason given ---------------------------


def text_sizes(fig):
    fig.canvas.draw()
    return [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


@pytest.mark.parametrize(
    "draw",
    [
        lambda: plot_losses({"a": hist(1.0)}),
        lambda: plot_seed_spread({"a": [hist(1.0)]}, metrics=("train_loss", "val_loss", "val_acc")),
        lambda: plot_final_by_lr_pair(
            {"val_acc": {"a": {0.1: [0.9]}}, "val_loss": {"a": {0.1: [0.2]}}}
        ),
    ],
)
def test_full_width_figures_are_960_px_with_text_of_at_least_13_px(draw):
    fig = draw()
    assert fig.get_size_inches()[0] * fig.dpi == 960
    assert min(text_sizes(fig)) * fig.dpi / 72 >= 13


def test_seed_spread_draws_every_group_beyond_six_and_integer_epochs():
    groups = {f"g{i}": [hist(1.0 + i / 10)] for i in range(9)}
    fig = plot_seed_spread(groups, metrics=("val_loss",))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(legend) == 9
    colors = {ln.get_color() for ln in fig.axes[0].get_lines() if ln.get_label().startswith("g")}
    assert len(colors) == 9
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())


def test_final_by_lr_draws_every_group_and_names_an_lr_without_values():
    summary = {f"g{i}": {0.01: [0.9, 0.8], 1.0: [0.5]} for i in range(8)}
    summary["g0"][3.0] = []  # e.g. every seed diverged
    fig = plot_final_by_lr(summary)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(legend) == 8 and "no finite value at lr 3" in legend[0]


@pytest.mark.parametrize(
    "draw, match",
    [
        (lambda: plot_losses({}), "Nothing to draw"),
        (lambda: plot_seed_spread({}), "Nothing to draw"),
        (lambda: plot_seed_spread({"a": []}), "group 'a'"),
        (lambda: plot_final_by_lr({}), "Nothing to draw"),
        (lambda: plot_final_by_lr({"a": {}}), "Nothing to draw"),
        (lambda: plot_final_by_lr({"a": {0.0: [0.9], 0.1: [0.8]}}), "log axis"),
    ],
)
def test_input_that_cannot_be_drawn_raises_a_teaching_error(draw, match):
    with pytest.raises(ValueError, match=match):
        draw()


def test_plot_paired_draws_every_comparison_with_its_interval():
    from bnteach.plots import plot_paired
    from bnteach.stats import paired

    comparisons = {
        f"set {i}": paired([0.9 + 0.01 * i, 0.92, 0.91], [0.9, 0.9, 0.9]) for i in range(3)
    }
    fig = plot_paired(comparisons, margin=0.02, scale=100)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 3 and all("(3 seeds)" in t for t in labels)
    # each row: dots for seeds, one interval bar, one mean marker
    assert len(ax.lines) >= 3 * 3 + 1
    with pytest.raises(ValueError, match="non-empty dict"):
        plot_paired({})


def _pixels(fig):
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="rgba", dpi=50)
    return buf.getvalue()


def test_seed_spread_redrawn_into_a_kept_figure_looks_like_a_new_one():
    """An explorer redraws into its figure: the result must be what a new figure shows, also
    after a scale change and for fewer runs than before (no curve or legend left over)."""
    before = {"a": [hist(1.0), hist(2.0)], "b": [hist(0.5)]}
    after = {"a": [hist(30.0)], "b": [hist(0.1), hist(0.2), hist(5.0, diverge=True)]}
    metrics = ("train_loss", "val_loss", "val_acc")
    kept = plot_seed_spread(before, metrics=metrics)
    axes = list(kept.axes)
    for log_y in (True, False):
        again = plot_seed_spread(after, metrics=metrics, log_y=log_y, fig=kept)
        new = plot_seed_spread(after, metrics=metrics, log_y=log_y)
        assert again is kept and again.axes == axes
        assert [len(ax.lines) for ax in again.axes] == [len(ax.lines) for ax in new.axes]
        assert [ax.get_ylim() for ax in again.axes] == [ax.get_ylim() for ax in new.axes]
        assert _pixels(again) == _pixels(new)


def test_seed_spread_refuses_a_figure_it_did_not_draw_for_those_metrics():
    fig = plot_seed_spread({"a": [hist(1.0)]}, metrics=("train_loss",))
    with pytest.raises(ValueError, match="same metrics"):
        plot_seed_spread({"a": [hist(1.0)]}, metrics=("val_loss",), fig=fig)
    with pytest.raises(ValueError, match="Leave fig out"):
        plot_seed_spread({"a": [hist(1.0)]}, metrics=("train_loss",), fig=Figure())


def test_learning_rates_read_as_typed_without_minor_ticks():
    summary = {"a": {0.001: [0.9], 0.01: [0.8], 0.1: [0.7], 1.0: [0.6]}}
    fig = plot_final_by_lr(summary)
    _pixels(fig)  # lays out the ticks
    (ax,) = fig.axes
    shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert {"0.001", "0.01", "0.1", "1"} <= set(shown) and not any("$" in s for s in shown)
    assert ax.xaxis.get_minorticklocs().size == 0


# -- no legend over data -------------------------------------------------------------------


def test_a_legend_over_a_curve_is_found_and_one_beside_it_is_not():
    from bnteach.plots import legend_overlaps, new_figure

    fig = new_figure(3)
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [0, 1, 2], label="rising")  # passes through the upper right corner
    ax.axhline(1.0, color="gray")  # a reference line across the panel is not data
    ax.legend(loc="upper right")
    assert legend_overlaps(fig) == ["legend over data in 'panel 1': rising"]
    ax.get_legend().remove()
    ax.legend(loc="upper left")
    assert legend_overlaps(fig) == []
    fig.legend(loc="outside upper center")
    assert legend_overlaps(fig) == []


def test_markers_bands_and_error_bars_count_as_data():
    from bnteach.plots import legend_overlaps, new_figure

    fig = new_figure(3)
    axes = fig.subplots(1, 3)
    axes[0].plot([0.1, 0.85], [0.1, 0.92], "o", label="points")  # markers only, no line
    axes[1].fill_between([0, 1], [0.8, 0.8], [1, 1], label="band")
    axes[2].errorbar([0.85], [0.5], yerr=[[0.5], [0.5]], fmt="none", label="bar")
    for ax in axes:
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper right")
    assert len(legend_overlaps(fig)) == 3


@pytest.mark.parametrize(
    "draw",
    [
        lambda: plot_losses({"Without BN": hist(1.0), "With BN": hist(0.5)}),
        lambda: plot_seed_spread(
            {"plain": [hist(1.0), hist(2.0)], "BN": [hist(0.5)]},
            metrics=("train_loss", "val_loss", "val_acc"),
        ),
    ],
)
def test_legends_stay_off_the_curves(draw):
    from bnteach.plots import figure_report

    report = figure_report(draw())
    assert report["legend_overlaps"] == [] and report["width_px"] == 960
    assert report["min_text_px"] >= 12.5


def test_a_legend_over_the_title_is_found_and_the_spread_title_is_clear_of_it():
    from bnteach.plots import figure_report, legend_overlaps, new_figure

    fig = new_figure(3)
    axes = fig.subplots(1, 2)
    for ax in axes:
        ax.plot([0, 1], [0, 1], label="a line")
    fig.suptitle("a title")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center")
    assert "legend over the text 'a title'" in legend_overlaps(fig)
    titled = plot_seed_spread({"a": [hist(1.0)], "b": [hist(0.5)]}, title="a title")
    assert figure_report(titled)["legend_overlaps"] == []


def test_seed_spread_is_drawn_in_the_collections_style():
    from bnteach.plots import STYLE

    with matplotlib.rc_context({"xtick.labelsize": 7.0, "legend.fontsize": 7.0}):
        fig = plot_seed_spread({"a": [hist(1.0)]}, metrics=("val_loss",))
    tick = fig.axes[0].get_xticklabels()[0]
    assert tick.get_fontsize() == STYLE["xtick.labelsize"]
    assert fig.legends[0].get_texts()[0].get_fontsize() == STYLE["legend.fontsize"]
