"""Self-checks for the exercises of notebook 07 (BatchNorm in convolutional networks).

- 07.1 ``spatial_bn(x, weight, bias, eps)``: BatchNorm2d's training-mode forward pass written
  by reshaping (N, C, H, W) to the 1d case (N * H * W, C) and back.
- 07.2 ``axes`` (which dims of (N, C, H, W) each normalization averages over) and ``choice``
  (the normalization for a batch of 2 images).
- 07.3 ``fold_conv_bn(conv, bn)``: an eval-mode BatchNorm2d folded into the Conv2d before it.

Each check returns a :class:`~bnteach.exercises.kit.Feedback` (see :mod:`bnteach.exercises.kit`)
and records it in notebook 07's own :func:`progress` table.
"""

import torch
import torch.nn.functional as F
from torch import nn

from bnteach.exercises import kit
from bnteach.exercises.kit import NotAttempted, Wrong

__all__ = ["EXERCISES", "check_spatial_bn", "check_norm_axes", "check_fold_conv", "progress"]

NB = kit.notebook("07")


def _matches(out, ref, tol=1e-6):
    return out.shape == ref.shape and (out - ref).abs().max().item() <= tol * (
        1 + ref.abs().max().item()
    )


# ============================================================================ 07.1 spatial BN

_NO_PERMUTE = (
    "Your reshape mixes channels: x.reshape(-1, C) on an (N, C, H, W) tensor puts values of "
    "different channels in one column, because C is not the last dim. Move the channels last "
    "first: x.permute(0, 2, 3, 1).reshape(-1, C), and undo both at the end."
)


def _no_permute(x, weight, bias, eps):
    """BN's computation on x.reshape(-1, C): the reshape that mixes channels."""
    rows = x.reshape(-1, x.shape[1])
    y = kit.standardize(rows, *kit.moments(rows, (0,)), eps).reshape(x.shape)
    return y * kit.per_channel(weight, x) + kit.per_channel(bias, x)


def _spatial_inputs():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 4, 5, 2, generator=g, dtype=torch.float64) * 2 + 1
    x[:, 2] = x[:, 2] * 1e-3 + 0.5  # a channel with a tiny spread: eps matters
    weight = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    return x, weight, bias, 1e-5


