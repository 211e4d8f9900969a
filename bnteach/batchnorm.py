"""Batch Normalization from the formulas, plus tools to fold, recalibrate and freeze BN layers.

Shapes: N = batch size, C = channels (features), * = any spatial dims (L; or H, W for images).
For an input of shape (N, C, *), every channel c gets its own statistics, computed over N and
every spatial position (n = N * H * W values per channel for an image batch):

    mean[c] = average of x[:, c]
    var[c]  = average of (x[:, c] - mean[c]) ** 2          (biased: divide by n)
    y       = (x - mean) / sqrt(var + eps) * weight + bias

Training also updates the running buffers, with the UNBIASED variance (divide by n - 1):

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * n / (n - 1)

PyTorch's convention: ``momentum`` is the weight of the NEW batch statistic (default 0.1).
Keras and CS231n call 0.9 or 0.99 "momentum": the weight of the OLD value. Their 0.9 is our 0.1.

Like PyTorch: float16/bfloat16 inputs are normalized in float32 and returned in their own dtype
(also by a float32 layer); an empty batch (N = 0) in training returns an empty output and leaves
the running statistics as they were; old state dicts without ``num_batches_tracked`` load.

Deliberate departures from PyTorch (each pinned by a test in tests/test_batchnorm_torch_cases.py):

- ``momentum`` outside [0, 1] is rejected, by the modules and by ``batch_norm`` (torch accepts
  any float, e.g. Keras' 0.9 by mistake).
- ``eps`` must be a positive finite number, checked when the layer is built and on every call
  (torch builds any layer, rejects ``eps <= 0`` only in a training forward pass, accepts
  ``eps = 0`` in eval mode, and accepts NaN).
- A layer and an input of different float dtypes raise :class:`DtypeMismatchError` (a
  ``RuntimeError``, as in torch, and a ``TypeError``); a float32 layer accepts float16 and
  bfloat16 input, as torch's does.
- A training batch whose statistics are NaN or infinite raises :class:`NonFiniteBatchError` and
  leaves the running statistics (and ``num_batches_tracked``) untouched; torch writes the NaN
  into them, which makes every later eval-mode output NaN.
- ``batch_norm`` with ``training=False`` and no running statistics (None, None) normalizes with
  the batch statistics; torch's functional form raises.
- A channel-count mismatch raises :class:`ChannelMismatchError`, a subclass of both
  ``RuntimeError`` (what torch raises) and ``ValueError`` (what earlier versions raised here).
"""

import functools
import itertools
import math
import numbers

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnteach import checks

__all__ = [
    "batch_norm",
    "BatchNorm1d",
    "BatchNorm2d",
    "GhostBatchNorm1d",
    "BatchRenorm1d",
    "ChannelMismatchError",
    "NonFiniteBatchError",
    "DtypeMismatchError",
    "bn_layers",
    "fold_into_linear",
    "fold_into_conv",
    "recalibrate",
    "freeze",
    "unfreeze",
]


class ChannelMismatchError(ValueError, RuntimeError):
    """A per-channel tensor or layer size does not match input.shape[1].

    Both a RuntimeError (what PyTorch raises) and a ValueError (what bnteach raised before)."""


class DtypeMismatchError(TypeError, RuntimeError):
    """The input's dtype does not fit the layer's (a RuntimeError in torch, too)."""


class NonFiniteBatchError(ValueError):
    """A training batch whose statistics are NaN or infinite; running statistics untouched."""


