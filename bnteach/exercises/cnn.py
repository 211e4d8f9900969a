"""Self-checks for the exercises of notebook 07 (BatchNorm in convolutional networks).

- 07.1 ``spatial_bn(x, weight, bias, eps)``: BatchNorm2d's training-mode forward pass written
  by reshaping (N, C, H, W) to the 1d case (N * H * W, C) and back.
- 07.2 ``axes`` (which dims of (N, C, H, W) each normalization averages over) and ``choice``
  (the normalization for a batch of 2 images).
- 07.3 ``fold_conv_bn(conv, bn)``: an eval-mode BatchNorm2d folded into the Conv2d before it.

Each check returns a :class:`~bnteach.exercises.feedback.Feedback` as notebook 05's checks do:
"correct" restating what was verified, "wrong" naming the mistake found (a wrong output is
matched against the usual wrong versions), or "not attempted". A learner's exception, NaN,
wrong shape, dtype or ``None`` is feedback; "internal error" is reserved for a bug of the
check. These exercises have their own :func:`progress` table (notebook 05's is unchanged).
"""

import torch
import torch.nn.functional as F
from torch import nn

from bnteach.exercises import feedback
from bnteach.exercises.feedback import (
    Progress,
    _call,
    _missing,
    _NotAttempted,
    _Wrong,
)

__all__ = ["EXERCISES", "check_spatial_bn", "check_norm_axes", "check_fold_conv", "progress"]

EXERCISES = {
    "07.1": "Exercise 07.1 · spatial BN by reshaping",
    "07.2": "Exercise 07.2 · which axes, and which norm for batch 2",
    "07.3": "Exercise 07.3 · folding conv + BN",
}
_RESULTS = {}


def _check(exercise):
    """``feedback._check`` with this notebook's titles and results."""
    return feedback._check(exercise, titles=EXERCISES, results=_RESULTS)


def progress():
    """A :class:`Progress` table of the latest feedback of every exercise of notebook 07."""
    return Progress(_RESULTS, EXERCISES)


def reset():
    """Forget the recorded feedback of notebook 07's exercises."""
    _RESULTS.clear()


# ============================================================================ helpers


def _tensor_result(out, expected, name):
    """Raise _Wrong/_NotAttempted unless out is a tensor of expected's shape/dtype, finite."""
    if out is None:
        raise _NotAttempted(f"`{name}` returns None: return the output tensor.")
    if not isinstance(out, torch.Tensor):
        raise _Wrong(f"`{name}` should return a torch.Tensor, got {type(out).__name__}.")
    if out.shape != expected.shape:
        raise _Wrong(
            f"`{name}` returns shape {tuple(out.shape)}, but the input had shape "
            f"{tuple(expected.shape)}: reshape the result back to (N, C, H, W) (undo the "
            f"permute with the inverse permute)."
        )
    if out.dtype != expected.dtype:
        raise _Wrong(
            f"`{name}` returns dtype {out.dtype} for a {expected.dtype} input: keep the input's "
            f"dtype (no .float() / .double() on the way)."
        )
    if not torch.isfinite(out).all():
        raise _Wrong(
            f"`{name}` returns NaN or inf values for a finite input (no channel of the test "
            f"input is constant): check for a division by zero or a missing eps."
        )


def _matches(out, ref, tol=1e-6):
    return out.shape == ref.shape and (out - ref).abs().max().item() <= tol * (
        1 + ref.abs().max().item()
    )


def _chan(t):
    return t.reshape(1, -1, 1, 1)


def _norm(x, dims, eps, unbiased=False, eps_mode="inside"):
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=unbiased)
    if eps_mode == "inside":
        return (x - mean) / torch.sqrt(var + eps)
    if eps_mode == "outside":
        return (x - mean) / (torch.sqrt(var) + eps)
    return (x - mean) / torch.sqrt(var)


# ============================================================================ 07.1 spatial BN

