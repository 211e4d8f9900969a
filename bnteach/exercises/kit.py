"""The exercise kit: what every notebook's self-checks stand on.

A check is a function of the learner's answers, decorated with ``Notebook.check``. It verifies
by computing and either returns a message (the answer is correct) or raises :class:`Wrong` or
:class:`NotAttempted` with a message aimed at the mistake. The decorator turns that into a
:class:`Feedback`, shows it, records it for the notebook's :meth:`Notebook.progress` table and
never raises: a check called with arguments it does not take says so; an exception that passed
through the learner's own code (a function, a module's method, a hook) is named as theirs,
with the line; anything else is an internal error of the check, reported as such.

    NB = notebook("07")

    @NB.check("07.1", "spatial BN by reshaping")
    def check_spatial_bn(spatial_bn):
        function(spatial_bn, "spatial_bn")
        out = tensor(call(spatial_bn, x, w, b, 1e-5, name="spatial_bn"), "The output", x.shape)
        name_mistake(out, [(wrong_version, "what that mistake is"), ...], close)
        ...
        return "what was verified"

The rest, all public, reads answers (``missing``, ``function``, ``call``, ``refusal``,
``number``, ``choice``, ``tensor``, ``finite``, ``finite_module``, ``bn_settings``, ``table``,
``per_seed``), compares (``same``, ``close``, ``name_mistake``), checks a learner's experiment
(``sweep_result``, ``finals``, ``mean``, ``spread``, ``differences``, ``paired_finals``,
``check_verdict``, ``one_lr``), re-runs what the learner ran (``device``, ``fork_rng``,
``other_seeds``, ``Rerun``, ``agreement``, ``input_seed``) and computes BN's usual wrong versions
(``per_channel``, ``moments``, ``standardize``, ``bn_mistake``, ``fold_variant``,
``fold_mistakes``, ``folded``).
"""

import contextlib
import copy
import functools
import html
import inspect
import math
import numbers
import os
import re
import statistics
import sysconfig
import types
from dataclasses import dataclass

import torch
from torch import nn

from bnteach.batchnorm import bn_layers
from bnteach.stats import paired, seeds
from bnteach.sweep import SweepResult

CORRECT, WRONG, NOT_ATTEMPTED = "correct", "wrong", "not attempted"
# The margin the exercises state: a difference of at most 0.02 in accuracy (4 of the 200
# validation samples) is "no practical difference".
MARGIN = 0.02
VERDICTS = ("better", "worse", "equivalent", "unresolved")


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
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(self.message, quote=False))
        return (
            f'<div style="border-left: 6px solid {color}; padding: 4px 10px; margin: 4px 0">'
            f'<b style="color: {color}">{mark} {html.escape(self.exercise)}: '
            f"{self._label()}.</b> {text}</div>"
        )


class Progress:
    """The latest feedback per exercise: a table in a notebook, lines of text elsewhere.
    ``results``: key -> Feedback; ``exercises``: key -> title, in the order to list them."""

    def __init__(self, results, exercises):
        self.results = dict(results)
        self.exercises = dict(exercises)

    @property
    def all_correct(self):
        return all(k in self.results and self.results[k].correct for k in self.exercises)

    def status(self, exercise):
        fb = self.results.get(exercise)
        return "not checked" if fb is None else fb.status

    def _done(self):
        done = sum(self.status(k) == CORRECT for k in self.exercises)
        return f"{done} of {len(self.exercises)} exercises correct"

    def __repr__(self):
        lines = [f"  {self.exercises[k]}: {self.status(k)}" for k in self.exercises]
        return "\n".join([self._done(), *lines])

    def _repr_html_(self):
        colors = {CORRECT: "#2e7d32", WRONG: "#c62828"}
        cell = "padding: 2px 1.5em 2px 0; text-align: left"  # a gap between the columns
        rows = "".join(
            f'<tr><td style="{cell}">{html.escape(title)}</td>'
            f'<td style="{cell}; color: {colors.get(self.status(k), "#757575")}">'
            f"{self.status(k)}</td></tr>"
            for k, title in self.exercises.items()
        )
        head = f'<tr><th style="{cell}">exercise</th><th style="{cell}">status</th></tr>'
        table = '<table style="margin-left: 0">'  # under its heading, not centred
        return f"<b>{self._done()}</b>{table}{head}{rows}</table>"


class Wrong(Exception):
    """Raised inside a check to stop with a "wrong" feedback."""


class NotAttempted(Exception):
    """Raised inside a check to stop with a "not attempted" feedback."""


