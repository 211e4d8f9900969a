"""Batch Normalization from the formulas, plus tools to fold, recalibrate and freeze BN layers.

Shapes: N = batch size, C = channels (features), L = length (e.g. time steps).
For an input of shape (N, C) or (N, C, L), every channel c gets its own statistics,
computed over N (and L):

    mean[c] = average of x[:, c]
    var[c]  = average of (x[:, c] - mean[c]) ** 2          (biased: divide by n)
    y       = (x - mean) / sqrt(var + eps) * weight + bias

Training also updates the running buffers, with the UNBIASED variance (divide by n - 1):

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * n / (n - 1)

PyTorch's convention: ``momentum`` is the weight of the NEW batch statistic (default 0.1).
Keras and CS231n call 0.9 or 0.99 "momentum": the weight of the OLD value. Their 0.9 is our 0.1.
"""

import functools
import itertools
import numbers

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "batch_norm",
    "BatchNorm1d",
    "bn_layers",
    "fold_into_linear",
    "recalibrate",
    "freeze",
    "unfreeze",
]


# ----------------------------------------------------------------------------- input checks


def _check_rank(input):
    """Raise unless input has shape (N, C) or (N, C, L)."""
    if input.dim() not in (2, 3):
        raise ValueError(
            f"BatchNorm1d expected input of shape (N, C) or (N, C, L), "
            f"got {input.dim()}-D input of shape {tuple(input.shape)}. "
            f"For images (N, C, H, W) use BatchNorm2d; to normalize a single sample "
            f"of shape (C,), add a batch dimension with x.unsqueeze(0)."
        )


def _check_channels(input, size, what):
    """Raise unless size (described by `what`) equals the number of channels of input."""
    channels = input.shape[1]
    if size != channels:
        raise ValueError(
            f"{what} {size} but the input has {channels} channels "
            f"(input.shape[1] for input of shape {tuple(input.shape)}). "
            f"BatchNorm1d(num_features) must match the channel dimension: "
            f"use BatchNorm1d({channels}), or check the layer in front of it."
        )


def _check_spread(input):
    """Raise if batch statistics would be computed from a single value per channel."""
    if input.numel() // input.shape[1] == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, "
            f"got input size {input.size()}. "
            f"A batch of one has no spread to normalize by (its variance is 0). "
            f"Use drop_last=True in the DataLoader so the last batch is never a single "
            f"sample, or call model.eval() for single-sample prediction (this uses the "
            f"running statistics, so it needs track_running_stats=True)."
        )


# ----------------------------------------------------------------------------- functional


def _as_channels(t, input):
    """Reshape a per-channel tensor (C,) to (1, C) or (1, C, 1) so it broadcasts with input."""
    return t.reshape((1, -1) + (1,) * (input.dim() - 2))


def _batch_stats(input):
    """Per-channel mean and biased variance of input (N, C) or (N, C, L); each of shape (C,)."""
    dims = (0,) if input.dim() == 2 else (0, 2)
    mean = input.mean(dim=dims)
    var = ((input - _as_channels(mean, input)) ** 2).mean(dim=dims)
    return mean, var


def _update_running_stats(running_mean, running_var, mean, var, n, momentum):
    """In place: blend batch mean and UNBIASED variance (C,) into the running buffers (C,)."""
    with torch.no_grad():
        unbiased_var = var * n / (n - 1)
        running_mean.mul_(1 - momentum).add_(momentum * mean)
        running_var.mul_(1 - momentum).add_(momentum * unbiased_var)