_SPATIAL_FAULTS = [
    (
        "no permute",
        "Your reshape mixes channels: x.reshape(-1, C) on an (N, C, H, W) tensor puts values "
        "of different channels in one column, because C is not the last dim. Move the channels "
        "last first: x.permute(0, 2, 3, 1).reshape(-1, C), and undo both at the end.",
    ),
    (
        "per pixel",
        "Your statistics are per channel AND per pixel (over N only): that is BatchNorm1d on "
        "x.reshape(N, C * H * W). BatchNorm2d shares one mean and variance per channel over N, "
        "H and W: the rows of the reshaped (N * H * W, C) tensor.",
    ),
    (
        "per image",
        "Your statistics are per image and channel (over H and W): that is InstanceNorm. "
        "BatchNorm2d averages over the batch too: over N, H and W.",
    ),
    (
        "per sample",
        "Your statistics are per image (over C, H and W): that is LayerNorm. BatchNorm2d "
        "computes one mean and variance per channel, over N, H and W.",
    ),
    (
        "unbiased",
        "You normalized with the unbiased variance (divide by n - 1, torch.var's default). In "
        "training mode BN divides by n = N * H * W (unbiased=False).",
    ),
    ("eps outside", "`eps` is outside the square root: divide by sqrt(var + eps)."),
    ("eps none", "`eps` is missing: divide by sqrt(var + eps)."),
    ("no affine", "The output lacks the learned scale and shift: `* weight + bias` per channel."),
    ("no weight", "The output lacks the scale: multiply by `weight` (per channel)."),
    ("no bias", "The output lacks the shift: add `bias` (per channel)."),
]


def _spatial_candidate(fault, x, weight, bias, eps):
    N, C, H, W = x.shape
    if fault == "no permute":
        flat = x.reshape(-1, C)
        y = _norm(flat, (0,), eps).reshape(N, C, H, W)
    elif fault == "per pixel":
        y = _norm(x, (0,), eps)
    elif fault == "per image":
        y = _norm(x, (2, 3), eps)
    elif fault == "per sample":
        y = _norm(x, (1, 2, 3), eps)
    elif fault == "unbiased":
        y = _norm(x, (0, 2, 3), eps, unbiased=True)
    elif fault in ("eps outside", "eps none"):
        y = _norm(x, (0, 2, 3), eps, eps_mode=fault.split()[1])
    else:
        y = _norm(x, (0, 2, 3), eps)
    if fault in ("no affine", "no bias"):
        return y * (1 if fault == "no affine" else _chan(weight))
    if fault == "no weight":
        return y + _chan(bias)
    return y * _chan(weight) + _chan(bias)


def _spatial_inputs():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 4, 5, 2, generator=g, dtype=torch.float64) * 2 + 1
    x[:, 2] = x[:, 2] * 1e-3 + 0.5  # a channel with a tiny spread: eps matters
    weight = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    return x, weight, bias, 1e-5


