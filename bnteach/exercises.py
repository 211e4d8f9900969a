"""Self-checks for the exercises of notebook 05.

Every ``check_*`` function takes the learner's answers and verifies them by computing: numbers
are recomputed from the learner's own runs (a ``SweepResult``), claims are compared with those
numbers, and functions the learner wrote are run on test inputs and compared with a reference
(outputs, gradients, running statistics). It returns a :class:`Feedback`:

- ``status="correct"``: a short confirmation that restates what was measured;
- ``status="wrong"``: a message aimed at the mistake found (for example "you normalized with the
  unbiased variance"), computed by matching the answer against the usual wrong versions;
- ``status="not attempted"``: the answer is still the placeholder (``None``, or a function that
  raises ``NotImplementedError`` or returns ``None``).

A check never raises because of an answer, so a notebook of unsolved exercises runs top to
bottom. It also shows its feedback (displayed in a notebook, printed elsewhere; ``show=False``
turns that off) and records it for :func:`progress`.

Answers follow notebook 05, where each exercise says exactly what to compute.
"""

import copy
import functools
import html
import math
import numbers
import re
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bnteach import sweep
from bnteach.batchnorm import bn_layers
from bnteach.data import load_data
from bnteach.models import MLP, count_parameters
from bnteach.sweep import SweepResult

__all__ = [
    "Feedback",
    "Progress",
    "progress",
    "reset",
    "check_learning_rate",
    "check_depth",
    "check_activation",
    "check_batch_size",
    "check_placement",
    "check_bias",
    "check_batch_norm",
    "check_norm_variants",
    "check_scale_invariance",
    "check_layer_norm",
    "check_fold",
    "check_freeze",
]

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

NO_WINNER = "no clear winner"


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


class _Correct(Exception):
    """Raised inside a check to stop early with a "correct" feedback."""


def _check(exercise):
    """Turn a function that returns a message (or raises _Wrong/_NotAttempted) into a check."""

    def decorate(fn):
        @functools.wraps(fn)
        def check(*args, show=True, **kwargs):
            try:
                with torch.random.fork_rng(devices=[]):  # leave the learner's RNG alone
                    fb = Feedback(CORRECT, fn(*args, **kwargs))
            except _Correct as done:
                fb = Feedback(CORRECT, str(done))
            except _Wrong as err:
                fb = Feedback(WRONG, str(err))
            except _NotAttempted as err:
                fb = Feedback(NOT_ATTEMPTED, str(err))
            except Exception as err:  # an answer this check did not foresee: never crash
                fb = Feedback(
                    WRONG,
                    f"Checking your answer raised {type(err).__name__}: {err}. Compare your answer "
                    f"with what the exercise asks for (types, names, shapes).",
                )
            fb = Feedback(fb.status, fb.message, EXERCISES[exercise])
            _RESULTS[exercise] = fb
            if show:
                _show(fb)
            return fb

        check.exercise = exercise
        return check

    return decorate


# ============================================================================ helpers


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


def _fmt_key(key):
    return repr(key)


def _check_table(given, expected, name, describe, alternatives=(), tol=2e-3):
    """Compare the learner's dict with ``expected`` (key -> number, recomputed).

    alternatives: ``(table, message)`` pairs, tables of the usual wrong computations; when the
    answer matches one of them, its message explains the mistake.
    """
    example = next(iter(expected))
    if not isinstance(given, dict):
        raise _Wrong(
            f"`{name}` should be a dict with keys like {_fmt_key(example)} and numbers as "
            f"values, got {type(given).__name__}."
        )
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"it lacks the keys {', '.join(map(_fmt_key, missing))}")
        if extra:
            parts.append(f"it has unexpected keys {', '.join(map(_fmt_key, extra))}")
        raise _Wrong(
            f"`{name}` does not have the right keys: {' and '.join(parts)}. Expected exactly "
            f"{', '.join(map(_fmt_key, expected))}."
        )
    values = {k: _number(given[k], f"`{name}[{_fmt_key(k)}]`") for k in expected}

    def matches(table):
        return all(_same(values[k], table[k], tol) for k in expected)

    if matches(expected):
        return values
    for table, message in alternatives:
        if matches(table):
            raise _Wrong(message)
    key = next(k for k in expected if not _same(values[k], expected[k], tol))
    raise _Wrong(
        f"`{name}[{_fmt_key(key)}]` is {values[key]:.4g}, but recomputing it from your result "
        f"gives {expected[key]:.4g} ({describe})."
    )


def _choice(value, options, name):
    if isinstance(value, str) and value in options:
        return value
    shown = ", ".join(repr(o) for o in options)
    raise _Wrong(f"`{name}` should be one of {shown}; got {value!r}.")


def _result(result, name, min_seeds=3):
    if not isinstance(result, SweepResult):
        raise _Wrong(
            f"`{name}` should be the SweepResult returned by `sweep.run(...)`, got "
            f"{type(result).__name__}."
        )
    if len(result.seeds) < min_seeds:
        raise _Wrong(
            f"`{name}` has {len(result.seeds)} seed(s). One or two seeds prove nothing here: "
            f"seed-to-seed differences are as large as the effects. Use at least {min_seeds} "
            f"seeds, e.g. seeds=[0, 1, 2, 3, 4]."
        )
    return result


def _final(result, model, metric="val_acc", lr=None):
    return [getattr(h, metric)[-1] for h in result.histories(model=model, lr=lr)]


def _mean(values):
    return statistics.fmean(values)


def _acc_table(result, keys, metric="val_acc", pick=None):
    """(model, lr) -> mean over seeds of ``pick(history)`` (default: final ``metric``)."""
    pick = pick or (lambda h: getattr(h, metric)[-1])
    return {
        (model, lr): _mean([pick(h) for h in result.histories(model=model, lr=lr)])
        for model, lr in keys
    }


def _winner(result, a, b):
    """``a`` or ``b`` if it has the higher final validation accuracy on every seed and learning
    rate (paired), otherwise ``NO_WINNER``."""
    a_wins = b_wins = True
    for lr in result.lrs:
        for ha, hb in zip(result.histories(model=a, lr=lr), result.histories(model=b, lr=lr)):
            a_wins &= ha.val_acc[-1] > hb.val_acc[-1]
            b_wins &= hb.val_acc[-1] > ha.val_acc[-1]
    return a if a_wins else b if b_wins else NO_WINNER


def _spread(values):
    return f"{_mean(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def _spec(kwargs, name):
    """Normalize one model's MLP keyword arguments as sweep.run does (teaching errors)."""
    try:
        return sweep._check_models({name: kwargs})[name]
    except (TypeError, ValueError) as err:
        raise _Wrong(str(err)) from None


def _require_models(result, models, name):
    """The result must hold exactly these models (name -> MLP kwargs)."""
    wanted = {n: _spec(kw, n) for n, kw in models.items()}
    if set(result.models) != set(wanted):
        raise _Wrong(
            f"`{name}` was trained with the models {sorted(result.models)}, expected "
            f"{sorted(wanted)}: pass `models=...` to `sweep.run`."
        )
    for n, spec in wanted.items():
        if result.models[n] != spec:
            raise _Wrong(
                f"In `{name}` the model {n!r} was trained as {result.models[n]}, but your model "
                f"dict says {spec}: train with the same `models` dict."
            )


def _check_models_dict(models, name, names):
    if not isinstance(models, dict) or set(models) != set(names):
        got = sorted(models) if isinstance(models, dict) else type(models).__name__
        raise _Wrong(f"`{name}` should be a dict with exactly the keys {names}, got {got}.")
    return {n: _spec(kw, n) for n, kw in models.items()}


def _differences(a, b):
    return {k for k in a if a[k] != b[k]}


# ============================================================================ 1 learning rate


@_check("1")
def check_learning_rate(result, final_acc, copes):
    """Exercise 1. ``result``: ``sweep.run`` of the default pair at lrs 0.01, 0.1, 1.0 with at
    least 3 seeds; ``final_acc``: ``{(model, lr): mean over seeds of the final validation
    accuracy}``; ``copes``: "plain" or "BN", the model with the higher mean at lr 1.0."""
    _missing(
        {"lr_result": result, "final_acc": final_acc, "copes": copes},
        "Fill in the table from `lr_result` and give your conclusion.",
    )
    _result(result, "lr_result")
    if set(result.models) != {"plain", "BN"}:
        raise _Wrong(
            f"`lr_result` holds the models {sorted(result.models)}: use the default pair "
            f"(leave out `models=`), named 'plain' and 'BN'."
        )
    missing_lrs = [lr for lr in (0.01, 0.1, 1.0) if lr not in result.lrs]
    if missing_lrs:
        raise _Wrong(
            f"`lr_result` lacks the learning rate(s) {missing_lrs}: use lrs=[0.01, 0.1, 1.0]."
        )
    keys = [(m, lr) for m in result.models for lr in result.lrs]
    n = len(result.seeds)
    expected = _acc_table(result, keys)
    alternatives = [
        (
            _acc_table(result, keys, metric="val_loss"),
            "These are validation losses: the question is about the final validation accuracy "
            "(`h.val_acc[-1]`).",
        ),
        (
            _acc_table(result, keys, metric="train_loss"),
            "These are training losses: use the final validation accuracy (`h.val_acc[-1]`).",
        ),
        (
            _acc_table(result, keys, pick=lambda h: max(h.val_acc)),
            "These are the best accuracies over all epochs (`max(h.val_acc)`): picking the best "
            "epoch after the fact flatters unstable runs. Use the final epoch, `h.val_acc[-1]`.",
        ),
        (
            {(m, lr): _final(result, m, lr=lr)[0] for m, lr in keys},
            f"These are the numbers of the first seed only: average over all {n} seeds.",
        ),
    ]
    _check_table(
        final_acc,
        expected,
        "final_acc",
        f"mean over {n} seeds of the final validation accuracy",
        alternatives,
    )
    _choice(copes, ["plain", "BN"], "copes")
    plain, bn = _final(result, "plain", lr=1.0), _final(result, "BN", lr=1.0)
    truth = "BN" if _mean(bn) > _mean(plain) else "plain"
    if copes != truth:
        raise _Wrong(
            f"Your own numbers say otherwise: at lr 1.0 the plain net reaches {_spread(plain)} "
            f"and the BN net {_spread(bn)} over {n} seeds. Which one copes?"
        )
    wins = sum(b > p for b, p in zip(bn, plain))
    return (
        f"At lr 1.0 the plain net reaches {_spread(plain)}, the BN net {_spread(bn)}; "
        f"BN is ahead on {wins} of {n} seeds. At lr 0.01 they were "
        f"{expected[('plain', 0.01)]:.3f} and {expected[('BN', 0.01)]:.3f}."
    )