# ----------------------------------------------------------------------------- input checks

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_tensor(input, layer):
    """Raise unless input is a floating-point tensor."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(
            f"{layer} expects a torch.Tensor, got {type(input).__name__}. "
            f"Convert your data with torch.as_tensor(x, dtype=torch.float32)."
        )
    if not input.is_floating_point():
        raise TypeError(
            f"{layer} expects a floating-point input, got dtype {input.dtype}. "
            f"Batch statistics need fractions: convert with x.float()."
        )


def _check_rank(input, ranks=(2, 3), layer="BatchNorm1d"):
    """Raise unless input.dim() is in ranks (None: any rank >= 2)."""
    if ranks is None:
        if input.dim() < 2:
            raise ValueError(
                f"batch_norm expected input of shape (N, C, *), got {input.dim()}-D input of "
                f"shape {tuple(input.shape)}. To normalize a single sample of shape (C,), add a "
                f"batch dimension with x.unsqueeze(0)."
            )
        return
    if input.dim() in ranks:
        return
    if ranks == (4,):
        raise ValueError(
            f"{layer} expected input of shape (N, C, H, W), got {input.dim()}-D input of shape "
            f"{tuple(input.shape)}. For a single image (C, H, W) add a batch dimension with "
            f"x.unsqueeze(0); for (N, C) or (N, C, L) use BatchNorm1d."
        )
    raise ValueError(
        f"{layer} expected input of shape (N, C) or (N, C, L), "
        f"got {input.dim()}-D input of shape {tuple(input.shape)}. "
        f"For images (N, C, H, W) use BatchNorm2d; to normalize a single sample "
        f"of shape (C,), add a batch dimension with x.unsqueeze(0)."
    )


def _check_channels(input, size, what, layer="BatchNorm1d"):
    """Raise unless size (described by `what`) equals the number of channels of input."""
    channels = input.shape[1]
    if size != channels:
        raise ChannelMismatchError(
            f"{what} {size} but the input has {channels} channels "
            f"(input.shape[1] for input of shape {tuple(input.shape)}). "
            f"{layer}(num_features) must match the channel dimension: "
            f"use {layer}({channels}), or check the layer in front of it."
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


def _check_dtypes(input, tensors):
    """Raise unless every per-channel tensor has input's dtype, or float32 for a float16 /
    bfloat16 input (the one mix torch allows: a float32 layer on low-precision data)."""
    allowed = {input.dtype, _compute_dtype(input.dtype)}
    for name, t in tensors:
        if t is not None and t.dtype not in allowed:
            raise DtypeMismatchError(
                f"The input is {input.dtype} but {name} is {t.dtype}. Use one dtype for data "
                f"and layer: convert the data (x.to({t.dtype})) or the layer "
                f"(layer.to({input.dtype})). (A float32 layer also accepts float16 / "
                f"bfloat16 input.)"
            )


def _check_eps(eps):
    """Raise unless eps is a positive finite number."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(
            f"eps must be a small positive number such as 1e-5, got {type(eps).__name__} {eps!r}."
        )
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(
            f"eps must be a positive, finite number (default 1e-5), got {eps!r}. It is added "
            f"to the variance inside the square root so that a constant channel (variance 0) "
            f"does not divide by zero: eps <= 0 turns such a channel into NaN or inf."
        )


def _check_finite_stats(mean, var, input):
    """Raise NonFiniteBatchError if a channel's batch mean or variance is NaN or infinite."""
    bad = ~(torch.isfinite(mean) & torch.isfinite(var))
    if bool(bad.any()):
        channels = bad.nonzero().flatten().tolist()
        shown = ", ".join(map(str, channels[:8])) + (", ..." if len(channels) > 8 else "")
        raise NonFiniteBatchError(
            f"The training batch (input of shape {tuple(input.shape)}) contains NaN or "
            f"infinite values in channel(s) {shown}: its statistics are not finite. Blending "
            f"them into running_mean/running_var would make those NaN for good (every later "
            f"eval-mode output NaN), so they were left unchanged. Find where the NaN comes "
            f"from: the data (torch.isnan(X).any()), or a layer before this one that "
            f"diverged (a learning rate too large)."
        )


# ----------------------------------------------------------------------------- functional


def _as_channels(t, input):
    """Reshape a per-channel tensor (C,) to (1, C, 1, ...) so it broadcasts with input."""
    return t.reshape((1, -1) + (1,) * (input.dim() - 2))


