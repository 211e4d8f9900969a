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
(also by a float32 layer: the layer's tensors are then all float32, or all the input's dtype);
an empty input (N = 0) returns an empty output and leaves the running statistics as they were;
old state dicts without ``num_batches_tracked`` load as they do in torch (the layer keeps its
own count, 0 for a new layer); the layers compile with ``torch.compile``.

Under ``torch.compile`` (and on "meta" tensors, which hold no values) the checks that read the
VALUES of the data (NaN, infinity, a negative running_var: the ones that raise
:class:`NonFiniteBatchError` and :class:`NonFiniteStateError`) are skipped, because a compiled
graph cannot branch on them; everything else is checked there too. A compiled layer then
behaves like torch's on such data.

Error messages explain the mistake and the fix for a learner, so their wording is ours; where
torch's own tests match words of torch's message, ours holds the same words, at its start
("eps must be positive", "Expected more than 1 value per channel when training", "expected 2D
or 3D input (got 4D input)", "expected 4D input"). Error classes are torch's (or subclasses of
them), except for the deliberate departures from PyTorch below (each pinned by a
``test_departure_*`` test or a row of the error table in tests/test_batchnorm_torch_cases.py),
all so that a mistake gets a teaching error instead of a silent result:

- ``momentum`` outside [0, 1] is rejected, by the modules and by ``batch_norm`` (torch accepts
  any float, e.g. Keras' 0.9 by mistake).
- ``eps`` must be a positive finite number, checked when the layer is built and on every call
  (torch builds any layer, rejects ``eps <= 0`` only in a training forward pass, accepts
  ``eps = 0`` in eval mode, and accepts NaN). The message starts like torch's ("eps must be
  positive").
- ``training``, ``affine``, ``track_running_stats`` and ``bias`` must be True or False
  (TypeError): torch's modules take any truthy value, so ``affine='False'`` means True there.
  ``num_features`` must be a whole number >= 1 (torch builds ``BatchNorm1d(0)``), ``dtype`` a
  floating-point dtype (torch builds integer-dtype layers without affine parameters).
- A non-tensor input or per-channel argument, and a non-floating input, raise ``TypeError``
  (torch: AttributeError, TypeError or NotImplementedError, depending on the case); a 1-D input
  to ``batch_norm`` raises ``ValueError`` (torch: IndexError).
- A layer and an input of different float dtypes raise :class:`DtypeMismatchError` (a
  ``RuntimeError``, as in torch, and a ``TypeError``); a float32 layer accepts float16 and
  bfloat16 input, as torch's does.
- A batch whose statistics are NaN or infinite (a NaN or infinity in the batch, or values so
  large that their variance overflows the dtype) raises :class:`NonFiniteBatchError` whenever
  batch statistics are used, and leaves the running statistics (and ``num_batches_tracked``)
  untouched. torch writes the NaN into the running statistics (every later eval-mode output
  NaN), and for an overflowing batch returns zeros and an infinite running_var.
- A weight, bias or running statistic that is NaN or infinite, or a negative running_var used
  in eval mode, raises :class:`NonFiniteStateError` (torch returns NaN outputs). A NaN in an
  eval-mode input only makes that sample's output NaN, as in torch.
- An empty training batch is not counted in ``num_batches_tracked``: it carries no
  statistics. torch counts it, so with ``momentum=None`` the next batch gets half the weight
  it should.
- ``batch_norm`` with ``training=False`` and no running statistics (None, None) normalizes with
  the batch statistics; torch's functional form raises.
- A channel-count mismatch, or a per-channel tensor that is not of shape (C,), raises
  :class:`ChannelMismatchError`, a subclass of both ``RuntimeError`` (what torch raises) and
  ``ValueError`` (what earlier versions raised here).
- In eval mode the output is differentiable with respect to running_mean and running_var (it is
  written from the formula); torch refuses forward-mode gradients with respect to them.
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
    "NonFiniteStateError",
    "DtypeMismatchError",
    "bn_layers",
    "check_settings",
    "layer_forward",
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
    """A batch whose statistics are NaN or infinite; running statistics untouched."""


class NonFiniteStateError(ValueError):
    """A weight, bias or running statistic that is NaN or infinite (or a negative running_var):
    the layer itself is broken, so every output it computed would be NaN."""


# ----------------------------------------------------------------------------- input checks

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_PER_CHANNEL = ("running_mean", "running_var", "weight", "bias")


def _values_checkable(input):
    """Whether checks that read tensor VALUES can run: not while torch.compile traces (a graph
    cannot branch on data) and not on "meta" tensors (they hold no values)."""
    return not torch.compiler.is_compiling() and input.device.type != "meta"


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
    """Raise unless input.dim() is in ranks (None: any rank >= 2). The messages start as
    torch's do ("expected 2D or 3D input (got 4D input)")."""
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
    got = f"(got {input.dim()}D input)"
    if ranks == (4,):
        raise ValueError(
            f"expected 4D input {got}: {layer} expects shape (N, C, H, W), got "
            f"{tuple(input.shape)}. For a single image (C, H, W) add a batch dimension with "
            f"x.unsqueeze(0); for (N, C) or (N, C, L) use BatchNorm1d."
        )
    raise ValueError(
        f"expected 2D or 3D input {got}: {layer} expects shape (N, C) or (N, C, L), "
        f"got {tuple(input.shape)}. For images (N, C, H, W) use BatchNorm2d; to normalize a "
        f"single sample of shape (C,), add a batch dimension with x.unsqueeze(0)."
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


def _check_per_channel(input, tensors):
    """Raise unless each of the (name, tensor) pairs is None or a tensor of shape (C,)."""
    for name, t in tensors:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"{name} must be a tensor of shape (C,) or None, got {checks.describe(t)}. "
                f"Convert it with torch.tensor(...)."
            )
        _check_channels(input, t.numel(), f"{name} has size", layer="batch_norm")
        if t.dim() != 1:
            raise ChannelMismatchError(
                f"{name} must have shape (C,) = ({input.shape[1]},), one value per channel, "
                f"got shape {tuple(t.shape)}. Flatten it with {name}.flatten()."
            )


def _check_spread(input):
    """Raise if batch statistics would be computed from a single value per channel."""
    if input.numel() == input.shape[1]:  # n = N * H * W == 1 (an empty input is handled apart)
        raise ValueError(
            f"Expected more than 1 value per channel when training, "
            f"got input size {input.size()}. "
            f"A batch of one has no spread to normalize by (its variance is 0). "
            f"Use drop_last=True in the DataLoader so the last batch is never a single "
            f"sample, or call model.eval() for single-sample prediction (this uses the "
            f"running statistics, so it needs track_running_stats=True)."
        )


def _check_dtypes(input, tensors):
    """Raise unless every per-channel tensor has one dtype: input's, or float32 for a float16 /
    bfloat16 input (the one mix torch allows: a float32 layer on low-precision data)."""
    present = [(name, t) for name, t in tensors if t is not None]
    for name, t in present:
        if not t.is_floating_point():
            raise DtypeMismatchError(
                f"{name} must hold floating-point numbers, got dtype {t.dtype}. Convert it "
                f"with {name}.float() (or build the layer without an integer dtype)."
            )
    allowed = {input.dtype, _compute_dtype(input.dtype)}
    for name, t in present:
        if t.dtype not in allowed:
            raise DtypeMismatchError(
                f"The input is {input.dtype} but {name} is {t.dtype}. Use one dtype for data "
                f"and layer: convert the data (x.to({t.dtype})) or the layer "
                f"(layer.to({input.dtype})). (A float32 layer also accepts float16 / bfloat16 "
                f"input.)"
            )
    if len({t.dtype for _, t in present}) > 1:  # each allowed, but not all the same
        tensors = ", ".join(f"{n} {t.dtype}" for n, t in present)
        raise DtypeMismatchError(
            f"The layer's tensors mix dtypes ({tensors}) for a {input.dtype} input: torch "
            f"accepts a float32 layer or a {input.dtype} layer, not a mix. Convert the whole "
            f"layer, layer.float() or layer.to({input.dtype})."
        )


def _check_eps(eps):
    """Raise unless eps is a positive finite number (the message starts like torch's)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(
            f"eps must be a small positive number such as 1e-5, got {type(eps).__name__} {eps!r}."
        )
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(
            f"eps must be positive and finite (default 1e-5), got {eps!r}. It is added "
            f"to the variance inside the square root so that a constant channel (variance 0) "
            f"does not divide by zero: eps <= 0 turns such a channel into NaN or inf."
        )


def _channel_list(mask):
    """'0, 3, 7' (at most 8 shown) for the True entries of a (C,) mask."""
    channels = mask.nonzero().flatten().tolist()
    return ", ".join(map(str, channels[:8])) + (", ..." if len(channels) > 8 else "")


def _check_finite_stats(mean, var, input, updates=True):
    """Raise NonFiniteBatchError if a channel's batch mean or variance is NaN or infinite.

    updates: whether the running statistics would have been updated (the message says they
    were left unchanged). Reads values: call it only where _values_checkable(input) (it is
    skipped under torch.compile, see the module docstring)."""
    bad = ~(torch.isfinite(mean) & torch.isfinite(var))
    if not bool(bad.any()):
        return
    shown = _channel_list(bad)
    kept = (
        "Blending them into running_mean/running_var would make those NaN for good (every "
        "later eval-mode output NaN), so they were left unchanged. "
        if updates
        else ""
    )
    if bool(torch.isfinite(input).all()):
        dtype = input.dtype
        raise NonFiniteBatchError(
            f"The batch (input of shape {tuple(input.shape)}) holds values so large (up to "
            f"{input.abs().max().item():.3g}) that the variance of channel(s) {shown} overflows "
            f"{dtype} (largest number {torch.finfo(dtype).max:.3g}): its statistics are not "
            f"finite. {kept}Standardize the data (or look for a layer before this one whose "
            f"outputs blew up: a learning rate too large)."
        )
    raise NonFiniteBatchError(
        f"The batch (input of shape {tuple(input.shape)}) contains NaN or infinite values in "
        f"channel(s) {shown}: its statistics are not finite. {kept}Find where the NaN comes "
        f"from: the data (torch.isnan(X).any()), or a layer before this one that diverged (a "
        f"learning rate too large)."
    )


def _check_finite_state(tensors, eval_var=None):
    """Raise NonFiniteStateError if a (name, tensor) holds NaN or infinity, or if eval_var (the
    running_var used to normalize) is negative. One synchronisation when all is well.

    Reads values, so it is skipped under torch.compile (see the module docstring)."""
    present = [(name, t) for name, t in tensors if t is not None]
    if not present:
        return
    oks = [torch.isfinite(t).all() for _, t in present]
    if eval_var is not None:
        oks.append((eval_var >= 0).all())
    if bool(torch.stack(oks).all()):
        return
    for name, t in present:
        bad = ~torch.isfinite(t.detach())
        if bool(bad.any()):
            raise NonFiniteStateError(
                f"The layer's {name} holds NaN or infinite values in channel(s) "
                f"{_channel_list(bad)}, so every output of those channels would be NaN. It "
                f"was probably written by a training run that diverged (a learning rate too "
                f"large) or loaded from a broken state dict: reset it (reset_parameters() / "
                f"reset_running_stats()) or recalibrate the running statistics."
            )
    raise NonFiniteStateError(
        f"The layer's running_var is negative in channel(s) {_channel_list(eval_var < 0)}: a "
        f"variance cannot be negative, and its square root would be NaN. It was set by hand "
        f"or loaded from a broken state dict: reset_running_stats() or recalibrate it."
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


def _check_arguments(input, per_channel, training, momentum, eps):
    """Every check of batch_norm's arguments that does not read tensor values."""
    _check_tensor(input, "batch_norm")
    _check_rank(input, ranks=None)
    checks.flag(training, "training")
    _check_per_channel(input, per_channel)
    running_mean, running_var = per_channel[0][1], per_channel[1][1]
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
    _check_dtypes(input, per_channel)


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
    nothing. An empty input (N = 0) returns an empty output and changes nothing, as in torch.
    training must be True or False. See the module docstring for the errors and for where
    this departs from torch on purpose.
    """
    per_channel = list(zip(_PER_CHANNEL, (running_mean, running_var, weight, bias)))
    _check_arguments(input, per_channel, training, momentum, eps)
    use_batch_stats = training or running_mean is None
    checkable = _values_checkable(input)
    if checkable:  # a NaN weight or buffer would spoil every output, or stay NaN for good
        _check_finite_state(per_channel, eval_var=None if use_batch_stats else running_var)
    if input.numel() == 0:  # nothing to normalize, nothing to learn (torch does the same)
        return input.clone()

    cdtype = _compute_dtype(input.dtype)
    x = input.to(cdtype)
    if use_batch_stats:
        _check_spread(input)
        mean, var = _batch_stats(x)
        updates = training and running_mean is not None
        if checkable:
            _check_finite_stats(mean, var, input, updates)
        if updates:
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


def _check_factory_dtype(dtype):
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(
            f"dtype must be a floating-point torch dtype such as torch.float32 (or None), got "
            f"{checks.describe(dtype)}: BatchNorm's statistics and parameters are fractions."
        )


def check_settings(eps, momentum, affine, track_running_stats, bias, dtype):
    """Raise a teaching error for a BN layer's settings that torch would take silently: eps
    not positive, momentum outside [0, 1], a truthy string for a flag ('False' is True to
    torch), an integer dtype. Shared by every BN layer of the collection."""
    checks.momentum(momentum)
    _check_eps(eps)
    for name, value in (
        ("affine", affine),
        ("track_running_stats", track_running_stats),
        ("bias", bias),
    ):
        checks.flag(value, name)
    _check_factory_dtype(dtype)


def layer_forward(layer, input):
    """BatchNorm's forward for a layer with nn.BatchNorm's attributes (weight, bias,
    running_mean, running_var, num_batches_tracked, momentum, eps, training,
    track_running_stats, num_features): :func:`batch_norm` with its teaching errors, and the
    running statistics and num_batches_tracked changed only by a call that succeeds.
    ``layer._ranks``: the input ranks accepted (None: any rank >= 2)."""
    name = type(layer).__name__
    _check_input(input, getattr(layer, "_ranks", None), layer.num_features, name)
    checks.flag(layer.training, f"{name}.training (set it with .train() or .eval())")
    checks.flag(layer.track_running_stats, f"{name}.track_running_stats")
    use_batch_stats = layer.training or layer.running_mean is None

    # an empty batch carries no statistics: it is not counted (torch counts it)
    update = layer.training and layer.track_running_stats and input.numel() > 0
    factor = 0.0 if layer.momentum is None else layer.momentum
    if update and layer.momentum is None:  # cumulative average over the batches so far
        factor = 1.0 / (float(layer.num_batches_tracked) + 1.0)

    # in training without tracking, pass no buffers so that nothing is updated
    use_buffers = not layer.training or layer.track_running_stats
    out = batch_norm(
        input,
        layer.running_mean if use_buffers else None,
        layer.running_var if use_buffers else None,
        layer.weight,
        layer.bias,
        training=use_batch_stats,
        momentum=factor,
        eps=layer.eps,
    )
    if update:  # only after success: a failed call leaves every buffer as it was
        layer.num_batches_tracked.add_(1)
    return out


def _check_input(input, ranks, num_features, name):
    """Raise unless input is a floating tensor of an accepted rank with num_features channels."""
    _check_tensor(input, name)
    _check_rank(input, ranks, name)
    _check_channels(input, num_features, f"{name} has num_features =", layer=name)


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
    affine, track_running_stats, bias: True or False (a string such as 'False' is refused).
    """

    _version = 2  # like torch: version 2 added num_batches_tracked (see _load_from_state_dict)
    _ranks = None  # input ranks accepted, set by the subclasses
    _whole_batch = False  # set by recalibrate: variants collect BatchNorm's statistics

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
        check_settings(eps, momentum, affine, track_running_stats, bias, dtype)
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

    def _check_input(self, input):
        _check_input(input, self._ranks, self.num_features, type(self).__name__)

    def forward(self, input):
        """input (N, C, ...) of the ranks the layer accepts -> output of the same shape."""
        return layer_forward(self, input)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ):
        # State dicts saved before version 2 (or without version metadata) may lack
        # num_batches_tracked: like torch's _BatchNorm, keep the layer's own count then (0 for
        # a fresh layer; a new 0 if it lives on the "meta" device) instead of failing.
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats:
            if key not in state_dict:
                own = self.num_batches_tracked
                keep = own is not None and own.device.type != "meta"
                state_dict[key] = own if keep else torch.tensor(0, dtype=torch.long)
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
    _check_foldable(bn, {"running_mean": mean, "running_var": var, "weight": gamma, "bias": beta})
    s = gamma / torch.sqrt(var + bn.eps)
    return s, beta - mean * s