# ============================================================================ 2 depth


@_check("2")
def check_depth(models, result, gap, gap_grows):
    """Exercise 2. ``models``: ``{"plain": ..., "BN": ...}`` MLP kwargs with 6 hidden layers;
    ``result``: ``sweep.run`` with those models at lr 0.1 (3+ seeds); ``gap``: mean final
    validation accuracy of BN minus plain at lr 0.1; ``gap_grows``: whether this gap is larger
    than the gap of the tutorial's 2-layer nets at the same settings."""
    _missing(
        {"deep_models": models, "deep_result": result, "deep_gap": gap, "gap_grows": gap_grows},
        "Define the two 6-layer models, train them and compare.",
    )
    specs = _check_models_dict(models, "deep_models", ["BN", "plain"])
    for n, spec in specs.items():
        depth = len(spec["hidden_sizes"])
        if depth != 6:
            raise _Wrong(
                f"deep_models[{n!r}] has {depth} hidden layer(s) (hidden_sizes="
                f"{spec['hidden_sizes']}); the exercise asks for 6, e.g. hidden_sizes=(64,) * 6."
            )
    if specs["plain"]["norm"] != "none" or specs["BN"]["norm"] != "batch":
        raise _Wrong(
            f"deep_models['plain'] should have norm='none' and deep_models['BN'] norm='batch'; "
            f"yours have {specs['plain']['norm']!r} and {specs['BN']['norm']!r}."
        )
    other = _differences(specs["plain"], specs["BN"]) - {"norm"}
    if other:
        raise _Wrong(
            f"The two models also differ in {sorted(other)}: for a fair comparison they may "
            f"differ only in `norm`."
        )
    _result(result, "deep_result")
    _require_models(result, models, "deep_result")
    if 0.1 not in result.lrs:
        raise _Wrong("`deep_result` has no run at lr 0.1: use lrs=[0.1] (or include 0.1).")
    bn, plain = _final(result, "BN", lr=0.1), _final(result, "plain", lr=0.1)
    deep = _mean(bn) - _mean(plain)
    gap = _number(gap, "`deep_gap`")
    if _same(gap, -deep, 2e-3) and not _same(gap, deep, 2e-3):
        raise _Wrong("`deep_gap` has the wrong sign: it is BN minus plain, not plain minus BN.")
    if not _same(gap, deep, 2e-3):
        raise _Wrong(
            f"`deep_gap` is {gap:.4f}, but from your result BN's mean final validation accuracy "
            f"at lr 0.1 minus the plain net's is {_mean(bn):.4f} - {_mean(plain):.4f} = "
            f"{deep:.4f}."
        )
    if not isinstance(gap_grows, bool):
        raise _Wrong(f"`gap_grows` should be True or False, got {gap_grows!r}.")
    shallow_run = sweep.run(seeds=result.seeds, lrs=[0.1], epochs=result.epochs)
    shallow = _mean(_final(shallow_run, "BN")) - _mean(_final(shallow_run, "plain"))
    if gap_grows != (deep > shallow):
        raise _Wrong(
            f"With the same seeds and epochs the tutorial's 2-layer nets give a gap of "
            f"{shallow:+.3f} at lr 0.1 (just computed), your 6-layer nets {deep:+.3f}. "
            f"So `gap_grows` should be {deep > shallow}."
        )
    return (
        f"At lr 0.1 the 6-layer plain net reaches {_spread(plain)}, with BN {_spread(bn)}: a "
        f"gap of {deep:+.3f}, against {shallow:+.3f} for the 2-layer nets."
    )


# ============================================================================ 3 activation

ACTIVATION_NAMES = ("relu", "tanh", "sigmoid")


@_check("3")
def check_activation(result, gaps, helps_most):
    """Exercise 3. ``result``: ``sweep.run`` at lr 0.01 (3+ seeds) of six models named
    ``"<activation>-plain"`` and ``"<activation>-BN"`` for relu, tanh and sigmoid; ``gaps``:
    ``{activation: mean final val accuracy of BN minus plain}``; ``helps_most``: the activation
    with the largest gap."""
    _missing(
        {"act_result": result, "gaps": gaps, "helps_most": helps_most},
        "Train the six models, compute the gaps and name the activation where BN helps most.",
    )
    _result(result, "act_result")
    wanted = [f"{a}-{k}" for a in ACTIVATION_NAMES for k in ("plain", "BN")]
    if set(result.models) != set(wanted):
        raise _Wrong(f"`act_result` should hold the models {wanted}, got {sorted(result.models)}.")
    for a in ACTIVATION_NAMES:
        for kind, norm in (("plain", "none"), ("BN", "batch")):
            spec = result.models[f"{a}-{kind}"]
            if spec["activation"] != a or spec["norm"] != norm:
                raise _Wrong(
                    f"The model '{a}-{kind}' was trained with activation={spec['activation']!r} "
                    f"and norm={spec['norm']!r}; it should be activation={a!r}, norm={norm!r}."
                )
        diff = _differences(result.models[f"{a}-plain"], result.models[f"{a}-BN"]) - {"norm"}
        if diff:
            raise _Wrong(f"'{a}-plain' and '{a}-BN' also differ in {sorted(diff)}: only `norm`.")
    if 0.01 not in result.lrs:
        raise _Wrong("`act_result` has no run at lr 0.01: use lrs=[0.01].")

    def gap_table(metric="val_acc", sign=1):
        return {
            a: sign
            * (
                _mean(_final(result, f"{a}-BN", metric, 0.01))
                - _mean(_final(result, f"{a}-plain", metric, 0.01))
            )
            for a in ACTIVATION_NAMES
        }

    expected = gap_table()
    _check_table(
        gaps,
        expected,
        "gaps",
        "mean final validation accuracy of BN minus plain at lr 0.01",
        [(gap_table(sign=-1), "The gaps have the wrong sign: BN minus plain, not plain minus BN.")],
    )
    _choice(helps_most, list(ACTIVATION_NAMES), "helps_most")
    truth = max(expected, key=expected.get)
    if helps_most != truth:
        shown = ", ".join(f"{a} {g:+.3f}" for a, g in expected.items())
        raise _Wrong(f"Your own gaps are {shown}: the largest is {truth}'s.")
    shown = ", ".join(f"{a}: {g:+.3f}" for a, g in expected.items())
    return f"BN minus plain, mean final validation accuracy: {shown}. BN helps {truth} most."


# ============================================================================ 4 batch size


def _trained_with_batch(result, batch_size, model):
    """Relative difference between ``result``'s first epoch of ``model`` (first seed and lr)
    and a fresh one-epoch run with ``batch_size``."""
    seed, lr = result.seeds[0], result.lrs[0]
    spec = {k: v for k, v in result.models[model].items()}
    fresh = sweep.run(seeds=[seed], lrs=[lr], epochs=1, batch_size=batch_size, models={model: spec})
    (h,) = result.histories(model=model, seed=seed, lr=lr)
    a, b = h.train_loss[0], fresh.replicas[0].history.train_loss[0]
    return abs(a - b) / max(abs(b), 1e-12)


