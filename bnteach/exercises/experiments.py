"""Notebook 05's checks of training experiments that compare models over seeds: larger learning
rates (1), a deeper network (2), sigmoid and tanh (3) and BN after the activation (5). A verdict
("better", "worse", "equivalent", "unresolved") must be what :meth:`bnteach.stats.Paired.verdict`
says about the learner's own runs, with the margin the exercise states."""

from bnteach import sweep
from bnteach.exercises import kit
from bnteach.exercises.kit import Wrong

NB = kit.notebook("05")
ACTIVATION_NAMES = ("relu", "tanh", "sigmoid")


def _specs(models, name, names):
    """The learner's model dict (name -> MLP kwargs), normalized as sweep.run does."""
    if not isinstance(models, dict) or set(models) != set(names):
        got = sorted(models) if isinstance(models, dict) else type(models).__name__
        raise Wrong(f"`{name}` should be a dict with exactly the keys {names}, got {got}.")
    try:
        return sweep.normalize_models(models)
    except (TypeError, ValueError) as err:
        raise Wrong(str(err)) from None


def _trained_with(result, specs, name):
    """The result must hold exactly these models (name -> normalized spec)."""
    if set(result.models) != set(specs):
        raise Wrong(
            f"`{name}` was trained with the models {sorted(result.models)}, expected "
            f"{sorted(specs)}: pass `models=...` to `sweep.run`."
        )
    for n, spec in specs.items():
        if result.models[n] != spec:
            raise Wrong(
                f"In `{name}` the model {n!r} was trained as {result.models[n]}, but your model "
                f"dict says {spec}: train with the same `models` dict."
            )


def _differ_only_in(a, b, key, message):
    other = kit.differences(a, b) - {key}
    if other:
        raise Wrong(message.format(sorted(other)))


# ============================================================================ 1 learning rate


def _acc_table(result, keys, pick):
    """(model, lr) -> mean over seeds of ``pick(history)``."""
    return {
        (m, lr): kit.mean([pick(h) for h in result.histories(model=m, lr=lr)]) for m, lr in keys
    }


@NB.check("1", "larger learning rates")
def check_learning_rate(result, final_acc, verdict):
    """Exercise 1. ``result``: ``sweep.run`` of the default pair at lrs 0.01, 0.1, 1.0 with at
    least 3 seeds; ``final_acc``: ``{(model, lr): mean over seeds of the final validation
    accuracy}``; ``verdict``: ``paired(BN, plain).verdict(margin=0.02)`` at lr 1.0 ("better",
    "worse", "equivalent" or "unresolved", from BN's side)."""
    kit.missing(
        {"lr_result": result, "final_acc": final_acc, "lr1_verdict": verdict},
        "Fill in the table from `lr_result` and give your verdict.",
    )
    kit.sweep_result(result, "lr_result")
    if set(result.models) != {"plain", "BN"}:
        raise Wrong(
            f"`lr_result` holds the models {sorted(result.models)}: use the default pair "
            f"(leave out `models=`), named 'plain' and 'BN'."
        )
    missing_lrs = [lr for lr in (0.01, 0.1, 1.0) if lr not in result.lrs]
    if missing_lrs:
        raise Wrong(
            f"`lr_result` lacks the learning rate(s) {missing_lrs}: use lrs=[0.01, 0.1, 1.0]."
        )
    keys = [(m, lr) for m in result.models for lr in result.lrs]
    n = len(result.seeds)
    expected = _acc_table(result, keys, lambda h: h.val_acc[-1])
    alternatives = [
        (
            _acc_table(result, keys, lambda h: h.val_loss[-1]),
            "These are validation losses: the question is about the final validation accuracy "
            "(`h.val_acc[-1]`).",
        ),
        (
            _acc_table(result, keys, lambda h: h.train_loss[-1]),
            "These are training losses: use the final validation accuracy (`h.val_acc[-1]`).",
        ),
        (
            _acc_table(result, keys, lambda h: max(h.val_acc)),
            "These are the best accuracies over all epochs (`max(h.val_acc)`): picking the best "
            "epoch after the fact flatters unstable runs. Use the final epoch, `h.val_acc[-1]`.",
        ),
        (
            {(m, lr): kit.finals(result, m, lr=lr)[0] for m, lr in keys},
            f"These are the numbers of the first seed only: average over all {n} seeds.",
        ),
    ]
    kit.table(
        final_acc,
        expected,
        "final_acc",
        f"mean over {n} seeds of the final validation accuracy",
        alternatives,
    )
    said = kit.check_verdict(
        verdict, kit.paired_finals(result, "BN", "plain", lr=1.0), "lr1_verdict"
    )
    plain, bn = kit.finals(result, "plain", lr=1.0), kit.finals(result, "BN", lr=1.0)
    return (
        f"At lr 1.0 the plain net reaches {kit.spread(plain)}, the BN net {kit.spread(bn)}: "
        f"{said}. At lr 0.01 they were {expected[('plain', 0.01)]:.3f} and "
        f"{expected[('BN', 0.01)]:.3f}."
    )


