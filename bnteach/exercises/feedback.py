"""How a check reports: :class:`Feedback`, the :func:`progress` table and the ``_check``
decorator that turns a function of the learner's answers into a check.

Inside a check, raising ``_Wrong`` or ``_NotAttempted`` stops it with that status. The small
helpers at the end read the learner's answers and raise them: placeholders (``_missing``,
``_call``), a number or a choice of the wrong kind (``_number``, ``_choice``), a tensor that is
None, of the wrong kind, dtype or shape, or holds NaN (``_tensor``, ``_finite``,
``_finite_module``); ``_same`` compares numbers with a tolerance.

The decorator catches every other exception too, so a check never raises. A check called with
arguments it does not take says so; an exception that passed through the learner's own code
(a function, a module's method, a hook the learner wrote) is the learner's and is named as
such, with the line; anything else is a bug of the check, and its feedback says so and asks to
report it.
"""

import functools
import html
import inspect
import math
import numbers
import os
import re
import sysconfig
import types
from dataclasses import dataclass

import torch
from torch import nn

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
    """The latest feedback per exercise: a table in a notebook, lines of text elsewhere.

    ``exercises``: key -> title of the exercises to list (default: notebook 05's).
    """

    def __init__(self, results, exercises=None):
        self.results = dict(results)
        self.exercises = EXERCISES if exercises is None else dict(exercises)

    @property
    def all_correct(self):
        return all(k in self.results and self.results[k].correct for k in self.exercises)

    def status(self, exercise):
        fb = self.results.get(exercise)
        return "not checked" if fb is None else fb.status

    def __repr__(self):
        done = sum(self.status(k) == CORRECT for k in self.exercises)
        lines = [f"{done} of {len(self.exercises)} exercises correct"]
        lines += [f"  {self.exercises[k]}: {self.status(k)}" for k in self.exercises]
        return "\n".join(lines)

    def _repr_html_(self):
        colors = {CORRECT: "#2e7d32", WRONG: "#c62828"}
        rows = "".join(
            f"<tr><td>{html.escape(self.exercises[k])}</td>"
            f'<td style="color: {colors.get(self.status(k), "#757575")}">'
            f"{self.status(k)}</td></tr>"
            for k in self.exercises
        )
        done = sum(self.status(k) == CORRECT for k in self.exercises)
        return (
            f"<b>{done} of {len(self.exercises)} exercises correct</b>"
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


_BNTEACH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIBRARY_DIRS = tuple(
    os.path.abspath(p)
    for p in {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    if p
)


def _is_ours_or_library(filename):
    """Whether code in ``filename`` belongs to bnteach, Python or an installed package."""
    if filename.startswith("<frozen") or filename.startswith("<string>"):
        return True
    path = os.path.abspath(filename)
    return path.startswith(_BNTEACH_DIR + os.sep) or path.startswith(_LIBRARY_DIRS)


def _learner_code(objects):
    """The code objects the learner wrote among ``objects`` (the answers given to a check):
    functions and lambdas (with the functions defined inside them), methods of their own
    classes (an nn.Module subclass, a callable object) and functions stored on modules."""
    codes, seen = set(), set()

    def add(code):
        if code not in codes and not _is_ours_or_library(code.co_filename):
            codes.add(code)
            for const in code.co_consts:
                if isinstance(const, types.CodeType):
                    add(const)

    def add_class(cls):
        for klass in cls.__mro__:
            for value in vars(klass).values():
                value = getattr(value, "__func__", value)
                if isinstance(value, types.FunctionType):
                    add(value.__code__)

    def visit(obj, depth=0):
        if id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            visit(obj.func, depth + 1)
        elif isinstance(obj, (types.FunctionType, types.MethodType)):
            func = getattr(obj, "__func__", obj)
            if _is_ours_or_library(func.__code__.co_filename):
                return
            add(func.__code__)
            for name in func.__code__.co_names:  # the learner's helpers it calls by name
                helper = func.__globals__.get(name)
                if isinstance(helper, types.FunctionType):
                    visit(helper, depth + 1)
                elif isinstance(helper, type):  # add() keeps only the learner's methods
                    add_class(helper)
        elif isinstance(obj, nn.Module):
            for m in obj.modules():
                add_class(type(m))
                for value in vars(m).values():
                    visit(value, depth + 1)
        elif isinstance(obj, dict):
            for value in obj.values():
                visit(value, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for value in obj[:50]:
                visit(value, depth + 1)
        elif callable(obj) and not isinstance(obj, type):
            add_class(type(obj))

    for obj in objects:
        visit(obj)
    return codes


def _learner_frame(err, codes):
    """The innermost traceback frame of ``err`` that runs the learner's code, or None."""
    found, tb = None, err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            found = tb
        tb = tb.tb_next
    return found


def _called_wrongly(err, codes):
    """The learner's function that a TypeError says was called with arguments it does not
    take ("freeze_bn.<locals>.<lambda>() takes 0 positional arguments but 1 was given"): such
    a call fails before the function runs, so no frame of it is in the traceback."""
    if not isinstance(err, TypeError):
        return None
    text = str(err)
    for code in codes:
        if text.startswith(f"{getattr(code, 'co_qualname', code.co_name)}()"):
            return code
    return None


def _where_in_learner_code(err, codes):
    tb = _learner_frame(err, codes)
    if tb is None:
        return ""
    name = tb.tb_frame.f_code.co_name
    where = "a lambda" if name == "<lambda>" else f"`{name}`"
    return f" (in {where}, line {tb.tb_lineno})"


def _learners_error(err, codes):
    """The message for an exception that came out of the learner's code."""
    code = _called_wrongly(err, codes) if _learner_frame(err, codes) is None else None
    if code is not None:
        name = "lambda" if code.co_name == "<lambda>" else f"`{code.co_name}`"
        return (
            f"Your {name} (line {code.co_firstlineno}) was called with arguments it does not "
            f"take: {err}. Whatever calls it (PyTorch, e.g. `model.train()` calls every "
            f"module's `train(mode)`, or the check) passes the documented arguments: give it "
            f"the same parameters as the method or function it stands for."
        )
    return (
        f"Your code raised {type(err).__name__}: {err}{_where_in_learner_code(err, codes)}. "
        f"The check ran it as the exercise describes; fix the error and check again."
    )


def _bad_call(fn, err, kwargs):
    """The message for a check called with arguments it does not take."""
    unknown = [k for k in kwargs if k not in inspect.signature(fn).parameters]
    if unknown:
        err = f"unexpected keyword argument{'s' if len(unknown) > 1 else ''} " + ", ".join(
            repr(k) for k in unknown
        )
    return (
        f"The check was called with arguments it does not take ({err}): call it as "
        f"{fn.__name__}{inspect.signature(fn)}, as in the exercise's cell. (Not a verdict on "
        f"your answer.)"
    )


def _check(exercise, titles=None, results=None):
    """Turn a function that returns a message (or raises _Wrong/_NotAttempted) into a check.

    ``titles`` and ``results``: the table of exercise titles and the dict the results are
    recorded in (default: notebook 05's ``EXERCISES`` and progress); notebooks 07 and 08 pass
    their own."""
    titles = EXERCISES if titles is None else titles
    results = _RESULTS if results is None else results

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def check(*args, show=True, **kwargs):
            try:
                signature.bind(*args, **kwargs)
            except TypeError as err:
                fb = Feedback(WRONG, _bad_call(fn, err, kwargs), titles[exercise])
                results[exercise] = fb
                if show:
                    _show(fb)
                return fb
            try:
                with torch.random.fork_rng(devices=[]):  # leave the learner's RNG alone
                    fb = Feedback(CORRECT, fn(*args, **kwargs))
            except _Wrong as err:
                fb = Feedback(WRONG, str(err))
            except _NotAttempted as err:
                fb = Feedback(NOT_ATTEMPTED, str(err))
            except Exception as err:  # never crash; blame the learner only for their code
                codes = _learner_code([*args, *kwargs.values()])
                if _learner_frame(err, codes) is not None or _called_wrongly(err, codes):
                    fb = Feedback(WRONG, _learners_error(err, codes))
                else:
                    fb = Feedback(WRONG, _internal_error(exercise, err))
            fb = Feedback(fb.status, fb.message, titles[exercise])
            results[exercise] = fb
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


def _shown(value):
    """How an argument the check passes is shown in a call: ``<tensor (16, 5)>``, ``<MLP>``."""
    if isinstance(value, torch.Tensor):
        return f"<tensor {tuple(value.shape)}>"
    if isinstance(value, (bool, numbers.Number, str)) or value is None:
        return repr(value)
    return f"<{type(value).__name__}>"


def _call_text(name, args, kwargs):
    parts = [_shown(a) for a in args] + [f"{k}={_shown(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _accepts(fn, *args, **kwargs):
    """Whether ``fn``'s signature takes these arguments (None if it cannot be read)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _call(fn, *args, name, **kwargs):
    """Call the learner's function; placeholders mean not attempted, errors mean wrong.

    A function whose parameters do not take the documented call (a missing parameter, a
    keyword it lacks) is told so before it runs; an exception it raises is named with the
    line of the learner's code it came from."""
    if not callable(fn):
        raise _Wrong(f"`{name}` should be a function, got {type(fn).__name__} {fn!r:.60}.")
    if _accepts(fn, *args, **kwargs) is False:
        try:
            inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as err:
            why = str(err)
        raise _Wrong(
            f"The check calls your function as the exercise documents, "
            f"{_call_text(name, args, kwargs)}, but `{name}` does not accept that: {why}. "
            f"Check the parameters in its `def` line (names, number, defaults)."
        )
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotAttempted(
            f"`{name}` still raises NotImplementedError: replace that line with your code."
        ) from None
    except (_Wrong, _NotAttempted):
        raise
    except Exception as err:
        codes = _learner_code([fn])
        if _learner_frame(err, codes) is None and _called_wrongly(err, codes):
            raise _Wrong(_learners_error(err, codes)) from None
        where = _where_in_learner_code(err, codes)
        raise _Wrong(f"Calling `{name}` raised {type(err).__name__}: {err}{where}") from None


def _number(value, what):
    if value is None:
        raise _Wrong(f"{what} is still None: put the number there.")
    if isinstance(value, torch.Tensor):
        if value.numel() == 1 and not value.dtype.is_complex:
            return float(value)
        raise _Wrong(
            f"{what} should be one number, got a tensor of shape {tuple(value.shape)}: take "
            f"the single value you mean (e.g. `.item()` of a one-element tensor)."
        )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Wrong(f"{what} should be a number, got {type(value).__name__} {value!r:.60}.")
    return float(value)


def _first_bad(t):
    """``("NaN" or "inf", "[i, j]", count)`` for a tensor with non-finite values, else None."""
    t = t.detach()
    if not (t.dtype.is_floating_point or t.dtype.is_complex):
        return None
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return None
    nan = torch.isnan(t)
    mask, kind = (nan, "NaN") if bool(nan.any()) else (bad, "inf")
    index = mask.nonzero()[0].tolist()
    return kind, f"[{', '.join(map(str, index))}]" if index else "", int(bad.sum())


def _finite(t, what, hint=""):
    """Raise _Wrong if the tensor ``t`` holds NaN or infinity, saying where."""
    found = _first_bad(t)
    if found is None:
        return t
    kind, where, count = found
    at = f" at {where}" if where else ""
    of = f" ({count} of {t.numel()} values are not finite)" if t.numel() > 1 else ""
    raise _Wrong(f"{what} contains {kind}{at}{of}. {hint}".rstrip())


def _finite_module(model, what):
    """Raise _Wrong if a parameter or buffer of ``model`` holds NaN or infinity."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t is not None and _first_bad(t) is not None:
            _finite(
                t,
                f"{what}, `{name}`",
                "A step of your code produced it (a division by zero, a square root of a "
                "negative number?): the values of a model must stay finite.",
            )
    return model


def _tensor(value, what, shape=None, none="returns None", hint="", placeholder=True):
    """The learner's tensor ``value``: None is a placeholder (_NotAttempted; _Wrong with
    ``placeholder=False``); another kind, a dtype that is not floating point, a shape other
    than ``shape`` or NaN/infinity raise _Wrong. ``what`` names it ("The output of `f`"),
    ``none`` completes the sentence for None, ``hint`` is added to the shape message."""
    if value is None:
        raise (_NotAttempted if placeholder else _Wrong)(f"{what} {none}.")
    if not isinstance(value, torch.Tensor):
        kind = type(value).__name__
        if type(value).__module__.startswith("numpy"):
            kind = f"a NumPy {kind}: stay in torch (no .numpy()) so autograd can follow"
        raise _Wrong(f"{what} should be a torch tensor, got {kind}.")
    if not value.dtype.is_floating_point:
        raise _Wrong(
            f"{what} has dtype {value.dtype}; it should hold floating-point numbers like the "
            f"input. Did a comparison, a rounding or an integer conversion slip in?"
        )
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise _Wrong(
            f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}. {hint}".rstrip()
        )
    return _finite(value, what, "Look for a division by zero or the square root of a negative.")


def _same(a, b, tol):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(b))


def _choice(value, options, name):
    if isinstance(value, str) and value in options:
        return value
    shown = ", ".join(repr(o) for o in options)
    raise _Wrong(f"`{name}` should be one of {shown}; got {value!r}.")
