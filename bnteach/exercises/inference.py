"""Notebook 05's checks of preparing a trained BN model for inference and fine-tuning: folding BN
into the preceding Linear (10a) and freezing BN (10b)."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bnteach.batchnorm import bn_layers
from bnteach.data import load_data
from bnteach.exercises import kit
from bnteach.exercises.kit import NotAttempted, Wrong
from bnteach.models import MLP

NB = kit.notebook("05")

# ============================================================================ 10a fold


def _trained_bn_model(bias=True, seed=None):
    """A small BN net (20 -> 16 -> 8 -> 1) in eval mode, with non-trivial BN parameters and
    running statistics (from batches unlike the training data), one nearly constant feature."""
    seed = kit.input_seed(0) if seed is None else seed
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


def _fold_net(model, fault=None, stats=None):
    """A folded copy of an MLP (``kit.fold_variant`` on each Linear + BN pair); ``stats``:
    Linear index -> (mean, var) in place of the running statistics."""
    layers, net = [], list(model.network)
    for i, layer in enumerate(net):
        if isinstance(layer, nn.BatchNorm1d):
            continue
        if i + 1 < len(net) and isinstance(net[i + 1], nn.BatchNorm1d):
            layer = kit.fold_variant(layer, net[i + 1], fault, None if stats is None else stats[i])
        layers.append(layer)
    return nn.Sequential(*layers)


def _data_statistics(model):
    """Linear index -> (mean, var) of its output over the training set, as train mode would
    see them with the whole set as one batch."""
    stats, h = {}, load_data()[0]
    for i, layer in enumerate(model.network):
        if isinstance(layer, nn.BatchNorm1d):
            stats[i - 1] = (h.mean(0), h.var(0, unbiased=False))
            h = F.batch_norm(h, None, None, layer.weight, layer.bias, True, 0.0, layer.eps)
        else:
            h = layer(h)
    return stats


def _folded(fold_bn, model, bias):
    """The learner's folded network for ``model``: no BN left, 3 Linears."""
    biasless = None if bias else "the hidden Linears have"
    folded = kit.folded(fold_bn, [model], "fold_bn", nn.Module, biasless)
    if bn_layers(folded):
        raise Wrong("The folded network still contains BatchNorm layers: folding removes them.")
    n_lin = sum(isinstance(m, nn.Linear) for m in folded.modules())
    if n_lin != 3:
        raise Wrong(
            f"The folded network has {n_lin} Linear layers; the model has 3, and folding keeps "
            f"all 3."
        )
    return folded


def _fold_output(folded, x, shape):
    try:
        with torch.no_grad():
            got = folded(x)
    except Exception as err:
        raise Wrong(f"Running the folded network raised {type(err).__name__}: {err}") from None
    return kit.tensor(
        got,
        "The folded network's output",
        shape,
        "is None: its forward must return the logits",
        "For x of shape (64, 20) it should return (64, 1) logits, like model(x).",
        placeholder=False,
    )


@NB.check("10a", "folding BN")
def check_fold(fold_bn):
    """Exercise 10a. ``fold_bn(model)``: for an ``MLP`` with BN right after each hidden Linear,
    return a new network without BN layers that computes what ``model.eval()`` computes; the
    model itself must stay unchanged."""
    kit.function(fold_bn, "fold_bn")
    x = torch.randn(64, 20, generator=torch.Generator().manual_seed(kit.input_seed(5)))
    for bias in (True, False):
        model = _trained_bn_model(bias=bias)
        with torch.no_grad():
            expected = model(x)
        got = _fold_output(_folded(fold_bn, model, bias), x, expected.shape)
        scale = expected.abs().max().item()

        def near(got, wrong, tol=1e-4, scale=scale):
            return (got - wrong).abs().max().item() <= tol * scale

        if near(got, expected):
            continue
        with torch.no_grad():
            mistakes = kit.fold_mistakes(
                lambda f, model=model: _fold_net(model, f)(x),
                "Linear",
                "feature",
                bias,
                [f for f in kit.FOLD_FAULTS if f != "in axis"],
            )
            kit.name_mistake(got, mistakes, near)
            kit.name_mistake(
                got,
                [
                    (
                        lambda model=model: _fold_net(model, stats=_data_statistics(model))(x),
                        "Your fold uses the statistics of a batch of data (what train mode would "
                        "use), not the layer's running statistics: s = weight / "
                        "sqrt(running_var + eps).",
                    )
                ],
                lambda a, b: near(a, b, 1e-3),
            )
            kit.name_mistake(
                got,
                [
                    (
                        lambda model=model: copy.deepcopy(model).train()(x),
                        "Your folded network reproduces the model in training mode (batch "
                        "statistics). A fold must equal the model in eval mode, with the running "
                        "statistics.",
                    )
                ],
                near,
            )
        raise Wrong(
            f"The folded network's outputs differ from model.eval()'s by up to "
            f"{(got - expected).abs().max().item():.3g} (outputs are up to {scale:.3g})."
        )
    return (
        "Your folded networks (with and without hidden biases) match model.eval() and have no "
        "BN layer left; the models were left unchanged."
    )


