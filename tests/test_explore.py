"""bnteach.explore: the explorers' computations (no ipywidgets), against the engine and the
formulas; the widgets that show them are tested in test_widgets_*.py."""

import math

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from bnteach.explore import (
    LAYER_FEATURES,
    LAYER_POP_MEAN,
    LAYER_POP_STD,
    Redraws,
    compare_caption,
    compare_models,
    compare_run,
    compare_stream,
    compare_summary,
    epochs_to_reach,
    figure_png,
    layer_batches,
    layer_state,
    lrsweep_lrs,
    lrsweep_run,
    lrsweep_summary,
)
from bnteach.plots import plot_layer_state as layer_figure
from bnteach.stats import seeds
from bnteach.training import History

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_redraws_first_at_once_then_at_most_as_often_as_drawing_allows():
    now = [0.0]
    r = Redraws(min_interval=0.25, ratio=1.5, growth=0.0, clock=lambda: now[0])
    assert r.due()  # the first partial result is drawn at once
    r.drew(0.4)  # that drawing took 0.4 s: wait 0.6 s before the next
    now[0] = 0.5
    assert not r.due() and r.due(final=True)
    now[0] = 0.61
    assert r.due()


def test_redraws_skip_a_redraw_when_the_final_result_is_near():
    now = [0.0]
    r = Redraws(min_interval=0.5, ratio=3.0, clock=lambda: now[0])
    assert r.due(done=1, total=25)
    r.drew(0.1)  # next redraw no sooner than 0.5 s later
    now[0] = 0.6  # 10 of 25 epochs in 0.6 s: the last 15 need about 0.9 s more
    assert r.due(done=10, total=25)
    now[0] = 0.6
    assert not r.due(done=20, total=25)  # the last 5 need about 0.15 s: the final is near
    assert r.due(done=20, total=25, final=True)
    assert r.due()  # without progress: by the clock alone
    assert (Redraws().min_interval, Redraws().ratio, Redraws().growth) == (0.5, 3.0, 0.5)


def test_redraws_grow_rarer_as_a_long_run_goes_on():
    """Drawing that costs 0.1 s, over a 20 s run: a handful of figures, not one per 0.5 s."""
    now = [0.0]
    r = Redraws(clock=lambda: now[0])
    times = []
    while now[0] < 20:
        if r.due():
            times.append(now[0])
            now[0] += 0.1
            r.drew(0.1)
        now[0] += 0.05
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 5 <= len(times) <= 10 and gaps == sorted(gaps) and gaps[0] <= 0.7


def test_compare_models_depth_two_is_the_tutorial():
    models = compare_models(2, "relu")
    assert models["plain"] == {"hidden_sizes": (128, 64), "activation": "relu", "norm": "none"}
    assert models["BN"]["norm"] == "batch"
    assert compare_models(4, "tanh")["BN"]["hidden_sizes"] == (64,) * 4


def test_epochs_to_reach():
    h = History(lr=0.1, epochs=3, val_loss=[0.5, 0.19, 0.1])
    assert epochs_to_reach(h, 0.2) == 2 and epochs_to_reach(h, 0.05) is None


def test_compare_summary_counts_seeds_and_accuracy():
    result = compare_run(lr=0.01, epochs=3, n_seeds=3)
    assert result.seeds == seeds(3)  # the seeds every notebook uses (BNTEACH_SEED_OFFSET)
    summary = compare_summary(result, threshold=10.0)
    assert set(summary) == {"plain", "BN"}
    for s in summary.values():
        assert s["seeds"] == 3 and s["diverged"] == 0 and s["epochs_to_threshold"] == 1
        assert 0.5 < s["acc_min"] <= s["acc_mean"] <= s["acc_max"] <= 1.0


def test_compare_stream_yields_the_runs_epochs_and_the_caption_names_every_setting():
    parts = list(compare_stream(lr=0.05, epochs=3, batch_size=32, n_seeds=2, depth=3))
    final = compare_run(lr=0.05, epochs=3, batch_size=32, n_seeds=2, depth=3)
    assert [p.epochs_run for p in parts] == [1, 2, 3]
    assert parts[-1].val_loss.equal(final.val_loss)
    caption = compare_caption(parts[0], activation="relu")
    for words in ("2 seeds", "lr 0.05", "batch size 32", "3 epochs (so far 1)", "3 hidden", "relu"):
        assert words in caption, (words, caption)
    assert "so far" not in compare_caption(final)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"batch_size": 1}, ValueError, "at least 2 samples"),
        ({"n_seeds": 0}, ValueError, "n_seeds"),
        ({"n_seeds": 2.5}, TypeError, "n_seeds"),
        ({"depth": 0}, ValueError, "depth"),
        ({"lr": -1.0}, ValueError, "positive"),
    ],
)
def test_compare_run_explains_impossible_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        compare_run(**{"epochs": 1, **kwargs})