def show_feedback(feedback):
    """Display the feedback in a notebook (HTML), print it elsewhere."""
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


def _natural(key):
    """Sort key of exercise keys: "2" < "7a" < "10a"; "07.1" < "07.2"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


class Notebook:
    """One notebook's exercises: their titles, the latest feedback of each, the check decorator.

    ``number``: the notebook's number, "05"; its checks register with :meth:`check`. Get it
    with :func:`notebook`, so that every module of the notebook's checks shares one."""

    def __init__(self, number):
        self.number = number
        self.results = {}  # key -> the latest Feedback
        self.checks = {}  # key -> the check
        self._titles = {}

    @property
    def titles(self):
        """key -> "Exercise <key> · <title>", in natural order of the keys."""
        return {k: self._titles[k] for k in sorted(self._titles, key=_natural)}

    def progress(self):
        """A :class:`Progress` table of the latest feedback of every exercise."""
        return Progress(self.results, self.titles)

    def reset(self):
        """Forget all recorded feedback."""
        self.results.clear()

    def check(self, key, title):
        """Decorate a function of the learner's answers that returns a message (or raises
        Wrong/NotAttempted): calling it returns, shows (unless ``show=False``) and records a
        :class:`Feedback`, and never raises."""
        self._titles[key] = f"Exercise {key} · {title}"

        def decorate(fn):
            @functools.wraps(fn)
            def check(*args, show=True, **kwargs):
                status, message = _verdict(fn, key, args, kwargs)
                fb = Feedback(status, message, self._titles[key])
                self.results[key] = fb
                if show:
                    show_feedback(fb)
                return fb

            check.exercise = key
            self.checks[key] = check
            return check

        return decorate


_NOTEBOOKS = {}


def notebook(number):
    """The :class:`Notebook` of notebook ``number`` ("05"), made on first use."""
    return _NOTEBOOKS.setdefault(number, Notebook(number))


def _verdict(fn, key, args, kwargs):
    """``(status, message)`` of the check ``fn`` on these answers; never raises."""
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as err:
        return WRONG, _bad_call(fn, err, kwargs)
    try:
        with torch.random.fork_rng(devices=[]), _fixed_torch_settings():
            return CORRECT, fn(*args, **kwargs)
    except Wrong as err:
        return WRONG, str(err)
    except NotAttempted as err:
        return NOT_ATTEMPTED, str(err)
    except (Exception, SystemExit) as err:  # never crash; blame the learner only for their code
        codes = learner_code([*args, *kwargs.values()])
        if _learner_frame(err, codes) is not None or _called_wrongly(err, codes):
            return WRONG, _learners_error(err, codes)
        return WRONG, (
            f"Internal error of the check for exercise {key} (not a verdict on your answer): "
            f"{type(err).__name__}: {err}. Please report it to the course maintainers, with "
            f"the answer you passed; meanwhile compare your answer with what the exercise asks "
            f"for."
        )


