"""Interactive explorers (ipywidgets) for the notebooks: controls and their wiring only.

What an explorer computes lives in :mod:`bnteach.explore` (no ipywidgets there), what it draws
in :mod:`bnteach.plots`; the callbacks here only read the controls, call those functions and
put the results into the outputs. Nothing happens at import time; only notebooks import this.

Explorers: ``layer_explorer`` (notebook 03), ``compare_explorer`` and ``lrsweep_explorer``
(notebook 04). All three are :class:`Explorer` s, which

- show at once that they are working and for which settings (a progress bar and a line such as
  "training 16 models: epoch 7/25");
- inside a Jupyter kernel, train as an asyncio task that hands control back to the kernel
  after every epoch, so the curves grow as epochs finish and a newer control change cancels
  the running computation instead of queueing behind it (elsewhere, e.g. in tests without a
  running event loop, or with ``Explorer.background = False`` as in the book's kernels, they
  compute at once);
- say so when the kernel behind them is gone (restarted or shut down), grey out their
  controls and tell the learner to run the cell again, with CSS alone (core ipywidgets only);
- keep the last ``cache_size`` computed settings, so going back to one is instant;
- caption every figure with all the settings it belongs to;
- raise ValueError when built with a setting their controls cannot show (no silent clamping).
"""

import asyncio
import collections
import html
import time

import ipywidgets as widgets

from bnteach import explore, stats
from bnteach.plots import FIG_DPI, FIG_WIDTH, plot_layer_state

STYLE = {"description_width": "110px"}
IMAGE_WIDTH = f"{round(FIG_WIDTH * FIG_DPI)}px"  # the PNGs' own width: shown unscaled


def _image():
    """An Image shown at the PNG's own width (shrunk, never stretched, in a narrow cell)."""
    return widgets.Image(
        format="png", layout=widgets.Layout(width=IMAGE_WIDTH, max_width="100%", height="auto")
    )


def error_html(err, prefix="Not possible"):
    """An in-widget message for an impossible combination of settings."""
    return (
        f'<div style="color:#a40000;border:1px solid #a40000;padding:4px">'
        f"<b>{prefix}:</b> {html.escape(str(err))}</div>"
    )


