"""Notebook 05's checks of what BN cancels in the layer before it: the redundant bias (6: its
gradient, the parameters ``bias=False`` saves, a run with and without) and the initialisation
scale (8: scaling the hidden layers by a, the gradient ratio it causes, how far Adam moves the
hidden weights relative to their size, and the paired verdict at a = 100; the reported numbers
are tied to a re-run of the first of the exercise's seeds, and another seed's numbers are
named)."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bnteach.batchnorm import bn_layers
from bnteach.data import load_data, make_loaders
from bnteach.exercises import kit
from bnteach.exercises.kit import NotAttempted, Wrong
from bnteach.models import MLP, count_parameters
from bnteach.stats import paired, seeds
from bnteach.training import train_model

NB = kit.notebook("05")

# ============================================================================ 6 bias


def _bias_setup(training):
    """The exercise's setup: gradient of the first Linear's bias of an MLPWithBN initialised
    with the first of ``seeds(1)``."""
    X_train, _, y_train, _ = load_data()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds(1)[0])
        model = MLP(20, (128, 64), norm="batch")
    model.train(training)
    F.binary_cross_entropy_with_logits(model(X_train[:64]), y_train[:64]).backward()
    return model


def _check_bias_grad(bias_grad):
    """The largest entry of the learner's bias gradient, which must be rounding noise."""
    if not isinstance(bias_grad, torch.Tensor):
        raise Wrong(
            f"`bias_grad` should be a tensor (`.grad` of a bias), got {type(bias_grad).__name__}."
        )
    g = kit.finite(
        bias_grad.detach().double().cpu(),
        "`bias_grad`",
        "Measure it after one backward pass of the exercise's batch.",
    )
    if g.shape == (1,):
        raise Wrong(
            "`bias_grad` has shape (1,): that is the output layer's bias. No BN follows it, so "
            "its gradient is not zero. Take network[0].bias.grad, the bias right before a BN."
        )
    if g.shape not in {(128,), (64,)}:
        raise Wrong(
            f"`bias_grad` has shape {tuple(g.shape)}; network[0].bias.grad has shape (128,)."
        )
    if g.shape == (128,) and torch.allclose(
        g, _bias_setup(training=True).network[0].bias.detach().double(), atol=1e-6
    ):
        raise Wrong("`bias_grad` holds the bias itself, not its gradient: use `.grad`.")
    largest = g.abs().max().item()
    if largest <= 1e-6:
        return largest
    evaluated = _bias_setup(training=False).network[0].bias.grad.double()
    if g.shape == (128,) and torch.allclose(g, evaluated, rtol=1e-3, atol=1e-7):
        raise Wrong(
            "This gradient was computed in eval mode (model.eval()): there BN subtracts the "
            "fixed running mean, so the bias is not cancelled and gets a real gradient. In "
            "training mode BN subtracts the batch mean, which contains the bias: measure it "
            "after model.train()."
        )
    raise Wrong(
        f"`bias_grad` reaches {largest:.2e}; in training mode it should be zero up to "
        f"rounding (about 1e-9). Measure network[0].bias.grad after one backward pass "
        f"with the model in training mode."
    )


def _check_params_saved(params_saved):
    params_saved = kit.number(params_saved, "`params_saved`")
    with_bias = count_parameters(MLP(20, (128, 64), norm="batch"))
    without = count_parameters(MLP(20, (128, 64), norm="batch", bias=False))
    expected = with_bias - without
    kit.name_mistake(
        params_saved,
        [
            (
                expected + 1,
                f"`params_saved` counts the output layer's bias too: that layer has no BN after "
                f"it, so its bias is not redundant (and `bias=False` keeps it). {expected} is "
                f"right.",
            ),
            (-expected, "`params_saved` has the wrong sign: with bias minus without bias."),
        ],
        lambda a, b: a == b,
    )
    if params_saved != expected:
        raise Wrong(
            f"`params_saved` is {params_saved:g}, but count_parameters gives {with_bias} with "
            f"and {without} without the hidden biases: {expected}."
        )
    return expected