@contextlib.contextmanager
def _fixed_torch_settings():
    """Run a check with gradients on and float32 as the default dtype, whatever the notebook
    set (``torch.no_grad`` / ``inference_mode`` around the call, ``set_default_dtype``), and
    give the notebook its own settings back afterwards, whatever the learner's code changed
    (the RNG is left alone by ``fork_rng``)."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    try:  # enable_grad puts the grad mode back on exit, whatever the learner set inside
        with torch.inference_mode(False), torch.enable_grad():
            torch.set_default_dtype(torch.float32)
            yield
    finally:
        torch.set_default_dtype(dtype)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


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


# ============================================================================ whose error


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


class _CodeFinder:
    """Collects the code objects the learner wrote, reachable from the answers."""

    def __init__(self):
        self.codes, self.seen = set(), set()

    def add(self, code):
        if code not in self.codes and not _is_ours_or_library(code.co_filename):
            self.codes.add(code)
            for const in code.co_consts:  # functions defined inside it
                if isinstance(const, types.CodeType):
                    self.add(const)

    def add_class(self, cls):
        for klass in cls.__mro__:
            for value in vars(klass).values():
                value = getattr(value, "__func__", value)
                if isinstance(value, types.FunctionType):
                    self.add(value.__code__)

    def visit(self, obj, depth=0):
        if id(obj) in self.seen or depth > 3:
            return
        self.seen.add(id(obj))
        for kind, method in self.VISITORS:
            if isinstance(obj, kind):
                return method(self, obj, depth + 1)
        if callable(obj) and not isinstance(obj, type):  # a callable object
            self.add_class(type(obj))

    def _partial(self, obj, depth):
        self.visit(obj.func, depth)

    def _function(self, obj, depth):
        func = getattr(obj, "__func__", obj)
        if _is_ours_or_library(func.__code__.co_filename):
            return
        self.add(func.__code__)
        for name in func.__code__.co_names:  # the learner's helpers it calls by name
            helper = func.__globals__.get(name)
            if isinstance(helper, types.FunctionType):
                self.visit(helper, depth)
            elif isinstance(helper, type):  # add() keeps only the learner's methods
                self.add_class(helper)

    def _module(self, obj, depth):
        for m in obj.modules():
            self.add_class(type(m))
            for value in vars(m).values():
                self.visit(value, depth)

    def _items(self, obj, depth):
        for value in list(obj.values() if isinstance(obj, dict) else obj)[:50]:
            self.visit(value, depth)

    VISITORS = (
        (functools.partial, _partial),
        ((types.FunctionType, types.MethodType), _function),
        (nn.Module, _module),
        ((dict, list, tuple), _items),
    )


def learner_code(objects):
    """The code objects the learner wrote among ``objects`` (the answers given to a check):
    functions and lambdas (with the functions defined inside them and the helpers they call),
    methods of their own classes (an nn.Module subclass, a callable object) and functions
    stored on modules."""
    finder = _CodeFinder()
    for obj in objects:
        finder.visit(obj)
    return finder.codes


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


# ============================================================================ answers


def missing(answers, hint):
    """Raise NotAttempted if any answer (name -> value) is still None."""
    names = [name for name, value in answers.items() if value is None]
    if names:
        shown = ", ".join(f"`{n}`" for n in names)
        raise NotAttempted(f"{shown} {'is' if len(names) == 1 else 'are'} still None. {hint}")


def function(fn, name, hint="Write the function."):
    """The learner's function: None is not attempted, anything not callable is wrong."""
    missing({name: fn}, hint)
    if not callable(fn):
        raise Wrong(f"`{name}` should be a function, got {type(fn).__name__}.")
    return fn


def _shown(value):
    """How an argument the check passes is shown in a call: ``<tensor (16, 5)>``, ``<MLP>``."""
    if isinstance(value, torch.Tensor):
        return f"<tensor {tuple(value.shape)}>"
    if isinstance(value, (bool, numbers.Number, str)) or value is None:
        return repr(value)
    return f"<{type(value).__name__}>"


def refusal(fn, *args, **kwargs):
    """Why ``fn``'s signature does not take these arguments, or None (also if unreadable)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        return str(err)
    return None


def call(fn, *args, name, **kwargs):
    """Call the learner's function; placeholders mean not attempted, errors mean wrong.

    A function whose parameters do not take the documented call (a missing parameter, a
    keyword it lacks) is told so before it runs; an exception it raises is named with the
    line of the learner's code it came from."""
    if not callable(fn):
        raise Wrong(f"`{name}` should be a function, got {type(fn).__name__} {fn!r:.60}.")
    why = refusal(fn, *args, **kwargs)
    if why is not None:
        parts = [_shown(a) for a in args] + [f"{k}={_shown(v)}" for k, v in kwargs.items()]
        raise Wrong(
            f"The check calls your function as the exercise documents, "
            f"{name}({', '.join(parts)}), but `{name}` does not accept that: {why}. "
            f"Check the parameters in its `def` line (names, number, defaults)."
        )
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotAttempted(
            f"`{name}` still raises NotImplementedError: replace that line with your code."
        ) from None
    except (Wrong, NotAttempted):
        raise
    except Exception as err:
        codes = learner_code([fn])
        if _learner_frame(err, codes) is None and _called_wrongly(err, codes):
            raise Wrong(_learners_error(err, codes)) from None
        where = _where_in_learner_code(err, codes)
        raise Wrong(f"Calling `{name}` raised {type(err).__name__}: {err}{where}") from None


def number(value, what):
    """The learner's answer as a float; ``what`` names it ("`deep_gap`")."""
    if value is None:
        raise Wrong(f"{what} is still None: put the number there.")
    if isinstance(value, torch.Tensor):
        if value.numel() == 1 and not value.dtype.is_complex:
            return float(value)
        raise Wrong(
            f"{what} should be one number, got a tensor of shape {tuple(value.shape)}: take "
            f"the single value you mean (e.g. `.item()` of a one-element tensor)."
        )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise Wrong(f"{what} should be a number, got {type(value).__name__} {value!r:.60}.")
    return float(value)