def _check_batch_results(results, name, sizes, models):
    if not isinstance(results, dict) or not all(isinstance(k, int) for k in results):
        raise _Wrong(
            f"`{name}` should be a dict {{batch size: SweepResult}}, e.g. {{2: ..., 64: ...}}."
        )
    missing = [b for b in sizes if b not in results]
    if missing:
        raise _Wrong(f"`{name}` lacks the batch size(s) {missing}; use at least {list(sizes)}.")
    first = None
    for bs, r in sorted(results.items()):
        _result(r, f"{name}[{bs}]")
        if set(r.models) != set(models):
            raise _Wrong(
                f"`{name}[{bs}]` holds the models {sorted(r.models)}, expected {sorted(models)}."
            )
        for m, norm in models.items():
            if r.models[m]["norm"] != norm:
                raise _Wrong(f"In `{name}[{bs}]` the model {m!r} should have norm={norm!r}.")
        setting = (r.seeds, r.lrs, r.epochs, r.models)
        if first is None:
            first = setting
        elif setting != first:
            raise _Wrong(
                f"The runs in `{name}` differ in more than the batch size (seeds, learning "
                f"rates, epochs or models): compare like with like."
            )
    model = next(iter(models))
    for bs, r in results.items():
        if _trained_with_batch(r, bs, model) <= 1e-3:
            continue
        errors = {b: _trained_with_batch(r, b, model) for b in results if b != bs}
        actual = min(errors, key=errors.get, default=None)
        if actual is not None and errors[actual] <= 1e-3:
            raise _Wrong(
                f"`{name}[{bs}]` was not trained with batch_size={bs}: its first epoch matches "
                f"batch_size={actual}. Pass batch_size=bs to sweep.run inside your loop."
            )
        raise _Wrong(
            f"`{name}[{bs}]` does not match a fresh run with batch_size={bs}. Train with "
            f"sweep.run's default data and pass batch_size={bs}."
        )
    return sorted(results)


@_check("4")
def check_batch_size(results, bn_minus_plain, worst):
    """Exercise 4. ``results``: ``{batch size: sweep.run(...)}`` of the default pair for batch
    sizes including 2, 4, 64 and 256 (same seeds, lr and epochs); ``bn_minus_plain``:
    ``{batch size: mean final val accuracy of BN minus plain}``; ``worst``: the batch size
    where BN does worst compared with the plain net."""
    _missing(
        {"batch_results": results, "bn_minus_plain": bn_minus_plain, "worst_batch": worst},
        "Train the pair at each batch size, fill in the table and name the worst batch size.",
    )
    sizes = _check_batch_results(
        results, "batch_results", (2, 4, 64, 256), {"plain": "none", "BN": "batch"}
    )

    def table(sign=1):
        return {
            bs: sign * (_mean(_final(results[bs], "BN")) - _mean(_final(results[bs], "plain")))
            for bs in sizes
        }

    expected = table()
    _check_table(
        bn_minus_plain,
        expected,
        "bn_minus_plain",
        "mean final validation accuracy of BN minus plain",
        [(table(-1), "The differences have the wrong sign: BN minus plain, not plain minus BN.")],
    )
    if isinstance(worst, bool) or not isinstance(worst, int) or worst not in sizes:
        raise _Wrong(f"`worst_batch` should be one of your batch sizes {sizes}, got {worst!r}.")
    truth = min(expected, key=expected.get)
    shown = ", ".join(f"{bs}: {d:+.3f}" for bs, d in expected.items())
    if worst != truth:
        raise _Wrong(f"Your own numbers (BN minus plain) are {shown}: the lowest is at {truth}.")
    bn_train = _mean(_final(results[truth], "BN", "train_loss"))
    return (
        f"BN minus plain by batch size: {shown}. At batch size {truth} BN is worst; its final "
        f"training loss there is {bn_train:.3f} (ln 2 = 0.693 is guessing)."
    )


# ============================================================================ 5 placement


def _verdict_check(verdict, result, a, b, name):
    _choice(verdict, [a, b, NO_WINNER], name)
    truth = _winner(result, a, b)
    pairs = [
        f"{x:.3f} vs {y:.3f}"
        for lr in result.lrs
        for x, y in zip(_final(result, a, lr=lr), _final(result, b, lr=lr))
    ]
    if verdict != truth:
        if truth == NO_WINNER:
            why = (
                f"neither model has the higher final validation accuracy on every seed ({a} vs "
                f"{b}: {', '.join(pairs)}), so the honest verdict is {NO_WINNER!r}."
            )
        else:
            why = f"{truth!r} wins on every seed ({a} vs {b}: {', '.join(pairs)})."
        raise _Wrong(f"Your own runs disagree: {why}")
    return truth, pairs


@_check("5")
def check_placement(models, result, verdict):
    """Exercise 5. ``models``: ``{"before": ..., "after": ...}``, BN nets differing only in
    ``placement``; ``result``: ``sweep.run`` with them (3+ seeds); ``verdict``: "before",
    "after" (wins on every seed and learning rate) or "no clear winner"."""
    _missing(
        {"placement_models": models, "placement_result": result, "placement_verdict": verdict},
        "Define the two models, train them and give your verdict.",
    )
    specs = _check_models_dict(models, "placement_models", ["after", "before"])
    for n, spec in specs.items():
        if spec["norm"] != "batch":
            raise _Wrong(
                f"placement_models[{n!r}] has norm={spec['norm']!r}: without a BN layer "
                f"`placement` changes nothing. Use norm='batch' in both."
            )
        if spec["placement"] != n:
            raise _Wrong(f"placement_models[{n!r}] has placement={spec['placement']!r}.")
    other = _differences(specs["before"], specs["after"]) - {"placement"}
    if other:
        raise _Wrong(f"The two models also differ in {sorted(other)}: only `placement` may differ.")
    _result(result, "placement_result")
    _require_models(result, models, "placement_result")
    truth, pairs = _verdict_check(verdict, result, "before", "after", "placement_verdict")
    means = ", ".join(f"{m} {_mean(_final(result, m)):.3f}" for m in ("before", "after"))
    return f"Mean final validation accuracy: {means}; seed by seed {', '.join(pairs)}: {truth}."


# ============================================================================ 6 bias


def _bias_setup(training):
    """The exercise's setup: gradient of the first Linear's bias of a seed-0 MLPWithBN."""
    X_train, _, y_train, _ = load_data()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MLP(20, (128, 64), norm="batch")
    model.train(training)
    loss = F.binary_cross_entropy_with_logits(model(X_train[:64]), y_train[:64])
    loss.backward()
    return model


@_check("6")
def check_bias(bias_grad, params_saved, result, verdict):
    """Exercise 6. ``bias_grad``: the gradient of ``network[0].bias`` of a seed-0
    ``MLPWithBN`` after one backward pass of BCE on the first 64 training samples, in training
    mode; ``params_saved``: parameters removed by ``bias=False``; ``result``: ``sweep.run`` of
    ``{"bias": BN net, "no_bias": the same with bias=False}`` (3+ seeds); ``verdict``: "bias",
    "no_bias" or "no clear winner"."""
    _missing(
        {
            "bias_grad": bias_grad,
            "params_saved": params_saved,
            "bias_result": result,
            "bias_verdict": verdict,
        },
        "Measure the gradient, count the parameters, train both models and give your verdict.",
    )
    if not isinstance(bias_grad, torch.Tensor):
        raise _Wrong(
            f"`bias_grad` should be a tensor (`.grad` of a bias), got {type(bias_grad).__name__}."
        )
    g = bias_grad.detach().double().cpu()
    reference = _bias_setup(training=True)
    if g.shape == (1,):
        raise _Wrong(
            "`bias_grad` has shape (1,): that is the output layer's bias. No BN follows it, so "
            "its gradient is not zero. Take network[0].bias.grad, the bias right before a BN."
        )
    if g.shape not in {(128,), (64,)}:
        raise _Wrong(
            f"`bias_grad` has shape {tuple(g.shape)}; network[0].bias.grad has shape (128,)."
        )
    if g.shape == (128,) and torch.allclose(
        g, reference.network[0].bias.detach().double(), atol=1e-6
    ):
        raise _Wrong("`bias_grad` holds the bias itself, not its gradient: use `.grad`.")
    largest = g.abs().max().item()
    if largest > 1e-6:
        evaluated = _bias_setup(training=False).network[0].bias.grad.double()
        if g.shape == (128,) and torch.allclose(g, evaluated, rtol=1e-3, atol=1e-7):
            raise _Wrong(
                "This gradient was computed in eval mode (model.eval()): there BN subtracts the "
                "fixed running mean, so the bias is not cancelled and gets a real gradient. In "
                "training mode BN subtracts the batch mean, which contains the bias: measure it "
                "after model.train()."
            )
        raise _Wrong(
            f"`bias_grad` reaches {largest:.2e}; in training mode it should be zero up to "
            f"rounding (about 1e-9). Measure network[0].bias.grad after one backward pass "
            f"with the model in training mode."
        )
    params_saved = _number(params_saved, "`params_saved`")
    with_bias = count_parameters(MLP(20, (128, 64), norm="batch"))
    without = count_parameters(MLP(20, (128, 64), norm="batch", bias=False))
    expected = with_bias - without
    if params_saved == expected + 1:
        raise _Wrong(
            f"`params_saved` counts the output layer's bias too: that layer has no BN after it, "
            f"so its bias is not redundant (and `bias=False` keeps it). {expected} is right."
        )
    if params_saved == -expected:
        raise _Wrong("`params_saved` has the wrong sign: with bias minus without bias.")
    if params_saved != expected:
        raise _Wrong(
            f"`params_saved` is {params_saved:g}, but count_parameters gives {with_bias} with "
            f"and {without} without the hidden biases: {expected}."
        )
    _result(result, "bias_result")
    if set(result.models) != {"bias", "no_bias"}:
        raise _Wrong(
            f"`bias_result` should hold the models 'bias' and 'no_bias', got "
            f"{sorted(result.models)}."
        )
    specs = result.models
    if specs["bias"]["norm"] != "batch" or specs["no_bias"]["norm"] != "batch":
        raise _Wrong(
            "Both models need norm='batch': the bias is redundant only when a BN layer follows "
            "it. Without BN, removing it changes the model."
        )
    if specs["bias"]["bias"] is not True or specs["no_bias"]["bias"] is not False:
        raise _Wrong("'bias' should have bias=True and 'no_bias' bias=False.")
    other = _differences(specs["bias"], specs["no_bias"]) - {"bias"}
    if other:
        raise _Wrong(f"The two models also differ in {sorted(other)}: only `bias` may differ.")
    truth, pairs = _verdict_check(verdict, result, "bias", "no_bias", "bias_verdict")
    return (
        f"The bias gradient is at most {largest:.1e} (rounding noise); bias=False saves "
        f"{expected} parameters; seed by seed (bias vs no_bias) {', '.join(pairs)}: {truth}."
    )