def _compute_dtype(dtype):
    """float16/bfloat16 are computed in float32 (as PyTorch does); others in their own dtype."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _batch_stats(input):
    """Per-channel mean and biased variance of input (N, C, *); each of shape (C,)."""
    dims = (0,) + tuple(range(2, input.dim()))
    mean = input.mean(dim=dims)
    var = ((input - _as_channels(mean, input)) ** 2).mean(dim=dims)
    return mean, var


def _update_running_stats(running_mean, running_var, mean, var, n, momentum):
    """In place: blend batch mean and UNBIASED variance (C,) into the running buffers (C,).

    The blend is computed in the statistics' dtype (float32 for a low-precision input) and
    only then stored in the buffers' dtype, so n / (n - 1) cannot overflow a float16 buffer."""
    with torch.no_grad():
        unbiased_var = var * (n / (n - 1))
        for buf, stat in ((running_mean, mean), (running_var, unbiased_var)):
            blended = (1 - momentum) * buf.to(stat.dtype) + momentum * stat
            buf.copy_(blended)


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
    """Batch-normalize input (N, C, *); same arguments as F.batch_norm.

    running_mean, running_var, weight, bias: (C,) or None. Returns a tensor shaped like input,
    in input's dtype. Uses batch statistics (over N and every spatial position) when training
    (or when no running statistics are given), and then updates running_mean/running_var in
    place if they are given. Otherwise normalizes with running_mean/running_var and changes
    nothing. See the module docstring for where this departs from torch on purpose.
    """
    _check_tensor(input, "batch_norm")
    _check_rank(input, ranks=None)
    for name, t in [
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ]:
        if t is not None:
            _check_channels(input, t.numel(), f"{name} has size", layer="batch_norm")
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
    checks.momentum(momentum)
    _check_eps(eps)
    _check_dtypes(
        input,
        [
            ("running_mean", running_mean),
            ("running_var", running_var),
            ("weight", weight),
            ("bias", bias),
        ],
    )

    cdtype = _compute_dtype(input.dtype)
    x = input.to(cdtype)
    use_batch_stats = training or running_mean is None
    if use_batch_stats:
        _check_spread(input)
        if input.shape[0] == 0:  # an empty batch: nothing to normalize, nothing to learn
            return input.clone()
        mean, var = _batch_stats(x)
        if training and running_mean is not None:
            _check_finite_stats(mean, var, input)
            n = input.numel() // input.shape[1]
            _update_running_stats(running_mean, running_var, mean, var, n, momentum)
    else:
        mean, var = running_mean.to(cdtype), running_var.to(cdtype)

    out = (x - _as_channels(mean, x)) / torch.sqrt(_as_channels(var, x) + eps)
    if weight is not None:
        out = out * _as_channels(weight.to(cdtype), x)
    if bias is not None:
        out = out + _as_channels(bias.to(cdtype), x)
    return out.to(input.dtype)


# ----------------------------------------------------------------------------- modules


class _BatchNormBase(nn.Module):
    """What BatchNorm1d and BatchNorm2d share; they differ only in the input ranks accepted.

    weight, bias: (C,) learnable scale and shift (None unless affine; bias is also None
    with bias=False, a keyword-only argument as in torch >= 2.13: scale, no shift).
    running_mean, running_var: (C,) buffers; num_batches_tracked: () long buffer
    (all None unless track_running_stats).
    momentum: weight of the NEW batch statistic in the running average (PyTorch's
    convention; 0.1 here is Keras' 0.9). None means a cumulative average,
    momentum = 1 / num_batches_tracked.
    Mode follows self.training (model.train() / model.eval()), not torch.no_grad().
    """

    _version = 2  # like torch: version 2 added num_batches_tracked (see _load_from_state_dict)
    _ranks = None  # input ranks accepted, set by the subclasses

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
        if isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral):
            raise TypeError(
                f"num_features must be a whole number (the channel count, input.shape[1]), "
                f"got {type(num_features).__name__} {num_features!r}."
            )
        if num_features < 1:
            raise ValueError(f"num_features must be at least 1, got {num_features}.")
        checks.momentum(momentum)
        _check_eps(eps)
        factory = {"device": device, "dtype": dtype}
        self.num_features = int(num_features)
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
        """input (N, C, ...) of the ranks the layer accepts -> output of the same shape."""
        name = type(self).__name__
        _check_tensor(input, name)
        _check_rank(input, self._ranks, name)
        _check_channels(input, self.num_features, f"{name} has num_features =", layer=name)
        use_batch_stats = self.training or self.running_mean is None

        update = self.training and self.track_running_stats
        factor = 0.0 if self.momentum is None else self.momentum
        if update and self.momentum is None:  # cumulative average over the batches so far
            factor = 1.0 / (float(self.num_batches_tracked) + 1.0)

        # in training without tracking, pass no buffers so that nothing is updated
        use_buffers = not self.training or self.track_running_stats
        out = batch_norm(
            input,
            self.running_mean if use_buffers else None,
            self.running_var if use_buffers else None,
            self.weight,
            self.bias,
            training=use_batch_stats,
            momentum=factor,
            eps=self.eps,
        )
        if update:  # only after success: a failed call leaves every buffer as it was
            self.num_batches_tracked.add_(1)
        return out

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ):
        # State dicts saved before version 2 have no num_batches_tracked: load them with 0,
        # as torch's _BatchNorm does, instead of failing with a missing key.
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats:
            if key not in state_dict:
                state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )

    def extra_repr(self):
        # like torch >= 2.13: bias= reports whether there is a bias (False when not affine)
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNormBase):
    """Batch Normalization over (N, C) or (N, C, L) input; a drop-in for nn.BatchNorm1d.

    Statistics per channel over N (and L). Parameters, buffers, state_dict keys, repr, modes
    and errors as in nn.BatchNorm1d; see _BatchNormBase for what they mean.
    """

    _ranks = (2, 3)


