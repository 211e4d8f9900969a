"""Headless tests of the comparison and learning-rate explorers (notebook 04): the pure
functions of ``bnteach.explore`` and the widgets of ``bnteach.widgets``."""

import asyncio
import math

import pytest

from bnteach.explore import (
    Redraws,
    compare_caption,
    compare_figure,
    compare_models,
    compare_run,
    compare_stream,
    compare_summary,
    epochs_to_reach,
    figure_png,
    lrsweep_lrs,
    lrsweep_run,
    lrsweep_summary,
)
from bnteach.stats import seeds
from bnteach.training import History
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


# -- pure functions ----------------------------------------------------------------------


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