# ============================================================================ 7a BN forward


def _chan(t, x):
    """A per-channel tensor (C,) shaped to broadcast with x: (1, C) or (1, C, 1)."""
    return t.reshape((1, -1) + (1,) * (x.dim() - 2))


def _normalize(x, mean, var, eps, eps_mode="inside"):
    """(x - mean) / sqrt(var + eps), or the usual wrong placements of eps."""
    if eps_mode == "inside":
        return (x - mean) / torch.sqrt(var + eps)
    if eps_mode == "none":
        return (x - mean) / torch.sqrt(var)
    return (x - mean) / (torch.sqrt(var) + eps)


def _affine(y, weight, bias, affine="both"):
    if affine in ("both", "weight"):
        y = y * _chan(weight, y)
    if affine in ("both", "bias"):
        y = y + _chan(bias, y)
    return y


def _bn_reference(x, mean, var, weight, bias, eps):
    """BN's output for per-channel mean and variance (C,)."""
    return _affine(_normalize(x, _chan(mean, x), _chan(var, x), eps), weight, bias)


def _stats(x, dims, unbiased=False, detach=(), keepdim=False):
    """Mean and variance of x over dims (biased unless unbiased=True)."""
    mean = x.mean(dim=dims, keepdim=True)
    n = math.prod(x.shape[d] for d in dims)
    var = ((x - mean) ** 2).sum(dim=dims, keepdim=True) / (n - 1 if unbiased else n)
    if "mean" in detach:
        mean = mean.detach()
    if "var" in detach:
        var = var.detach()
    if not keepdim:
        mean, var = mean.reshape(-1), var.reshape(-1)
    return mean, var


def _channel_dims(x):
    return (0,) if x.dim() == 2 else (0, 2)


_BN_FAULTS = {
    "unbiased": "You normalized with the unbiased variance (divide by N-1: `torch.var`'s and "
    "`x.std()`'s default). In training mode BN divides by N (`unbiased=False`); N-1 is used "
    "only to update running_var.",
    "eps none": "`eps` is missing: BN divides by sqrt(var + eps). It matters when a feature "
    "barely varies in the batch (the check uses one such feature).",
    "eps outside": "`eps` is outside the square root: BN divides by sqrt(var + eps), not by "
    "sqrt(var) + eps.",
    "per sample": "Your statistics are per sample (over the features, dim=1): that is "
    "LayerNorm. BN computes one mean and variance per feature, over the batch (dim=0).",
    "all": "You used one mean and variance for the whole tensor: BN computes them per feature "
    "(channel), over the batch: `x.mean(dim=0)`.",
    "running": "In training mode BN normalizes with the batch's own mean and variance, not "
    "with running_mean/running_var (those are for eval mode).",
    "no affine": "The output lacks the learned scale and shift: multiply by `weight` and add "
    "`bias` at the end.",
    "no weight": "The output lacks the scale: multiply by `weight`.",
    "no bias": "The output lacks the shift: add `bias`.",
}
_AFFINE_FAULT = {"none": "no affine", "weight": "no bias", "bias": "no weight"}


def _bn_candidates(x, rm, rv, weight, bias, eps, momentum=0.1):
    """Training-mode outputs of the usual wrong versions (and their combinations): a list of
    (faults, output), fewest faults first. rm, rv: the running statistics before the call."""
    stats = {
        "batch": _channel_dims(x),
        "per sample": tuple(range(1, x.dim())),
        "all": tuple(range(x.dim())),
    }
    mean, var = _stats(x, stats["batch"])
    n = x.numel() // x.shape[1]
    updated = (
        (1 - momentum) * rm + momentum * mean,
        (1 - momentum) * rv + momentum * var * n / (n - 1),
    )
    out = []
    for where in ("batch", "per sample", "all", "running", "updated running"):
        for unbiased in (False, True):
            if where in ("running", "updated running"):
                if unbiased:
                    continue
                r_mean, r_var = (rm, rv) if where == "running" else updated
                mean, var = _chan(r_mean, x), _chan(r_var, x)
            else:
                mean, var = _stats(x, stats[where], unbiased, keepdim=True)
            for eps_mode in ("inside", "none", "outside"):
                for affine in ("both", "none", "weight", "bias"):
                    faults = [where.replace("updated ", "")] if where != "batch" else []
                    faults += ["unbiased"] if unbiased else []
                    faults += [f"eps {eps_mode}"] if eps_mode != "inside" else []
                    faults += [_AFFINE_FAULT[affine]] if affine != "both" else []
                    if faults:
                        y = _affine(_normalize(x, mean, var, eps, eps_mode), weight, bias, affine)
                        out.append((faults, y))
    return sorted(out, key=lambda item: len(item[0]))


def _diagnose(y, candidates, what):
    for faults, cand in candidates:
        if cand.shape == y.shape and torch.allclose(y, cand, rtol=1e-5, atol=1e-6):
            if len(faults) == 1:
                return _BN_FAULTS[faults[0]]
            return f"{len(faults)} things to fix: " + " ".join(
                f"({i}) {_BN_FAULTS[f]}" for i, f in enumerate(faults, 1)
            )
    return what


def _as_tensor(y, name):
    if y is None:
        raise _NotAttempted(f"`{name}` returns None: return the normalized tensor.")
    if not isinstance(y, torch.Tensor):
        raise _Wrong(f"`{name}` should return a tensor, got {type(y).__name__}.")
    return y


def _bn_inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    C = shape[1]
    scale = torch.linspace(0.5, 3.0, C, dtype=f64)
    scale[0] = 3e-3  # a feature that barely varies: eps matters
    shift = torch.linspace(-2.0, 4.0, C, dtype=f64)
    view = (1, C) + (1,) * (len(shape) - 2)
    x = torch.randn(*shape, generator=g, dtype=f64) * scale.reshape(view) + shift.reshape(view)
    weight = torch.rand(C, generator=g, dtype=f64) + 0.5
    bias = torch.randn(C, generator=g, dtype=f64)
    rm = torch.randn(C, generator=g, dtype=f64)
    rv = torch.rand(C, generator=g, dtype=f64) + 0.5
    return x, rm, rv, weight, bias


def _run_bn(fn, x, rm, rv, weight, bias, training, momentum=0.1, eps=1e-5):
    try:
        y = fn(x, rm, rv, weight, bias, training, momentum=momentum, eps=eps)
    except TypeError as err:
        if "keyword" not in str(err):
            raise _Wrong(f"Calling `my_batch_norm` raised TypeError: {err}") from None
        raise _Wrong(
            "`my_batch_norm` must accept `momentum` and `eps` keyword arguments: def "
            "my_batch_norm(x, running_mean, running_var, weight, bias, training, momentum=0.1, "
            f"eps=1e-5). ({err})"
        ) from None
    except NotImplementedError:
        raise _NotAttempted(
            "`my_batch_norm` still raises NotImplementedError: replace that line with your code."
        ) from None
    except Exception as err:
        raise _Wrong(f"Calling `my_batch_norm` raised {type(err).__name__}: {err}") from None
    y = _as_tensor(y, "my_batch_norm")
    if y.shape != x.shape:
        raise _Wrong(
            f"For input of shape {tuple(x.shape)} `my_batch_norm` returned shape "
            f"{tuple(y.shape)}: the output has the input's shape. Per-feature tensors (C,) "
            f"must be reshaped to broadcast, e.g. (1, C) or (1, C, 1)."
        )
    return y