def _check_bias_models(result):
    kit.sweep_result(result, "bias_result")
    if set(result.models) != {"bias", "no_bias"}:
        raise Wrong(
            f"`bias_result` should hold the models 'bias' and 'no_bias', got "
            f"{sorted(result.models)}."
        )
    specs = result.models
    if specs["bias"]["norm"] != "batch" or specs["no_bias"]["norm"] != "batch":
        raise Wrong(
            "Both models need norm='batch': the bias is redundant only when a BN layer follows "
            "it. Without BN, removing it changes the model."
        )
    if specs["bias"]["bias"] is not True or specs["no_bias"]["bias"] is not False:
        raise Wrong("'bias' should have bias=True and 'no_bias' bias=False.")
    other = kit.differences(specs["bias"], specs["no_bias"]) - {"bias"}
    if other:
        raise Wrong(f"The two models also differ in {sorted(other)}: only `bias` may differ.")
    kit.one_lr(result, "bias_result")


@NB.check("6", "the redundant bias")
def check_bias(bias_grad, params_saved, result, verdict):
    """Exercise 6. ``bias_grad``: the gradient of ``network[0].bias`` of an ``MLPWithBN``
    initialised with ``torch.manual_seed(seeds(1)[0])``, after one backward pass of BCE on the
    first 64 training samples, in training mode; ``params_saved``: parameters removed by
    ``bias=False``; ``result``: ``sweep.run`` of ``{"bias": BN net, "no_bias": the same with
    bias=False}`` (3+ seeds, one lr); ``verdict``: ``paired(bias, no_bias).verdict(0.02)``."""
    kit.missing(
        {
            "bias_grad": bias_grad,
            "params_saved": params_saved,
            "bias_result": result,
            "bias_verdict": verdict,
        },
        "Measure the gradient, count the parameters, train both models and give your verdict.",
    )
    largest = _check_bias_grad(bias_grad)
    expected = _check_params_saved(params_saved)
    _check_bias_models(result)
    said = kit.check_verdict(verdict, kit.paired_finals(result, "bias", "no_bias"), "bias_verdict")
    return (
        f"The bias gradient is at most {largest:.1e} (rounding noise); bias=False saves "
        f"{expected} parameters; {said}."
    )


# ============================================================================ 8 scale

# The exercise's training setup for `init_acc`: seeds(INIT_SEEDS), learning rate 0.01, 10
# epochs. The check re-runs the first of those seeds.
INIT_LR, INIT_EPOCHS, INIT_SEEDS = 0.01, 10, 5
# How far a reported accuracy may be from the check's re-run: runs on another device round
# differently and can end a few validation samples apart (200 samples: 0.005 each). On the
# device the notebook uses the re-run is the same computation and must match exactly.
INIT_ACC_TOL = 0.04
# The same for the relative weight change (a continuous number): 10%.
CHANGE_TOL = 0.1
# The layer whose relative weight change `weight_change` reports: the second hidden Linear.
CHANGE_LAYER = 3


def _scaled_reference(model, a):
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin in linears[:-1]:
            lin.weight.mul_(a)
            if lin.bias is not None:
                lin.bias.mul_(a)
    return model