def choice(value, options, name):
    """The learner's answer, one of the strings ``options``."""
    if isinstance(value, str) and value in options:
        return value
    shown = ", ".join(repr(o) for o in options)
    raise Wrong(f"`{name}` should be one of {shown}; got {value!r}.")


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


def finite(t, what, hint=""):
    """Raise Wrong if the tensor ``t`` holds NaN or infinity, saying where."""
    found = _first_bad(t)
    if found is None:
        return t
    kind, where, count = found
    at = f" at {where}" if where else ""
    of = f" ({count} of {t.numel()} values are not finite)" if t.numel() > 1 else ""
    raise Wrong(f"{what} contains {kind}{at}{of}. {hint}".rstrip())


def bn_settings(model):
    """Per BN layer of ``model`` (bnteach.batchnorm.bn_layers order): (momentum, eps,
    track_running_stats), to check that a learner's code left a model's configuration alone."""
    return [(m.momentum, m.eps, m.track_running_stats) for m in bn_layers(model)]


def finite_module(model, what):
    """Raise Wrong if a parameter or buffer of ``model`` holds NaN or infinity."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t is not None and _first_bad(t) is not None:
            finite(
                t,
                f"{what}, `{name}`",
                "A step of your code produced it (a division by zero, a square root of a "
                "negative number?): the values of a model must stay finite.",
            )
    return model


def tensor(value, what, shape=None, none="returns None", hint="", placeholder=True):
    """The learner's tensor ``value``: None is a placeholder (NotAttempted; Wrong with
    ``placeholder=False``); another kind, a dtype that is not floating point, a shape other
    than ``shape`` or NaN/infinity raise Wrong. ``what`` names it ("The output of `f`"),
    ``none`` completes the sentence for None, ``hint`` is added to the shape message."""
    if value is None:
        raise (NotAttempted if placeholder else Wrong)(f"{what} {none}.")
    if not isinstance(value, torch.Tensor):
        kind = type(value).__name__
        if type(value).__module__.startswith("numpy"):
            kind = f"a NumPy {kind}: stay in torch (no .numpy()) so autograd can follow"
        raise Wrong(f"{what} should be a torch tensor, got {kind}.")
    if not value.dtype.is_floating_point:
        raise Wrong(
            f"{what} has dtype {value.dtype}; it should hold floating-point numbers like the "
            f"input. Did a comparison, a rounding or an integer conversion slip in?"
        )
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise Wrong(
            f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}. {hint}".rstrip()
        )
    return finite(value, what, "Look for a division by zero or the square root of a negative.")


# ============================================================================ comparing


def same(a, b, tol):
    """Numbers equal within ``tol`` relative to ``b`` (absolute below 1); NaN equals NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(b))


def close(a, b, rtol=1e-5, atol=1e-6):
    """Tensors of one shape that agree elementwise (float64 comparison)."""
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)


def name_mistake(value, mistakes, matches=close):
    """Raise Wrong with the message of the first usual mistake the answer ``value`` matches.

    ``mistakes``: ``(what the mistake gives, message)`` pairs, most specific first; what it
    gives may be a function of no arguments, called only when reached (an expensive re-run).
    ``matches(value, given)`` says whether the answer is that mistake."""
    for given, message in mistakes:
        if matches(value, given() if callable(given) else given):
            raise Wrong(message)


def table(given, expected, name, describe, alternatives=(), tol=2e-3):
    """Compare the learner's dict with ``expected`` (key -> number, recomputed); returns it
    as floats. ``alternatives``: ``(table, message)`` pairs, the usual wrong computations;
    ``describe`` says what the numbers are."""
    if not isinstance(given, dict):
        raise Wrong(
            f"`{name}` should be a dict with keys like {next(iter(expected))!r} and numbers as "
            f"values, got {type(given).__name__}."
        )
    lacks = [repr(k) for k in expected if k not in given]
    extra = [repr(k) for k in given if k not in expected]
    if lacks or extra:
        parts = [f"it lacks the keys {', '.join(lacks)}"] if lacks else []
        parts += [f"it has unexpected keys {', '.join(extra)}"] if extra else []
        raise Wrong(
            f"`{name}` does not have the right keys: {' and '.join(parts)}. Expected exactly "
            f"{', '.join(map(repr, expected))}."
        )
    values = {k: number(given[k], f"`{name}[{k!r}]`") for k in expected}

    def matches(values, other):
        return all(same(values[k], other[k], tol) for k in expected)

    if matches(values, expected):
        return values
    name_mistake(values, alternatives, matches)
    key = next(k for k in expected if not same(values[k], expected[k], tol))
    raise Wrong(
        f"`{name}[{key!r}]` is {values[key]:.4g}, but recomputing it from your result "
        f"gives {expected[key]:.4g} ({describe})."
    )