class BatchNorm2d(_BatchNormBase):
    """Batch Normalization over image batches (N, C, H, W); a drop-in for nn.BatchNorm2d.

    Statistics per channel c over N, H and W (n = N * H * W values; running_var gets the
    unbiased variance, divided by n - 1). Training rejects only n == 1: one image with
    H * W > 1 is accepted, as in PyTorch. Otherwise exactly BatchNorm1d.
    """

    _ranks = (4,)


# ----------------------------------------------------------------------------- tools

_BN_TYPES = (_BatchNorm, _BatchNormBase)


def bn_layers(model):
    """List of the batch-norm modules in model (torch's BatchNorm*d and ours), in order."""
    _check_model(model, "bn_layers")
    return [m for m in model.modules() if isinstance(m, _BN_TYPES)]


def _fold_factors(bn, channels, like, what):
    """(s, shift) of shape (C,) with bn(z) = z * s + shift in eval mode; raises teaching errors.

    s = weight / sqrt(running_var + eps); shift = bias - running_mean * s.
    """
    if not isinstance(bn, _BN_TYPES):
        raise TypeError(f"bn must be a BatchNorm layer, got {type(bn).__name__}.")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "Cannot fold a BatchNorm layer without running statistics "
            "(track_running_stats=False): it always normalizes with the current batch, "
            "so it is not a fixed affine map. Train with track_running_stats=True."
        )
    if channels != bn.num_features:
        raise ValueError(
            f"{what} but bn has num_features={bn.num_features}; fold a BatchNorm that directly "
            f"follows this layer."
        )
    mean = bn.running_mean.detach().to(**like)
    var = bn.running_var.detach().to(**like)
    gamma = torch.ones_like(mean) if bn.weight is None else bn.weight.detach().to(**like)
    beta = torch.zeros_like(mean) if bn.bias is None else bn.bias.detach().to(**like)
    s = gamma / torch.sqrt(var + bn.eps)
    return s, beta - mean * s