def check_within(name, value, low, high, call):
    """Raise ValueError unless ``low <= value <= high``: an explorer's controls cannot show
    ``value`` and would otherwise clamp it silently. ``call`` says what to use instead."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}.")
    if not low <= value <= high:
        raise ValueError(
            f"{name}={value!r} is outside what this explorer's control offers ({low:g} to "
            f"{high:g}); it would be clamped to {min(max(value, low), high):g}. For other values "
            f"call {call} yourself."
        )


def check_option(name, value, options, call):
    if value not in options:
        raise ValueError(
            f"{name}={value!r} is not one of this explorer's choices {list(options)}. For other "
            f"values call {call} yourself."
        )


class Debouncer:
    """Run ``action`` once, ``delay`` seconds after the last of a burst of ``trigger()`` calls.

    While a learner drags a slider or holds an arrow key, each change would otherwise queue a
    full recomputation for a value already left behind. Inside a Jupyter kernel the delayed call
    goes through the kernel's asyncio loop; where no loop runs (plain Python, tests) or with
    ``delay=0`` the action runs at once. ``call_later(delay, fn)`` may be injected for tests;
    it must return an object with ``cancel()``.
    """

    def __init__(self, action, delay=0.3, call_later=None):
        self.action, self.delay, self._call_later = action, delay, call_later
        self._pending = None

    def trigger(self):
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        call_later = self._call_later
        if call_later is None and self.delay > 0:
            try:
                call_later = asyncio.get_running_loop().call_later
            except RuntimeError:
                call_later = None
        if call_later is None or self.delay <= 0:
            self.action()
        else:
            self._pending = call_later(self.delay, self._fire)

    def _fire(self):
        self._pending = None
        self.action()


# Shown above every explorer, as an output of its own. While the explorer is on screen, a style
# in the explorer hides it; after the notebook is reopened (the widget's kernel state is gone,
# JupyterLab then shows "Error displaying widget: model not found") it stays visible and says
# what to do. Marked ``bnteach-live-only``: the book (tools/build_book.py) leaves it out.
RERUN_NOTE = (
    '<div class="bnteach-rerun bnteach-live-only" style="color:#8a5300">This explorer needs its '
    "live kernel. If you read <i>Error displaying widget</i> below, the notebook was reopened "
    "(or the kernel restarted) and the explorer's state is gone: <b>run this cell again</b> "
    "(Shift+Enter), after the cells above it.</div>"
)
# Inside every explorer, hidden until its kernel is gone; then it says so, and the controls
# are greyed out and ignore the mouse instead of moving without effect.
GONE_NOTE = (
    '<div style="color:#8a5300;border:1px solid #8a5300;padding:4px 8px">'
    "<b>The kernel behind this explorer has stopped</b> (restarted or shut down): its controls "
    "do nothing now, and the figure below is the last one it drew. To use it again, "
    "<b>run this cell again</b> (Shift+Enter), after the cells above it "
    "(<i>Run &gt; Run All Cells</i> does both).</div>"
)
# How the explorer learns that its kernel is gone, with nothing but CSS (no JavaScript of its
# own: only core ipywidgets): after a restart ipywidgets marks every view of the old kernel
# ``jupyter-widgets-disconnected``; after a shutdown (or a crash) JupyterLab's kernel indicator
# in the notebook's toolbar reads "unknown" (or "dead"). The style lives in a hidden HTML
# widget inside the explorer, so it is on the page exactly while an explorer is.
_GONE = (
    ".bnteach-explorer.jupyter-widgets-disconnected",
    ".jp-NotebookPanel:has(.jp-Notebook-ExecutionIndicator:is([data-status=unknown],"
    "[data-status=dead])) .bnteach-explorer",
)
LIVE_STYLE = (
    "<style>"
    ".jp-OutputArea:has(.bnteach-explorer) .bnteach-rerun, "
    ".output_area:has(.bnteach-explorer) .bnteach-rerun {display: none}"
    + ", ".join(f"{g} .bnteach-gone" for g in _GONE)
    + " {display: block !important}"
    + ", ".join(f"{g} .bnteach-controls" for g in _GONE)
    + " {opacity: 0.35; filter: grayscale(1); pointer-events: none}"
    ".bnteach-explorer.jupyter-widgets-disconnected::before, "
    ".bnteach-explorer .jupyter-widgets-disconnected::before {display: none}"
    "</style>"
)


def _key(settings):
    return tuple(sorted(settings.items()))


class Explorer(widgets.VBox):
    """Base of the explorers: rows of controls, a progress line, outputs, a caption.

    A subclass builds its controls and outputs, calls ``super().__init__`` and implements:

    - ``settings()``: the control values, a dict;
    - ``compute(settings)``: an iterable of states, each a partial result (the last one is
      final; e.g. :func:`bnteach.explore.compare_stream`), raising ``ValueError``/``TypeError``
      for an impossible combination, which is then shown inside the widget;
    - ``draw(settings, state)``: ``({output attribute: value}, caption)`` for one state;
    - ``progress(settings, state)``: ``(text, done, total)``; ``state`` is ``None`` at the start.

    ``renders`` counts computations started, ``redraws`` figures drawn (partial ones included).
    """

    cache_size = 16
    # Inside a kernel, compute in the background (progress at once, curves as epochs finish).
    # False: compute before returning, so the cell's output holds the finished view (the book's
    # executed notebooks: tools/build_book.py sets it in their kernels).
    background = True

    def __init__(self, rows, outputs, debounce=0.3):
        self.message = widgets.HTML()
        self.status = widgets.HTML()
        self.progress_bar = widgets.IntProgress(
            min=0, max=1, value=0, layout=widgets.Layout(width="200px", visibility="hidden")
        )
        self.caption = widgets.HTML()
        self.outputs = widgets.VBox([*outputs, self.caption])
        self.renders = self.redraws = 0
        self.task = None  # the asyncio task computing, inside a kernel
        self._cache = collections.OrderedDict()
        self._key = None
        hidden = widgets.Layout(display="none")
        self.gone_note = widgets.HTML(GONE_NOTE, layout=hidden)
        self.gone_note.add_class("bnteach-gone")
        self.controls = widgets.VBox(list(rows))
        self.controls.add_class("bnteach-controls")
        super().__init__(
            children=[
                self.gone_note,
                self.controls,
                widgets.HBox([self.progress_bar, self.status]),
                self.message,
                self.outputs,
                widgets.HTML(LIVE_STYLE, layout=widgets.Layout(display="none")),
            ]
        )
        self.add_class("bnteach-explorer")
        self._debouncer = Debouncer(self.refresh, delay=debounce)
        for row in rows:
            for w in row.children:
                if hasattr(w, "value") and not isinstance(w, widgets.HTML):
                    w.observe(self._changed, names="value")
        self.refresh()

    # -- what subclasses implement
    def settings(self):
        raise NotImplementedError

    def compute(self, settings):
        raise NotImplementedError

    def draw(self, settings, state):
        raise NotImplementedError

    def progress(self, settings, state):
        return "computing", 0, 1

    # -- wiring
    def _changed(self, _change):
        """A control moved: stop the computation for old settings now, say so, then debounce."""
        self.cancel()
        if _key(self.settings()) != self._key:
            self._show_progress(self.settings(), None)
        self._debouncer.trigger()

    def cancel(self):
        """Cancel a running computation (its partial figure stays, captioned as partial)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            self._key = None
        self.task = None

    def refresh(self):
        """Show the current settings: from the cache, or by computing them (in the background
        inside a kernel); an impossible combination is explained inside the widget."""
        settings = self.settings()
        key = _key(settings)
        if key == self._key:
            return
        self.cancel()
        self._key = key
        if key in self._cache:
            self._cache.move_to_end(key)
            self._set(*self._cache[key])
            self._idle()
            return
        self.renders += 1
        self._show_progress(settings, None)
        try:
            states = iter(self.compute(settings))
        except (ValueError, TypeError) as err:
            self._error(err)
            return
        try:
            loop = asyncio.get_running_loop() if self.background else None
        except RuntimeError:
            loop = None
        if loop is None:
            self._consume(key, settings, states)
        else:
            self.task = loop.create_task(self._consume_async(key, settings, states))

    def _consume(self, key, settings, states):
        """Without an event loop: compute to the end, draw the final state once."""
        state = None
        try:
            for state in states:  # noqa: B007 (the last one is drawn)
                pass
        except (ValueError, TypeError) as err:
            self._error(err)
            return
        self._final(key, settings, state)

    async def _consume_async(self, key, settings, states):
        """Inside a kernel: one epoch per step, then back to the event loop (control changes
        get through and may cancel this task); redraw when :class:`explore.Redraws` says so."""
        redraws = explore.Redraws()
        state = None
        try:
            await asyncio.sleep(0)  # let the progress line reach the browser first
            for state in states:
                if getattr(state, "finished", True):
                    break
                done, total = self._show_progress(settings, state)
                if redraws.due(done=done, total=total):
                    start = time.perf_counter()
                    self._set(*self.draw(settings, state))
                    self.redraws += 1
                    redraws.drew(time.perf_counter() - start)
                await asyncio.sleep(0)
        except (ValueError, TypeError) as err:
            self._error(err)
            return
        except Exception as err:  # a bug: say so in the widget (a task's error is unseen)
            self._error(err, prefix="Failed (a bug in bnteach, please report it)")
            raise
        finally:
            if hasattr(states, "close"):
                states.close()
        self._final(key, settings, state)

    def _final(self, key, settings, state):
        values, caption = self.draw(settings, state)
        self.redraws += 1
        self._cache[key] = (values, caption)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        self._set(values, caption)
        self._idle()

    def _set(self, values, caption):
        for name, value in values.items():
            getattr(self, name).value = value
        self.caption.value = f"<b>Shown:</b> {html.escape(caption)}"
        self.message.value = ""
        self.outputs.layout.display = None

    def _show_progress(self, settings, state):
        text, done, total = self.progress(settings, state)
        self.progress_bar.max, self.progress_bar.value = max(total, 1), done
        self.progress_bar.layout.visibility = "visible"
        self.status.value = f"<b>{html.escape(text)}</b>"
        return done, total

    def _idle(self):
        self.progress_bar.layout.visibility = "hidden"
        self.status.value = ""

    def _error(self, err, prefix="Not possible"):
        self._idle()
        self.message.value = error_html(err, prefix)
        self.outputs.layout.display = "none"

    def _ipython_display_(self):
        """Display the note for reopened notebooks, then the widget itself."""
        from IPython.display import HTML, display

        display(HTML(RERUN_NOTE))
        display(self._repr_mimebundle_(), raw=True)