def per_seed(given, name, keys, what):
    """The learner's ``{key: [one number per seed]}`` as lists of floats: exactly ``keys``, 3 or
    more seeds, the same seeds for every key. ``what``: what the numbers are."""
    if not isinstance(given, dict) or set(given) != set(keys):
        got = sorted(given, key=repr) if isinstance(given, dict) else type(given).__name__
        raise Wrong(f"`{name}` should be a dict with exactly the keys {list(keys)}, got {got}.")
    values = {}
    for k in keys:
        if not isinstance(given[k], (list, tuple)) or len(given[k]) < 3:
            raise Wrong(f"`{name}[{k!r}]` should be a list of {what}, one per seed (3 or more).")
        values[k] = [number(v, f"`{name}[{k!r}]` entries") for v in given[k]]
    if len({len(v) for v in values.values()}) != 1:
        raise Wrong(
            f"Every key of `{name}` needs the same seeds: the lists have different lengths."
        )
    return values


# ============================================================================ experiments


def sweep_result(result, name, min_seeds=3):
    """The learner's ``SweepResult`` with at least ``min_seeds`` seeds."""
    if not isinstance(result, SweepResult):
        raise Wrong(
            f"`{name}` should be the SweepResult returned by `sweep.run(...)`, got "
            f"{type(result).__name__}."
        )
    if len(result.seeds) < min_seeds:
        raise Wrong(
            f"`{name}` has {len(result.seeds)} seed(s). One or two seeds prove nothing here: "
            f"seed-to-seed differences are as large as the effects. Use at least {min_seeds} "
            f"seeds, e.g. seeds=[0, 1, 2, 3, 4]."
        )
    return result


def finals(result, model, metric="val_acc", lr=None):
    """The final ``metric`` of each seed's run of ``model`` (at ``lr``), in seed order."""
    return [getattr(h, metric)[-1] for h in result.histories(model=model, lr=lr)]


def mean(values):
    return statistics.fmean(values)


def spread(values):
    return f"{mean(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def differences(a, b):
    """The keys whose values differ between two dicts of the same keys (model specs)."""
    return {k for k in a if a[k] != b[k]}


def paired_finals(result, a, b, lr=None):
    """The paired comparison of ``a`` with ``b`` over ``result``'s seeds (final val accuracy)."""
    return paired(finals(result, a, lr=lr), finals(result, b, lr=lr), names=(a, b))


_OPPOSITE = {"better": "worse", "worse": "better"}


def _misreading(verdict, truth, a, b, margin):
    """Why ``verdict`` misreads an interval whose verdict is ``truth``."""
    resolved = truth in ("better", "worse")
    if verdict == _OPPOSITE.get(truth):
        return f"the verdict is from {a}'s side: paired({a} values, {b} values)"
    if verdict == "equivalent" and resolved:
        return (
            "the interval excludes 0: the difference is real even where it is small (a "
            "difference inside the margin is still reported as better or worse)"
        )
    if verdict == "equivalent":
        return (
            f"'equivalent' needs the whole interval inside +/-{margin:g}; here it reaches "
            f"outside, so more seeds would be needed to say 'no practical difference'"
        )
    if verdict in ("better", "worse") and not resolved:
        return (
            "the interval includes 0: a higher mean alone, or winning on most seeds, does not "
            "show a difference"
        )
    return "the interval excludes 0" if resolved else f"the interval lies inside +/-{margin:g}"


def check_verdict(verdict, p, name, margin=MARGIN):
    """``verdict`` must be ``p.verdict(margin)`` (``p``: a ``stats.paired`` result); explains
    the usual misreadings of an interval. Returns the verdict's statement."""
    choice(verdict, list(VERDICTS), name)
    truth = p.verdict(margin)
    said = p.statement(margin)
    if verdict != truth:
        why = _misreading(verdict, truth, *p.names, margin)
        raise Wrong(
            f"`{name}` is {verdict!r}, but your own runs give {truth!r} with the margin "
            f"{margin:g} ({why}). {said}."
        )
    return said


def one_lr(result, name):
    """A paired comparison over seeds needs one learning rate."""
    if len(result.lrs) != 1:
        raise Wrong(
            f"`{name}` was trained at the learning rates {list(result.lrs)}: train at one "
            f"learning rate (0.01), so the comparison pairs seeds, not settings."
        )


# ============================================================================ re-runs


