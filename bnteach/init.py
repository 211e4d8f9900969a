"""Initialisation scales for deep MLPs (notebook 09): set them, and train many nets at once.

``scale_init_(model, scale)`` sets every hidden ``nn.Linear`` of a
:class:`bnteach.models.MLP` to ``scale`` times the standard initialisation for its
activation (the output layer to the standard Xavier one), biases to 0:

- ReLU (and GELU): Kaiming (He et al. 2015), ``std = sqrt(2 / fan_in)``;
- tanh and sigmoid: Xavier/Glorot (2010), ``std = sqrt(2 / (fan_in + fan_out))``.

To train many such nets at once, start the engine's replicas from them:
``sweep.run(seeds, lrs, models=..., inits=lambda name, seed: scale_init_(...))``.
"""

import math

import torch
from torch import nn

from bnteach import checks
from bnteach.models import MLP

__all__ = ["GAINS", "init_std", "scale_init_"]

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
    checks.flag(scale_output, "scale_output")
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