def _check_foldable(bn, tensors):
    """Raise a ValueError unless bn's statistics and parameters (C,) give a finite fold."""
    for name, t in tensors.items():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            raise ValueError(
                f"Cannot fold: bn.{name} holds NaN or infinite values in channel(s) "
                f"{_channel_list(bad)}, so the folded layer would output NaN there. The layer "
                f"was probably trained with a learning rate too large, or loaded from a broken "
                f"state dict; recalibrate or retrain it first."
            )
    denominator = tensors["running_var"] + bn.eps
    if not math.isfinite(bn.eps) or bool((denominator <= 0).any()):
        raise ValueError(
            f"Cannot fold: running_var + eps is {denominator.min().item():g} (not positive) in "
            f"channel(s) {_channel_list(~(denominator > 0))} (eps={bn.eps!r}), so the scale "
            f"weight / sqrt(running_var + eps) would divide by zero or take the root of a "
            f"negative number. Use a positive eps such as 1e-5 (bn.eps = 1e-5)."
        )


def _check_folded_source(W, b, what):
    """Raise a ValueError unless the layer to fold into has finite weights and bias."""
    for name, t in (("weight", W), ("bias", b)):
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            where, _ = checks.position(bad)
            raise ValueError(
                f"Cannot fold: the {what}'s {name} holds NaN or infinite values (the first at "
                f"{name}{where}), so the folded layer would output NaN. Retrain it with a "
                f"smaller learning rate, or reload weights that are finite."
            )