def batch_norm(
    input,
    running_mean,
    running_var,
    weight=None,
    bias=None,
    training=False,
    momentum=0.1,
    eps=1e-5,
):
    """Batch-normalize input (N, C) or (N, C, L); same arguments as F.batch_norm.

    running_mean, running_var, weight, bias: (C,) or None. Returns a tensor shaped like input.
    Uses batch statistics when training (or when no running statistics are given), and
    then updates running_mean/running_var in place if they are given.
    Otherwise normalizes with running_mean/running_var and changes nothing.
    """
    _check_rank(input)
    for name, t in [
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ]:
        if t is not None:
            _check_channels(input, t.numel(), f"{name} has size")
    if (running_mean is None) != (running_var is None):
        raise ValueError(
            "Pass both running_mean and running_var, or neither (None, None) "
            "to always normalize with batch statistics."
        )
    if momentum is None:
        raise TypeError(
            "momentum must be a float, not None (like in F.batch_norm). "
            "momentum=None (cumulative average) is a feature of the BatchNorm1d module: "
            "it passes momentum=1/num_batches_tracked. Do the same here."
        )

    use_batch_stats = training or running_mean is None
    if use_batch_stats:
        _check_spread(input)
        mean, var = _batch_stats(input)
        if training and running_mean is not None:
            n = input.numel() // input.shape[1]
            _update_running_stats(running_mean, running_var, mean, var, n, momentum)
    else:
        mean, var = running_mean, running_var

    out = (input - _as_channels(mean, input)) / torch.sqrt(_as_channels(var, input) + eps)
    if weight is not None:
        out = out * _as_channels(weight, input)
    if bias is not None:
        out = out + _as_channels(bias, input)
    return out


# ----------------------------------------------------------------------------- module


def _check_momentum(momentum):
    """Raise unless momentum is None or a number in [0, 1]."""
    if momentum is None:
        return
    if not isinstance(momentum, numbers.Real) or isinstance(momentum, bool):
        raise TypeError(
            f"momentum must be a number in [0, 1] or None, got {momentum!r} "
            f"of type {type(momentum).__name__}."
        )
    if not 0 <= momentum <= 1:
        raise ValueError(
            f"momentum must be in [0, 1] (or None for a cumulative average), got {momentum}. "
            f"In PyTorch momentum is the weight of the NEW batch statistic "
            f"(default 0.1): running = (1 - momentum) * running + momentum * batch. "
            f"Keras and CS231n use the opposite convention (the fraction kept, e.g. 0.9 "
            f"or 0.99): if you meant 'keep 0.9 of the old value', pass momentum=0.1."
        )


class BatchNorm1d(nn.Module):
    """Batch Normalization over (N, C) or (N, C, L) input; a drop-in for nn.BatchNorm1d.

    weight, bias: (C,) learnable scale and shift (None unless affine; bias is also None
    with bias=False, a keyword-only argument as in torch >= 2.13: scale, no shift).
    running_mean, running_var: (C,) buffers; num_batches_tracked: () long buffer
    (all None unless track_running_stats).
    momentum: weight of the NEW batch statistic in the running average (PyTorch's
    convention; 0.1 here is Keras' 0.9). None means a cumulative average,
    momentum = 1 / num_batches_tracked.
    Mode follows self.training (model.train() / model.eval()), not torch.no_grad().
    """

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        device=None,
        dtype=None,
        *,
        bias=True,
    ):
        super().__init__()
        _check_momentum(momentum)
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:  # like torch: no bias without affine, whatever bias= says
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        """Set running_mean to 0, running_var to 1 and num_batches_tracked to 0."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self):
        """Reset the running statistics, weight to 1 and bias (if any) to 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def forward(self, input):
        """input (N, C) or (N, C, L) -> output of the same shape."""
        _check_rank(input)
        _check_channels(input, self.num_features, "BatchNorm1d has num_features =")
        use_batch_stats = self.training or self.running_mean is None
        if use_batch_stats:
            _check_spread(input)  # before touching num_batches_tracked

        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)

        # in training without tracking, pass no buffers so that nothing is updated
        use_buffers = not self.training or self.track_running_stats
        return batch_norm(
            input,
            self.running_mean if use_buffers else None,
            self.running_var if use_buffers else None,
            self.weight,
            self.bias,
            training=use_batch_stats,
            momentum=factor,
            eps=self.eps,
        )

    def extra_repr(self):
        # like torch >= 2.13: bias= reports whether there is a bias (False when not affine)
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )


# ----------------------------------------------------------------------------- tools


def bn_layers(model):
    """List of the batch-norm modules in model (torch's BatchNorm*d and ours), in order."""
    return [m for m in model.modules() if isinstance(m, (_BatchNorm, BatchNorm1d))]