# ============================================================================ 2 depth


def _deep_specs(models):
    specs = _specs(models, "deep_models", ["BN", "plain"])
    for n, spec in specs.items():
        depth = len(spec["hidden_sizes"])
        if depth != 6:
            raise Wrong(
                f"deep_models[{n!r}] has {depth} hidden layer(s) (hidden_sizes="
                f"{spec['hidden_sizes']}); the exercise asks for 6, e.g. hidden_sizes=(64,) * 6."
            )
    if specs["plain"]["norm"] != "none" or specs["BN"]["norm"] != "batch":
        raise Wrong(
            f"deep_models['plain'] should have norm='none' and deep_models['BN'] norm='batch'; "
            f"yours have {specs['plain']['norm']!r} and {specs['BN']['norm']!r}."
        )
    _differ_only_in(
        specs["plain"],
        specs["BN"],
        "norm",
        "The two models also differ in {}: for a fair comparison they may differ only in `norm`.",
    )
    return specs


@NB.check("2", "a deeper network")
def check_depth(models, result, gap, gap_grows):
    """Exercise 2. ``models``: ``{"plain": ..., "BN": ...}`` MLP kwargs with 6 hidden layers;
    ``result``: ``sweep.run`` with those models at lr 0.1 (3+ seeds); ``gap``: mean final
    validation accuracy of BN minus plain at lr 0.1; ``gap_grows``: whether this gap is larger
    than the gap of the tutorial's 2-layer nets at the same settings."""
    kit.missing(
        {"deep_models": models, "deep_result": result, "deep_gap": gap, "gap_grows": gap_grows},
        "Define the two 6-layer models, train them and compare.",
    )
    specs = _deep_specs(models)
    _trained_with(kit.sweep_result(result, "deep_result"), specs, "deep_result")
    if 0.1 not in result.lrs:
        raise Wrong("`deep_result` has no run at lr 0.1: use lrs=[0.1] (or include 0.1).")
    bn, plain = kit.finals(result, "BN", lr=0.1), kit.finals(result, "plain", lr=0.1)
    deep = kit.mean(bn) - kit.mean(plain)
    gap = kit.number(gap, "`deep_gap`")
    if kit.same(gap, -deep, 2e-3) and not kit.same(gap, deep, 2e-3):
        raise Wrong("`deep_gap` has the wrong sign: it is BN minus plain, not plain minus BN.")
    if not kit.same(gap, deep, 2e-3):
        raise Wrong(
            f"`deep_gap` is {gap:.4f}, but from your result BN's mean final validation accuracy "
            f"at lr 0.1 minus the plain net's is {kit.mean(bn):.4f} - {kit.mean(plain):.4f} = "
            f"{deep:.4f}."
        )
    if not isinstance(gap_grows, bool):
        raise Wrong(f"`gap_grows` should be True or False, got {gap_grows!r}.")
    # The baseline is not part of the learner's result: train it with the settings the result
    # records (seeds, epochs, batch size, device), so the two gaps differ only in depth.
    shallow_run = sweep.run(
        seeds=result.seeds,
        lrs=[0.1],
        epochs=result.epochs,
        batch_size=result.batch_size,
        device=result.device,
    )
    shallow = kit.mean(kit.finals(shallow_run, "BN")) - kit.mean(kit.finals(shallow_run, "plain"))
    if gap_grows != (deep > shallow):
        raise Wrong(
            f"With the same seeds, epochs and batch size the tutorial's 2-layer nets give a gap of "
            f"{shallow:+.3f} at lr 0.1 (just computed), your 6-layer nets {deep:+.3f}. "
            f"So `gap_grows` should be {deep > shallow}."
        )
    return (
        f"At lr 0.1 the 6-layer plain net reaches {kit.spread(plain)}, with BN "
        f"{kit.spread(bn)}: a gap of {deep:+.3f}, against {shallow:+.3f} for the 2-layer nets."
    )