def _seeded_mlp(seed, a, norm="batch", hidden=(128, 64)):
    """MLP(20, hidden, norm) initialised with ``seed``, hidden layers scaled by ``a``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _scaled_reference(MLP(20, hidden, norm=norm), a)


def _grad_norm_ratio(a, training=True, norm="batch"):
    """||dL/dW1|| with hidden layers scaled by a over the same at a = 1 (the exercise's setup)."""
    X_train, _, y_train, _ = load_data()
    norms = []
    for factor in (1.0, a):
        model = _seeded_mlp(seeds(1)[0], factor, norm).train(training)
        F.binary_cross_entropy_with_logits(model(X_train[:64]), y_train[:64]).backward()
        norms.append(model.network[0].weight.grad.norm().item())
    return norms[1] / norms[0]


def _init_run(norm, a, seed, epochs=INIT_EPOCHS):
    """The exercise's run on the notebook's device: seed, MLP(norm=norm), hidden layers scaled
    by a, trained with train_model on make_loaders(..., seed=seed). Returns ``(history,
    change)``, ``change`` = ||W - W_0|| / ||W_0|| of the second hidden Linear, ``network[3]``
    (W_0: after scaling, before training; None for a net without BN)."""
    device = kit.device()
    X_train, X_val, y_train, y_val = (t.to(device) for t in load_data())
    with kit.fork_rng():
        torch.manual_seed(seed)
        model = _scaled_reference(MLP(20, (128, 64), norm=norm), a).to(device)
        loaders = make_loaders(X_train, X_val, y_train, y_val, seed=seed)
        layer = model.network[CHANGE_LAYER] if norm == "batch" else None
        start = None if layer is None else layer.weight.detach().clone()
        history = train_model(model, *loaders, epochs=epochs, lr=INIT_LR, verbose=False)
    if layer is None:  # `weight_change` is about the BN net only
        return history, None
    return history, ((layer.weight.detach() - start).norm() / start.norm()).item()


def _check_scaler(scale_hidden_layers):
    """Run the learner's ``scale_hidden_layers`` on a small BN net with a = 3."""
    original = _seeded_mlp(seeds(1)[0], 1.0, hidden=(16, 8))
    model = copy.deepcopy(original)
    returned = kit.call(scale_hidden_layers, model, 3.0, name="scale_hidden_layers")
    if returned is not None and not isinstance(returned, nn.Module):
        raise Wrong(
            f"`scale_hidden_layers` should return the model, got {type(returned).__name__}."
        )
    model = returned if returned is not None else model
    if returned is None and all(
        torch.equal(p, q) for p, q in zip(model.parameters(), original.parameters())
    ):
        raise NotAttempted("`scale_hidden_layers` returns None and changes nothing yet.")
    lins = [(i, m) for i, m in enumerate(model.network) if isinstance(m, nn.Linear)]
    olins = [m for m in original.network if isinstance(m, nn.Linear)]
    for k, ((i, lin), orig) in enumerate(zip(lins, olins)):
        last = k == len(lins) - 1
        if not torch.allclose(lin.weight, orig.weight * (1.0 if last else 3.0)):
            if last and torch.allclose(lin.weight, orig.weight * 3.0):
                raise Wrong(
                    "You also scaled the output Linear. No BN follows it, so scaling it simply "
                    "scales the logits; the exercise scales the hidden Linears only (all but "
                    "the last)."
                )
            if torch.allclose(lin.weight, orig.weight):
                raise Wrong(
                    f"network[{i}] (a hidden Linear) was not scaled: scale every Linear but "
                    f"the last."
                )
            raise Wrong(f"network[{i}].weight is not the original multiplied by a.")
        if not last and not torch.allclose(lin.bias, orig.bias * 3.0):
            raise Wrong(
                f"network[{i}].bias was not scaled: multiply the bias by a too, so a layer's "
                f"output is exactly a times the original (before BN it cancels anyway)."
            )
    for bn, obn in zip(bn_layers(model), bn_layers(original)):
        if not (torch.equal(bn.weight, obn.weight) and torch.equal(bn.bias, obn.bias)):
            raise Wrong("You changed the BN layers' weight/bias: scale only the Linear layers.")


def _check_grad_ratio(grad_ratio):
    if not isinstance(grad_ratio, dict) or not {10, 100} <= set(grad_ratio):
        raise Wrong("`grad_ratio` should be a dict {a: ratio} with at least the keys 10 and 100.")
    shown = []
    for a, value in grad_ratio.items():
        a = kit.number(a, "`grad_ratio` keys")
        value = kit.number(value, f"`grad_ratio[{a:g}]`")
        truth = _grad_norm_ratio(a)
        shown.append(f"a={a:g}: {value:.4g}")
        if kit.same(value, truth, 0.02):
            continue
        unnormalized = (
            f"`grad_ratio[{a:g}]` is what a net that does not normalize gives: either the "
            f"model was in eval mode (a fresh BN layer's running statistics are 0 and 1, so "
            f"in eval mode it normalizes nothing) or it has no BN (norm='none'). Measure the "
            f"BN net in training mode."
        )
        mistakes = [
            (
                1 / truth,
                f"`grad_ratio[{a:g}]` is {value:.4g}, the inverse of the measured {truth:.4g}: "
                f"divide the gradient norm at scale a by the one at scale 1.",
            ),
            (
                1.0,
                f"`grad_ratio[{a:g}]` is about 1: that is the gradient of a layer after the "
                f"scaled ones (e.g. the output layer). Measure network[0].weight.grad.",
            ),
            (lambda a=a: _grad_norm_ratio(a, training=False), unnormalized),
            (lambda a=a: _grad_norm_ratio(a, norm="none"), unnormalized),
        ]
        kit.name_mistake(value, mistakes, lambda v, g: kit.same(v, g, 0.02))
        raise Wrong(f"`grad_ratio[{a:g}]` is {value:.4g}; measuring it gives {truth:.4g}.")
    return ", ".join(shown)


class _Runs(dict):
    """The check's re-runs, made when first needed: ``runs[norm, a, seed] = (history, change)``."""

    def __missing__(self, key):
        self[key] = _init_run(*key)
        return self[key]


def _acc_rerun(runs, norm, a):
    return kit.Rerun(
        lambda seed: runs[norm, a, seed][0].val_acc[-1],
        INIT_SEEDS,
        equal=lambda x, y: abs(x - y) <= 1e-6,
        near=lambda x, y: abs(x - y) <= INIT_ACC_TOL,
        fmt="{:.3f}".format,
    )


def _check_init_acc(accs, runs):
    """Tie the learner's accuracies to real runs: re-run the first seed of every (norm, a) and
    compare; name the usual mix-ups (another seed, no scaling, another run's numbers, the loss,
    train_model's default 25 epochs). Returns the keys whose number matched the re-run only
    approximately (another device's rounding), for the success message."""
    reruns = {k: _acc_rerun(runs, *k) for k in accs}
    approximate = []
    for (norm, a), values in accs.items():
        rerun, told = reruns[norm, a], reruns[norm, a].told
        where, said = f"`init_acc[{(norm, a)!r}][0]` is {values[0]:.3f}", rerun.said()
        loss = runs[norm, a, told][0].val_loss[-1]
        unscaled = [
            (
                reruns[norm, 1](),
                f"{where}, what seed {told} gives without scaling ({reruns[norm, 1]():.3f}); "
                f"with the hidden layers scaled by {a:g} {said}. Call `scale_hidden_layers("
                f"model, a)` after building the model and before training it.",
            )
        ][: int(a != 1)]
        loose = unscaled + [
            (
                loss,
                f"{where}, about the final validation loss ({loss:.3f}): report the final "
                f"validation accuracy, `history.val_acc[-1]` ({said}).",
            )
        ]
        mistakes = unscaled + [
            (
                reruns[k](),
                f"{where}, what seed {told} gives for {k!r} ({reruns[k]():.3f}); for "
                f"{(norm, a)!r} {said}. Check the `norm` and `a` of each run.",
            )
            for k in accs
            if k != (norm, a)
        ]
        mistakes.append(
            (
                lambda norm=norm, a=a, told=told: _init_run(norm, a, told, epochs=25)[0].val_acc[
                    -1
                ],
                f"{where}, what 25 epochs give (train_model's default); the exercise trains "
                f"for {INIT_EPOCHS} epochs: {said}.",
            )
        )
        final = (
            f"{where}, but {said} (torch.manual_seed({told}), MLP(norm={norm!r}), scaled by "
            f"{a:g}, train_model with learning rate {INIT_LR:g}, {INIT_EPOCHS} epochs, "
            f"make_loaders(..., seed={told})); another device changes it a little, not this "
            f"much. Fill `init_acc` from your own runs, the seeds seeds({INIT_SEEDS}) = "
            f"{seeds(INIT_SEEDS)} in that order."
        )
        if not rerun.judge(values[0], where, final, mistakes, loose, INIT_ACC_TOL):
            approximate.append(f"init_acc[{(norm, a)!r}]")
    return approximate


def _check_weight_change(weight_change, runs):
    """The learner's relative change of the second hidden Linear's weight in the BN net of
    the first seed, at a = 1 and a = 100, against the re-runs. Returns ``({a: re-run change},
    approximate)``, ``approximate`` the entries that matched only approximately."""
    if not isinstance(weight_change, dict) or set(weight_change) != {1, 100}:
        raise Wrong(
            "`weight_change` should be a dict {1: ..., 100: ...}: the relative change of the "
            "second hidden Linear's weight (network[3]) of the BN net, at a = 1 and a = 100."
        )

    def rerun(a):
        return kit.Rerun(
            lambda seed: runs["batch", a, seed][1],
            INIT_SEEDS,
            equal=lambda x, y: abs(x - y) <= 1e-4 * abs(y),
            near=lambda x, y: abs(x - y) <= CHANGE_TOL * y,
        )

    reruns = {a: rerun(a) for a in (1, 100)}
    approximate = []
    for a, r in reruns.items():
        value = kit.number(weight_change[a], f"`weight_change[{a}]`")
        where, said = f"`weight_change[{a}]` is {value:.4g}", r.said()
        w0 = _seeded_mlp(r.told, a).network[CHANGE_LAYER].weight.norm().item()
        mistakes = [
            (
                r() * w0,
                f"{where}: that is the absolute change ||W - W_0||; divide by ||W_0||, the "
                f"size of the weight before training (after scaling): {said}.",
            )
        ]
        if a == 100:
            mistakes.append(
                (
                    reruns[1](),
                    f"{where}, what the unscaled net gives ({reruns[1]():.4g}); at a = 100 "
                    f"{said}. Measure the net whose hidden layers you scaled by 100.",
                )
            )
        final = (
            f"{where}, but {said}: (W - W_0).norm() / W_0.norm() for "
            f"`model.network[{CHANGE_LAYER}].weight` of the BN net, W_0 cloned after scaling "
            f"and before training, W after training."
        )
        if not r.judge(value, where, final, mistakes):
            approximate.append(f"weight_change[{a}]")
    return {a: r() for a, r in reruns.items()}, approximate


@NB.check("8", "initialisation scale")
def check_scale_invariance(scale_hidden_layers, grad_ratio, init_acc, weight_change, verdict):
    """Exercise 8. ``scale_hidden_layers(model, a)`` multiplies the weight and bias of every
    Linear but the last by ``a`` (in place) and returns the model; ``grad_ratio``: ``{a:
    ||dL/dW1|| at scale a / at scale 1}`` for an MLPWithBN initialised with the first of
    ``seeds(1)``, training mode, BCE on the first 64 training samples; ``init_acc``: ``{(norm,
    a): [final val accuracy per seed]}`` for norm "none"/"batch" and a = 1 and 100, the seeds
    ``seeds(5)`` in that order (learning rate 0.01, 10 epochs; the check re-runs the first seed
    of each and compares); ``weight_change``: ``{a: ||W - W_0|| / ||W_0||}`` of the second
    hidden Linear of the BN net of the first seed, a = 1 and 100; ``verdict``:
    ``paired(BN, plain).verdict(0.02)`` at a = 100."""
    kit.function(scale_hidden_layers, "scale_hidden_layers")
    _check_scaler(scale_hidden_layers)
    kit.missing(
        {
            "grad_ratio": grad_ratio,
            "init_acc": init_acc,
            "weight_change": weight_change,
            "scale_verdict": verdict,
        },
        "The function is right; now measure the gradients and train.",
    )
    ratios = _check_grad_ratio(grad_ratio)
    keys = [(n, a) for n in ("none", "batch") for a in (1, 100)]
    accs = kit.per_seed(init_acc, "init_acc", keys, "final validation accuracies")
    if not all(0 <= v <= 1 for values in accs.values() for v in values):
        raise Wrong("`init_acc` should hold accuracies between 0 and 1.")
    runs = _Runs()
    approximate = _check_init_acc(accs, runs)
    change, loose = _check_weight_change(weight_change, runs)
    approximate += loose
    told = seeds(INIT_SEEDS)[0]
    agree = kit.agreement(approximate, told)
    p = paired(accs["batch", 100], accs["none", 100], names=("BN", "plain"))
    said = kit.check_verdict(verdict, p, "scale_verdict")
    return (
        f"Gradient ratios {ratios} (scale invariance predicts 1/a). Your numbers {agree} "
        f"the check's re-run of seed {told}. Relative to its size, the BN net's second hidden "
        f"weight moved {change[1]:.0%} at a = 1 and {change[100]:.1%} at a = 100, "
        f"{change[1] / change[100]:.0f} times less. BN makes the gradient scale like 1/a, but "
        f"Adam divides it by its own running size: each weight still moves by about lr per "
        f"step, which is a times less relative to a weight a times larger. The hidden layers "
        f"learn that much more slowly; they do feel the scale. At a = 100: {said}."
    )