@_check("07.1")
def check_spatial_bn(spatial_bn):
    """Exercise 07.1. ``spatial_bn(x, weight, bias, eps)``: x (N, C, H, W), weight and bias
    (C,); return BatchNorm2d's training-mode output, computed by reshaping to (N * H * W, C),
    normalizing each column with its batch mean and biased variance, and reshaping back."""
    _missing({"spatial_bn": spatial_bn}, "Write the function.")
    if not callable(spatial_bn):
        raise _Wrong(f"`spatial_bn` should be a function, got {type(spatial_bn).__name__}.")
    x, weight, bias, eps = _spatial_inputs()
    expected = F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    x_in = x.clone()
    out = _call(spatial_bn, x_in, weight.clone(), bias.clone(), eps, name="spatial_bn")
    if not torch.equal(x_in, x):
        raise _Wrong(
            "`spatial_bn` changed its input x in place: compute a new tensor instead (no "
            "`-=`, `/=` or `.sub_()` on x)."
        )
    _tensor_result(out, expected, "spatial_bn")
    if not _matches(out, expected):
        for fault, message in _SPATIAL_FAULTS:
            if _matches(out, _spatial_candidate(fault, x, weight, bias, eps)):
                raise _Wrong(message)
        raise _Wrong(
            f"Your output differs from nn.BatchNorm2d's (training mode) by up to "
            f"{(out - expected).abs().max().item():.3g}."
        )
    # gradients must flow through the batch statistics, as BN's do (facts item 14)
    xg = x.clone().requires_grad_()
    out_g = _call(spatial_bn, xg, weight, bias, eps, name="spatial_bn")
    if not out_g.requires_grad:
        raise _Wrong(
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
        raise _Wrong(
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
CHOICES = ("batch", "layer", "group", "instance")


def _as_dims(value, name):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    ok = isinstance(value, (tuple, list)) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in value
    )
    if not ok:
        raise _Wrong(f"`axes[{name!r}]` should be a tuple of dims such as (0, 2), got {value!r}.")
    dims = tuple(sorted(d % 4 if -4 <= d < 4 else d for d in value))
    if any(not 0 <= d < 4 for d in dims) or len(set(dims)) != len(dims):
        raise _Wrong(
            f"`axes[{name!r}]` = {value!r} is not a set of distinct dims of an (N, C, H, W) "
            f"tensor (0 to 3)."
        )
    return dims


@_check("07.2")
def check_norm_axes(axes, choice):
    """Exercise 07.2. ``axes``: a dict {"batch": dims, "layer": dims, "instance": dims}, the
    dims of an (N, C, H, W) tensor each normalization averages over. ``choice``: one of
    "batch", "layer", "group", "instance", the normalization to use with batches of 2 images."""
    _missing({"axes": axes, "choice": choice}, "Fill in both answers.")
    if not isinstance(axes, dict):
        raise _Wrong(f"`axes` should be a dict like {{'batch': (0, 2, 3), ...}}, got {axes!r}.")
    missing = [k for k in AXES if k not in axes]
    extra = [k for k in axes if k not in AXES]
    if missing or extra:
        raise _Wrong(
            f"`axes` should have exactly the keys {', '.join(map(repr, AXES))}"
            + (f"; it lacks {', '.join(map(repr, missing))}" if missing else "")
            + (f"; it has unexpected {', '.join(map(repr, extra))}" if extra else "")
            + "."
        )
    blank = [k for k in AXES if axes[k] is None]
    if blank:
        raise _NotAttempted(
            f"`axes[{blank[0]!r}]` is still None: fill in a tuple of dims for every key."
        )
    for name, truth in AXES.items():
        dims = _as_dims(axes[name], name)
        if dims != truth:
            other = _AXIS_NAMES.get(dims)
            what = f" Those are the axes of {other}." if other and other != name else ""
            raise _Wrong(
                f"`axes[{name!r}]` = {dims} is not right.{what} Ask: which values share one "
                f"mean? For {name}norm, one mean is computed per "
                + {
                    "batch": "channel (over the images and all positions)",
                    "layer": "image (over its channels and positions)",
                    "instance": "image and channel (over the positions)",
                }[name]
                + "."
            )
    if not isinstance(choice, str) or choice not in CHOICES:
        raise _Wrong(f"`choice` should be one of {', '.join(map(repr, CHOICES))}, got {choice!r}.")
    if choice == "batch":
        raise _Wrong(
            "Your axes are right, but BatchNorm is the one choice that depends on the batch: "
            "with 2 images, each channel's mean and variance come from 2 * H * W values of "
            "just 2 images, they are noisy in training, and eval mode then uses running "
            "averages of those noisy statistics. Pick one that normalizes each image on its "
            "own (Wu & He proposed GroupNorm for exactly this)."
        )
    note = {
        "group": "GroupNorm, which Wu & He (2018) proposed for small batches",
        "layer": "LayerNorm (GroupNorm with one group)",
        "instance": "InstanceNorm (GroupNorm with one channel per group; it removes each "
        "image's per-channel contrast, which can hurt classification)",
    }[choice]
    return (
        f"The axes are right: BN averages over {AXES['batch']}, LayerNorm over "
        f"{AXES['layer']}, InstanceNorm over {AXES['instance']}. You picked {note}: it "
        f"normalizes each image on its own, so it behaves the same at batch 2 as at batch "
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


def _fold_variant(conv, bn, fault=None):
    W = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else torch.zeros(W.shape[0])
    mean, var = bn.running_mean, bn.running_var
    denom = {None: torch.sqrt(var + bn.eps), "eps none": torch.sqrt(var), "var": var + bn.eps}
    s = bn.weight.detach() / denom.get(fault, denom[None])
    scale = s.reshape(1, -1, 1, 1) if fault == "in axis" else s.reshape(-1, 1, 1, 1)
    out = nn.Conv2d(4, 4, 3, padding=1)
    with torch.no_grad():
        out.weight.copy_(W * scale)
        beta = 0 if fault == "no beta" else bn.bias.detach()
        bb = 0 if fault == "no conv bias" else b
        m = 0 if fault == "no mean" else mean
        out.bias.copy_((bb - m) * s + beta)
    return out


_CONV_FAULTS = [
    (
        "eps none",
        "Your fold leaves out eps: s = weight / sqrt(running_var + eps). The check "
        "has a channel with a tiny running variance, where it matters.",
    ),
    ("var", "Your fold divides by running_var + eps instead of its square root."),
    (
        "in axis",
        "Your fold scales the conv's INPUT channels (weight dim 1): BN scales each "
        "OUTPUT channel c, i.e. W[c] (dim 0): W * s.reshape(-1, 1, 1, 1).",
    ),
    ("no beta", "Your fold drops BN's shift (bn.bias): b' = (b - running_mean) * s + bn.bias."),
    ("no conv bias", "Your fold drops the conv's own bias: b' = (b - running_mean) * s + bn.bias."),
    (
        "no mean",
        "Your fold forgets to subtract running_mean: b' = (b - running_mean) * s + bn.bias.",
    ),
]


@_check("07.3")
def check_fold_conv(fold_conv_bn):
    """Exercise 07.3. ``fold_conv_bn(conv, bn)``: return a NEW nn.Conv2d that computes
    bn(conv(x)) with bn in eval mode (running statistics), leaving conv and bn unchanged."""
    _missing({"fold_conv_bn": fold_conv_bn}, "Write the function.")
    if not callable(fold_conv_bn):
        raise _Wrong(f"`fold_conv_bn` should be a function, got {type(fold_conv_bn).__name__}.")
    x = torch.randn(6, 4, 5, 5, generator=torch.Generator().manual_seed(3)) * 2 + 0.5
    for bias in (True, False):
        conv, bn = _trained_pair(bias, seed=4)
        before = {
            **{f"conv.{k}": v.clone() for k, v in conv.state_dict().items()},
            **{f"bn.{k}": v.clone() for k, v in bn.state_dict().items()},
        }
        with torch.no_grad():
            expected = bn(conv(x))
        try:
            folded = _call(fold_conv_bn, conv, bn, name="fold_conv_bn")
        except _Wrong as err:
            if not bias:
                raise _Wrong(
                    f"Your fold fails for a conv without bias (bias=False, the usual choice "
                    f"before BN): treat a missing bias as 0. ({err})"
                ) from None
            raise
        if folded is None:
            raise _NotAttempted("`fold_conv_bn` returns None: return the new Conv2d.")
        if not isinstance(folded, nn.Conv2d):
            raise _Wrong(
                f"`fold_conv_bn` should return an nn.Conv2d (one layer, no BN), got "
                f"{type(folded).__name__}."
            )
        after = {
            **{f"conv.{k}": v for k, v in conv.state_dict().items()},
            **{f"bn.{k}": v for k, v in bn.state_dict().items()},
        }
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        if any(k.startswith("bn.") for k in changed):
            raise _Wrong(
                "Your function changed bn's running statistics or parameters (did it run bn in "
                "training mode?). Folding reads them as they are."
            )
        if changed:
            raise _Wrong(
                "Your function changed the original conv's weights in place: build a new "
                "nn.Conv2d (or work on copy.deepcopy(conv)) so the original stays as it was."
            )
        if folded.bias is None:
            raise _Wrong(
                "The folded conv has no bias: even when conv has none, the fold needs one, "
                "b' = (b - running_mean) * s + bn.bias."
            )
        try:
            with torch.no_grad():
                got = folded(x)
        except Exception as err:
            raise _Wrong(f"Running the folded conv raised {type(err).__name__}: {err}") from None
        if got.shape != expected.shape:
            raise _Wrong(
                f"The folded conv gives outputs of shape {tuple(got.shape)}, the pair gives "
                f"{tuple(expected.shape)}: keep the conv's kernel size, stride and padding."
            )
        if _matches(got, expected, 1e-4):
            continue
        if not torch.isfinite(got).all():
            raise _Wrong("The folded conv outputs NaN or inf: check the division by the std.")
        for fault, message in _CONV_FAULTS:
            if fault == "no conv bias" and not bias:
                continue
            with torch.no_grad():
                cand = _fold_variant(conv, bn, fault)(x)
            if _matches(got, cand, 1e-4):
                raise _Wrong(message)
        with torch.no_grad():
            train_out = F.batch_norm(conv(x), None, None, bn.weight, bn.bias, True)
        if _matches(got, train_out, 1e-3):
            raise _Wrong(
                "Your folded conv reproduces the pair in training mode (batch statistics): a "
                "fold uses the running statistics."
            )
        raise _Wrong(
            f"The folded conv's outputs differ from bn(conv(x)) in eval mode by up to "
            f"{(got - expected).abs().max().item():.3g}."
        )
    return (
        "Your folded conv (with and without a conv bias) matches bn(conv(x)) in eval mode, "
        "and conv and bn were left unchanged."
    )