# ============================================================================ 3 activation


def _activation_models(result):
    wanted = [f"{a}-{k}" for a in ACTIVATION_NAMES for k in ("plain", "BN")]
    if set(result.models) != set(wanted):
        raise Wrong(f"`act_result` should hold the models {wanted}, got {sorted(result.models)}.")
    for name in wanted:
        a, kind = name.split("-")
        spec, norm = result.models[name], {"plain": "none", "BN": "batch"}[kind]
        if spec["activation"] != a or spec["norm"] != norm:
            raise Wrong(
                f"The model {name!r} was trained with activation={spec['activation']!r} "
                f"and norm={spec['norm']!r}; it should be activation={a!r}, norm={norm!r}."
            )
    for a in ACTIVATION_NAMES:
        _differ_only_in(
            result.models[f"{a}-plain"],
            result.models[f"{a}-BN"],
            "norm",
            f"'{a}-plain' and '{a}-BN' also differ in {{}}: only `norm`.",
        )
    if 0.01 not in result.lrs:
        raise Wrong("`act_result` has no run at lr 0.01: use lrs=[0.01].")


@NB.check("3", "sigmoid and tanh")
def check_activation(result, gaps, helps_most):
    """Exercise 3. ``result``: ``sweep.run`` at lr 0.01 (3+ seeds) of six models named
    ``"<activation>-plain"`` and ``"<activation>-BN"`` for relu, tanh and sigmoid; ``gaps``:
    ``{activation: mean final val accuracy of BN minus plain}``; ``helps_most``: the activation
    with the largest gap."""
    kit.missing(
        {"act_result": result, "gaps": gaps, "helps_most": helps_most},
        "Train the six models, compute the gaps and name the activation where BN helps most.",
    )
    _activation_models(kit.sweep_result(result, "act_result"))

    def gap_table(sign=1):
        return {
            a: sign
            * (
                kit.mean(kit.finals(result, f"{a}-BN", lr=0.01))
                - kit.mean(kit.finals(result, f"{a}-plain", lr=0.01))
            )
            for a in ACTIVATION_NAMES
        }

    expected = gap_table()
    kit.table(
        gaps,
        expected,
        "gaps",
        "mean final validation accuracy of BN minus plain at lr 0.01",
        [(gap_table(sign=-1), "The gaps have the wrong sign: BN minus plain, not plain minus BN.")],
    )
    kit.choice(helps_most, list(ACTIVATION_NAMES), "helps_most")
    truth = max(expected, key=expected.get)
    if helps_most != truth:
        shown = ", ".join(f"{a} {g:+.3f}" for a, g in expected.items())
        raise Wrong(f"Your own gaps are {shown}: the largest is {truth}'s.")
    shown = ", ".join(f"{a}: {g:+.3f}" for a, g in expected.items())
    return f"BN minus plain, mean final validation accuracy: {shown}. BN helps {truth} most."


# ============================================================================ 5 placement


@NB.check("5", "BN after the activation")
def check_placement(models, result, verdict):
    """Exercise 5. ``models``: ``{"before": ..., "after": ...}``, BN nets differing only in
    ``placement``; ``result``: ``sweep.run`` with them (3+ seeds, one learning rate);
    ``verdict``: ``paired(before, after).verdict(margin=0.02)`` of the final validation
    accuracies."""
    kit.missing(
        {"placement_models": models, "placement_result": result, "placement_verdict": verdict},
        "Define the two models, train them and give your verdict.",
    )
    specs = _specs(models, "placement_models", ["after", "before"])
    for n, spec in specs.items():
        if spec["norm"] != "batch":
            raise Wrong(
                f"placement_models[{n!r}] has norm={spec['norm']!r}: without a BN layer "
                f"`placement` changes nothing. Use norm='batch' in both."
            )
        if spec["placement"] != n:
            raise Wrong(f"placement_models[{n!r}] has placement={spec['placement']!r}.")
    _differ_only_in(
        specs["before"],
        specs["after"],
        "placement",
        "The two models also differ in {}: only `placement` may differ.",
    )
    _trained_with(kit.sweep_result(result, "placement_result"), specs, "placement_result")
    kit.one_lr(result, "placement_result")
    said = kit.check_verdict(
        verdict, kit.paired_finals(result, "before", "after"), "placement_verdict"
    )
    means = ", ".join(f"{m} {kit.mean(kit.finals(result, m)):.3f}" for m in ("before", "after"))
    return f"Mean final validation accuracy: {means}; {said}."
