"""Headless tests of the comparison and learning-rate explorers' widgets (notebook 04),
``bnteach.widgets``; their computations in ``bnteach.explore`` are tested in test_explore.py."""

import asyncio

import pytest

from bnteach.explore import (
    compare_figure,
    compare_run,
    figure_png,
)
from bnteach.widgets import RERUN_NOTE, CompareExplorer, Debouncer, LrSweepExplorer

SMALL = {"epochs": 2, "n_seeds": 2, "debounce": 0}


class FakeTimer:
    def __init__(self, fn):
        self.fn, self.cancelled = fn, False

    def cancel(self):
        self.cancelled = True


def test_debouncer_runs_once_after_a_burst():
    calls, timers = [], []

    def call_later(delay, fn):
        timers.append(FakeTimer(fn))
        return timers[-1]

    d = Debouncer(lambda: calls.append(1), delay=0.3, call_later=call_later)
    for _ in range(5):
        d.trigger()
    assert calls == [] and [t.cancelled for t in timers] == [True] * 4 + [False]
    timers[-1].fn()
    assert calls == [1]


def test_debouncer_without_event_loop_or_delay_runs_at_once():
    calls = []
    Debouncer(lambda: calls.append(1), delay=0.3).trigger()  # no running asyncio loop here
    Debouncer(lambda: calls.append(2), delay=0).trigger()
    assert calls == [1, 2]


# -- widgets, without an event loop: computed at once ------------------------------------


def test_compare_explorer_redraws_once_per_change_and_reuses_computed_settings():
    e = CompareExplorer(**SMALL)
    assert e.renders == 1 and e.image.value and "<table" in e.table.value
    before = e.image.value
    e.lr.value = 0.3
    assert e.renders == 2 and e.image.value != before and "lr 0.3" in e.caption.value
    e.refresh()  # same settings: nothing recomputed
    assert e.renders == 2
    e.lr.value = 0.01  # back: from the cache, at once
    assert e.renders == 2 and e.image.value == before and "lr 0.01" in e.caption.value
    assert e.progress_bar.layout.visibility == "hidden" and e.status.value == ""


def test_compare_explorer_redraws_into_one_figure_what_a_new_figure_shows():
    e = CompareExplorer(**SMALL)
    fig = e.figure
    e.batch_size.value = 16
    assert e.figure is fig and e.renders == 2
    result = compare_run(**e.settings())
    assert e.image.value == figure_png(compare_figure(result))


def test_compare_explorer_caption_lists_every_setting():
    e = CompareExplorer(lr=0.03, epochs=2, batch_size=32, n_seeds=3, depth=3,
                        activation="tanh", debounce=0)  # fmt: skip
    for words in ("3 seeds", "lr 0.03", "batch size 32", "2 epochs", "3 hidden", "tanh", "cpu"):
        assert words in e.caption.value, (words, e.caption.value)


def test_compare_explorer_shows_impossible_settings_inside_the_widget():
    e = CompareExplorer(**SMALL)
    e.batch_size.value = 1
    assert "Not possible" in e.message.value and "at least 2 samples" in e.message.value
    assert e.outputs.layout.display == "none"
    e.batch_size.value = 32
    assert e.outputs.layout.display is None and "batch size 32" in e.caption.value


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": 10.0}, r"lr=10.0 is outside .* clamped to 3.16"),
        ({"epochs": 100}, "epochs=100 is outside"),
        ({"n_seeds": 0}, "n_seeds=0 is outside"),
        ({"batch_size": 3}, "not one of"),
        ({"activation": "gelu"}, "not one of"),
    ],
)
def test_compare_explorer_refuses_settings_its_controls_cannot_show(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CompareExplorer(**kwargs)


def test_lrsweep_explorer_redraws_and_reports_bad_range():
    e = LrSweepExplorer(points=2, epochs=2, n_seeds=1, debounce=0)
    assert e.renders == 1 and e.image.value
    assert "0.001 to 1" in e.lr_range_text.value and "2 learning rates" in e.caption.value
    before = e.image.value
    e.epochs.value = 3
    assert e.renders == 2 and e.image.value != before
    e.lr_range.value = (-1.0, -1.0)
    assert "Not possible" in e.message.value
    with pytest.raises(ValueError, match="points=20 is outside"):
        LrSweepExplorer(points=20)


def test_explorers_display_a_rerun_note_for_reopened_notebooks():
    e = CompareExplorer(**SMALL)
    assert "run this cell again" in RERUN_NOTE
    assert "application/vnd.jupyter.widget-view+json" in e._repr_mimebundle_()


# -- widgets inside an event loop (as in a Jupyter kernel): streamed and cancellable -----


def test_inside_an_event_loop_curves_grow_and_a_newer_change_cancels_the_running_one():
    async def scenario():
        e = CompareExplorer(epochs=8, n_seeds=2, debounce=0)
        # at once, before any training: progress and the new settings
        assert "training 4 models: epoch 0/8" in e.status.value and "lr 0.01" in e.status.value
        assert e.progress_bar.layout.visibility == "visible"
        first = e.task
        while e.progress_bar.value < 2:
            await asyncio.sleep(0)
        assert e.redraws >= 1 and e.image.value  # the first partial result is drawn at once
        assert "so far" in e.caption.value
        e.lr.value = 0.1  # a newer change, while the first run is half done
        assert "epoch 0/8" in e.status.value and "lr 0.1" in e.status.value
        second = e.task
        assert second is not first
        await second
        assert first.cancelled()
        assert "lr 0.1" in e.caption.value and "so far" not in e.caption.value
        assert e.renders == 2 and e.status.value == ""
        e.lr.value = 0.01  # the first settings never finished: computed again
        await e.task
        assert e.renders == 3 and "lr 0.01" in e.caption.value

    asyncio.run(scenario())