def _check_running(rm, rv, rm0, rv0, mean, var_biased, n, momentum, where):
    """Compare updated running buffers with PyTorch's rule; raise _Wrong with the mistake."""
    if rm.requires_grad or rv.requires_grad:
        raise _Wrong(
            "After the call running_mean/running_var require gradients: you updated them with "
            "tensors that are part of the autograd graph. Update them under `torch.no_grad()` "
            "(or with `.detach()`): they are bookkeeping, not something to differentiate."
        )
    unbiased = var_biased * n / (n - 1)
    exp_m = (1 - momentum) * rm0 + momentum * mean
    exp_v = (1 - momentum) * rv0 + momentum * unbiased

    def close(a, b):
        return torch.allclose(a.detach().double(), b, rtol=1e-6, atol=1e-8)

    if close(rm, rm0) and close(rv, rv0):
        raise _Wrong(
            f"{where}: running_mean and running_var did not change. Update them in place, e.g. "
            f"`running_mean.mul_(1 - momentum).add_(momentum * mean)`; writing "
            f"`running_mean = ...` only rebinds a local name and the caller's tensor stays as "
            f"it was."
        )
    if close(rm, momentum * rm0 + (1 - momentum) * mean):
        raise _Wrong(
            f"{where}: running_mean kept a fraction `momentum` of the old value. In PyTorch "
            f"`momentum` is the weight of the NEW batch: running = (1 - momentum) * running + "
            f"momentum * batch (Keras and CS231n use the opposite convention)."
        )
    if close(rm, mean) and not close(rm, exp_m):
        raise _Wrong(
            f"{where}: running_mean was replaced by the batch mean; blend it in with weight "
            f"`momentum`."
        )
    if not close(rm, exp_m):
        raise _Wrong(
            f"{where}: running_mean should become (1 - momentum) * running_mean + momentum * "
            f"batch mean; yours differs by up to {(rm.detach().double() - exp_m).abs().max():.2e}."
        )
    if close(rv, rv0):
        raise _Wrong(f"{where}: running_mean was updated but running_var was not.")
    if close(rv, (1 - momentum) * rv0 + momentum * var_biased):
        raise _Wrong(
            f"{where}: running_var was updated with the biased variance. PyTorch normalizes with "
            f"the biased variance (divide by n) but updates running_var with the unbiased one "
            f"(multiply by n / (n - 1)), n being the number of values per feature."
        )
    if not close(rv, exp_v):
        raise _Wrong(
            f"{where}: running_var should become (1 - momentum) * running_var + momentum * "
            f"unbiased batch variance; yours differs by up to "
            f"{(rv.detach().double() - exp_v).abs().max():.2e}."
        )


@_check("7a")
def check_batch_norm(my_batch_norm):
    """Exercise 7a. ``my_batch_norm(x, running_mean, running_var, weight, bias, training,
    momentum=0.1, eps=1e-5)`` for x of shape (N, C) or (N, C, L); updates the running buffers
    in place in training mode; returns y shaped like x."""
    _missing({"my_batch_norm": my_batch_norm}, "Write the function.")
    if not callable(my_batch_norm):
        raise _Wrong(f"`my_batch_norm` should be a function, got {type(my_batch_norm).__name__}.")
    eps = 1e-5
    # 1. training mode, (N, C): output
    x, rm, rv, w, b = _bn_inputs((8, 5), seed=0)
    rm0, rv0 = rm.clone(), rv.clone()
    xg = x.clone().requires_grad_()
    wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
    y = _run_bn(my_batch_norm, xg, rm, rv, wg, bg, True)
    mean, var = _stats(x, (0,), unbiased=False)
    expected = _bn_reference(x, mean, var, w, b, eps)
    if not torch.allclose(y.detach().double(), expected, rtol=1e-5, atol=1e-6):
        message = _diagnose(
            y.detach().double(),
            _bn_candidates(x, rm0, rv0, w, b, eps),
            f"In training mode your output differs from BN's by up to "
            f"{(y.detach().double() - expected).abs().max():.2e}. BN computes, per feature over "
            f"the batch, y = (x - mean) / sqrt(var + eps) * weight + bias with the biased "
            f"variance.",
        )
        raise _Wrong(message)
    # 2. gradients: autograd through the batch statistics
    if y.grad_fn is None:
        raise _Wrong(
            "Your output is not connected to the autograd graph (no grad_fn): did you compute it "
            "under torch.no_grad() or call .detach()? Only the running-statistics update belongs "
            "under no_grad."
        )
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (y.double() * upstream).sum().backward()

    def ref_grad(detach=()):
        xr = x.clone().requires_grad_()
        m, v = _stats(xr, (0,), unbiased=False, detach=detach)
        (_bn_reference(xr, m, v, w, b, eps) * upstream).sum().backward()
        return xr.grad

    if xg.grad is None:
        raise _Wrong("No gradient reached x: keep the computation of y differentiable.")
    if not torch.allclose(xg.grad.double(), ref_grad(), rtol=1e-5, atol=1e-6):
        for detach, what in (
            (("mean", "var"), "the batch mean and variance"),
            (("mean",), "the batch mean"),
            (("var",), "the batch variance"),
        ):
            if torch.allclose(xg.grad.double(), ref_grad(detach), rtol=1e-5, atol=1e-6):
                raise _Wrong(
                    f"The output is right but the gradient is not: you detached {what} (or "
                    f"computed it under no_grad). BN's gradient flows through the batch "
                    f"statistics: each sample's gradient depends on the whole batch. Only the "
                    f"running-statistics update should be detached."
                )
        raise _Wrong("The output is right but the gradient with respect to x differs from BN's.")
    if wg.grad is None or bg.grad is None:
        raise _Wrong("No gradient reached `weight` or `bias`: use them directly in the output.")
    # 3. running statistics, default and another momentum
    _check_running(rm, rv, rm0, rv0, mean, var, 8, 0.1, "Training mode")
    rm, rv = rm0.clone(), rv0.clone()
    _run_bn(my_batch_norm, x, rm, rv, w, b, True, momentum=0.3)
    _check_running(rm, rv, rm0, rv0, mean, var, 8, 0.3, "With momentum=0.3")
    # 4. the eps argument is used
    y_eps = _run_bn(my_batch_norm, x, rm0.clone(), rv0.clone(), w, b, True, eps=0.1)
    if not torch.allclose(
        y_eps.double(), _bn_reference(x, mean, var, w, b, 0.1), rtol=1e-5, atol=1e-6
    ):
        if torch.allclose(y_eps.double(), expected, rtol=1e-5, atol=1e-6):
            raise _Wrong(
                "With eps=0.1 your output is unchanged: use the `eps` argument, not a fixed 1e-5."
            )
        raise _Wrong("With eps=0.1 your output is not BN's with that eps.")
    # 5. eval mode
    rm, rv = rm0.clone(), rv0.clone()
    y_eval = _run_bn(my_batch_norm, x, rm, rv, w, b, False).detach().double()
    if not (torch.equal(rm, rm0) and torch.equal(rv, rv0)):
        raise _Wrong(
            "In eval mode (training=False) the running statistics must not change: update them "
            "only in training mode."
        )
    expected_eval = _bn_reference(x, rm0, rv0, w, b, eps)
    if not torch.allclose(y_eval, expected_eval, rtol=1e-5, atol=1e-6):
        if torch.allclose(y_eval, expected, rtol=1e-5, atol=1e-6):
            raise _Wrong(
                "In eval mode (training=False) you normalized with the batch's statistics: use "
                "running_mean and running_var, so a prediction does not depend on the batch."
            )
        raise _Wrong(
            "In eval mode the output should be (x - running_mean) / sqrt(running_var + eps) * "
            "weight + bias."
        )
    # 6. (N, C, L) input: statistics over N and L
    x3, rm3, rv3, w3, b3 = _bn_inputs((6, 4, 3), seed=2)
    rm30, rv30 = rm3.clone(), rv3.clone()
    y3 = _run_bn(my_batch_norm, x3, rm3, rv3, w3, b3, True).detach().double()
    mean3, var3 = _stats(x3, (0, 2), unbiased=False)
    expected3 = _bn_reference(x3, mean3, var3, w3, b3, eps)
    if not torch.allclose(y3, expected3, rtol=1e-5, atol=1e-6):
        m_n, v_n = _stats(x3, (0,), unbiased=False)
        shape = (1,) + tuple(x3.shape[1:])
        over_n = (x3 - m_n.reshape(shape)) / torch.sqrt(v_n.reshape(shape) + eps)
        over_n = over_n * w3.reshape(1, -1, 1) + b3.reshape(1, -1, 1)
        if torch.allclose(y3, over_n, rtol=1e-5, atol=1e-6):
            raise _Wrong(
                "For (N, C, L) input your statistics are over N only (one per channel and "
                "position). BN averages over N and L: `x.mean(dim=(0, 2))`, one per channel."
            )
        raise _Wrong(
            _diagnose(
                y3,
                _bn_candidates(x3, rm30, rv30, w3, b3, eps),
                "For (N, C, L) input your output differs from BN's (statistics per channel, "
                "over dims 0 and 2).",
            )
        )
    if not torch.allclose(rv3, (0.9 * rv30 + 0.1 * var3 * 18 / 17), rtol=1e-6, atol=1e-8):
        if torch.allclose(rv3, 0.9 * rv30 + 0.1 * var3 * 6 / 5, rtol=1e-6, atol=1e-8):
            raise _Wrong(
                "For (N, C, L) input the unbiased factor is n / (n - 1) with n = N * L values "
                "per channel (here 18), not N."
            )
        _check_running(rm3, rv3, rm30, rv30, mean3, var3, 18, 0.1, "For (N, C, L) input")
    return (
        "Outputs, gradients (through the batch statistics), running statistics, eval mode and "
        "(N, C, L) input all match BatchNorm's, in float64."
    )


# ============================================================================ 7b variants