def device():
    """Where a check re-runs training: where the notebooks train (CUDA when present), so that
    the re-run is the learner's computation and matches it exactly."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fork_rng():
    """Leave every RNG of the learner alone, the GPUs' too (the check decorator forks only the
    CPU's)."""
    return torch.random.fork_rng(devices=list(range(torch.cuda.device_count())))


def other_seeds(told, n):
    """The seeds a learner may have used instead of ``told``: the rest of ``seeds(n)`` and,
    when ``BNTEACH_SEED_OFFSET`` is set, the unshifted 0, 1, ..., n - 1 (typed by hand)."""
    return [s for s in dict.fromkeys(seeds(n) + list(range(n))) if s != told]


class Rerun:
    """A number the learner reports from the first of the exercise's seeds ``seeds(n)`` (a
    final loss, an accuracy), against the check's own re-runs.

    ``number(seed)``: re-runs the exercise with that seed and returns the number (cached).
    ``equal(a, b)``: whether two numbers come from the same run on the same device (float
    rounding); ``near(a, b)``: whether they may come from the same run on another device, which
    rounds differently; ``distance(a, b)``: how far apart they are; ``fmt``: how one is shown."""

    def __init__(self, number, n, equal, near, distance=None, fmt="{:.4g}".format):
        self.number, self.n, self.equal, self.near, self.fmt = number, n, equal, near, fmt
        self.distance = distance or (lambda a, b: abs(a - b))
        self.told = seeds(n)[0]
        self._numbers = {}

    def __call__(self, seed=None):
        """The number of the run with ``seed`` (default: the first of the exercise's seeds)."""
        seed = self.told if seed is None else seed
        if seed not in self._numbers:
            self._numbers[seed] = self.number(seed)
        return self._numbers[seed]

    def said(self):
        return f"the check's re-run of seed {self.told} gives {self.fmt(self())}"

    def _seeds(self):
        return f"The exercise's seeds are seeds({self.n}) = {seeds(self.n)}, in that order"

    def judge(self, value, where, final, mistakes=(), loose=(), loose_tol=0.04):
        """True if ``value`` is the re-run's number, False if it is only near it and nearer it
        than any other seed's run (another device). Otherwise raise Wrong: a usual mistake
        (``(number or function, message)`` pairs, cheapest first; ``mistakes`` must be equal),
        another seed's number, a mistake within ``loose_tol`` (``loose``) or, if none,
        ``final``. ``where``: how the
        answer is named in a message ("`init_acc[...][0]` is 0.910")."""
        if self.equal(value, self()):
            return True
        name_mistake(value, mistakes, self.equal)
        others = other_seeds(self.told, self.n)
        for seed in others:
            if self.equal(value, self(seed)):
                raise Wrong(
                    f"{where}: that is seed {seed}'s run, not seed {self.told}'s "
                    f"({self.said()}). {self._seeds()}: take them from `seeds({self.n})` "
                    f"rather than typing numbers."
                )
        name_mistake(value, loose, lambda a, b: abs(a - b) <= loose_tol)
        if not self.near(value, self()):
            raise Wrong(final)
        seed = min(others, key=lambda s: self.distance(value, self(s)))
        if self.distance(value, self()) <= self.distance(value, self(seed)):
            return False
        raise Wrong(
            f"{where}, nearer seed {seed}'s run ({self.fmt(self(seed))}) than seed "
            f"{self.told}'s ({self.said()}). {self._seeds()}."
        )


def agreement(approximate, told):
    """How reported numbers relate to the re-runs of seed ``told``, for a success message:
    ``approximate`` names those that :meth:`Rerun.judge` found only near theirs."""
    if not approximate:
        return "agree, to float rounding, with"
    return (
        f"agree with (but {', '.join(approximate)} not to float rounding, so the check cannot "
        f"prove they are seed {told}'s; they are nearest it of the seeds it tried)"
    )


def input_seed(k):
    """The k-th seed of a check's own test inputs: ``offset + k`` (``bnteach.stats.seeds``)."""
    return seeds(1, start=k)[0]


def per_channel(t, x):
    """A per-channel tensor (C,) shaped to broadcast with x (N, C, ...): (1, C, 1, ...)."""
    return t.reshape((1, -1) + (1,) * (x.dim() - 2))


def moments(x, dims, unbiased=False):
    """Mean and variance of x over ``dims``, kept as dims of size 1 (biased unless
    ``unbiased``: the sum of squares divided by n - 1)."""
    mean = x.mean(dim=dims, keepdim=True)
    n = math.prod(x.shape[d] for d in dims)
    var = ((x - mean) ** 2).sum(dim=dims, keepdim=True) / (n - 1 if unbiased else n)
    return mean, var