def fold_into_linear(linear, bn):
    """Return a NEW nn.Linear equal to bn(linear(x)) with bn in eval mode.

    linear: weight (C, in), bias (C,) or None.  bn: C features with running statistics;
    its weight/bias may be None (affine=False, or bias=False): they then count as 1 and 0.
    s = weight / sqrt(running_var + eps);  W' = s[:, None] * W;  b' = (b - running_mean) * s + bias
    Neither argument is changed. A ValueError instead of a layer with NaN weights: when a weight,
    bias or running statistic is NaN or infinite, or running_var + eps is not positive.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}.")
    W = linear.weight.detach()
    like = {"dtype": W.dtype, "device": W.device}
    what = f"linear has out_features={linear.out_features}"
    s, shift = _fold_factors(bn, linear.out_features, like, what)
    b = torch.zeros_like(s) if linear.bias is None else linear.bias.detach()
    _check_folded_source(W, b, "linear")

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
    Agrees with torch.nn.utils.fusion.fuse_conv_bn_eval. Neither argument is changed. Raises
    a ValueError, as fold_into_linear does, where the folded layer would hold NaN or infinity.
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
    _check_folded_source(W, b, "conv")

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


def _check_recalibration_batch(x, index, dtype):
    """Raise a teaching error unless batch `index`'s inputs x can be used to recalibrate."""
    if not x.is_floating_point():
        raise TypeError(
            f"Batch {index} of the loader holds {x.dtype} inputs, but a network computes "
            f"with floating-point numbers: convert the data with X.float()."
        )
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"Batch {index} of the loader holds {x.dtype} inputs but the model's "
            f"parameters are {dtype}: convert the data (e.g. X.to({dtype})) or the "
            f"model (model.to({x.dtype}))."
        )
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(
            f"Batch {index} of the loader holds no samples (x of shape {tuple(x.shape)}): it "
            f"has no statistics, but it would still count as a batch in the average. Remove "
            f"empty batches from the loader."
        )
    checks.finite(
        x,
        f"batch {index} of the loader, x",
        "Recalibrating on it would fill the running statistics with NaN: remove or fill "
        "those samples first.",
    )