@NB.check("07.1", "spatial BN by reshaping")
def check_spatial_bn(spatial_bn):
    """Exercise 07.1. ``spatial_bn(x, weight, bias, eps)``: x (N, C, H, W), weight and bias
    (C,); return BatchNorm2d's training-mode output, computed by reshaping to (N * H * W, C),
    normalizing each column with its batch mean and biased variance, and reshaping back."""
    kit.function(spatial_bn, "spatial_bn")
    x, weight, bias, eps = _spatial_inputs()
    expected = F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    x_in = x.clone()
    out = kit.call(spatial_bn, x_in, weight.clone(), bias.clone(), eps, name="spatial_bn")
    if not torch.equal(x_in, x):
        raise Wrong(
            "`spatial_bn` changed its input x in place: compute a new tensor instead (no "
            "`-=`, `/=` or `.sub_()` on x)."
        )
    out = kit.tensor(
        out,
        "The output of `spatial_bn`",
        expected.shape,
        "is None: return the output tensor",
        "Reshape the result back to (N, C, H, W) (undo the permute with the inverse permute).",
    )
    if out.dtype != expected.dtype:
        raise Wrong(
            f"`spatial_bn` returns dtype {out.dtype} for a {expected.dtype} input: keep the "
            f"input's dtype (no .float() / .double() on the way)."
        )
    if not _matches(out, expected):
        kit.name_mistake(out, [(_no_permute(x, weight, bias, eps), _NO_PERMUTE)], _matches)
        raise Wrong(
            kit.bn_mistake(out, x, weight, bias, eps)
            or f"Your output differs from nn.BatchNorm2d's (training mode) by up to "
            f"{(out - expected).abs().max().item():.3g}."
        )
    # gradients must flow through the batch statistics, as BN's do
    xg = x.clone().requires_grad_()
    out_g = kit.call(spatial_bn, xg, weight, bias, eps, name="spatial_bn")
    if not out_g.requires_grad:
        raise Wrong(
            "No gradient flows through your output (torch.no_grad() or .detach() inside?): "
            "BN is trained by backpropagating through it."
        )
    w = torch.randn(expected.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    (grad,) = torch.autograd.grad((out_g * w).sum(), xg)
    xr = x.clone().requires_grad_()
    (ref,) = torch.autograd.grad(
        (F.batch_norm(xr, None, None, weight, bias, training=True, eps=eps) * w).sum(), xr
    )
    if not _matches(grad, ref):
        raise Wrong(
            "Your output is right but its gradient is not: the mean or variance was detached "
            "(.detach(), .item() or a no_grad block). Gradients flow through the batch "
            "statistics in BN."
        )
    return (
        "Your reshape-to-1d BatchNorm matches nn.BatchNorm2d in training mode, output and "
        "input gradient, on a (3, 4, 5, 2) batch with one nearly constant channel."
    )


# ============================================================================ 07.2 axes, choice

AXES = {"batch": (0, 2, 3), "layer": (1, 2, 3), "instance": (2, 3)}
_AXIS_NAMES = {v: k for k, v in AXES.items()}
_AXIS_NAMES[(0,)] = "BatchNorm1d on flattened images (per pixel)"
_AXIS_NAMES[(0, 1, 2, 3)] = "one mean for the whole tensor"
_ONE_MEAN_PER = {
    "batch": "channel (over the images and all positions)",
    "layer": "image (over its channels and positions)",
    "instance": "image and channel (over the positions)",
}
CHOICES = ("batch", "layer", "group", "instance")
_CHOSEN = {
    "group": "GroupNorm, which Wu & He (2018) proposed for small batches",
    "layer": "LayerNorm (GroupNorm with one group)",
    "instance": "InstanceNorm (GroupNorm with one channel per group; it removes each "
    "image's per-channel contrast, which can hurt classification)",
}


def _as_dims(value, name):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    ok = isinstance(value, (tuple, list)) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in value
    )
    if not ok:
        raise Wrong(f"`axes[{name!r}]` should be a tuple of dims such as (0, 2), got {value!r}.")
    dims = tuple(sorted(d % 4 if -4 <= d < 4 else d for d in value))
    if any(not 0 <= d < 4 for d in dims) or len(set(dims)) != len(dims):
        raise Wrong(
            f"`axes[{name!r}]` = {value!r} is not a set of distinct dims of an (N, C, H, W) "
            f"tensor (0 to 3)."
        )
    return dims


def _check_axes(axes):
    if not isinstance(axes, dict):
        raise Wrong(f"`axes` should be a dict like {{'batch': (0, 2, 3), ...}}, got {axes!r}.")
    lacks = [repr(k) for k in AXES if k not in axes]
    extra = [repr(k) for k in axes if k not in AXES]
    if lacks or extra:
        raise Wrong(
            f"`axes` should have exactly the keys {', '.join(map(repr, AXES))}"
            + (f"; it lacks {', '.join(lacks)}" if lacks else "")
            + (f"; it has unexpected {', '.join(extra)}" if extra else "")
            + "."
        )
    blank = [k for k in AXES if axes[k] is None]
    if blank:
        raise NotAttempted(
            f"`axes[{blank[0]!r}]` is still None: fill in a tuple of dims for every key."
        )
    for name, truth in AXES.items():
        dims = _as_dims(axes[name], name)
        if dims != truth:
            other = _AXIS_NAMES.get(dims)
            what = f" Those are the axes of {other}." if other and other != name else ""
            raise Wrong(
                f"`axes[{name!r}]` = {dims} is not right.{what} Ask: which values share one "
                f"mean? For {name}norm, one mean is computed per {_ONE_MEAN_PER[name]}."
            )