def standardize(x, mean, var, eps, eps_mode="inside"):
    """(x - mean) / sqrt(var + eps); ``eps_mode`` "none" or "outside" (sqrt(var) + eps): the
    usual misplacements of eps."""
    if eps_mode == "none":
        return (x - mean) / torch.sqrt(var)
    if eps_mode == "outside":
        return (x - mean) / (torch.sqrt(var) + eps)
    return (x - mean) / torch.sqrt(var + eps)


FOLD_FAULTS = ("eps none", "var", "in axis", "no beta", "no layer bias", "no mean")


def fold_variant(layer, bn, fault=None, stats=None):
    """A copy of ``layer`` (Linear or Conv) with the eval-mode ``bn`` after it folded in:
    weight ``W * s``, bias ``(b - running_mean) * s + bn.bias``, ``s = bn.weight /
    sqrt(running_var + eps)`` per output channel. ``fault``: one of ``FOLD_FAULTS``, the usual
    mistakes (eps left out, dividing by the variance, scaling the input channels, BN's shift,
    the layer's bias or the mean left out); ``stats``: ``(mean, var)`` in place of the running
    statistics."""
    W = layer.weight.detach()
    has_bias = layer.bias is not None and fault != "no layer bias"
    b = layer.bias.detach() if has_bias else W.new_zeros(W.shape[0])
    mu, var = (bn.running_mean, bn.running_var) if stats is None else stats
    denom = {"eps none": torch.sqrt(var), "var": var + bn.eps}.get(fault)
    s = bn.weight.detach() / (torch.sqrt(var + bn.eps) if denom is None else denom)
    shape = [1] * W.dim()
    shape[1 if fault == "in axis" else 0] = -1
    beta = 0 if fault == "no beta" else bn.bias.detach()
    out = copy.deepcopy(layer)
    out.weight = nn.Parameter(W * s.reshape(shape))
    out.bias = nn.Parameter((b - (0 if fault == "no mean" else mu)) * s + beta)
    return out


_FOLD_MESSAGES = {
    "eps none": "Your fold leaves out `eps`: s = weight / sqrt(running_var + eps). It matters "
    "where the running variance is tiny (the check has one such {unit}).",
    "var": "Your fold divides by running_var + eps instead of its square root.",
    "in axis": "Your fold scales the {layer}'s INPUT channels (weight dim 1): BN scales each "
    "OUTPUT channel c, i.e. W[c] (dim 0): W * s.reshape(-1, 1, 1, 1).",
    "no beta": "Your fold drops BN's shift (`bn.bias`): b' = (b - running_mean) * s + bn.bias.",
    "no layer bias": "Your fold drops the {layer}'s own bias: b' = (b - running_mean) * s + "
    "bn.bias.",
    "no mean": "Your fold forgets to subtract running_mean: b' = (b - running_mean) * s + bn.bias.",
}


def fold_mistakes(output, layer, unit, has_bias, faults=FOLD_FAULTS):
    """``(what the mistake gives, message)`` pairs for :func:`name_mistake`, one per fault:
    ``output(fault)`` is the folded network's output with that mistake (computed when reached);
    ``layer``: "Linear" or "conv"; ``unit``: "feature" or "channel"."""
    return [
        (lambda f=f: output(f), _FOLD_MESSAGES[f].format(layer=layer, unit=unit))
        for f in faults
        if has_bias or f != "no layer bias"
    ]


def folded(fold, modules, name, kind, biasless=None):
    """The learner's ``fold(*modules)``: a new ``kind`` module, with ``modules`` left as they
    were. ``biasless``: which layers have no bias ("the conv has"), for a fold that then fails
    (it is told to treat the bias as 0); None when they have one."""
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
    try:
        out = call(fold, *modules, name=name)
    except Wrong as err:
        if biasless is None:
            raise
        raise Wrong(
            f"Your fold fails when {biasless} no bias (bias=False, the usual choice before BN): "
            f"treat a missing bias as 0. ({err})"
        ) from None
    if out is None:
        raise NotAttempted(f"`{name}` returns None: return the folded {kind.__name__}.")
    if not isinstance(out, kind):
        raise Wrong(
            f"`{name}` should return an nn.{kind.__name__} without BN layers, got "
            f"{type(out).__name__}."
        )
    changed = [
        k
        for m, b in zip(modules, before)
        for k, v in m.state_dict().items()
        if not torch.equal(b[k], v)
    ]
    if any("running" in k or "num_batches" in k for k in changed):
        raise Wrong(
            "Your function changed the running statistics: it ran the model in training mode. "
            "Folding uses the running statistics as they are; never run BN in training mode to "
            "fold it."
        )
    if changed:
        raise Wrong(
            "Your function changed the original model's weights in place: build new layers (or "
            "work on a copy.deepcopy) so the original stays as it was."
        )
    return out


