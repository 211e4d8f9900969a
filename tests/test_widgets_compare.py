"""Headless tests of the comparison and learning-rate explorers (notebook 04)."""

import math

import pytest

from bnteach.training import History
from bnteach.widgets import (
    CompareExplorer,
    Debouncer,
    LrSweepExplorer,
    compare_models,
    compare_run,
    compare_summary,
    epochs_to_reach,
    lrsweep_lrs,
)

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
    summary = compare_summary(result, threshold=10.0)
    assert set(summary) == {"plain", "BN"}
    for s in summary.values():
        assert s["seeds"] == 3 and s["diverged"] == 0 and s["epochs_to_threshold"] == 1
        assert 0.5 < s["acc_min"] <= s["acc_mean"] <= s["acc_max"] <= 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 1}, "at least 2 samples"),
        ({"n_seeds": 0}, "n_seeds"),
        ({"depth": 0}, "depth"),
        ({"lr": -1.0}, "positive"),
    ],
)
def test_compare_run_explains_impossible_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare_run(**{"epochs": 1, **kwargs})


def test_compare_explorer_redraws_once_per_change():
    e = CompareExplorer(**SMALL)
    assert e.renders == 1 and e.image.value and "<table" in e.table.value
    before = e.image.value
    e.lr.value = 0.3
    assert e.renders == 2 and e.image.value != before
    e.refresh()  # same settings: nothing recomputed
    assert e.renders == 2


def test_compare_explorer_shows_impossible_settings_inside_the_widget():
    e = CompareExplorer(**SMALL)
    e.batch_size.value = 1
    assert "Not possible" in e.message.value and "at least 2 samples" in e.message.value
    assert e.outputs.layout.display == "none"
    e.batch_size.value = 32
    assert e.outputs.layout.display is None and "models trained" in e.message.value


def test_lrsweep_lrs_are_log_spaced():
    lrs = lrsweep_lrs(-3, 0, 4)
    assert [round(math.log10(x), 9) for x in lrs] == [-3, -2, -1, 0]
    with pytest.raises(ValueError, match="below the highest"):
        lrsweep_lrs(0, 0, 3)


def test_lrsweep_explorer_redraws_and_reports_bad_range():
    e = LrSweepExplorer(points=2, epochs=2, n_seeds=1, debounce=0)
    assert e.renders == 1 and e.acc_image.value and e.loss_image.value
    before = e.acc_image.value
    e.epochs.value = 3
    assert e.renders == 2 and e.acc_image.value != before
    e.lr_range.value = (-1.0, -1.0)
    assert "Not possible" in e.message.value
