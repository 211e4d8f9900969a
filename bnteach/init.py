"""Initialisation scales for deep MLPs (notebook 09): set them, and train many nets at once.

``scale_init_(model, scale)`` sets every hidden ``nn.Linear`` of a
:class:`bnteach.models.MLP` to ``scale`` times the standard initialisation for its
activation (the output layer to the standard Xavier one), biases to 0:

- ReLU (and GELU): Kaiming (He et al. 2015), ``std = sqrt(2 / fan_in)``;
- tanh and sigmoid: Xavier/Glorot (2010), ``std = sqrt(2 / (fan_in + fan_out))``.

``train_together(models, seeds, epochs, lr)`` trains a list of MLPs of one architecture at
once, in place: replica ``r`` runs the experiment of
``train_model(models[r], *make_loaders(..., seed=seeds[r]), epochs, lr)`` (same shuffle order,
Adam, losses, eval-mode validation), but all replicas share batched matrix products
``(R, B, in) @ (R, in, out)``. Autograd does the backward pass; ``torch.optim.Adam`` on the
stacked parameters is exactly one Adam per replica, since Adam acts elementwise.
Tests compare it with the plain loop.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from bnteach import checks
from bnteach.data import load_data
from bnteach.models import MLP
from bnteach.sweep import check_data
from bnteach.training import History, check_epochs, check_lr

__all__ = ["GAINS", "init_std", "scale_init_", "train_together"]

# the "right" scale per activation: Kaiming for the ReLU family, Xavier for the saturating ones
GAINS = {"relu": "kaiming", "gelu": "kaiming", "tanh": "xavier", "sigmoid": "xavier"}


def init_std(fan_in, fan_out, activation):
    """The standard deviation of the standard initialisation of a (fan_out, fan_in) weight."""
    if activation not in GAINS:
        raise ValueError(f"activation must be one of {sorted(GAINS)}, got {activation!r}.")
    fan_in = checks.whole_number(fan_in, "fan_in (inputs of the layer)", minimum=1, example=20)
    fan_out = checks.whole_number(fan_out, "fan_out (outputs of the layer)", minimum=1, example=64)
    if GAINS[activation] == "kaiming":
        return math.sqrt(2.0 / fan_in)
    return math.sqrt(2.0 / (fan_in + fan_out))


def _activation_name(model):
    for m in model.network:
        for name, cls in (("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid)):
            if isinstance(m, cls):
                return name
        if isinstance(m, nn.GELU):
            return "gelu"
    raise ValueError("The model has no activation layer bnteach.init knows.")


def scale_init_(model, scale, scale_output=False, generator=None):
    """In place: hidden Linear weights ~ N(0, (scale * init_std)^2), every bias 0. Returns model.

    The output layer gets the standard Xavier std (times ``scale`` only with
    ``scale_output=True``): with BN before every activation, the net's function at
    initialisation then does not depend on ``scale`` at all. ``generator`` (optional) is
    passed to ``torch.Tensor.normal_``; without it the global RNG is used.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"scale_init_ expects a bnteach.models.MLP, got {type(model).__name__}.")
    if not (
        isinstance(scale, (int, float))
        and not isinstance(scale, bool)
        and math.isfinite(scale)
        and scale > 0
    ):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}.")
    activation = _activation_name(model)
    linears = [m for m in model.network if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears):
            output = i == len(linears) - 1
            act = "tanh" if output else activation  # the output layer: Xavier
            factor = scale if (scale_output or not output) else 1.0
            std = factor * init_std(lin.in_features, lin.out_features, act)
            lin.weight.normal_(0.0, std, generator=generator)
            if lin.bias is not None:
                lin.bias.zero_()
    return model


# ----------------------------------------------------------------------------- batched training


def _layout(model):
    """[(linear, bn or None, activation or None)] per Linear of an MLP with norm before act."""
    if model.norm not in ("none", "batch") or model.placement != "before":
        raise ValueError(
            "train_together supports MLPs with norm='none' or norm='batch' placed before the "
            f"activation; got norm={model.norm!r}, placement={model.placement!r}."
        )
    blocks, layers = [], list(model.network)
    for i, m in enumerate(layers):
        if isinstance(m, nn.Linear):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            blocks.append([m, nxt if isinstance(nxt, nn.BatchNorm1d) else None, None])
        elif not isinstance(m, nn.BatchNorm1d):
            blocks[-1][2] = m
    return blocks


def _signature(model):
    return [
        (tuple(lin.weight.shape), lin.bias is not None, bn is not None, type(act).__name__)
        for lin, bn, act in _layout(model)
    ]