def _variant_candidates(x, eps):
    mean, var = _stats(x, (0,), unbiased=False)
    _, var_u = _stats(x, (0,), unbiased=True)
    sm, sv = _stats(x, (1,), unbiased=False)
    return {
        "full": (x - mean) / torch.sqrt(var + eps),
        "mean-only": x - mean,
        "variance-only": x / torch.sqrt(var + eps),
        "rms": x / torch.sqrt((x**2).mean(0) + eps),
        "unbiased": x / torch.sqrt(var_u + eps),
        "no eps": x / torch.sqrt(var),
        "eps outside": x / (torch.sqrt(var) + eps),
        "per sample mean": x - sm[:, None],
        "per sample var": x / torch.sqrt(sv[:, None] + eps),
        "mean-only scaled by std": (x - mean) / torch.sqrt(var),
    }


_VARIANT_MESSAGES = {
    "mean-only": {
        "full": "`mean_only_norm` also divides by the standard deviation: that is full BN. "
        "Mean-only subtracts the batch mean per feature and nothing else.",
        "mean-only scaled by std": "`mean_only_norm` also divides by the standard deviation.",
        "per sample mean": "`mean_only_norm` subtracts each sample's mean over its features "
        "(dim=1); BN's mean is per feature, over the batch (dim=0).",
        "variance-only": "`mean_only_norm` divides by the standard deviation instead of "
        "subtracting the mean: the two functions are swapped.",
    },
    "variance-only": {
        "full": "`variance_only_norm` also subtracts the mean: that is full BN. Variance-only "
        "divides x itself by sqrt(var + eps).",
        "rms": "`variance_only_norm` divides by the root mean square sqrt(mean(x**2) + eps), "
        "which includes the mean. Divide by sqrt(var + eps), var being the (biased) variance "
        "around the batch mean, as in BN.",
        "unbiased": "`variance_only_norm` uses the unbiased variance (N-1); BN normalizes with "
        "the biased one (divide by N).",
        "no eps": "`variance_only_norm` lacks `eps` inside the square root.",
        "eps outside": "`variance_only_norm` has `eps` outside the square root: sqrt(var + eps).",
        "per sample var": "`variance_only_norm` uses each sample's variance over its features "
        "(dim=1); BN's variance is per feature, over the batch (dim=0).",
        "mean-only": "`variance_only_norm` subtracts the mean instead of dividing: the two "
        "functions are swapped.",
    },
}

VARIANT_NAMES = ("BN", "mean-only", "variance-only")