def _training_progress(result, epochs, n_models, caption):
    done = 0 if result is None else result.epochs_run
    return f"training {n_models} models: epoch {done}/{epochs} · {caption}", done, epochs


# ============================================================================= layer explorer


class LayerExplorer(Explorer):
    """The "inside the layer" explorer (see :func:`bnteach.explore.layer_state`).

    Controls (attributes): ``layer_batch_size``, ``layer_momentum``, ``layer_shift`` (sliders),
    ``layer_mode`` (train/eval), ``layer_steps`` (training batches seen before the display
    batch) with buttons ``layer_step1``, ``layer_step10``, ``layer_reset``. Outputs:
    ``layer_image`` (PNG), ``layer_note`` (HTML); ``message`` shows impossible settings.
    """

    def __init__(
        self, batch_size=16, momentum=0.1, shift=0.0, training=True, seed=None, debounce=0
    ):
        call = "bnteach.explore.layer_state(...)"
        check_within("batch_size", batch_size, 1, 64, call)
        check_within("momentum", momentum, 0.0, 1.0, call)
        check_within("shift", shift, -10.0, 10.0, call)
        check_option("training", training, (True, False), call)
        self.layer_batch_size = widgets.IntSlider(
            value=batch_size, min=1, max=64, description="batch size",
            continuous_update=False, style=STYLE,
        )  # fmt: skip
        self.layer_momentum = widgets.FloatSlider(
            value=momentum, min=0.0, max=1.0, step=0.01, description="momentum",
            continuous_update=False, style=STYLE,
        )  # fmt: skip
        self.layer_shift = widgets.FloatSlider(
            value=shift, min=-10.0, max=10.0, step=0.5, description="shift sample 0",
            continuous_update=False, style=STYLE,
        )  # fmt: skip
        self.layer_mode = widgets.ToggleButtons(
            options=[("train", True), ("eval", False)], value=training, description="mode",
            style=STYLE,
        )  # fmt: skip
        self.layer_steps = widgets.BoundedIntText(
            value=0, min=0, max=explore.LAYER_MAX_STEPS, description="steps seen", style=STYLE,
            layout=widgets.Layout(width="200px"),
        )  # fmt: skip
        self.layer_step1 = widgets.Button(description="+1 training step")
        self.layer_step10 = widgets.Button(description="+10 training steps")
        self.layer_reset = widgets.Button(description="reset (fresh layer)")
        self.layer_image = _image()
        self.layer_note = widgets.HTML()
        self.layer_seed = stats.seeds(1)[0] if seed is None else seed
        rows = [
            widgets.HBox([self.layer_batch_size, self.layer_momentum]),
            widgets.HBox([self.layer_shift, self.layer_mode]),
            widgets.HBox([self.layer_steps, self.layer_step1, self.layer_step10, self.layer_reset]),
        ]
        self.layer_step1.on_click(lambda _: self._add_steps(1))
        self.layer_step10.on_click(lambda _: self._add_steps(10))
        self.layer_reset.on_click(lambda _: setattr(self.layer_steps, "value", 0))
        super().__init__(rows, [self.layer_note, self.layer_image], debounce)

    def _add_steps(self, k):
        self.layer_steps.value = min(self.layer_steps.value + k, explore.LAYER_MAX_STEPS)

    def settings(self):
        return {
            "batch_size": self.layer_batch_size.value,
            "momentum": self.layer_momentum.value,
            "shift": self.layer_shift.value,
            "training": self.layer_mode.value,
            "steps": self.layer_steps.value,
            "seed": self.layer_seed,
        }

    def compute(self, settings):
        return [explore.layer_state(**settings)]

    def draw(self, settings, state):
        png = explore.figure_png(plot_layer_state(state))
        mode = "train" if state["training"] else "eval"
        caption = (
            f"one nn.BatchNorm1d({explore.LAYER_FEATURES}), {mode} mode, "
            f"batch size {state['batch_size']}, momentum {state['momentum']:g}, "
            f"{state['steps']} training steps before, shift {state['shift']:+g} on sample 0, "
            f"seed {state['seed']}"
        )
        return {"layer_image": png, "layer_note": html.escape(explore.layer_note(state))}, caption

    def layer_refresh(self):
        """Recompute and redraw for the current controls (the same as ``refresh``)."""
        self.refresh()


