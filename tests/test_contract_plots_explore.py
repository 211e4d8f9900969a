"""Bad inputs to bnteach.plots and bnteach.explore (the explorers' pure code): each gets a
teaching error with a phrase that names the problem, never an AttributeError from inside, a
value clamped or a run dropped without a word. A table: (case id, a zero-argument call, the
error type, a phrase in the message)."""

import math

import matplotlib
import pytest

from bnteach import explore, plots, stats, sweep
from bnteach.training import History

matplotlib.use("Agg")


def history(lr=0.01, losses=(0.7, 0.6)):
    h = History(lr=lr, epochs=len(losses))
    h.train_loss, h.val_loss, h.val_acc = list(losses), list(losses), [0.5] * len(losses)
    return h


P = stats.paired([0.9, 0.8, 0.85], [0.7, 0.75, 0.8])

CASES = [
    # --- plots
    ("losses: empty", lambda: plots.plot_losses({}), ValueError, "Nothing to draw"),
    ("losses: a list", lambda: plots.plot_losses([history()]), ValueError, "dict name -> History"),
    ("losses: not a History", lambda: plots.plot_losses({"a": [1, 2]}), TypeError, "History"),
    (
        "losses: log_y a string",
        lambda: plots.plot_losses({"a": history()}, log_y="yes"),
        TypeError,
        "True or False",
    ),
    ("spread: empty", lambda: plots.plot_seed_spread({}), ValueError, "Nothing to draw"),
    ("spread: empty group", lambda: plots.plot_seed_spread({"a": []}), ValueError, "is empty"),
    (
        "spread: group not a list",
        lambda: plots.plot_seed_spread({"a": history()}),
        TypeError,
        "list of History",
    ),
    (
        "spread: unknown metric",
        lambda: plots.plot_seed_spread({"a": [history()]}, metrics=("loss",)),
        ValueError,
        "metric must be one of",
    ),
    ("final: empty", lambda: plots.plot_final_by_lr({}), ValueError, "Nothing to draw"),
    (
        "final: lr 0 on a log axis",
        lambda: plots.plot_final_by_lr({"a": {0.0: [0.5], 0.1: [0.6]}}),
        ValueError,
        "log axis",
    ),
    (
        "final: values not a list",
        lambda: plots.plot_final_by_lr({"a": {0.1: 0.6}}),
        TypeError,
        "list of final values",
    ),
    (
        "final: unknown metric",
        lambda: plots.plot_final_by_lr({"a": {0.1: [0.6]}}, metric="acc"),
        ValueError,
        "metric must be one of",
    ),
    ("paired: empty", lambda: plots.plot_paired({}), ValueError, "non-empty dict"),
    ("paired: a number", lambda: plots.plot_paired({"a": 0.3}), TypeError, "must be a Paired"),
    (
        "paired: negative margin",
        lambda: plots.plot_paired({"a": P}, margin=-1),
        ValueError,
        "margin",
    ),
    ("paired: scale 0", lambda: plots.plot_paired({"a": P}, scale=0), ValueError, "scale"),
    ("layer state: None", lambda: plots.plot_layer_state(None), TypeError, "layer_state"),
    ("figure: height 0", lambda: plots.new_figure(0), ValueError, "height"),
    ("figure: height nan", lambda: plots.new_figure(math.nan), ValueError, "height"),
    # --- explore: the layer explorer's computation
    (
        "layer: batch of one",
        lambda: explore.layer_state(batch_size=1),
        ValueError,
        "Batch size 1 cannot be used",
    ),
    ("layer: batch 2.5", lambda: explore.layer_state(batch_size=2.5), TypeError, "whole number"),
    ("layer: momentum 2", lambda: explore.layer_state(momentum=2), ValueError, "[0, 1]"),
    ("layer: momentum nan", lambda: explore.layer_state(momentum=math.nan), ValueError, "[0, 1]"),
    ("layer: shift nan", lambda: explore.layer_state(shift=math.nan), ValueError, "finite"),
    (
        "layer: shift a string",
        lambda: explore.layer_state(shift="1"),
        TypeError,
        "shift (added to sample 0) must be a number",
    ),
    ("layer: steps -1", lambda: explore.layer_state(steps=-1), ValueError, "between 0 and"),
    ("layer: training 1", lambda: explore.layer_state(training=1), TypeError, "True or False"),
    ("layer: seed a string", lambda: explore.layer_state(seed="0"), TypeError, "whole number"),
    ("batches: size 0", lambda: explore.layer_batches(0, 3), ValueError, "at least 1"),
    # --- explore: the comparison and learning-rate explorers' computation
    ("compare: lr 0", lambda: explore.compare_run(lr=0), ValueError, "positive, finite"),
    ("compare: epochs 0", lambda: explore.compare_run(epochs=0), ValueError, "at least 1"),
    ("compare: no seeds", lambda: explore.compare_run(n_seeds=0), ValueError, "at least 1"),
    ("compare: depth 0", lambda: explore.compare_run(depth=0), ValueError, "at least 1"),
    (
        "compare: activation",
        lambda: explore.compare_run(activation="swish"),
        ValueError,
        "activation must be one of",
    ),
    (
        "compare: batch of one",
        lambda: explore.compare_run(batch_size=1),
        ValueError,
        "at least 2 samples",
    ),
    ("summary: None", lambda: explore.compare_summary(None), TypeError, "SweepResult"),
    ("figure: a string", lambda: explore.compare_figure("x"), TypeError, "SweepResult"),
    ("caption: a string", lambda: explore.compare_caption("x"), TypeError, "SweepResult"),
    ("reach: a string", lambda: explore.epochs_to_reach("x"), TypeError, "History"),
    (
        "reach: threshold nan",
        lambda: explore.epochs_to_reach(history(), math.nan),
        ValueError,
        "threshold",
    ),
    ("lrs: reversed", lambda: explore.lrsweep_lrs(0, -3), ValueError, "below the highest"),
    ("lrs: one point", lambda: explore.lrsweep_lrs(points=1), ValueError, "at least 2"),
    ("lrs: nan", lambda: explore.lrsweep_lrs(math.nan), ValueError, "low_exp"),
    ("lrs: lr 1e400", lambda: explore.lrsweep_lrs(-3, 400), ValueError, "between -30 and 30"),
    ("lrs: a string", lambda: explore.lrsweep_lrs("-3"), TypeError, "10**low_exp"),
    ("png: a string", lambda: explore.figure_png("x"), TypeError, "matplotlib Figure"),
    ("png: dpi 0", lambda: explore.figure_png(plots.new_figure(2), dpi=0), ValueError, "dpi"),
]


@pytest.mark.parametrize("call, error, phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_teaching_error(call, error, phrase):
    with pytest.raises(error) as info:
        call()
    assert phrase in str(info.value), str(info.value)


@pytest.fixture(scope="module")
def small_result():
    return sweep.run(seeds=[0, 1], lrs=[0.01, 0.1], epochs=1)


def test_summaries_need_the_models_they_draw_and_a_known_metric(small_result):
    other = sweep.run(seeds=[0], lrs=[0.01], epochs=1, models={"LN": {"norm": "layer"}})
    with pytest.raises(ValueError, match="this draws"):
        explore.compare_summary(other)
    with pytest.raises(ValueError, match="metric must be one of"):
        explore.lrsweep_summary(small_result, "loss")


def test_every_group_given_is_drawn():
    groups = {f"run {i}": [history(losses=(0.7, 0.6 - i / 100))] for i in range(9)}
    fig = plots.plot_seed_spread(groups, metrics=("val_loss",))
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert len(labels) == 9