@_check("7b")
def check_norm_variants(mean_only_norm, variance_only_norm, variant_loss, stable):
    """Exercise 7b. ``mean_only_norm(x, eps=1e-5)`` = x - batch mean; ``variance_only_norm(x,
    eps=1e-5)`` = x / sqrt(biased batch variance + eps); both per feature over the batch, for
    (N, C) input. ``variant_loss``: ``{"BN" | "mean-only" | "variance-only": [final validation
    loss per seed]}``; ``stable``: the names whose final validation loss is below 1 on every
    seed."""
    _missing(
        {"mean_only_norm": mean_only_norm, "variance_only_norm": variance_only_norm},
        "Write the two functions.",
    )
    eps = 1e-5
    x, *_ = _bn_inputs((16, 5), seed=3)
    cands = _variant_candidates(x, eps)
    for fn, name, key in (
        (mean_only_norm, "mean_only_norm", "mean-only"),
        (variance_only_norm, "variance_only_norm", "variance-only"),
    ):
        y = _as_tensor(_call(fn, x.clone(), name=name), name).detach().double()
        if y.shape != x.shape:
            raise _Wrong(f"`{name}` returned shape {tuple(y.shape)} for input {tuple(x.shape)}.")
        if torch.allclose(y, cands[key], rtol=1e-5, atol=1e-6):
            continue
        for cand, message in _VARIANT_MESSAGES[key].items():
            if torch.allclose(y, cands[cand], rtol=1e-5, atol=1e-6):
                raise _Wrong(message)
        raise _Wrong(
            f"`{name}` differs from the {key} normalization by up to "
            f"{(y - cands[key]).abs().max():.2e}."
        )
    # the invariances each variant keeps, measured on the learner's functions
    z = torch.randn(16, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    shift = torch.linspace(-5, 5, 5, dtype=torch.float64)
    scale = torch.linspace(0.2, 7, 5, dtype=torch.float64)
    shift_change = (mean_only_norm(z + shift) - mean_only_norm(z)).abs().max().item()
    scale_change = (variance_only_norm(z * scale) - variance_only_norm(z)).abs().max().item()
    invariances = (
        f"shifting each feature changes mean-only's output by {shift_change:.0e}; scaling each "
        f"feature by a positive factor changes variance-only's by {scale_change:.0e}"
    )
    if variant_loss is None or stable is None:
        raise _NotAttempted(
            f"Both functions are right ({invariances}). Now run the experiment: "
            f"`variant_loss` and `stable` are still None."
        )
    if not isinstance(variant_loss, dict) or set(variant_loss) != set(VARIANT_NAMES):
        got = (
            sorted(variant_loss) if isinstance(variant_loss, dict) else type(variant_loss).__name__
        )
        raise _Wrong(
            f"`variant_loss` should be a dict with the keys {list(VARIANT_NAMES)}, got {got}."
        )
    losses = {}
    for name, values in variant_loss.items():
        if not isinstance(values, (list, tuple)) or len(values) < 3:
            raise _Wrong(
                f"`variant_loss[{name!r}]` should be a list with one final validation loss per "
                f"seed, at least 3 seeds."
            )
        losses[name] = [_number(v, f"`variant_loss[{name!r}]` entries") for v in values]
    if len({len(v) for v in losses.values()}) != 1:
        raise _Wrong("Every variant needs the same seeds: the lists have different lengths.")
    if isinstance(stable, str) or not isinstance(stable, (list, tuple, set)):
        raise _Wrong(
            f"`stable` should be a list of names from {list(VARIANT_NAMES)}, got {stable!r}."
        )
    unknown = [s for s in stable if s not in VARIANT_NAMES]
    if unknown:
        raise _Wrong(f"`stable` contains {unknown}: use names from {list(VARIANT_NAMES)}.")
    truth = {n for n, v in losses.items() if all(math.isfinite(x) and x < 1 for x in v)}
    if set(stable) != truth:
        shown = "; ".join(f"{n}: {', '.join(f'{v:.3g}' for v in vs)}" for n, vs in losses.items())
        raise _Wrong(
            f"Your own losses are {shown}. Below 1 on every seed: {sorted(truth) or 'none'}."
        )
    return (
        f"Both functions match their definitions ({invariances}). Stable (validation loss "
        f"below 1 on every seed): {', '.join(sorted(truth)) or 'none'}."
    )


# ============================================================================ 8 scale


def _scaled_reference(model, a):
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin in linears[:-1]:
            lin.weight.mul_(a)
            if lin.bias is not None:
                lin.bias.mul_(a)
    return model


def _grad_norm_ratio(a, training=True, norm="batch"):
    """||dL/dW1|| with hidden layers scaled by a over the same at a = 1 (the exercise's setup)."""
    X_train, _, y_train, _ = load_data()
    norms = []
    for factor in (1.0, a):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = MLP(20, (128, 64), norm=norm)
        _scaled_reference(model, factor)
        model.train(training)
        loss = F.binary_cross_entropy_with_logits(model(X_train[:64]), y_train[:64])
        loss.backward()
        norms.append(model.network[0].weight.grad.norm().item())
    return norms[1] / norms[0]


@_check("8")
def check_scale_invariance(scale_hidden_layers, grad_ratio, init_acc, copes):
    """Exercise 8. ``scale_hidden_layers(model, a)`` multiplies the weight and bias of every
    Linear but the last by ``a`` (in place) and returns the model; ``grad_ratio``: ``{a:
    ||dL/dW1|| at scale a / at scale 1}`` for a seed-0 MLPWithBN, training mode, BCE on the
    first 64 training samples; ``init_acc``: ``{(norm, a): [final val accuracy per seed]}``
    for norm "none"/"batch" and a = 1 and 100; ``copes``: "none" or "batch", the norm with the
    higher mean accuracy at a = 100."""
    _missing({"scale_hidden_layers": scale_hidden_layers}, "Write the function.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        original = MLP(20, (16, 8), norm="batch")
    model = copy.deepcopy(original)
    returned = _call(scale_hidden_layers, model, 3.0, name="scale_hidden_layers")
    if returned is not None and not isinstance(returned, nn.Module):
        raise _Wrong(
            f"`scale_hidden_layers` should return the model, got {type(returned).__name__}."
        )
    model = returned if returned is not None else model
    if returned is None and all(
        torch.equal(p, q) for p, q in zip(model.parameters(), original.parameters())
    ):
        raise _NotAttempted("`scale_hidden_layers` returns None and changes nothing yet.")
    lins = [(i, m) for i, m in enumerate(model.network) if isinstance(m, nn.Linear)]
    olins = [m for m in original.network if isinstance(m, nn.Linear)]
    for k, ((i, lin), orig) in enumerate(zip(lins, olins)):
        last = k == len(lins) - 1
        factor = 1.0 if last else 3.0
        if not torch.allclose(lin.weight, orig.weight * factor):
            if last and torch.allclose(lin.weight, orig.weight * 3.0):
                raise _Wrong(
                    "You also scaled the output Linear. No BN follows it, so scaling it simply "
                    "scales the logits; the exercise scales the hidden Linears only (all but "
                    "the last)."
                )
            if torch.allclose(lin.weight, orig.weight):
                raise _Wrong(
                    f"network[{i}] (a hidden Linear) was not scaled: scale every Linear but "
                    f"the last."
                )
            raise _Wrong(f"network[{i}].weight is not the original multiplied by a.")
        if not last and not torch.allclose(lin.bias, orig.bias * 3.0):
            raise _Wrong(
                f"network[{i}].bias was not scaled: multiply the bias by a too, so a layer's "
                f"output is exactly a times the original (before BN it cancels anyway)."
            )
    for bn, obn in zip(bn_layers(model), bn_layers(original)):
        if not (torch.equal(bn.weight, obn.weight) and torch.equal(bn.bias, obn.bias)):
            raise _Wrong("You changed the BN layers' weight/bias: scale only the Linear layers.")
    _missing(
        {"grad_ratio": grad_ratio, "init_acc": init_acc, "scale_copes": copes},
        "The function is right; now measure the gradients and train.",
    )
    if not isinstance(grad_ratio, dict) or not {10, 100} <= set(grad_ratio):
        raise _Wrong("`grad_ratio` should be a dict {a: ratio} with at least the keys 10 and 100.")
    for a, value in grad_ratio.items():
        a = _number(a, "`grad_ratio` keys")
        value = _number(value, f"`grad_ratio[{a:g}]`")
        truth = _grad_norm_ratio(a)
        if _same(value, truth, 0.02):
            continue
        if _same(value, 1 / truth, 0.02):
            raise _Wrong(
                f"`grad_ratio[{a:g}]` is {value:.4g}, the inverse of the measured {truth:.4g}: "
                f"divide the gradient norm at scale a by the one at scale 1."
            )
        if _same(value, 1.0, 0.02):
            raise _Wrong(
                f"`grad_ratio[{a:g}]` is about 1: that is the gradient of a layer after the "
                f"scaled ones (e.g. the output layer). Measure network[0].weight.grad."
            )
        if _same(value, _grad_norm_ratio(a, training=False), 0.02) or _same(
            value, _grad_norm_ratio(a, norm="none"), 0.02
        ):
            raise _Wrong(
                f"`grad_ratio[{a:g}]` is what a net that does not normalize gives: either the "
                f"model was in eval mode (a fresh BN layer's running statistics are 0 and 1, so "
                f"in eval mode it normalizes nothing) or it has no BN (norm='none'). Measure the "
                f"BN net in training mode."
            )
        raise _Wrong(f"`grad_ratio[{a:g}]` is {value:.4g}; measuring it gives {truth:.4g}.")
    keys = [(n, a) for n in ("none", "batch") for a in (1, 100)]
    if not isinstance(init_acc, dict) or set(init_acc) != set(keys):
        raise _Wrong(f"`init_acc` should be a dict with exactly the keys {keys}.")
    accs = {}
    for k in keys:
        values = init_acc[k]
        if not isinstance(values, (list, tuple)) or len(values) < 3:
            raise _Wrong(
                f"`init_acc[{k!r}]` should be a list of final accuracies, one per seed (3 or more)."
            )
        accs[k] = [_number(v, f"`init_acc[{k!r}]` entries") for v in values]
        if not all(0 <= v <= 1 for v in accs[k]):
            raise _Wrong(f"`init_acc[{k!r}]` should hold accuracies between 0 and 1.")
    _choice(copes, ["none", "batch"], "scale_copes")
    truth = "batch" if _mean(accs["batch", 100]) > _mean(accs["none", 100]) else "none"
    if copes != truth:
        raise _Wrong(
            f"Your own numbers at a = 100: plain {_spread(accs['none', 100])}, BN "
            f"{_spread(accs['batch', 100])}. The one with the higher mean is {truth!r}."
        )
    ratios = ", ".join(
        f"a={_number(a, 'a'):g}: {_number(v, 'ratio'):.4g}" for a, v in grad_ratio.items()
    )
    return (
        f"Gradient ratios {ratios} (scale invariance predicts 1/a). At a = 100 the plain net "
        f"reaches {_spread(accs['none', 100])}, the BN net {_spread(accs['batch', 100])}."
    )


# ============================================================================ 9 LayerNorm


@_check("9")
def check_layer_norm(results, acc, better_at_2, more_sensitive):
    """Exercise 9. ``results``: ``{batch size: sweep.run(...)}`` of ``{"BN": norm batch, "LN":
    norm layer}`` for batch sizes including 2 and 64 (same seeds, lr, epochs); ``acc``:
    ``{(model, batch size): mean final validation accuracy}``; ``better_at_2``: "BN" or "LN";
    ``more_sensitive``: the model whose mean accuracy changes more across the batch sizes
    (largest minus smallest)."""
    _missing(
        {
            "ln_results": results,
            "ln_acc": acc,
            "better_at_2": better_at_2,
            "more_sensitive": more_sensitive,
        },
        "Train BN and LN at each batch size, fill in the table and answer the two questions.",
    )
    sizes = _check_batch_results(results, "ln_results", (2, 64), {"BN": "batch", "LN": "layer"})
    keys = [(m, bs) for m in ("BN", "LN") for bs in sizes]
    expected = {(m, bs): _mean(_final(results[bs], m)) for m, bs in keys}
    _check_table(
        acc,
        expected,
        "ln_acc",
        "mean final validation accuracy over seeds",
        [
            (
                {(m, bs): _mean(_final(results[bs], m, "val_loss")) for m, bs in keys},
                "These are validation losses; the table is about the final validation accuracy.",
            )
        ],
    )
    _choice(better_at_2, ["BN", "LN"], "better_at_2")
    truth = "LN" if expected["LN", 2] > expected["BN", 2] else "BN"
    if better_at_2 != truth:
        raise _Wrong(
            f"At batch size 2 your numbers are BN {expected['BN', 2]:.3f}, LN "
            f"{expected['LN', 2]:.3f}: {truth} is better."
        )
    _choice(more_sensitive, ["BN", "LN"], "more_sensitive")
    ranges = {
        m: max(expected[m, bs] for bs in sizes) - min(expected[m, bs] for bs in sizes)
        for m in ("BN", "LN")
    }
    truth = max(ranges, key=ranges.get)
    if more_sensitive != truth:
        raise _Wrong(
            f"Across batch sizes {sizes} BN's mean accuracy spans {ranges['BN']:.3f} and LN's "
            f"{ranges['LN']:.3f}: {truth} is more sensitive."
        )
    shown = ", ".join(
        f"{bs}: BN {expected['BN', bs]:.3f} / LN {expected['LN', bs]:.3f}" for bs in sizes
    )
    return f"{shown}. LayerNorm's statistics are per sample, so the batch size does not enter them."


# ============================================================================ 10 fold, freeze


def _trained_bn_model(bias=True, seed=0):
    """A small BN net (20 -> 16 -> 8 -> 1) in eval mode, with non-trivial BN parameters and
    running statistics (from batches unlike the training data), one nearly constant feature."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP(20, (16, 8), norm="batch", bias=bias)
    with torch.no_grad():
        for bn in bn_layers(model):
            bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        model.train()
        for _ in range(20):
            model(torch.randn(32, 20, generator=g) * 2 + 0.5)
        bn_layers(model)[0].running_var[0] = 1e-6  # eps matters for this feature
    return model.eval()


def _fold_variant(
    linear,
    bn,
    eps_mode="inside",
    var_mode="std",
    beta=True,
    lin_bias=True,
    sub_mean=True,
    stats=None,
):
    W = linear.weight.detach()
    b = linear.bias.detach() if (linear.bias is not None and lin_bias) else torch.zeros(W.shape[0])
    mean, var = (bn.running_mean, bn.running_var) if stats is None else stats
    denom = {"inside": torch.sqrt(var + bn.eps), "none": torch.sqrt(var), "var": var + bn.eps}[
        eps_mode if var_mode == "std" else "var"
    ]
    s = bn.weight.detach() / denom
    out = nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        out.weight.copy_(s[:, None] * W)
        out.bias.copy_((b - (mean if sub_mean else 0)) * s + (bn.bias.detach() if beta else 0))
    return out


def _fold_net(model, stats_fn=None, **kw):
    """A folded copy of an MLP, with the options of _fold_variant (the usual mistakes)."""
    layers, net = [], list(model.network)
    i = 0
    while i < len(net):
        if (
            isinstance(net[i], nn.Linear)
            and i + 1 < len(net)
            and isinstance(net[i + 1], nn.BatchNorm1d)
        ):
            stats = stats_fn(i) if stats_fn is not None else None
            layers.append(_fold_variant(net[i], net[i + 1], stats=stats, **kw))
            i += 2
        else:
            layers.append(net[i])
            i += 1
    return nn.Sequential(*layers)


_FOLD_MISTAKES = [
    (
        {"eps_mode": "none"},
        "Your fold leaves out `eps`: s = weight / sqrt(running_var + eps). It "
        "matters for a feature with a tiny running variance (the check has one).",
    ),
    ({"var_mode": "var"}, "Your fold divides by running_var + eps instead of its square root."),
    (
        {"beta": False},
        "Your fold drops BN's shift (`bn.bias`): b' = (b - running_mean) * s + bn.bias.",
    ),
    (
        {"lin_bias": False},
        "Your fold drops the Linear's own bias: b' = (b - running_mean) * s + bn.bias.",
    ),
    (
        {"sub_mean": False},
        "Your fold forgets to subtract running_mean: b' = (b - running_mean) * s + bn.bias.",
    ),
]


@_check("10a")
def check_fold(fold_bn):
    """Exercise 10a. ``fold_bn(model)``: for an ``MLP`` with BN right after each hidden Linear,
    return a new network without BN layers that computes what ``model.eval()`` computes; the
    model itself must stay unchanged."""
    _missing({"fold_bn": fold_bn}, "Write the function.")
    x = torch.randn(64, 20, generator=torch.Generator().manual_seed(5))
    for bias in (True, False):
        model = _trained_bn_model(bias=bias)
        before = copy.deepcopy(model.state_dict())
        with torch.no_grad():
            expected = model(x)
        try:
            folded = _call(fold_bn, model, name="fold_bn")
        except _Wrong as err:
            if not bias:
                raise _Wrong(
                    f"Your fold fails on a model whose hidden Linears have no bias (bias=False, "
                    f"as exercise 6 recommends): treat a missing bias as 0. ({err})"
                ) from None
            raise
        if folded is None:
            raise _NotAttempted("`fold_bn` returns None: return the folded network.")
        if not isinstance(folded, nn.Module):
            raise _Wrong(
                f"`fold_bn` should return an nn.Module (e.g. nn.Sequential), got "
                f"{type(folded).__name__}."
            )
        after = model.state_dict()
        bn_changed = any(
            not torch.equal(before[k], after[k])
            for k in before
            if "running" in k or "num_batches" in k
        )
        if bn_changed:
            raise _Wrong(
                "Your function changed the model's running statistics: it ran the model in "
                "training mode. Folding uses the running statistics as they are; never call "
                "the model in train mode to fold it."
            )
        if any(not torch.equal(before[k], after[k]) for k in before):
            raise _Wrong(
                "Your function changed the original model's weights: build new Linear layers (or "
                "work on copy.deepcopy(model)) so the original still works."
            )
        if bn_layers(folded):
            raise _Wrong(
                "The folded network still contains BatchNorm layers: folding removes them."
            )
        n_lin = sum(isinstance(m, nn.Linear) for m in folded.modules())
        if n_lin != 3:
            raise _Wrong(
                f"The folded network has {n_lin} Linear layers; the model has 3, and folding "
                f"keeps all 3."
            )
        try:
            with torch.no_grad():
                got = folded(x)
        except Exception as err:
            raise _Wrong(f"Running the folded network raised {type(err).__name__}: {err}") from None
        scale = expected.abs().max().item()
        if got.shape == expected.shape and (got - expected).abs().max().item() <= 1e-4 * scale:
            continue
        for kwargs, message in _FOLD_MISTAKES:
            if kwargs.get("lin_bias") is False and not bias:
                continue
            with torch.no_grad():
                cand = _fold_net(model, **kwargs)(x)
            if (got - cand).abs().max().item() <= 1e-4 * scale:
                raise _Wrong(message)
        X_train = load_data()[0]
        with torch.no_grad():
            pre = {}  # Linear index -> statistics of its output over the training set
            h = X_train
            for i, layer in enumerate(model.network):
                if isinstance(layer, nn.BatchNorm1d):  # as in train mode, whole set as a batch
                    pre[i - 1] = (h.mean(0), h.var(0, unbiased=False))
                    h = F.batch_norm(h, None, None, layer.weight, layer.bias, True, 0.0, layer.eps)
                else:
                    h = layer(h)
            cand = _fold_net(model, stats_fn=pre.__getitem__)(x)
        if (got - cand).abs().max().item() <= 1e-3 * scale:
            raise _Wrong(
                "Your fold uses the statistics of a batch of data (what train mode would use), "
                "not the layer's running statistics: s = weight / sqrt(running_var + eps)."
            )
        with torch.no_grad():
            train_out = copy.deepcopy(model).train()(x)
        if (got - train_out).abs().max().item() <= 1e-4 * scale:
            raise _Wrong(
                "Your folded network reproduces the model in training mode (batch statistics). "
                "A fold must equal the model in eval mode, with the running statistics."
            )
        raise _Wrong(
            f"The folded network's outputs differ from model.eval()'s by up to "
            f"{(got - expected).abs().max().item():.3g} (outputs are up to {scale:.3g})."
        )
    return (
        "Your folded networks (with and without hidden biases) match model.eval() and have no "
        "BN layer left; the models were left unchanged."
    )


@_check("10b")
def check_freeze(freeze_bn):
    """Exercise 10b. ``freeze_bn(model)`` freezes every BN layer for fine-tuning and returns
    the model: afterwards a normal training loop (``model.train()``, Adam on
    ``model.parameters()``) changes neither BN's running statistics nor its weight and bias,
    BN normalizes with the running statistics, and the other layers still train."""
    _missing({"freeze_bn": freeze_bn}, "Write the function.")
    model = _trained_bn_model().train()  # as it comes out of training
    returned = _call(freeze_bn, model, name="freeze_bn")
    if returned is not None and not isinstance(returned, nn.Module):
        raise _Wrong(f"`freeze_bn` should return the model, got {type(returned).__name__}.")
    model = returned if returned is not None else model
    bns = bn_layers(model)
    changed = (
        any(not p.requires_grad for p in model.parameters())
        or any(not m.training for m in model.modules())
        or any(b.momentum != 0.1 for b in bns)
        or any("train" in vars(m) or "forward" in vars(m) for m in model.modules())
        or bool(sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()))
    )
    if returned is None and not changed:
        raise _NotAttempted("`freeze_bn` returns None and changes nothing yet.")
    eval_after_call = [not b.training for b in bns]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(7)
    model.eval()  # a training loop switches between the two modes
    evals = [not m.training for m in model.network if isinstance(m, nn.Linear)]
    model.train()
    trains = [m.training for m in model.network if isinstance(m, nn.Linear)]
    bn_training = [b.training for b in bns]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.randn(32, 20, generator=g) * 3 - 1  # data unlike the original: stats would move
    y = (torch.rand(32, 1, generator=g) > 0.5).float()
    if not any(p.requires_grad for p in model.parameters()):
        raise _Wrong(
            "No parameter requires a gradient any more: you froze the whole network. Freeze only "
            "the BN layers, so the rest can be fine-tuned."
        )
    for _ in range(3):
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()
    after = model.state_dict()

    def moved(predicate):
        return any(not torch.equal(before[k], after[k]) for k in before if predicate(k))

    bn_names = {n for n, m in model.named_modules() if m in bns}
    stats_moved = moved(lambda k: k.rsplit(".", 1)[0] in bn_names and "running" in k)
    affine_moved = moved(
        lambda k: k.rsplit(".", 1)[0] in bn_names and k.endswith(("weight", "bias"))
    )
    linear_moved = moved(lambda k: k.rsplit(".", 1)[0] not in bn_names)
    if not (all(trains) and all(evals)):
        raise _Wrong(
            "After your freeze, model.eval() and model.train() no longer switch the Linear "
            "layers: you broke model.train() for the whole network (dropout, for one, would "
            "stay on or off). Change only the BN layers."
        )
    if not linear_moved:
        raise _Wrong(
            "The Linear layers did not change during fine-tuning: you froze the whole network. "
            "Freeze only the BN layers."
        )
    if stats_moved:
        grads_off = all(not p.requires_grad for b in bns for p in (b.weight, b.bias))
        if all(eval_after_call) and any(bn_training):
            raise _Wrong(
                "Your BN layers were in eval mode after freeze_bn, but the training loop's "
                "model.train() switched them back to training mode, and the running statistics "
                "moved. Make the BN layers ignore train(): e.g. replace each BN layer's `train` "
                "method so it always calls nn.Module.train(layer, False) (this is what "
                "bnteach.batchnorm.freeze does)."
            )
        if grads_off:
            raise _Wrong(
                "requires_grad_(False) stops the optimizer from changing BN's weight and bias, "
                "but the running statistics are not parameters: every forward pass in training "
                "mode updates them. Keep the BN layers in eval mode, even after model.train()."
            )
        raise _Wrong(
            "The running statistics moved during fine-tuning: BN layers in training mode update "
            "them on every forward pass. Keep the BN layers in eval mode, even after model.train()."
        )
    if any(bn_training):
        same_stats_msg = (
            "The running statistics did not move, but the BN layers are in training mode, so "
            "they normalize with each batch's statistics: the model's outputs depend on the batch. "
        )
        if any(b.momentum == 0 for b in bns):
            same_stats_msg += (
                "momentum=0 only stops the update; keep the BN layers in eval mode instead."
            )
        raise _Wrong(same_stats_msg)
    if affine_moved:
        raise _Wrong(
            "BN's weight and bias still change during fine-tuning: also call "
            "requires_grad_(False) on them."
        )
    return (
        "After freeze_bn and model.train(), three Adam steps changed the Linear layers but "
        "neither BN's running statistics nor its weight and bias, and BN stayed in eval mode."
    )