def layer_explorer(batch_size=16, momentum=0.1, shift=0.0, training=True, seed=None):
    """Build the "inside the layer" explorer (a ``LayerExplorer``, an ipywidgets VBox)."""
    return LayerExplorer(batch_size, momentum, shift, training, seed)


# ==================================================================== comparison explorer


class CompareExplorer(Explorer):
    """Plain vs BN over seeds: the figure (``image``, PNG) and a summary ``table``.

    Controls (attributes): ``lr`` (log slider), ``epochs``, ``batch_size``, ``seeds``,
    ``depth``, ``activation``. Seeds are ``bnteach.stats.seeds(n)``.
    """

    def __init__(
        self,
        lr=0.01,
        epochs=25,
        batch_size=64,
        n_seeds=8,
        depth=2,
        activation="relu",
        debounce=0.3,
        device=None,
    ):
        call = "bnteach.explore.compare_run(...)"
        check_within("lr", lr, 1e-4, 10**0.5, call)
        check_within("epochs", epochs, 1, 60, call)
        check_option("batch_size", batch_size, explore.COMPARE_BATCH_SIZES, call)
        check_within("n_seeds", n_seeds, 1, 16, call)
        check_within("depth", depth, 1, 8, call)
        check_option("activation", activation, explore.COMPARE_ACTIVATIONS, call)
        self.lr = widgets.FloatLogSlider(
            value=lr, base=10, min=-4, max=0.5, step=0.125, description="learning rate",
            continuous_update=False, readout_format=".3g", style=STYLE,
        )  # fmt: skip
        self.epochs = widgets.IntSlider(
            value=epochs, min=1, max=60, description="epochs", continuous_update=False, style=STYLE
        )
        self.batch_size = widgets.SelectionSlider(
            options=explore.COMPARE_BATCH_SIZES, value=batch_size, description="batch size",
            continuous_update=False, style=STYLE,
        )  # fmt: skip
        self.seeds = widgets.IntSlider(
            value=n_seeds, min=1, max=16, description="seeds", continuous_update=False, style=STYLE
        )
        self.depth = widgets.IntSlider(
            value=depth, min=1, max=8, description="hidden layers", continuous_update=False,
            style=STYLE,
        )  # fmt: skip
        self.activation = widgets.Dropdown(
            options=explore.COMPARE_ACTIVATIONS, value=activation, description="activation",
            style=STYLE,
        )  # fmt: skip
        self.image = _image()
        self.table = widgets.HTML()
        self.device = device
        self.figure = None  # the matplotlib Figure behind ``image``, kept between redraws
        controls = [self.lr, self.epochs, self.batch_size, self.seeds, self.depth, self.activation]
        rows = [widgets.HBox(controls[:3]), widgets.HBox(controls[3:])]
        super().__init__(rows, [self.image, self.table], debounce)

    def settings(self):
        """The current control values as keyword arguments of ``compare_run``."""
        return {
            "lr": self.lr.value,
            "epochs": self.epochs.value,
            "batch_size": self.batch_size.value,
            "n_seeds": self.seeds.value,
            "depth": self.depth.value,
            "activation": self.activation.value,
        }

    def compute(self, settings):
        return explore.compare_stream(**settings, device=self.device)

    def progress(self, settings, state):
        s = settings
        caption = (
            f"lr {s['lr']:.3g}, batch size {s['batch_size']}, {s['n_seeds']} seeds, "
            f"{s['depth']} hidden layers, {s['activation']}"
        )
        return _training_progress(state, s["epochs"], 2 * s["n_seeds"], caption)

    def draw(self, settings, result):
        # One figure per explorer, redrawn in place: its panels and ticks are kept.
        self.figure = explore.compare_figure(result, fig=self.figure)
        values = {"image": explore.figure_png(self.figure)}
        values["table"] = (
            explore.compare_html(explore.compare_summary(result))
            if result.finished
            else "<i>The summary table follows when the last epoch is done.</i>"
        )
        caption = explore.compare_caption(result)
        return values, caption + ". Thick line: mean over seeds; band: min to max."


