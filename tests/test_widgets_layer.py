"""Headless tests of the "inside the layer" explorer: ``bnteach.explore.layer_state``, its
figure ``bnteach.plots.plot_layer_state`` and the widget ``bnteach.widgets.LayerExplorer``."""

import ipywidgets as widgets
import matplotlib
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from bnteach.explore import (
    LAYER_FEATURES,
    LAYER_POP_MEAN,
    LAYER_POP_STD,
    figure_png,
    layer_batches,
    layer_state,
)
from bnteach.plots import plot_layer_state as layer_figure
from bnteach.widgets import LayerExplorer, layer_explorer

matplotlib.use("Agg")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- pure function


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


# ----------------------------------------------------------------------------- figure


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


# ----------------------------------------------------------------------------- widget


def test_explorer_builds_and_shows_an_image():
    ui = layer_explorer()
    assert isinstance(ui, LayerExplorer) and isinstance(ui, widgets.VBox)
    assert ui.renders == 1
    assert bytes(ui.layer_image.value).startswith(PNG_MAGIC)
    assert "Train mode" in ui.layer_note.value
    assert "num_batches_tracked = 1" in ui.layer_note.value
    assert "batch size 16" in ui.caption.value and "train mode" in ui.caption.value


@pytest.mark.parametrize(
    "control, value",
    [
        ("layer_batch_size", 32),
        ("layer_momentum", 0.9),
        ("layer_shift", 6.0),
        ("layer_mode", False),
        ("layer_steps", 20),
    ],
)
def test_setting_a_control_redraws_once(control, value):
    ui = layer_explorer()
    before, renders = ui.layer_image.value, ui.renders
    getattr(ui, control).value = value
    assert ui.renders == renders + 1
    assert ui.layer_image.value != before and bytes(ui.layer_image.value).startswith(PNG_MAGIC)


def test_step_buttons_and_reset():
    ui = layer_explorer()
    ui.layer_step1.click()
    assert ui.layer_steps.value == 1 and ui.renders == 2
    ui.layer_step10.click()
    assert ui.layer_steps.value == 11 and ui.renders == 3
    assert "num_batches_tracked = 12" in ui.layer_note.value  # 11 steps + display batch
    ui.layer_mode.value = False
    assert "num_batches_tracked = 11" in ui.layer_note.value
    ui.layer_reset.click()
    assert ui.layer_steps.value == 0
    assert "num_batches_tracked = 0" in ui.layer_note.value
    ui.layer_mode.value = True  # back to the first settings: from the cache, no recomputation
    assert ui.renders == 5 and "num_batches_tracked = 1" in ui.layer_note.value


def test_batch_of_one_in_training_shows_a_message_not_a_traceback():
    ui = layer_explorer()
    ui.layer_batch_size.value = 1  # must not raise
    assert "Not possible" in ui.message.value
    assert "Expected more than 1 value per channel" in ui.message.value
    assert ui.outputs.layout.display == "none"
    ui.layer_mode.value = False  # eval mode with no training steps: one sample is fine
    assert "Not possible" not in ui.message.value
    assert ui.outputs.layout.display is None
    ui.layer_step1.click()  # a training step with a batch of one: message again
    assert "Not possible" in ui.message.value
    ui.layer_batch_size.value = 2
    assert "Eval mode" in ui.layer_note.value and ui.outputs.layout.display is None


def test_same_controls_give_the_same_picture():
    a, b = layer_explorer(seed=3), layer_explorer(seed=3)
    assert a.layer_image.value == b.layer_image.value
    assert layer_explorer(seed=4).layer_image.value != a.layer_image.value


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 100}, "batch_size=100 is outside"),
        ({"momentum": 1.5}, "momentum=1.5 is outside"),
        ({"shift": 20.0}, "clamped to 10"),
        ({"training": "yes"}, "not one of"),
    ],
)
def test_explorer_refuses_settings_its_controls_cannot_show(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LayerExplorer(**kwargs)