class _Stack:
    """The parameters and BN buffers of R models of one architecture, stacked along dim 0."""

    def __init__(self, models):
        self.models = models
        self.blocks = [_layout(m) for m in models]
        self.params, self.layers = [], []
        for j, (lin, bn, act) in enumerate(self.blocks[0]):

            def stack(get, j=j):
                return torch.stack([get(b[j]).detach() for b in self.blocks]).clone()

            layer = {"W": stack(lambda b: b[0].weight).requires_grad_(), "act": act}
            layer["b"] = None
            if lin.bias is not None:
                layer["b"] = stack(lambda b: b[0].bias).requires_grad_()
            if bn is not None:
                layer["gamma"] = stack(lambda b: b[1].weight).requires_grad_()
                layer["beta"] = stack(lambda b: b[1].bias).requires_grad_()
                layer["running_mean"] = stack(lambda b: b[1].running_mean)
                layer["running_var"] = stack(lambda b: b[1].running_var)
                layer["momentum"], layer["eps"] = bn.momentum, bn.eps
            names = ("W", "b", "gamma", "beta")
            self.params += [layer[k] for k in names if layer.get(k) is not None]
            self.layers.append(layer)
        self.bn_steps = 0

    def forward(self, x, training):
        """x: (R, B, in) -> logits (R, B, 1)."""
        h = x
        for layer in self.layers:
            h = torch.bmm(h, layer["W"].transpose(1, 2))
            if layer["b"] is not None:
                h = h + layer["b"][:, None, :]
            if "gamma" in layer:
                if training:
                    n = h.shape[1]
                    mean = h.mean(1)
                    var = ((h - mean[:, None, :]) ** 2).mean(1)
                    with torch.no_grad():
                        m = layer["momentum"]
                        layer["running_mean"].mul_(1 - m).add_(m * mean)
                        layer["running_var"].mul_(1 - m).add_(m * var * n / (n - 1))
                else:
                    mean, var = layer["running_mean"], layer["running_var"]
                h = (h - mean[:, None, :]) / torch.sqrt(var[:, None, :] + layer["eps"])
                h = h * layer["gamma"][:, None, :] + layer["beta"][:, None, :]
            if layer["act"] is not None:
                h = layer["act"](h)
        if training and any("gamma" in layer for layer in self.layers):
            self.bn_steps += 1
        return h

    def write_back(self):
        """Copy the stacked parameters and buffers back into the models."""
        with torch.no_grad():
            for r, blocks in enumerate(self.blocks):
                for layer, (lin, bn, _) in zip(self.layers, blocks):
                    lin.weight.copy_(layer["W"][r])
                    if layer["b"] is not None:
                        lin.bias.copy_(layer["b"][r])
                    if bn is not None:
                        bn.weight.copy_(layer["gamma"][r])
                        bn.bias.copy_(layer["beta"][r])
                        bn.running_mean.copy_(layer["running_mean"][r])
                        bn.running_var.copy_(layer["running_var"][r])
                        bn.num_batches_tracked.add_(self.bn_steps)


def _losses(logits, y):
    """Per-replica mean BCE (R,) and accuracy (R,) of logits (R, B, 1) against y (B, 1)."""
    target = y.expand_as(logits)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(1, 2))
    acc = ((logits > 0).to(y.dtype) == target).to(torch.float64).mean(dim=(1, 2))
    return loss, acc


def train_together(models, seeds, epochs=25, lr=0.01, batch_size=64, data=None):
    """Train ``models`` (a list of MLPs of one architecture) in place; return a list of History.

    ``seeds[r]`` seeds replica r's shuffle order, as ``make_loaders(..., seed=seeds[r])`` does
    (the initial weights are whatever ``models[r]`` holds). ``data``: ``(X_train, X_val,
    y_train, y_val)``, by default ``load_data()``, moved to the models' device. A replica
    whose loss becomes NaN or infinite keeps training on garbage here (its neighbours are
    unaffected); its History says when it diverged and holds NaN from there on.
    """
    check_lr(lr)
    check_epochs(epochs)
    if isinstance(models, (nn.Module, str, dict)) or not hasattr(models, "__iter__"):
        raise TypeError(
            f"models must be a list of MLPs, e.g. [MLP(norm='batch') for seed in seeds], got "
            f"{checks.describe(models)}."
        )
    models = list(models)
    if not models:
        raise ValueError("train_together needs at least one model.")
    for i, m in enumerate(models):
        if not isinstance(m, MLP):
            raise TypeError(
                f"models[{i}] must be a bnteach.models.MLP (train_together stacks their "
                f"weights), got {checks.describe(m)}."
            )
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (list, tuple, range)):
        raise TypeError(f"seeds must be a list of whole numbers, got {checks.describe(seeds)}.")
    seeds = [checks.whole_number(s, "each seed", minimum=0, example=0) for s in seeds]
    if len(seeds) != len(models):
        raise ValueError(f"Give one seed per model: {len(models)} models, {len(seeds)} seeds.")
    signature = _signature(models[0])
    for i, m in enumerate(models):
        if _signature(m) != signature:
            raise ValueError(
                f"models[{i}] has another architecture than models[0]: train_together stacks "
                f"the weights of one architecture. Call it once per architecture."
            )
    device = next(models[0].parameters()).device
    data = load_data() if data is None else data
    check_data(data, dtype=next(models[0].parameters()).dtype)
    X_train, X_val, y_train, y_val = (t.to(device) for t in data)
    n = X_train.shape[0]
    stack = _Stack(models)
    optimizer = torch.optim.Adam(stack.params, lr=lr)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    histories = [History(lr=lr, epochs=epochs) for _ in models]
    n_batches = math.ceil(n / batch_size)
    for epoch in range(1, epochs + 1):
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
        total = torch.zeros(len(models), dtype=torch.float64, device=device)
        for i in range(n_batches):
            idx = orders[:, i * batch_size : (i + 1) * batch_size]  # (R, B)
            loss, _ = _losses(stack.forward(X_train[idx], training=True), y_train[idx])
            optimizer.zero_grad()
            loss.sum().backward()  # replica r's gradient comes from its own loss only
            optimizer.step()
            total += loss.detach().double() * idx.shape[1]
        with torch.no_grad():
            logits = stack.forward(X_val.expand(len(models), *X_val.shape), training=False)
            val_loss, val_acc = _losses(logits, y_val)
        for r, h in enumerate(histories):
            train_loss, vl = (total[r] / n).item(), val_loss[r].item()
            h.train_loss.append(train_loss)
            h.val_loss.append(vl)
            h.val_acc.append(val_acc[r].item())
            if h.diverged_at is None and not (math.isfinite(train_loss) and math.isfinite(vl)):
                h.diverged_at = epoch
    stack.write_back()
    return histories