def test_lrsweep_lrs_are_log_spaced():
    lrs = lrsweep_lrs(-3, 0, 4)
    assert [round(math.log10(x), 9) for x in lrs] == [-3, -2, -1, 0]
    with pytest.raises(ValueError, match="below the highest"):
        lrsweep_lrs(0, 0, 3)


def test_lrsweep_summary_keeps_every_lr_and_counts_divergence_as_guessing():
    result = lrsweep_run(-2, 20, points=2, epochs=1, n_seeds=2)  # lr 1e20 diverges
    acc, loss = lrsweep_summary(result, "val_acc"), lrsweep_summary(result, "val_loss")
    assert list(acc["With BN"]) == result.lrs
    assert acc["Without BN"][1e20] == [0.5, 0.5] and loss["Without BN"][1e20] == []


def test_batches_have_the_documented_shape_and_population():
    b = layer_batches(batch_size=16, steps=3, seed=0)
    assert b.shape == (4, 16, LAYER_FEATURES) and b.dtype == torch.float64
    assert torch.equal(b, layer_batches(16, 3, seed=0))
    assert not torch.equal(b, layer_batches(16, 3, seed=1))
    big = layer_batches(batch_size=64, steps=300, seed=0).reshape(-1, LAYER_FEATURES)
    torch.testing.assert_close(big.mean(0), LAYER_POP_MEAN, rtol=0, atol=0.05)
    torch.testing.assert_close(big.std(0), LAYER_POP_STD, rtol=0.03, atol=0)


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, 0.0])
@pytest.mark.parametrize("training", [True, False])
def test_running_stats_follow_the_formula(momentum, training):
    steps, n = 5, 8
    s = layer_state(n, momentum, shift=2.0, training=training, steps=steps, seed=0)
    batches = list(layer_batches(n, steps, seed=0))
    seen = batches[:-1] + ([s["x"]] if training else [])  # train mode counts the display batch
    mean, var = torch.zeros(LAYER_FEATURES, dtype=torch.float64), torch.ones(LAYER_FEATURES)
    var = var.double()
    history = [mean]
    for xb in seen:
        mean = (1 - momentum) * mean + momentum * xb.mean(0)
        var = (1 - momentum) * var + momentum * xb.var(0, unbiased=True)  # divide by n - 1
        history.append(mean)
    torch.testing.assert_close(s["running_mean"], mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(s["running_var"], var, rtol=0, atol=1e-12)
    torch.testing.assert_close(s["running_mean_history"], torch.stack(history), rtol=0, atol=1e-12)
    assert s["running_var_history"].shape == s["running_mean_history"].shape
    assert s["num_batches_tracked"] == len(seen)


def test_train_mode_output_is_the_formula_with_the_biased_batch_variance():
    s = layer_state(batch_size=6, momentum=0.1, shift=-3.0, training=True, steps=2)
    x = s["x"]
    expected = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(s["y"], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(s["used_var"], x.var(0, unbiased=False), rtol=0, atol=1e-12)
    torch.testing.assert_close(s["batch_mean"], x.mean(0), rtol=0, atol=1e-12)


def test_eval_mode_output_uses_running_stats_and_changes_nothing():
    s = layer_state(batch_size=6, momentum=0.3, shift=4.0, training=False, steps=4)
    rm, rv = s["running_mean_history"][-1], s["running_var_history"][-1]
    torch.testing.assert_close(s["running_mean"], rm, rtol=0, atol=0)
    torch.testing.assert_close(s["used_mean"], rm, rtol=0, atol=0)
    expected = (s["x"] - rm) / torch.sqrt(rv + 1e-5)
    torch.testing.assert_close(s["y"], expected, rtol=0, atol=1e-12)
    assert s["num_batches_tracked"] == 4


def test_shift_moves_the_others_only_in_train_mode():
    for training in (True, False):
        a = layer_state(batch_size=8, shift=0.0, training=training, steps=3)
        b = layer_state(batch_size=8, shift=5.0, training=training, steps=3)
        assert torch.equal(a["x"][1:], b["x"][1:])
        torch.testing.assert_close(b["x"][0], a["x"][0] + 5.0)
        torch.testing.assert_close(b["y_unshifted"], a["y"], rtol=0, atol=1e-12)
        if training:
            torch.testing.assert_close(b["batch_mean"], a["batch_mean"] + 5.0 / 8)
            assert (b["y"][1:] - a["y"][1:]).abs().max() > 0.3  # the others moved
        else:
            assert torch.equal(b["y"][1:], a["y"][1:])  # the others did not move
            torch.testing.assert_close(b["used_mean"], a["used_mean"], rtol=0, atol=0)
            # sample 0 moves by shift / sqrt(running_var + eps)
            step = 5.0 / torch.sqrt(a["running_var"] + 1e-5)
            torch.testing.assert_close(b["y"][0] - a["y"][0], step, rtol=0, atol=1e-12)


def test_matches_a_torch_layer_driven_by_hand():
    n, steps, m = 5, 3, 0.25
    s = layer_state(batch_size=n, momentum=m, shift=1.5, training=True, steps=steps, seed=7)
    bn = nn.BatchNorm1d(LAYER_FEATURES, momentum=m, dtype=torch.float64)
    batches = layer_batches(n, steps, seed=7)
    with torch.no_grad():
        for xb in batches[:-1]:
            bn(xb)
        x = batches[-1].clone()
        x[0] += 1.5
        y = bn(x)
    torch.testing.assert_close(s["y"], y, rtol=0, atol=0)
    torch.testing.assert_close(s["running_var"], bn.running_var, rtol=0, atol=0)


def test_batch_of_one_in_training_raises_a_teaching_error():
    with pytest.raises(ValueError, match="Batch size 1") as err:
        layer_state(batch_size=1, training=True)
    assert "Expected more than 1 value per channel when training" in str(err.value)
    assert "eval mode" in str(err.value)
    with pytest.raises(ValueError, match="training steps"):
        layer_state(batch_size=1, training=False, steps=2)
    s = layer_state(batch_size=1, training=False, steps=0, shift=1.0)  # eval accepts one sample
    expected = (s["x"] - 0.0) / torch.sqrt(torch.tensor(1.0 + 1e-5, dtype=torch.float64))
    torch.testing.assert_close(s["y"], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"batch_size": 0}, ValueError),
        ({"batch_size": 2.5}, TypeError),
        ({"momentum": 1.5}, ValueError),
        ({"momentum": "0.1"}, TypeError),
        ({"momentum": None}, TypeError),  # the explorer's layer is never a cumulative average
        ({"momentum": float("nan")}, ValueError),
        ({"steps": -1}, ValueError),
        ({"steps": 10**6}, ValueError),
    ],
)
def test_bad_arguments_are_rejected(kwargs, error):
    with pytest.raises(error) as info:
        layer_state(**kwargs)
    if "momentum" in kwargs:  # the same teaching message as BatchNorm1d's, without None
        assert "momentum must be" in str(info.value) and "or None" not in str(info.value)


