"""Helpers shared by the checks of training experiments: validate the learner's runs (a
``SweepResult``) and compare a table or a verdict with what those runs give."""

import statistics

from bnteach.exercises.feedback import _choice, _number, _same, _Wrong
from bnteach.sweep import SweepResult

NO_WINNER = "no clear winner"


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


def _differences(a, b):
    return {k for k in a if a[k] != b[k]}


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
