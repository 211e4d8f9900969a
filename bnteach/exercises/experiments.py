"""Checks of training experiments that compare models over seeds: larger learning rates (1),
a deeper network (2), sigmoid and tanh (3) and BN after the activation (5). A verdict the
learner gives ("better", "worse", "equivalent", "unresolved") is what
:meth:`bnteach.stats.Paired.verdict` says about the learner's own runs, with the margin the
exercise states; :func:`_check_verdict` is shared with the other experiment checks."""

from bnteach import sweep
from bnteach.exercises._common import (
    _check_table,
    _differences,
    _final,
    _mean,
    _result,
    _spread,
)
from bnteach.exercises.feedback import _check, _choice, _missing, _number, _same, _Wrong
from bnteach.stats import paired

# The margin the exercises state: a difference of at most 0.02 in accuracy (4 of the 200
# validation samples) is "no practical difference".
MARGIN = 0.02
VERDICTS = ("better", "worse", "equivalent", "unresolved")
_OPPOSITE = {"better": "worse", "worse": "better"}

# ============================================================================ helpers


def _spec(kwargs, name):
    """Normalize one model's MLP keyword arguments as sweep.run does (teaching errors)."""
    try:
        return sweep.normalize_models({name: kwargs})[name]
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


def _paired(result, a, b, lr=None):
    """The paired comparison of ``a`` with ``b`` over ``result``'s seeds (final val accuracy)."""
    return paired(_final(result, a, lr=lr), _final(result, b, lr=lr), names=(a, b))


def _check_verdict(verdict, p, name, margin=MARGIN):
    """``verdict`` must be ``p.verdict(margin)``; explain the usual misreadings of an interval.
    Returns the verdict's statement (words and numbers)."""
    _choice(verdict, list(VERDICTS), name)
    truth = p.verdict(margin)
    a, b = p.names
    said = p.statement(margin)
    if verdict == truth:
        return said
    if verdict == _OPPOSITE.get(truth):
        why = f"the verdict is from {a}'s side: paired({a} values, {b} values)"
    elif verdict == "equivalent" and truth in ("better", "worse"):
        why = (
            "the interval excludes 0: the difference is real even where it is small (a "
            "difference inside the margin is still reported as better or worse)"
        )
    elif verdict == "equivalent":
        why = (
            f"'equivalent' needs the whole interval inside +/-{margin:g}; here it reaches "
            f"outside, so more seeds would be needed to say 'no practical difference'"
        )
    elif verdict in ("better", "worse") and truth in ("equivalent", "unresolved"):
        why = (
            "the interval includes 0: a higher mean alone, or winning on most seeds, does not "
            "show a difference"
        )
    else:
        why = (
            "the interval excludes 0"
            if truth in ("better", "worse")
            else f"the interval lies inside +/-{margin:g}"
        )
    raise _Wrong(
        f"`{name}` is {verdict!r}, but your own runs give {truth!r} with the margin {margin:g} "
        f"({why}). {said}."
    )


# ============================================================================ 1 learning rate


def _acc_table(result, keys, metric="val_acc", pick=None):
    """(model, lr) -> mean over seeds of ``pick(history)`` (default: final ``metric``)."""
    pick = pick or (lambda h: getattr(h, metric)[-1])
    return {
        (model, lr): _mean([pick(h) for h in result.histories(model=model, lr=lr)])
        for model, lr in keys
    }


@_check("1")
def check_learning_rate(result, final_acc, verdict):
    """Exercise 1. ``result``: ``sweep.run`` of the default pair at lrs 0.01, 0.1, 1.0 with at
    least 3 seeds; ``final_acc``: ``{(model, lr): mean over seeds of the final validation
    accuracy}``; ``verdict``: ``paired(BN, plain).verdict(margin=0.02)`` at lr 1.0 ("better",
    "worse", "equivalent" or "unresolved", from BN's side)."""
    _missing(
        {"lr_result": result, "final_acc": final_acc, "lr1_verdict": verdict},
        "Fill in the table from `lr_result` and give your verdict.",
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
    said = _check_verdict(verdict, _paired(result, "BN", "plain", lr=1.0), "lr1_verdict")
    plain, bn = _final(result, "plain", lr=1.0), _final(result, "BN", lr=1.0)
    return (
        f"At lr 1.0 the plain net reaches {_spread(plain)}, the BN net {_spread(bn)}: {said}. "
        f"At lr 0.01 they were {expected[('plain', 0.01)]:.3f} and "
        f"{expected[('BN', 0.01)]:.3f}."
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
    # The baseline is not part of the learner's result: train it with the facts the result
    # records (seeds, epochs, batch size, device), so the two gaps differ only in depth.
    shallow_run = sweep.run(
        seeds=result.seeds,
        lrs=[0.1],
        epochs=result.epochs,
        batch_size=result.batch_size,
        device=result.device,
    )
    shallow = _mean(_final(shallow_run, "BN")) - _mean(_final(shallow_run, "plain"))
    if gap_grows != (deep > shallow):
        raise _Wrong(
            f"With the same seeds, epochs and batch size the tutorial's 2-layer nets give a gap of "
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


# ============================================================================ 5 placement


@_check("5")
def check_placement(models, result, verdict):
    """Exercise 5. ``models``: ``{"before": ..., "after": ...}``, BN nets differing only in
    ``placement``; ``result``: ``sweep.run`` with them (3+ seeds, one learning rate);
    ``verdict``: ``paired(before, after).verdict(margin=0.02)`` of the final validation
    accuracies."""
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
    _one_lr(result, "placement_result")
    said = _check_verdict(verdict, _paired(result, "before", "after"), "placement_verdict")
    means = ", ".join(f"{m} {_mean(_final(result, m)):.3f}" for m in ("before", "after"))
    return f"Mean final validation accuracy: {means}; {said}."


def _one_lr(result, name):
    """A paired comparison over seeds needs one learning rate."""
    if len(result.lrs) != 1:
        raise _Wrong(
            f"`{name}` was trained at the learning rates {list(result.lrs)}: train at one "
            f"learning rate (0.01), so the comparison pairs seeds, not settings."
        )