# ============================================================================ BN's mistakes

BN_FAULTS = {
    "unbiased": "You normalized with the unbiased variance (divide by n - 1: `torch.var`'s and "
    "`x.std()`'s default). In training mode BN divides by n, the number of values per "
    "channel (`unbiased=False`); n - 1 is used only to update running_var.",
    "eps none": "`eps` is missing: BN divides by sqrt(var + eps). It matters when a feature "
    "barely varies in the batch (the check uses one such feature).",
    "eps outside": "`eps` is outside the square root: BN divides by sqrt(var + eps), not by "
    "sqrt(var) + eps.",
    "per sample": "Your statistics are per sample (over its features, dim=1, and positions): "
    "that is LayerNorm. BN computes one mean and variance per feature (channel), over the "
    "batch (dim=0) and the positions.",
    "per position": "Your statistics are over N only, one per channel and position (per "
    "pixel, for images): that is BatchNorm1d on the flattened input. BN shares one mean and "
    "variance per channel over N and every position: `x.mean(dim=(0, 2))` for (N, C, L).",
    "per image": "Your statistics are per sample and channel (over the positions only): that "
    "is InstanceNorm. BN averages over the batch too: over N and every position.",
    "all": "You used one mean and variance for the whole tensor: BN computes them per feature "
    "(channel), over the batch: `x.mean(dim=0)`.",
    "running": "In training mode BN normalizes with the batch's own mean and variance, not "
    "with running_mean/running_var (those are for eval mode).",
    "no affine": "The output lacks the learned scale and shift: multiply by `weight` and add "
    "`bias` at the end.",
    "no weight": "The output lacks the scale: multiply by `weight`.",
    "no bias": "The output lacks the shift: add `bias`.",
}
_AFFINE = {None: (True, True), "no affine": (False, False), "no bias": (True, False)}
_AFFINE["no weight"] = (False, True)


def _bn_statistics(x, running, momentum):
    """fault(s) -> (mean, var) shaped like x's, where the usual wrong versions take them."""
    dims = [d for d in range(x.dim()) if d != 1]
    sources = {(): dims, ("per sample",): list(range(1, x.dim())), ("all",): range(x.dim())}
    if x.dim() > 2:
        sources |= {("per position",): [0], ("per image",): list(range(2, x.dim()))}
    out = {}
    for faults, over in sources.items():
        out[faults] = moments(x, tuple(over))
        out[(*faults, "unbiased")] = moments(x, tuple(over), unbiased=True)
    if running is not None:
        (mean, var), n = out[()], x.numel() // x.shape[1]
        rm, rv = (per_channel(t, x) for t in running)
        out[("running",)] = rm, rv
        out[("updated running",)] = (
            (1 - momentum) * rm + momentum * mean,
            (1 - momentum) * rv + momentum * var * n / (n - 1),
        )
    return out


def bn_mistake(y, x, weight, bias, eps, running=None, momentum=0.1):
    """The message naming the usual wrong version of BN's training-mode output (or the
    combination of them, fewest first) that ``y`` is for x (N, C, ...), or None. ``running``:
    the running mean and variance (C,) before the call, for the versions that use them."""
    found = []
    for where, (mean, var) in _bn_statistics(x, running, momentum).items():
        for eps_mode in ("inside", "none", "outside"):
            for affine, (scale, shift) in _AFFINE.items():
                faults = [f.replace("updated ", "") for f in where]
                faults += [f"eps {eps_mode}"] if eps_mode != "inside" else []
                faults += [affine] if affine else []
                wrong = standardize(x, mean, var, eps, eps_mode)
                wrong = wrong * per_channel(weight, x) if scale else wrong
                wrong = wrong + per_channel(bias, x) if shift else wrong
                if faults and close(y, wrong):
                    found.append(faults)
    if not found:
        return None
    faults = min(found, key=len)
    if len(faults) == 1:
        return BN_FAULTS[faults[0]]
    return f"{len(faults)} things to fix: " + " ".join(
        f"({i}) {BN_FAULTS[f]}" for i, f in enumerate(faults, 1)
    )