def fold_into_linear(linear, bn):
    """Return a NEW nn.Linear equal to bn(linear(x)) with bn in eval mode.

    linear: weight (C, in), bias (C,) or None.  bn: C features with running statistics;
    its weight/bias may be None (affine=False, or bias=False): they then count as 1 and 0.
    s = weight / sqrt(running_var + eps);  W' = s[:, None] * W;  b' = (b - running_mean) * s + bias
    """
    if not isinstance(bn, (_BatchNorm, BatchNorm1d)):
        raise TypeError(f"bn must be a BatchNorm layer, got {type(bn).__name__}.")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "Cannot fold a BatchNorm layer without running statistics "
            "(track_running_stats=False): it always normalizes with the current batch, "
            "so it is not a fixed affine map. Train with track_running_stats=True."
        )
    if linear.out_features != bn.num_features:
        raise ValueError(
            f"linear has out_features={linear.out_features} but bn has "
            f"num_features={bn.num_features}; fold a BatchNorm that directly follows "
            f"this Linear."
        )

    W = linear.weight.detach()
    like = {"dtype": W.dtype, "device": W.device}
    mean = bn.running_mean.detach().to(**like)
    var = bn.running_var.detach().to(**like)
    gamma = torch.ones_like(mean) if bn.weight is None else bn.weight.detach().to(**like)
    beta = torch.zeros_like(mean) if bn.bias is None else bn.bias.detach().to(**like)
    b = torch.zeros_like(mean) if linear.bias is None else linear.bias.detach()

    s = gamma / torch.sqrt(var + bn.eps)
    folded = nn.Linear(linear.in_features, linear.out_features, bias=True, **like)
    with torch.no_grad():
        folded.weight.copy_(s[:, None] * W)
        folded.bias.copy_((b - mean) * s + beta)
    return folded


def _first_batch_input(batch):
    """A loader batch is (x, y, ...) or x; return x."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _model_device(model):
    """Device of the model's first parameter (or buffer); CPU if it has neither."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def recalibrate(model, loader):
    """Recompute every BN layer's running statistics from one pass over loader.

    One pass over loader (batches (x, y) or x, with x of shape (N, ...)) under no_grad,
    BN layers in train mode with momentum=None (cumulative average: every batch gets the
    same weight), everything else in eval mode (dropout off). Each BN layer sees its input
    as in training (earlier BN layers normalize with each batch's own statistics).
    Afterwards, per channel:

    - running_mean is the average of the per-batch means. That is the population mean of
      the layer's input when all batches have the same size, or with one batch holding the
      whole set (a smaller last batch counts as much as a full one).
    - running_var is the average of the per-batch UNBIASED variances. For random batches
      this equals the population variance only in expectation: it leaves out the spread
      between the batch means, so it is not the variance of the whole set.
    - With one batch holding the whole set, both are exactly the population statistics
      (running_var the unbiased population variance, divided by n - 1).

    Training flags and momentum are restored exactly. Returns model.
    """
    layers = [m for m in bn_layers(model) if m.running_mean is not None]
    if not layers:
        raise ValueError(
            "Nothing to recalibrate: the model has no BatchNorm layer with running "
            "statistics (track_running_stats=True)."
        )
    batches = iter(loader)
    first = next(batches, None)
    if first is None:
        raise ValueError("The loader is empty: recalibrate needs at least one batch.")

    flags = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers}
    device = _model_device(model)
    try:
        for m in model.modules():
            m.training = False
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            m.training = True
        with torch.no_grad():
            model(_first_batch_input(first).to(device))
            for batch in batches:
                model(_first_batch_input(batch).to(device))
    finally:
        for m, training in flags.items():
            m.training = training
        for m, momentum in momenta.items():
            m.momentum = momentum
    return model


def _frozen_train(module, mode=True):
    """Replacement for module.train on a frozen BN layer: always stays in eval mode."""
    return nn.Module.train(module, False)


def freeze(model):
    """Fix every BN layer's statistics and parameters, even after a later model.train().

    Sets requires_grad=False on weight/bias and makes each BN layer ignore train(True).
    Undo with unfreeze(model). Returns model.
    """
    for m in bn_layers(model):
        for p in (m.weight, m.bias):
            if p is not None:
                p.requires_grad_(False)
        # an instance attribute shadows nn.Module.train; partial (not a bound method) pickles
        m.train = functools.partial(_frozen_train, m)
        nn.Module.train(m, False)
    return model


def unfreeze(model):
    """Undo freeze(model): BN layers follow train()/eval() again and weight/bias need grad.

    The BN layers stay in eval mode until the next model.train(). Returns model.
    """
    for m in bn_layers(model):
        vars(m).pop("train", None)
        for p in (m.weight, m.bias):
            if p is not None:
                p.requires_grad_(True)
    return model
