"""Headless tests of the "inside the layer" explorer's widget, ``bnteach.widgets.LayerExplorer``;
``bnteach.explore.layer_state`` and its figure are tested in test_explore.py."""

import ipywidgets as widgets
import matplotlib
import pytest

from bnteach.widgets import LayerExplorer, layer_explorer

matplotlib.use("Agg")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- figure


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