def fold_into_linear(linear, bn):
    """Return a NEW nn.Linear equal to bn(linear(x)) with bn in eval mode.

    linear: weight (C, in), bias (C,) or None.  bn: C features with running statistics;
    its weight/bias may be None (affine=False, or bias=False): they then count as 1 and 0.
    s = weight / sqrt(running_var + eps);  W' = s[:, None] * W;  b' = (b - running_mean) * s + bias
    Neither argument is changed.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}.")
    W = linear.weight.detach()
    like = {"dtype": W.dtype, "device": W.device}
    what = f"linear has out_features={linear.out_features}"
    s, shift = _fold_factors(bn, linear.out_features, like, what)
    b = torch.zeros_like(s) if linear.bias is None else linear.bias.detach()

    folded = nn.Linear(linear.in_features, linear.out_features, bias=True, **like)
    with torch.no_grad():
        folded.weight.copy_(s[:, None] * W)
        folded.bias.copy_(b * s + shift)
    return folded


def fold_into_conv(conv, bn):
    """Return a NEW nn.Conv2d equal to bn(conv(x)) with bn in eval mode.

    conv: weight (C, C_in / groups, kH, kW), bias (C,) or None; stride, padding, dilation,
    groups and padding_mode are kept. bn: C channels with running statistics (weight/bias
    None count as 1 and 0). Per output channel c, with s = weight / sqrt(running_var + eps):
    W'[c] = s[c] * W[c];  b'[c] = (b[c] - running_mean[c]) * s[c] + bias[c].
    Agrees with torch.nn.utils.fusion.fuse_conv_bn_eval. Neither argument is changed.
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(
            f"conv must be an nn.Conv2d, got {type(conv).__name__}. (For an nn.Linear use "
            f"fold_into_linear.)"
        )
    W = conv.weight.detach()
    like = {"dtype": W.dtype, "device": W.device}
    what = f"conv has out_channels={conv.out_channels}"
    s, shift = _fold_factors(bn, conv.out_channels, like, what)
    b = torch.zeros_like(s) if conv.bias is None else conv.bias.detach()

    folded = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        **like,
    )
    with torch.no_grad():
        folded.weight.copy_(W * s.reshape(-1, 1, 1, 1))
        folded.bias.copy_(b * s + shift)
    return folded


def _batch_input(batch, index):
    """A loader batch is (x, y, ...) or x; return x, or raise a teaching error."""
    x = batch[0] if isinstance(batch, (tuple, list)) and len(batch) > 0 else batch
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"Batch {index} of the loader is a {type(batch).__name__}"
            f"{'' if x is batch else f' whose first item is a {type(x).__name__}'}; "
            f"recalibrate needs batches (x, y) or x with x a tensor of shape (N, ...). "
            f"Wrap your data in a DataLoader(TensorDataset(X, y)) or a TensorLoader."
        )
    return x