def compare_explorer(**settings):
    """Build the comparison explorer (a ``CompareExplorer``); see its arguments."""
    return CompareExplorer(**settings)


# ============================================================== learning-rate sweep explorer


class LrSweepExplorer(Explorer):
    """Final validation accuracy and loss against learning rate, plain vs BN, over seeds.

    Controls: ``lr_range`` (powers of 10; ``lr_range_text`` spells it out), ``points``,
    ``epochs``, ``seeds``, ``depth``. Output: ``image`` (PNG, both panels).
    """

    def __init__(
        self,
        low_exp=-3.0,
        high_exp=0.0,
        points=7,
        epochs=15,
        n_seeds=4,
        depth=2,
        debounce=0.3,
        device=None,
    ):
        call = "bnteach.explore.lrsweep_run(...)"
        check_within("low_exp", low_exp, -4.0, 0.5, call)
        check_within("high_exp", high_exp, -4.0, 0.5, call)
        check_within("points", points, 2, 12, call)
        check_within("epochs", epochs, 1, 40, call)
        check_within("n_seeds", n_seeds, 1, 10, call)
        check_within("depth", depth, 1, 8, call)
        # No readout: the slider's own one is clipped ("-3.00 - 0.0"); lr_range_text says it.
        self.lr_range = widgets.FloatRangeSlider(
            value=(low_exp, high_exp), min=-4, max=0.5, step=0.25, description="lr range",
            readout=False, continuous_update=False, style=STYLE,
        )  # fmt: skip
        self.lr_range_text = widgets.HTML(layout=widgets.Layout(width="220px"))
        self.points = widgets.IntSlider(
            value=points, min=2, max=12, description="learning rates", continuous_update=False,
            style=STYLE,
        )  # fmt: skip
        self.epochs = widgets.IntSlider(
            value=epochs, min=1, max=40, description="epochs", continuous_update=False, style=STYLE
        )
        self.seeds = widgets.IntSlider(
            value=n_seeds, min=1, max=10, description="seeds", continuous_update=False, style=STYLE
        )
        self.depth = widgets.IntSlider(
            value=depth, min=1, max=8, description="hidden layers", continuous_update=False,
            style=STYLE,
        )  # fmt: skip
        self.image = _image()
        self.device = device
        self.lr_range.observe(lambda _: self._range_text(), names="value")
        self._range_text()
        rows = [
            widgets.HBox([self.lr_range, self.lr_range_text, self.points]),
            widgets.HBox([self.epochs, self.seeds, self.depth]),
        ]
        super().__init__(rows, [self.image], debounce)

    def _range_text(self):
        low, high = self.lr_range.value
        self.lr_range_text.value = f"10<sup>{low:g}</sup> to 10<sup>{high:g}</sup> = " + (
            f"{10**low:.3g} to {10**high:.3g}"
        )

    def settings(self):
        (low, high) = self.lr_range.value
        return {
            "low_exp": low,
            "high_exp": high,
            "points": self.points.value,
            "epochs": self.epochs.value,
            "n_seeds": self.seeds.value,
            "depth": self.depth.value,
        }

    def compute(self, settings):
        return explore.lrsweep_stream(**settings, device=self.device)

    def progress(self, settings, state):
        s = settings
        caption = (
            f"{s['points']} learning rates from {10 ** s['low_exp']:.3g} to "
            f"{10 ** s['high_exp']:.3g}, {s['n_seeds']} seeds, {s['depth']} hidden layers"
        )
        return _training_progress(state, s["epochs"], 2 * s["points"] * s["n_seeds"], caption)

    def draw(self, settings, result):
        png = explore.figure_png(explore.lrsweep_figure(result))
        n_div = sum(d is not None for d in result.diverged_at)
        caption = explore.lrsweep_caption(result)
        return {"image": png}, f"{caption}; {n_div} diverged. Dots: seeds; line: mean."


def lrsweep_explorer(**settings):
    """Build the learning-rate sweep explorer (a ``LrSweepExplorer``)."""
    return LrSweepExplorer(**settings)