def test_figure_has_four_panels_and_png_is_an_image():
    s = layer_state(batch_size=8, steps=3)
    fig = layer_figure(s)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    hist_lines = [ln for ln in fig.axes[2].get_lines() if ln.get_label().startswith("feature")]
    assert len(hist_lines) == LAYER_FEATURES
    assert len(hist_lines[0].get_xdata()) == s["num_batches_tracked"] + 1
    assert "TRAIN mode" in fig._suptitle.get_text()
    png = figure_png(fig)
    assert png.startswith(PNG_MAGIC)
    assert "EVAL mode" in layer_figure(layer_state(training=False))._suptitle.get_text()


def test_figure_handles_a_batch_of_one_in_eval():
    fig = layer_figure(layer_state(batch_size=1, training=False))
    assert len(fig.axes) == 4


def test_figure_is_drawn_for_the_cell_width_with_integer_batch_counts():
    fig = layer_figure(layer_state(batch_size=8, steps=3))
    assert fig.get_size_inches()[0] * fig.dpi == 960
    fig.canvas.draw()
    ticks = [t for t in fig.axes[2].get_xticks() if -0.5 <= t <= 10.5]
    assert ticks and all(float(t).is_integer() for t in ticks)
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
    assert min(sizes) >= 9.5  # points; 13 px at 100 dpi