@NB.check("07.2", "which axes, and which norm for batch 2")
def check_norm_axes(axes, choice):
    """Exercise 07.2. ``axes``: a dict {"batch": dims, "layer": dims, "instance": dims}, the
    dims of an (N, C, H, W) tensor each normalization averages over. ``choice``: one of
    "batch", "layer", "group", "instance", the normalization to use with batches of 2 images."""
    kit.missing({"axes": axes, "choice": choice}, "Fill in both answers.")
    _check_axes(axes)
    if not isinstance(choice, str) or choice not in CHOICES:
        raise Wrong(f"`choice` should be one of {', '.join(map(repr, CHOICES))}, got {choice!r}.")
    if choice == "batch":
        raise Wrong(
            "Your axes are right, but BatchNorm is the one choice that depends on the batch: "
            "with 2 images, each channel's mean and variance come from 2 * H * W values of "
            "just 2 images, they are noisy in training, and eval mode then uses running "
            "averages of those noisy statistics. Pick one that normalizes each image on its "
            "own (Wu & He proposed GroupNorm for exactly this)."
        )
    return (
        f"The axes are right: BN averages over {AXES['batch']}, LayerNorm over "
        f"{AXES['layer']}, InstanceNorm over {AXES['instance']}. You picked {_CHOSEN[choice]}: "
        f"it normalizes each image on its own, so it behaves the same at batch 2 as at batch "
        f"64, and the same in train and eval mode."
    )


# ============================================================================ 07.3 fold conv+bn


def _trained_pair(bias, seed):
    """An eval-mode (Conv2d 4 -> 4, BatchNorm2d(4)) pair with non-trivial statistics; one
    channel with a tiny running variance (eps matters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        conv = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(4, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(4, generator=g))
        bn.train()
        for _ in range(10):
            bn(conv(torch.randn(8, 4, 5, 5, generator=g) * 2 + 0.5))
        bn.running_var[1] = 1e-6
    return conv.eval(), bn.eval()


def _folded_conv(fold_conv_bn, conv, bn):
    """The learner's folded conv for the pair, which must be left as it was."""
    biasless = None if conv.bias is not None else "the conv has"
    folded = kit.folded(fold_conv_bn, [conv, bn], "fold_conv_bn", nn.Conv2d, biasless)
    if folded.bias is None:
        raise Wrong(
            "The folded conv has no bias: even when conv has none, the fold needs one, "
            "b' = (b - running_mean) * s + bn.bias."
        )
    return folded


def _check_folded_output(folded, conv, bn, x):
    with torch.no_grad():
        expected = bn(conv(x))
        try:
            got = folded(x)
        except Exception as err:
            raise Wrong(f"Running the folded conv raised {type(err).__name__}: {err}") from None
        if got.shape != expected.shape:
            raise Wrong(
                f"The folded conv gives outputs of shape {tuple(got.shape)}, the pair gives "
                f"{tuple(expected.shape)}: keep the conv's kernel size, stride and padding."
            )
        if _matches(got, expected, 1e-4):
            return
        if not torch.isfinite(got).all():
            raise Wrong("The folded conv outputs NaN or inf: check the division by the std.")
        mistakes = kit.fold_mistakes(
            lambda f: kit.fold_variant(conv, bn, f)(x), "conv", "channel", conv.bias is not None
        )
        kit.name_mistake(got, mistakes, lambda a, b: _matches(a, b, 1e-4))
        train_out = F.batch_norm(conv(x), None, None, bn.weight, bn.bias, True)
    if _matches(got, train_out, 1e-3):
        raise Wrong(
            "Your folded conv reproduces the pair in training mode (batch statistics): a "
            "fold uses the running statistics."
        )
    raise Wrong(
        f"The folded conv's outputs differ from bn(conv(x)) in eval mode by up to "
        f"{(got - expected).abs().max().item():.3g}."
    )


@NB.check("07.3", "folding conv + BN")
def check_fold_conv(fold_conv_bn):
    """Exercise 07.3. ``fold_conv_bn(conv, bn)``: return a NEW nn.Conv2d that computes
    bn(conv(x)) with bn in eval mode (running statistics), leaving conv and bn unchanged."""
    kit.function(fold_conv_bn, "fold_conv_bn")
    x = torch.randn(6, 4, 5, 5, generator=torch.Generator().manual_seed(3)) * 2 + 0.5
    for bias in (True, False):
        conv, bn = _trained_pair(bias, seed=4)
        _check_folded_output(_folded_conv(fold_conv_bn, conv, bn), conv, bn, x)
    return (
        "Your folded conv (with and without a conv bias) matches bn(conv(x)) in eval mode, "
        "and conv and bn were left unchanged."
    )


EXERCISES = NB.titles
progress, reset = NB.progress, NB.reset
