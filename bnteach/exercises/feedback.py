"""How a check reports: :class:`Feedback`, the :func:`progress` table and the ``_check``
decorator that turns a function of the learner's answers into a check.

Inside a check, raising ``_Wrong`` or ``_NotAttempted`` stops it with that status. The small
helpers at the end read the learner's answers and raise them: placeholders (``_missing``,
``_call``), a number or a choice of the wrong kind (``_number``, ``_choice``); ``_same``
compares numbers with a tolerance. The decorator catches every other exception too, so a
check never raises: such an exception is a bug of the check (errors of the learner's code are
wrapped by ``_call``), and its feedback says so and asks to report it.
"""

import functools
import html
import math
import numbers
import re
from dataclasses import dataclass

import torch

CORRECT, WRONG, NOT_ATTEMPTED = "correct", "wrong", "not attempted"

EXERCISES = {
    "1": "Exercise 1 · larger learning rates",
    "2": "Exercise 2 · a deeper network",
    "3": "Exercise 3 · sigmoid and tanh",
    "4": "Exercise 4 · batch size",
    "5": "Exercise 5 · BN after the activation",
    "6": "Exercise 6 · the redundant bias",
    "7a": "Exercise 7a · BN forward pass",
    "7b": "Exercise 7b · mean-only and variance-only",
    "8": "Exercise 8 · initialisation scale",
    "9": "Exercise 9 · LayerNorm at small batches",
    "10a": "Exercise 10a · folding BN",
    "10b": "Exercise 10b · freezing BN",
}


# ============================================================================ feedback


@dataclass(frozen=True)
class Feedback:
    """What a check found: ``status`` is "correct", "wrong" or "not attempted"."""

    status: str
    message: str
    exercise: str = ""

    @property
    def correct(self):
        return self.status == CORRECT

    @property
    def attempted(self):
        return self.status != NOT_ATTEMPTED

    def _label(self):
        return {CORRECT: "Correct", WRONG: "Not yet", NOT_ATTEMPTED: "Not attempted yet"}[
            self.status
        ]

    def __str__(self):
        head = f"{self.exercise}: " if self.exercise else ""
        return f"{head}{self._label()}. {self.message}"

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        color = {CORRECT: "#2e7d32", WRONG: "#c62828", NOT_ATTEMPTED: "#757575"}[self.status]
        mark = {CORRECT: "&#10004;", WRONG: "&#10008;", NOT_ATTEMPTED: "&#8230;"}[self.status]
        return (
            f'<div style="border-left: 6px solid {color}; padding: 4px 10px; margin: 4px 0">'
            f'<b style="color: {color}">{mark} {html.escape(self.exercise)}: '
            f"{self._label()}.</b> {_html(self.message)}</div>"
        )


def _html(text):
    """Escape text and show `code` spans as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


_RESULTS = {}


class Progress:
    """The latest feedback per exercise: a table in a notebook, lines of text elsewhere."""

    def __init__(self, results):
        self.results = dict(results)

    @property
    def all_correct(self):
        return all(k in self.results and self.results[k].correct for k in EXERCISES)

    def status(self, exercise):
        fb = self.results.get(exercise)
        return "not checked" if fb is None else fb.status

    def __repr__(self):
        done = sum(self.status(k) == CORRECT for k in EXERCISES)
        lines = [f"{done} of {len(EXERCISES)} exercises correct"]
        lines += [f"  {EXERCISES[k]}: {self.status(k)}" for k in EXERCISES]
        return "\n".join(lines)

    def _repr_html_(self):
        colors = {CORRECT: "#2e7d32", WRONG: "#c62828"}
        rows = "".join(
            f"<tr><td>{html.escape(EXERCISES[k])}</td>"
            f'<td style="color: {colors.get(self.status(k), "#757575")}">'
            f"{self.status(k)}</td></tr>"
            for k in EXERCISES
        )
        done = sum(self.status(k) == CORRECT for k in EXERCISES)
        return (
            f"<b>{done} of {len(EXERCISES)} exercises correct</b>"
            f"<table><tr><th>exercise</th><th>status</th></tr>{rows}</table>"
        )


def progress():
    """A :class:`Progress` table of the latest feedback of every exercise."""
    return Progress(_RESULTS)


def reset():
    """Forget all recorded feedback."""
    _RESULTS.clear()


def _show(feedback):
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        from IPython.display import display

        display(feedback)
    else:
        print(feedback)


class _Wrong(Exception):
    """Raised inside a check to stop with a "wrong" feedback."""


class _NotAttempted(Exception):
    """Raised inside a check to stop with a "not attempted" feedback."""


def _internal_error(exercise, err):
    """The message for an exception the check did not raise on purpose. Errors of the learner's
    own code are wrapped as _Wrong where it is called (``_call``), so this is the checker's."""
    return (
        f"Internal error of the check for exercise {exercise} (not a verdict on your answer): "
        f"{type(err).__name__}: {err}. Please report it to the course maintainers, with the "
        f"answer you passed; meanwhile compare your answer with what the exercise asks for."
    )


def _check(exercise):
    """Turn a function that returns a message (or raises _Wrong/_NotAttempted) into a check."""

    def decorate(fn):
        @functools.wraps(fn)
        def check(*args, show=True, **kwargs):
            try:
                with torch.random.fork_rng(devices=[]):  # leave the learner's RNG alone
                    fb = Feedback(CORRECT, fn(*args, **kwargs))
            except _Wrong as err:
                fb = Feedback(WRONG, str(err))
            except _NotAttempted as err:
                fb = Feedback(NOT_ATTEMPTED, str(err))
            except Exception as err:  # a bug in the check itself: never crash, never blame
                fb = Feedback(WRONG, _internal_error(exercise, err))
            fb = Feedback(fb.status, fb.message, EXERCISES[exercise])
            _RESULTS[exercise] = fb
            if show:
                _show(fb)
            return fb

        check.exercise = exercise
        return check

    return decorate


# ============================================================================ answers


def _missing(answers, hint):
    """Raise _NotAttempted if any answer (name -> value) is still None."""
    missing = [name for name, value in answers.items() if value is None]
    if missing:
        names = ", ".join(f"`{n}`" for n in missing)
        raise _NotAttempted(f"{names} {'is' if len(missing) == 1 else 'are'} still None. {hint}")


def _call(fn, *args, name, **kwargs):
    """Call the learner's function; placeholders mean not attempted, errors mean wrong."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotAttempted(
            f"`{name}` still raises NotImplementedError: replace that line with your code."
        ) from None
    except (_Wrong, _NotAttempted):
        raise
    except Exception as err:
        raise _Wrong(f"Calling `{name}` raised {type(err).__name__}: {err}") from None


def _number(value, what):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Wrong(f"{what} should be a number, got {type(value).__name__} {value!r}.")
    return float(value)


def _same(a, b, tol):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(b))


def _choice(value, options, name):
    if isinstance(value, str) and value in options:
        return value
    shown = ", ".join(repr(o) for o in options)
    raise _Wrong(f"`{name}` should be one of {shown}; got {value!r}.")
