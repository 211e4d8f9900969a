"""Checks of preparing a trained BN model for inference and fine-tuning: folding BN into the
preceding Linear (10a) and freezing BN (10b)."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bnteach.batchnorm import bn_layers
from bnteach.data import load_data
from bnteach.exercises.feedback import (
    _call,
    _check,
    _finite_module,
    _missing,
    _NotAttempted,
    _tensor,
    _Wrong,
)
from bnteach.models import MLP
from bnteach.stats import seeds

# ============================================================================ 10 fold, freeze


def _input_seed(k):
    """The k-th seed of the check's own test inputs: ``offset + k`` (``bnteach.stats.seeds``)."""
    return seeds(1, start=k)[0]


def _trained_bn_model(bias=True, seed=None):
    """A small BN net (20 -> 16 -> 8 -> 1) in eval mode, with non-trivial BN parameters and
    running statistics (from batches unlike the training data), one nearly constant feature."""
    seed = _input_seed(0) if seed is None else seed
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
    x = torch.randn(64, 20, generator=torch.Generator().manual_seed(_input_seed(5)))
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
        got = _tensor(
            got,
            "The folded network's output",
            expected.shape,
            "is None: its forward must return the logits",
            "For x of shape (64, 20) it should return (64, 1) logits, like model(x).",
            placeholder=False,
        )
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
    model = _finite_module(returned if returned is not None else model, "After `freeze_bn`")
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
    g = torch.Generator().manual_seed(_input_seed(7))
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