def _check_recalibrated(layers, named):
    """After the pass: raise a ValueError if a layer's running statistics are not finite
    (NaN or infinity made inside the model, e.g. by weights that are NaN)."""
    for m in layers:
        for key in ("running_mean", "running_var"):
            bad = ~torch.isfinite(getattr(m, key))
            if bool(bad.any()):
                raise ValueError(
                    f"After the pass, {named.get(m, type(m).__name__)}.{key} would hold NaN "
                    f"or infinity in channel(s) {_channel_list(bad)}, although the data is "
                    f"finite: the layers in front of it output NaN or infinity. Either they have "
                    f"weights that diverged (check [n for n, p in model.named_parameters() if "
                    f"not p.isfinite().all()]) or the data are so large that their statistics "
                    f"overflow (standardize them first)."
                )


def _looks_like_X_y(loader):
    """True for (X, y) passed where a loader of batches belongs."""
    return (
        isinstance(loader, (tuple, list))
        and len(loader) == 2
        and all(isinstance(t, torch.Tensor) and t.dim() > 0 for t in loader)
        and loader[0].shape[0] == loader[1].shape[0]
        and loader[0].shape[1:] != loader[1].shape[1:]
    )


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

    GhostBatchNorm1d and BatchRenorm1d layers collect BatchNorm's statistics of each whole
    batch (not of chunks, and without renorm's correction): their eval mode is BatchNorm's.
    Training flags and momentum are restored exactly. If any batch fails (a wrong shape,
    dtype, a batch of one, an empty batch, NaN or infinity in the data), or the statistics
    come out NaN or infinite (a model whose weights diverged), the model is left exactly as it
    was before the call (running statistics included) and the error says so. Returns model.
    """
    _check_model(model, "recalibrate")
    checks.loader(
        loader,
        "recalibrate's loader",
        "Pass the training loader, e.g. recalibrate(model, train_loader) with train_loader from "
        "make_loaders(...).",
    )
    if _looks_like_X_y(loader):
        raise TypeError(
            "recalibrate's loader looks like (X, y), two tensors with different shapes; it "
            "would be read as two batches, X and then y. Pass a list of batches, [(X, y)] "
            "(one batch holding everything), or a loader such as train_loader."
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
            m._whole_batch = True  # ghost and renorm: BatchNorm's whole-batch statistics
        with torch.no_grad():
            for index, batch in enumerate(loader):
                x = _batch_input(batch, index)
                _check_recalibration_batch(x, index, dtype)
                model(x.to(device))
        if index < 0:
            raise ValueError("The loader is empty: recalibrate needs at least one batch.")
        _check_recalibrated(layers, {m: n for n, m in model.named_modules()})
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
            vars(m).pop("_whole_batch", None)
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
    if not layers:
        raise ValueError(
            f"Nothing to {what}: the model has no BatchNorm layer (nn.BatchNorm1d/2d or "
            f"bnteach's). Did you pass the model without BN (e.g. SimpleMLP)?"
        )
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
    A model without BatchNorm layers raises a ValueError (as recalibrate does). Returns model.
    """
    return _apply_atomically(model, "freeze", _freeze_layer)


def unfreeze(model):
    """Undo freeze(model): BN layers follow train()/eval() again and weight/bias need grad.

    The BN layers stay in eval mode until the next model.train(). All layers or none. A
    model without BatchNorm layers raises a ValueError. Returns model.
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
        if not self.training or self._whole_batch:
            return super().forward(input)  # eval mode (and recalibration): BatchNorm's
        self._check_input(input)
        name = type(self).__name__
        v = checks.whole_number(
            self.virtual_batch_size, "virtual_batch_size (rows per device)", minimum=2, example=16
        )
        if input.shape[0] == 0:
            return super().forward(input)  # an empty batch: an empty output, nothing counted
        chunks = input.split(v)
        if chunks[-1].numel() == chunks[-1].shape[1]:  # every chunk checked before any update
            raise ValueError(
                f"Expected more than 1 value per channel when training: {name} with "
                f"virtual_batch_size={v} cuts a batch of {input.shape[0]} rows into chunks of "
                f"{v}, and the last chunk holds 1 row, whose variance is 0. Use a batch size "
                f"that leaves no chunk of one row (a multiple of {v}, or drop_last=True)."
            )
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
    value = checks.finite_number(value, name, example=example)  # a number, finite
    if value < low:
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
        self.r_max, self.d_max = r_max, d_max
        super().__init__(num_features, eps, momentum, affine, True, device, dtype)
        self._check_settings()
        self.r_max, self.d_max = float(r_max), float(d_max)

    def forward(self, input):
        """input (N, C) or (N, C, L) -> the same shape."""
        if not self.training or self._whole_batch:
            return super().forward(input)  # eval mode (and recalibration): BatchNorm's
        self._check_settings()
        self._check_input(input)
        state = [(k, getattr(self, k)) for k in _PER_CHANNEL]
        _check_dtypes(input, state)
        if input.numel() == 0:  # no statistics: nothing normalized, nothing counted
            return input.clone()
        _check_spread(input)
        checkable = _values_checkable(input)  # not while compiling (see the module docstring)
        if checkable:  # sigma = sqrt(running_var + eps) must be a number
            _check_finite_state(state, eval_var=self.running_var)
        x = input.to(_compute_dtype(input.dtype))
        mean_b, var_b = _batch_stats(x)
        if checkable:
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
            # sigma >= sqrt(eps), so this is >= 0 but for rounding (a constant channel)
            self.running_var.copy_((new_sigma * new_sigma - self.eps).clamp_min(0))
            self.num_batches_tracked.add_(1)
        return out.to(input.dtype)

    def _check_settings(self):
        """The settings a training step uses, checked again: they may be set after __init__."""
        checks.flag(self.training, "BatchRenorm1d.training (set it with .train() or .eval())")
        _check_eps(self.eps)
        if self.momentum is None:
            raise ValueError(
                "BatchRenorm1d needs a float momentum such as 0.1: its running statistics are "
                "moving averages (momentum=None, a cumulative average, is BatchNorm's)."
            )
        checks.momentum(self.momentum)
        _check_limit(self.r_max, "r_max", 1.0, 3.0)
        _check_limit(self.d_max, "d_max", 0.0, 5.0)

    def extra_repr(self):
        return f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}"