def _model_device(model):
    """Device of the model's first parameter (or buffer); CPU if it has neither."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def _model_dtype(model):
    """dtype of the model's first floating-point parameter, or None."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def _check_model(model, what):
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} needs an nn.Module, got {type(model).__name__}.")


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

    Training flags and momentum are restored exactly. If any batch fails (a wrong shape,
    dtype, a batch of one, ...), the model is left exactly as it was before the call (running
    statistics included) and the error says so. Returns model.
    """
    _check_model(model, "recalibrate")
    checks.loader(
        loader,
        "recalibrate's loader",
        "Pass the training loader, e.g. recalibrate(model, train_loader) with train_loader from "
        "make_loaders(...).",
    )
    layers = [m for m in bn_layers(model) if m.running_mean is not None]
    if not layers:
        raise ValueError(
            "Nothing to recalibrate: the model has no BatchNorm layer with running "
            "statistics (track_running_stats=True)."
        )
    flags = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers}
    saved = {m: {k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in layers}
    device, dtype = _model_device(model), _model_dtype(model)
    index = -1
    try:
        for m in model.modules():
            m.training = False
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            m.training = True
        with torch.no_grad():
            for index, batch in enumerate(loader):
                x = _batch_input(batch, index)
                if dtype is not None and x.is_floating_point() and x.dtype != dtype:
                    raise TypeError(
                        f"Batch {index} of the loader holds {x.dtype} inputs but the model's "
                        f"parameters are {dtype}: convert the data (e.g. X.to({dtype})) or the "
                        f"model (model.to({x.dtype}))."
                    )
                model(x.to(device))
        if index < 0:
            raise ValueError("The loader is empty: recalibrate needs at least one batch.")
    except Exception as err:
        with torch.no_grad():
            for m, buffers in saved.items():
                for k, b in m.named_buffers(recurse=False):
                    b.copy_(buffers[k])
        where = f" at batch {index}" if index >= 0 else ""
        err.add_note(
            f"recalibrate failed{where}; the model was left exactly as it was before the call "
            f"(running statistics, modes and momentum restored)."
        )
        raise
    finally:
        for m, training in flags.items():
            m.training = training
        for m, momentum in momenta.items():
            m.momentum = momentum
    return model


def _frozen_train(module, mode=True):
    """Replacement for module.train on a frozen BN layer: always stays in eval mode."""
    return nn.Module.train(module, False)


def _bn_state(layers):
    """What freeze/unfreeze change, to restore it if they fail half-way."""
    return [
        (
            m,
            m.training,
            vars(m).get("train"),
            [(p, p.requires_grad) for p in (m.weight, m.bias) if p is not None],
        )
        for m in layers
    ]


def _restore_bn_state(state):
    for m, training, train_attr, params in state:
        m.training = training
        if train_attr is None:
            vars(m).pop("train", None)
        else:
            vars(m)["train"] = train_attr
        for p, flag in params:
            p.requires_grad = flag


def _apply_atomically(model, what, change):
    """Apply change(layer) to every BN layer of model; if one fails, undo all of them."""
    _check_model(model, what)
    layers = bn_layers(model)
    state = _bn_state(layers)
    try:
        for m in layers:
            change(m)
    except Exception as err:
        _restore_bn_state(state)
        err.add_note(f"{what} failed; every BatchNorm layer was left exactly as it was.")
        raise
    return model


def _freeze_layer(m):
    for p in (m.weight, m.bias):
        if p is not None:
            p.requires_grad_(False)
    # an instance attribute shadows nn.Module.train; partial (not a bound method) pickles
    m.train = functools.partial(_frozen_train, m)
    nn.Module.train(m, False)


def _unfreeze_layer(m):
    vars(m).pop("train", None)
    for p in (m.weight, m.bias):
        if p is not None:
            p.requires_grad_(True)


def freeze(model):
    """Fix every BN layer's statistics and parameters, even after a later model.train().

    Sets requires_grad=False on weight/bias and makes each BN layer ignore train(True).
    Undo with unfreeze(model). All layers or none: if one fails, the model is left as it was.
    Returns model.
    """
    return _apply_atomically(model, "freeze", _freeze_layer)


def unfreeze(model):
    """Undo freeze(model): BN layers follow train()/eval() again and weight/bias need grad.

    The BN layers stay in eval mode until the next model.train(). All layers or none.
    Returns model.
    """
    return _apply_atomically(model, "unfreeze", _unfreeze_layer)


# ----------------------------------------------------------------------------- variants


class GhostBatchNorm1d(_BatchNormBase):
    """BatchNorm1d whose training batch is cut into chunks ("ghost" batches) of
    ``virtual_batch_size`` rows, each normalized with its own statistics.

    This is what data-parallel training does with per-device BN: each of D devices sees
    ``N / D`` rows of the global batch and normalizes them alone. Input (N, C) or (N, C, L);
    the chunks are consecutive rows ``x[0:v], x[v:2v], ...`` (the last one may be shorter; every
    chunk needs more than one value per channel). The running statistics are updated from the
    FIRST chunk only: what ``DistributedDataParallel`` leaves on every device with
    ``broadcast_buffers=True`` (rank 0's statistics, copied to the others). Eval mode is
    exactly BatchNorm1d (running statistics, no chunks).
    """

    _ranks = (2, 3)

    def __init__(self, num_features, virtual_batch_size, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None):  # fmt: skip
        self.virtual_batch_size = checks.whole_number(
            virtual_batch_size, "virtual_batch_size (rows per device)", minimum=2, example=16
        )
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def forward(self, input):
        """input (N, C) or (N, C, L) -> the same shape; chunks of ``virtual_batch_size`` rows."""
        if not self.training or not isinstance(input, torch.Tensor) or input.dim() < 2:
            return super().forward(input)  # eval mode, and the base's teaching errors
        chunks = input.split(self.virtual_batch_size)
        for chunk in chunks:  # every chunk checked before anything is updated
            _check_spread(chunk)
        # The other chunks first (they update nothing), chunk 0 last: a chunk that fails
        # leaves the running statistics as they were.
        rest = [
            batch_norm(c, None, None, self.weight, self.bias, training=True, eps=self.eps)
            for c in chunks[1:]
        ]
        return torch.cat([super().forward(chunks[0]), *rest])

    def extra_repr(self):
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"


def _check_limit(value, name, low, example):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number such as {example}, got {checks.describe(value)}.")
    value = float(value)
    if not (math.isfinite(value) and value >= low):  # NaN fails too
        raise ValueError(
            f"{name} must be a finite number >= {low:g} (such as {example}), got {value!r}. "
            f"r_max = 1 and d_max = 0 turn Batch Renormalization into BatchNorm."
        )
    return value


class BatchRenorm1d(_BatchNormBase):
    """Batch Renormalization (Ioffe 2017) over (N, C) or (N, C, L) input.

    Training corrects the batch statistics towards the running ones, per channel::

        sigma_B = sqrt(var_B + eps),  sigma = sqrt(running_var + eps)
        r = clip(sigma_B / sigma, 1 / r_max, r_max)      (no gradient through r)
        d = clip((mean_B - running_mean) / sigma, -d_max, d_max)   (nor through d)
        y = ((x - mean_B) / sigma_B * r + d) * weight + bias

    With ``r = 1, d = 0`` (``r_max = 1, d_max = 0``) the output is BatchNorm's. The running
    statistics follow the paper (its Algorithm 1): ``running_mean`` moves towards ``mean_B``
    and the running STANDARD DEVIATION ``sigma`` towards ``sigma_B`` by ``momentum``; the
    buffer ``running_var`` holds ``sigma ** 2 - eps``, so that eval mode is exactly
    BatchNorm1d's ``(x - running_mean) / sqrt(running_var + eps)``. (BatchNorm averages the
    unbiased variance instead, so the buffers differ from BatchNorm1d's even at r_max = 1.)
    Needs running statistics (``track_running_stats=True``) and a float ``momentum``.
    The paper grows r_max from 1 and d_max from 0 during training; here they are fixed.
    """

    _ranks = (2, 3)

    def __init__(self, num_features, r_max=3.0, d_max=5.0, eps=1e-5, momentum=0.1, affine=True,
                 device=None, dtype=None):  # fmt: skip
        self.r_max = _check_limit(r_max, "r_max", 1.0, 3.0)
        self.d_max = _check_limit(d_max, "d_max", 0.0, 5.0)
        if momentum is None:
            raise ValueError(
                "BatchRenorm1d needs a float momentum such as 0.1: its running statistics "
                "are moving averages (momentum=None, a cumulative average, is BatchNorm's)."
            )
        super().__init__(num_features, eps, momentum, affine, True, device, dtype)

    def forward(self, input):
        """input (N, C) or (N, C, L) -> the same shape."""
        if not self.training or not isinstance(input, torch.Tensor) or input.dim() < 2:
            return super().forward(input)  # eval mode, and the base's teaching errors
        name = type(self).__name__
        _check_tensor(input, name)
        _check_rank(input, self._ranks, name)
        _check_channels(input, self.num_features, f"{name} has num_features =", layer=name)
        _check_dtypes(input, [("weight", self.weight), ("running_var", self.running_var)])
        _check_spread(input)
        x = input.to(_compute_dtype(input.dtype))
        mean_b, var_b = _batch_stats(x)
        _check_finite_stats(mean_b, var_b, input)
        sigma_b = torch.sqrt(var_b + self.eps)
        with torch.no_grad():
            sigma = torch.sqrt(self.running_var.to(x.dtype) + self.eps)
            r = (sigma_b / sigma).clamp(1.0 / self.r_max, self.r_max)
            d = ((mean_b - self.running_mean.to(x.dtype)) / sigma).clamp(-self.d_max, self.d_max)
        out = (x - _as_channels(mean_b, x)) / _as_channels(sigma_b, x)
        out = out * _as_channels(r, x) + _as_channels(d, x)
        if self.weight is not None:
            out = out * _as_channels(self.weight.to(x.dtype), x)
        if self.bias is not None:
            out = out + _as_channels(self.bias.to(x.dtype), x)
        with torch.no_grad():  # only after success: a failed call leaves the buffers alone
            m = self.momentum
            self.running_mean.copy_(self.running_mean + m * (mean_b - self.running_mean))
            new_sigma = sigma + m * (sigma_b.detach() - sigma)
            self.running_var.copy_(new_sigma * new_sigma - self.eps)
            self.num_batches_tracked.add_(1)
        return out.to(input.dtype)

    def extra_repr(self):
        return f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}"