# ============================================================================ 10b freeze


def _fine_tune(model):
    """What a training loop does after freeze_bn: model.eval(), then model.train() and three
    Adam steps on data unlike the original. Returns the modes seen along the way and the names
    of the state entries that moved: ``(linear modes ok, bn_training, moved)``."""
    bns = bn_layers(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(kit.input_seed(7))
    linears = [m for m in model.network if isinstance(m, nn.Linear)]
    model.eval()
    switched = all(not m.training for m in linears)
    model.train()
    switched &= all(m.training for m in linears)
    bn_training = [b.training for b in bns]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.randn(32, 20, generator=g) * 3 - 1  # data unlike the original: stats would move
    y = (torch.rand(32, 1, generator=g) > 0.5).float()
    for _ in range(3):
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    return switched, bn_training, moved


def _changed_anything(model):
    """Whether freeze_bn did anything a freeze might do (for a function that returns None)."""
    modules = list(model.modules())
    return (
        any(not p.requires_grad for p in model.parameters())
        or any(not m.training for m in modules)
        or any(b.momentum != 0.1 for b in bn_layers(model))
        or any("train" in vars(m) or "forward" in vars(m) for m in modules)
        or any(m._forward_pre_hooks or m._forward_hooks for m in modules)
    )


def _stats_moved_message(bns, eval_after_call, bn_training):
    if all(eval_after_call) and any(bn_training):
        return (
            "Your BN layers were in eval mode after freeze_bn, but the training loop's "
            "model.train() switched them back to training mode, and the running statistics "
            "moved. Make the BN layers ignore train(): e.g. replace each BN layer's `train` "
            "method so it always calls nn.Module.train(layer, False) (this is what "
            "bnteach.batchnorm.freeze does)."
        )
    if all(not p.requires_grad for b in bns for p in (b.weight, b.bias)):
        return (
            "requires_grad_(False) stops the optimizer from changing BN's weight and bias, "
            "but the running statistics are not parameters: every forward pass in training "
            "mode updates them. Keep the BN layers in eval mode, even after model.train()."
        )
    return (
        "The running statistics moved during fine-tuning: BN layers in training mode update "
        "them on every forward pass. Keep the BN layers in eval mode, even after model.train()."
    )


@NB.check("10b", "freezing BN")
def check_freeze(freeze_bn):
    """Exercise 10b. ``freeze_bn(model)`` freezes every BN layer for fine-tuning and returns
    the model: afterwards a normal training loop (``model.train()``, Adam on
    ``model.parameters()``) changes neither BN's running statistics nor its weight and bias,
    BN normalizes with the running statistics, and the other layers still train."""
    kit.function(freeze_bn, "freeze_bn")
    model = _trained_bn_model().train()  # as it comes out of training
    returned = kit.call(freeze_bn, model, name="freeze_bn")
    if returned is not None and not isinstance(returned, nn.Module):
        raise Wrong(f"`freeze_bn` should return the model, got {type(returned).__name__}.")
    model = kit.finite_module(returned if returned is not None else model, "After `freeze_bn`")
    if returned is None and not _changed_anything(model):
        raise NotAttempted("`freeze_bn` returns None and changes nothing yet.")
    bns = bn_layers(model)
    eval_after_call = [not b.training for b in bns]
    if not any(p.requires_grad for p in model.parameters()):
        raise Wrong(
            "No parameter requires a gradient any more: you froze the whole network. Freeze only "
            "the BN layers, so the rest can be fine-tuned."
        )
    switched, bn_training, moved = _fine_tune(model)
    bn_names = {n for n, m in model.named_modules() if m in bns}
    owner = {k: k.rsplit(".", 1)[0] in bn_names for k in model.state_dict()}
    if not switched:
        raise Wrong(
            "After your freeze, model.eval() and model.train() no longer switch the Linear "
            "layers: you broke model.train() for the whole network (dropout, for one, would "
            "stay on or off). Change only the BN layers."
        )
    if not any(not owner[k] for k in moved):
        raise Wrong(
            "The Linear layers did not change during fine-tuning: you froze the whole network. "
            "Freeze only the BN layers."
        )
    if any(owner[k] and "running" in k for k in moved):
        raise Wrong(_stats_moved_message(bns, eval_after_call, bn_training))
    if any(bn_training):
        momentum = any(b.momentum == 0 for b in bns)
        raise Wrong(
            "The running statistics did not move, but the BN layers are in training mode, so "
            "they normalize with each batch's statistics: the model's outputs depend on the "
            "batch. "
            + (
                "momentum=0 only stops the update; keep the BN layers in eval mode instead."
                if momentum
                else ""
            )
        )
    if any(owner[k] and k.endswith(("weight", "bias")) for k in moved):
        raise Wrong(
            "BN's weight and bias still change during fine-tuning: also call "
            "requires_grad_(False) on them."
        )
    return (
        "After freeze_bn and model.train(), three Adam steps changed the Linear layers but "
        "neither BN's running statistics nor its weight and bias, and BN stayed in eval mode."
    )
