"""Checks of what BN cancels in the layer before it: the redundant bias (6: its gradient, the
parameters ``bias=False`` saves, a run with and without) and the initialisation scale (8:
scaling the hidden layers by a, the gradient ratio it causes, which net copes at a = 100; the
reported accuracies are tied to a re-run of seed 0)."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bnteach.batchnorm import bn_layers
from bnteach.data import load_data, make_loaders
from bnteach.exercises._common import _differences, _mean, _result, _spread, _verdict_check
from bnteach.exercises.feedback import (
    _call,
    _check,
    _choice,
    _finite,
    _missing,
    _NotAttempted,
    _number,
    _same,
    _Wrong,
)
from bnteach.models import MLP, count_parameters
from bnteach.training import train_model

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
    g = _finite(
        bias_grad.detach().double().cpu(),
        "`bias_grad`",
        "Measure it after one backward pass of the exercise's batch.",
    )
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


# The exercise's training setup for `init_acc`: seeds 0, 1, 2, learning rate 0.01, 10 epochs.
INIT_LR, INIT_EPOCHS = 0.01, 10
# How far a reported accuracy may be from the check's re-run: runs on another device (a GPU)
# round differently and can end a few validation samples apart (200 samples: 0.005 each).
INIT_ACC_TOL = 0.04


def _init_run(norm, a, seed, lr=INIT_LR, epochs=INIT_EPOCHS):
    """The exercise's run on the CPU: seed, MLP(norm=norm), hidden layers scaled by a, trained
    with train_model on make_loaders(..., seed=seed); a History."""
    X_train, X_val, y_train, y_val = load_data()
    torch.manual_seed(seed)
    model = _scaled_reference(MLP(20, (128, 64), norm=norm), a)
    loaders = make_loaders(X_train, X_val, y_train, y_val, seed=seed)
    return train_model(model, *loaders, epochs=epochs, lr=lr, verbose=False)


def _check_init_acc(accs):
    """Tie the learner's accuracies to real runs: re-run seed 0 (the first entry) of every
    (norm, a) and compare; name the usual mix-ups (no scaling, another run's numbers, the loss,
    train_model's default 25 epochs). Returns {(norm, a): re-run accuracy}."""
    runs = {k: _init_run(*k, seed=0) for k in accs}
    truth = {k: h.val_acc[-1] for k, h in runs.items()}
    for (norm, a), values in accs.items():
        value, expected, h = values[0], truth[norm, a], runs[norm, a]
        if abs(value - expected) <= INIT_ACC_TOL:
            continue
        where = f"`init_acc[{(norm, a)!r}][0]` is {value:.3f}"
        rerun = f"the check's re-run of seed 0 gives {expected:.3f}"
        alternatives = []
        if a != 1 and (norm, 1) in truth:
            alternatives.append(
                (
                    lambda norm=norm: truth[norm, 1],
                    True,
                    f"{where}, what seed 0 gives without scaling ({truth[norm, 1]:.3f}); with "
                    f"the hidden layers scaled by {a:g} {rerun}. Call `scale_hidden_layers("
                    f"model, a)` after building the model and before training it.",
                )
            )
        alternatives.append(
            (
                lambda h=h: h.val_loss[-1],
                True,
                f"{where}, about the final validation loss ({h.val_loss[-1]:.3f}): report the "
                f"final validation accuracy, `history.val_acc[-1]` ({rerun}).",
            )
        )
        longer = []

        def after_25_epochs(norm=norm, a=a, longer=longer):
            if not longer:
                longer.append(_init_run(norm, a, 0, epochs=25).val_acc[-1])
            return longer[0]

        alternatives.append(
            (
                after_25_epochs,
                False,
                f"{where}, what 25 epochs give (train_model's default); the exercise trains "
                f"for {INIT_EPOCHS} epochs: {rerun}.",
            )
        )
        alternatives += [
            (
                lambda k=k: truth[k],
                False,
                f"{where}, what seed 0 gives for {k!r} ({truth[k]:.3f}); for {(norm, a)!r} "
                f"{rerun}. Check the `norm` and `a` of each run.",
            )
            for k in truth
            if k != (norm, a)
        ]
        # an exact match first; then, loosely, only the mistakes whose numbers stand apart
        for exact in (True, False):
            for mistake, loose, message in alternatives:
                if (exact or loose) and abs(value - mistake()) <= (1e-3 if exact else INIT_ACC_TOL):
                    raise _Wrong(message)
        raise _Wrong(
            f"{where}, but {rerun} (torch.manual_seed(0), MLP(norm={norm!r}), scaled by {a:g}, "
            f"train_model with learning rate {INIT_LR:g}, {INIT_EPOCHS} epochs, "
            f"make_loaders(..., seed=0)); another device changes it a little, not this much. "
            f"Fill `init_acc` from your own runs, seeds 0, 1 and 2 in that order."
        )
    return truth


@_check("8")
def check_scale_invariance(scale_hidden_layers, grad_ratio, init_acc, copes):
    """Exercise 8. ``scale_hidden_layers(model, a)`` multiplies the weight and bias of every
    Linear but the last by ``a`` (in place) and returns the model; ``grad_ratio``: ``{a:
    ||dL/dW1|| at scale a / at scale 1}`` for a seed-0 MLPWithBN, training mode, BCE on the
    first 64 training samples; ``init_acc``: ``{(norm, a): [final val accuracy per seed]}``
    for norm "none"/"batch" and a = 1 and 100, seeds 0, 1, 2, ... in that order (learning rate
    0.01, 10 epochs; the check re-runs seed 0 of each and compares); ``copes``: "none" or
    "batch", the norm with the higher mean accuracy at a = 100."""
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
    _check_init_acc(accs)
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
        f"Gradient ratios {ratios} (scale invariance predicts 1/a). Your accuracies agree with "
        f"the check's re-run of seed 0. At a = 100 the plain net reaches "
        f"{_spread(accs['none', 100])}, the BN net {_spread(accs['batch', 100])}."
    )
