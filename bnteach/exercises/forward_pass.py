"""Checks of normalization functions the learner writes: the BN forward pass (7a: output,
gradients, running statistics, eval mode, (N, C, L) input) and the mean-only and
variance-only variants (7b: the functions, then the learner's training losses, tied to a re-run
of the first of ``seeds(3)`` with the learner's own functions). A wrong output is matched against
the usual wrong versions (unbiased variance, misplaced eps, wrong axes, ...) to name the
mistake."""

import math

import torch
from torch import nn

from bnteach.data import load_data, make_loaders
from bnteach.exercises.feedback import (
    _accepts,
    _call,
    _check,
    _finite,
    _missing,
    _NotAttempted,
    _number,
    _same,
    _tensor,
    _Wrong,
)
from bnteach.models import MLP
from bnteach.stats import seeds
from bnteach.training import train_model

# ============================================================================ 7a BN forward


def _input_seed(k):
    """The k-th seed of the check's own test inputs: ``offset + k`` (``bnteach.stats.seeds``)."""
    return seeds(1, start=k)[0]


def _chan(t, x):
    """A per-channel tensor (C,) shaped to broadcast with x: (1, C) or (1, C, 1)."""
    return t.reshape((1, -1) + (1,) * (x.dim() - 2))


def _normalize(x, mean, var, eps, eps_mode="inside"):
    """(x - mean) / sqrt(var + eps), or the usual wrong placements of eps."""
    if eps_mode == "inside":
        return (x - mean) / torch.sqrt(var + eps)
    if eps_mode == "none":
        return (x - mean) / torch.sqrt(var)
    return (x - mean) / (torch.sqrt(var) + eps)


def _affine(y, weight, bias, affine="both"):
    if affine in ("both", "weight"):
        y = y * _chan(weight, y)
    if affine in ("both", "bias"):
        y = y + _chan(bias, y)
    return y


def _bn_reference(x, mean, var, weight, bias, eps):
    """BN's output for per-channel mean and variance (C,)."""
    return _affine(_normalize(x, _chan(mean, x), _chan(var, x), eps), weight, bias)


def _stats(x, dims, unbiased=False, detach=(), keepdim=False):
    """Mean and variance of x over dims (biased unless unbiased=True)."""
    mean = x.mean(dim=dims, keepdim=True)
    n = math.prod(x.shape[d] for d in dims)
    var = ((x - mean) ** 2).sum(dim=dims, keepdim=True) / (n - 1 if unbiased else n)
    if "mean" in detach:
        mean = mean.detach()
    if "var" in detach:
        var = var.detach()
    if not keepdim:
        mean, var = mean.reshape(-1), var.reshape(-1)
    return mean, var


def _channel_dims(x):
    return (0,) if x.dim() == 2 else (0, 2)


_BN_FAULTS = {
    "unbiased": "You normalized with the unbiased variance (divide by N-1: `torch.var`'s and "
    "`x.std()`'s default). In training mode BN divides by N (`unbiased=False`); N-1 is used "
    "only to update running_var.",
    "eps none": "`eps` is missing: BN divides by sqrt(var + eps). It matters when a feature "
    "barely varies in the batch (the check uses one such feature).",
    "eps outside": "`eps` is outside the square root: BN divides by sqrt(var + eps), not by "
    "sqrt(var) + eps.",
    "per sample": "Your statistics are per sample (over the features, dim=1): that is "
    "LayerNorm. BN computes one mean and variance per feature, over the batch (dim=0).",
    "all": "You used one mean and variance for the whole tensor: BN computes them per feature "
    "(channel), over the batch: `x.mean(dim=0)`.",
    "running": "In training mode BN normalizes with the batch's own mean and variance, not "
    "with running_mean/running_var (those are for eval mode).",
    "no affine": "The output lacks the learned scale and shift: multiply by `weight` and add "
    "`bias` at the end.",
    "no weight": "The output lacks the scale: multiply by `weight`.",
    "no bias": "The output lacks the shift: add `bias`.",
}
_AFFINE_FAULT = {"none": "no affine", "weight": "no bias", "bias": "no weight"}


def _bn_candidates(x, rm, rv, weight, bias, eps, momentum=0.1):
    """Training-mode outputs of the usual wrong versions (and their combinations): a list of
    (faults, output), fewest faults first. rm, rv: the running statistics before the call."""
    stats = {
        "batch": _channel_dims(x),
        "per sample": tuple(range(1, x.dim())),
        "all": tuple(range(x.dim())),
    }
    mean, var = _stats(x, stats["batch"])
    n = x.numel() // x.shape[1]
    updated = (
        (1 - momentum) * rm + momentum * mean,
        (1 - momentum) * rv + momentum * var * n / (n - 1),
    )
    out = []
    for where in ("batch", "per sample", "all", "running", "updated running"):
        for unbiased in (False, True):
            if where in ("running", "updated running"):
                if unbiased:
                    continue
                r_mean, r_var = (rm, rv) if where == "running" else updated
                mean, var = _chan(r_mean, x), _chan(r_var, x)
            else:
                mean, var = _stats(x, stats[where], unbiased, keepdim=True)
            for eps_mode in ("inside", "none", "outside"):
                for affine in ("both", "none", "weight", "bias"):
                    faults = [where.replace("updated ", "")] if where != "batch" else []
                    faults += ["unbiased"] if unbiased else []
                    faults += [f"eps {eps_mode}"] if eps_mode != "inside" else []
                    faults += [_AFFINE_FAULT[affine]] if affine != "both" else []
                    if faults:
                        y = _affine(_normalize(x, mean, var, eps, eps_mode), weight, bias, affine)
                        out.append((faults, y))
    return sorted(out, key=lambda item: len(item[0]))


def _diagnose(y, candidates, what):
    for faults, cand in candidates:
        if cand.shape == y.shape and torch.allclose(y, cand, rtol=1e-5, atol=1e-6):
            if len(faults) == 1:
                return _BN_FAULTS[faults[0]]
            return f"{len(faults)} things to fix: " + " ".join(
                f"({i}) {_BN_FAULTS[f]}" for i, f in enumerate(faults, 1)
            )
    return what


def _as_tensor(y, name):
    return _tensor(y, f"The output of `{name}`", none="is None: return the normalized tensor")


def _bn_inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    C = shape[1]
    scale = torch.linspace(0.5, 3.0, C, dtype=f64)
    scale[0] = 3e-3  # a feature that barely varies: eps matters
    shift = torch.linspace(-2.0, 4.0, C, dtype=f64)
    view = (1, C) + (1,) * (len(shape) - 2)
    x = torch.randn(*shape, generator=g, dtype=f64) * scale.reshape(view) + shift.reshape(view)
    weight = torch.rand(C, generator=g, dtype=f64) + 0.5
    bias = torch.randn(C, generator=g, dtype=f64)
    rm = torch.randn(C, generator=g, dtype=f64)
    rv = torch.rand(C, generator=g, dtype=f64) + 0.5
    return x, rm, rv, weight, bias


def _run_bn(fn, x, rm, rv, weight, bias, training, momentum=0.1, eps=1e-5):
    try:
        y = fn(x, rm, rv, weight, bias, training, momentum=momentum, eps=eps)
    except TypeError as err:
        if _accepts(fn, x, rm, rv, weight, bias, training, momentum=momentum, eps=eps) is not False:
            raise _Wrong(f"Calling `my_batch_norm` raised TypeError: {err}") from None
        raise _Wrong(
            "`my_batch_norm` must accept `momentum` and `eps` keyword arguments: def "
            "my_batch_norm(x, running_mean, running_var, weight, bias, training, momentum=0.1, "
            f"eps=1e-5). ({err})"
        ) from None
    except NotImplementedError:
        raise _NotAttempted(
            "`my_batch_norm` still raises NotImplementedError: replace that line with your code."
        ) from None
    except Exception as err:
        raise _Wrong(f"Calling `my_batch_norm` raised {type(err).__name__}: {err}") from None
    y = _as_tensor(y, "my_batch_norm")
    if y.shape != x.shape:
        raise _Wrong(
            f"For input of shape {tuple(x.shape)} `my_batch_norm` returned shape "
            f"{tuple(y.shape)}: the output has the input's shape. Per-feature tensors (C,) "
            f"must be reshaped to broadcast, e.g. (1, C) or (1, C, 1)."
        )
    return y


def _check_running(rm, rv, rm0, rv0, mean, var_biased, n, momentum, where):
    """Compare updated running buffers with PyTorch's rule; raise _Wrong with the mistake."""
    _finite(rm, f"{where}: running_mean after the call")
    _finite(rv, f"{where}: running_var after the call")
    if rm.requires_grad or rv.requires_grad:
        raise _Wrong(
            "After the call running_mean/running_var require gradients: you updated them with "
            "tensors that are part of the autograd graph. Update them under `torch.no_grad()` "
            "(or with `.detach()`): they are bookkeeping, not something to differentiate."
        )
    unbiased = var_biased * n / (n - 1)
    exp_m = (1 - momentum) * rm0 + momentum * mean
    exp_v = (1 - momentum) * rv0 + momentum * unbiased

    def close(a, b):
        return torch.allclose(a.detach().double(), b, rtol=1e-6, atol=1e-8)

    if close(rm, rm0) and close(rv, rv0):
        raise _Wrong(
            f"{where}: running_mean and running_var did not change. Update them in place, e.g. "
            f"`running_mean.mul_(1 - momentum).add_(momentum * mean)`; writing "
            f"`running_mean = ...` only rebinds a local name and the caller's tensor stays as "
            f"it was."
        )
    if close(rm, momentum * rm0 + (1 - momentum) * mean):
        raise _Wrong(
            f"{where}: running_mean kept a fraction `momentum` of the old value. In PyTorch "
            f"`momentum` is the weight of the NEW batch: running = (1 - momentum) * running + "
            f"momentum * batch (Keras and CS231n use the opposite convention)."
        )
    if close(rm, mean) and not close(rm, exp_m):
        raise _Wrong(
            f"{where}: running_mean was replaced by the batch mean; blend it in with weight "
            f"`momentum`."
        )
    if not close(rm, exp_m):
        raise _Wrong(
            f"{where}: running_mean should become (1 - momentum) * running_mean + momentum * "
            f"batch mean; yours differs by up to {(rm.detach().double() - exp_m).abs().max():.2e}."
        )
    if close(rv, rv0):
        raise _Wrong(f"{where}: running_mean was updated but running_var was not.")
    if close(rv, (1 - momentum) * rv0 + momentum * var_biased):
        raise _Wrong(
            f"{where}: running_var was updated with the biased variance. PyTorch normalizes with "
            f"the biased variance (divide by n) but updates running_var with the unbiased one "
            f"(multiply by n / (n - 1)), n being the number of values per feature."
        )
    if not close(rv, exp_v):
        raise _Wrong(
            f"{where}: running_var should become (1 - momentum) * running_var + momentum * "
            f"unbiased batch variance; yours differs by up to "
            f"{(rv.detach().double() - exp_v).abs().max():.2e}."
        )


@_check("7a")
def check_batch_norm(my_batch_norm):
    """Exercise 7a. ``my_batch_norm(x, running_mean, running_var, weight, bias, training,
    momentum=0.1, eps=1e-5)`` for x of shape (N, C) or (N, C, L); updates the running buffers
    in place in training mode; returns y shaped like x."""
    _missing({"my_batch_norm": my_batch_norm}, "Write the function.")
    if not callable(my_batch_norm):
        raise _Wrong(f"`my_batch_norm` should be a function, got {type(my_batch_norm).__name__}.")
    eps = 1e-5
    # 1. training mode, (N, C): output
    x, rm, rv, w, b = _bn_inputs((8, 5), seed=_input_seed(0))
    rm0, rv0 = rm.clone(), rv.clone()
    xg = x.clone().requires_grad_()
    wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
    y = _run_bn(my_batch_norm, xg, rm, rv, wg, bg, True)
    mean, var = _stats(x, (0,), unbiased=False)
    expected = _bn_reference(x, mean, var, w, b, eps)
    if not torch.allclose(y.detach().double(), expected, rtol=1e-5, atol=1e-6):
        message = _diagnose(
            y.detach().double(),
            _bn_candidates(x, rm0, rv0, w, b, eps),
            f"In training mode your output differs from BN's by up to "
            f"{(y.detach().double() - expected).abs().max():.2e}. BN computes, per feature over "
            f"the batch, y = (x - mean) / sqrt(var + eps) * weight + bias with the biased "
            f"variance.",
        )
        raise _Wrong(message)
    # 2. gradients: autograd through the batch statistics
    if y.grad_fn is None:
        raise _Wrong(
            "Your output is not connected to the autograd graph (no grad_fn): did you compute it "
            "under torch.no_grad() or call .detach()? Only the running-statistics update belongs "
            "under no_grad."
        )
    upstream = torch.randn(
        x.shape, generator=torch.Generator().manual_seed(_input_seed(1)), dtype=torch.float64
    )
    (y.double() * upstream).sum().backward()

    def ref_grad(detach=()):
        xr = x.clone().requires_grad_()
        m, v = _stats(xr, (0,), unbiased=False, detach=detach)
        (_bn_reference(xr, m, v, w, b, eps) * upstream).sum().backward()
        return xr.grad

    if xg.grad is None:
        raise _Wrong("No gradient reached x: keep the computation of y differentiable.")
    if not torch.allclose(xg.grad.double(), ref_grad(), rtol=1e-5, atol=1e-6):
        for detach, what in (
            (("mean", "var"), "the batch mean and variance"),
            (("mean",), "the batch mean"),
            (("var",), "the batch variance"),
        ):
            if torch.allclose(xg.grad.double(), ref_grad(detach), rtol=1e-5, atol=1e-6):
                raise _Wrong(
                    f"The output is right but the gradient is not: you detached {what} (or "
                    f"computed it under no_grad). BN's gradient flows through the batch "
                    f"statistics: each sample's gradient depends on the whole batch. Only the "
                    f"running-statistics update should be detached."
                )
        raise _Wrong("The output is right but the gradient with respect to x differs from BN's.")
    if wg.grad is None or bg.grad is None:
        raise _Wrong("No gradient reached `weight` or `bias`: use them directly in the output.")
    # 3. running statistics, default and another momentum
    _check_running(rm, rv, rm0, rv0, mean, var, 8, 0.1, "Training mode")
    rm, rv = rm0.clone(), rv0.clone()
    _run_bn(my_batch_norm, x, rm, rv, w, b, True, momentum=0.3)
    _check_running(rm, rv, rm0, rv0, mean, var, 8, 0.3, "With momentum=0.3")
    # 4. the eps argument is used
    y_eps = _run_bn(my_batch_norm, x, rm0.clone(), rv0.clone(), w, b, True, eps=0.1)
    if not torch.allclose(
        y_eps.double(), _bn_reference(x, mean, var, w, b, 0.1), rtol=1e-5, atol=1e-6
    ):
        if torch.allclose(y_eps.double(), expected, rtol=1e-5, atol=1e-6):
            raise _Wrong(
                "With eps=0.1 your output is unchanged: use the `eps` argument, not a fixed 1e-5."
            )
        raise _Wrong("With eps=0.1 your output is not BN's with that eps.")
    # 5. eval mode
    rm, rv = rm0.clone(), rv0.clone()
    y_eval = _run_bn(my_batch_norm, x, rm, rv, w, b, False).detach().double()
    if not (torch.equal(rm, rm0) and torch.equal(rv, rv0)):
        raise _Wrong(
            "In eval mode (training=False) the running statistics must not change: update them "
            "only in training mode."
        )
    expected_eval = _bn_reference(x, rm0, rv0, w, b, eps)
    if not torch.allclose(y_eval, expected_eval, rtol=1e-5, atol=1e-6):
        if torch.allclose(y_eval, expected, rtol=1e-5, atol=1e-6):
            raise _Wrong(
                "In eval mode (training=False) you normalized with the batch's statistics: use "
                "running_mean and running_var, so a prediction does not depend on the batch."
            )
        raise _Wrong(
            "In eval mode the output should be (x - running_mean) / sqrt(running_var + eps) * "
            "weight + bias."
        )
    # 6. (N, C, L) input: statistics over N and L
    x3, rm3, rv3, w3, b3 = _bn_inputs((6, 4, 3), seed=_input_seed(2))
    rm30, rv30 = rm3.clone(), rv3.clone()
    y3 = _run_bn(my_batch_norm, x3, rm3, rv3, w3, b3, True).detach().double()
    mean3, var3 = _stats(x3, (0, 2), unbiased=False)
    expected3 = _bn_reference(x3, mean3, var3, w3, b3, eps)
    if not torch.allclose(y3, expected3, rtol=1e-5, atol=1e-6):
        m_n, v_n = _stats(x3, (0,), unbiased=False)
        shape = (1,) + tuple(x3.shape[1:])
        over_n = (x3 - m_n.reshape(shape)) / torch.sqrt(v_n.reshape(shape) + eps)
        over_n = over_n * w3.reshape(1, -1, 1) + b3.reshape(1, -1, 1)
        if torch.allclose(y3, over_n, rtol=1e-5, atol=1e-6):
            raise _Wrong(
                "For (N, C, L) input your statistics are over N only (one per channel and "
                "position). BN averages over N and L: `x.mean(dim=(0, 2))`, one per channel."
            )
        raise _Wrong(
            _diagnose(
                y3,
                _bn_candidates(x3, rm30, rv30, w3, b3, eps),
                "For (N, C, L) input your output differs from BN's (statistics per channel, "
                "over dims 0 and 2).",
            )
        )
    if not torch.allclose(rv3, (0.9 * rv30 + 0.1 * var3 * 18 / 17), rtol=1e-6, atol=1e-8):
        if torch.allclose(rv3, 0.9 * rv30 + 0.1 * var3 * 6 / 5, rtol=1e-6, atol=1e-8):
            raise _Wrong(
                "For (N, C, L) input the unbiased factor is n / (n - 1) with n = N * L values "
                "per channel (here 18), not N."
            )
        _check_running(rm3, rv3, rm30, rv30, mean3, var3, 18, 0.1, "For (N, C, L) input")
    return (
        "Outputs, gradients (through the batch statistics), running statistics, eval mode and "
        "(N, C, L) input all match BatchNorm's, in float64."
    )


# ============================================================================ 7b variants


def _variant_candidates(x, eps):
    mean, var = _stats(x, (0,), unbiased=False)
    _, var_u = _stats(x, (0,), unbiased=True)
    sm, sv = _stats(x, (1,), unbiased=False)
    return {
        "full": (x - mean) / torch.sqrt(var + eps),
        "mean-only": x - mean,
        "variance-only": x / torch.sqrt(var + eps),
        "rms": x / torch.sqrt((x**2).mean(0) + eps),
        "unbiased": x / torch.sqrt(var_u + eps),
        "no eps": x / torch.sqrt(var),
        "eps outside": x / (torch.sqrt(var) + eps),
        "per sample mean": x - sm[:, None],
        "per sample var": x / torch.sqrt(sv[:, None] + eps),
        "mean-only scaled by std": (x - mean) / torch.sqrt(var),
    }


_VARIANT_MESSAGES = {
    "mean-only": {
        "full": "`mean_only_norm` also divides by the standard deviation: that is full BN. "
        "Mean-only subtracts the batch mean per feature and nothing else.",
        "mean-only scaled by std": "`mean_only_norm` also divides by the standard deviation.",
        "per sample mean": "`mean_only_norm` subtracts each sample's mean over its features "
        "(dim=1); BN's mean is per feature, over the batch (dim=0).",
        "variance-only": "`mean_only_norm` divides by the standard deviation instead of "
        "subtracting the mean: the two functions are swapped.",
    },
    "variance-only": {
        "full": "`variance_only_norm` also subtracts the mean: that is full BN. Variance-only "
        "divides x itself by sqrt(var + eps).",
        "rms": "`variance_only_norm` divides by the root mean square sqrt(mean(x**2) + eps), "
        "which includes the mean. Divide by sqrt(var + eps), var being the (biased) variance "
        "around the batch mean, as in BN.",
        "unbiased": "`variance_only_norm` uses the unbiased variance (N-1); BN normalizes with "
        "the biased one (divide by N).",
        "no eps": "`variance_only_norm` lacks `eps` inside the square root.",
        "eps outside": "`variance_only_norm` has `eps` outside the square root: sqrt(var + eps).",
        "per sample var": "`variance_only_norm` uses each sample's variance over its features "
        "(dim=1); BN's variance is per feature, over the batch (dim=0).",
        "mean-only": "`variance_only_norm` subtracts the mean instead of dividing: the two "
        "functions are swapped.",
    },
}

VARIANT_NAMES = ("BN", "mean-only", "variance-only")

# The exercise's training setup (the notebook's `train_variant`): learning rate 1.0, 10 epochs,
# seeds(3) (the first of them is the one the check re-runs).
VARIANT_LR, VARIANT_EPOCHS, VARIANT_SEEDS = 1.0, 10, 3


def _device():
    """Where the check re-runs training: where the notebook trains (CUDA when present), so that
    the re-run is the learner's computation and matches it exactly."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _fork_rng():
    """Leave every RNG of the learner alone (the check decorator forks only the CPU's)."""
    return torch.random.fork_rng(devices=list(range(torch.cuda.device_count())))


def _other_seeds(told, n):
    """The seeds a learner may have used instead of ``told``: the rest of ``seeds(n)`` and,
    when ``BNTEACH_SEED_OFFSET`` is set, the unshifted 0, 1, ..., n - 1 (typed by hand)."""
    return [s for s in dict.fromkeys(seeds(n) + list(range(n))) if s != told]


def _full_norm(x, eps=1e-5):
    """BN's normalization, per feature over the batch (the notebook's `full_norm`)."""
    mean = x.mean(dim=0)
    var = ((x - mean) ** 2).mean(dim=0)
    return (x - mean) / torch.sqrt(var + eps)


class _FunctionNorm(nn.Module):
    """The notebook's FunctionNorm: fn(x) * weight + bias, batch statistics always."""

    def __init__(self, fn, num_features):
        super().__init__()
        self.fn = fn
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x):
        return self.fn(x) * self.weight + self.bias


def _train_variant(fn, seed, name, lr=VARIANT_LR, epochs=VARIANT_EPOCHS):
    """The notebook's ``train_variant(fn, seed)`` on the notebook's device: the tutorial's BN
    net with _FunctionNorm(fn) in place of each BN layer, trained; a History."""
    device = _device()
    X_train, X_val, y_train, y_val = (t.to(device) for t in load_data())
    with _fork_rng():
        torch.manual_seed(seed)
        model = MLP(20, (128, 64), norm="batch")
    for i, layer in enumerate(model.network):
        if isinstance(layer, nn.BatchNorm1d):
            model.network[i] = _FunctionNorm(fn, layer.num_features)
    loaders = make_loaders(X_train, X_val, y_train, y_val, seed=seed)
    try:
        return train_model(model.to(device), *loaders, epochs=epochs, lr=lr, verbose=False)
    except Exception as err:
        raise _Wrong(
            f"Re-running seed {seed} with your `{name}` in the net raised "
            f"{type(err).__name__}: {err}"
        ) from None


def _unstable(loss):
    return not (math.isfinite(loss) and loss < 1)


def _equal(value, expected):
    """Equal up to float rounding: what the same run on the same device gives."""
    return _same(value, expected, 0) or abs(value - expected) <= 1e-5 * abs(expected)


def _same_run(value, expected):
    """Whether two final validation losses can come from the same run. Runs on another device
    (a GPU), or with a function that rounds differently, end a little differently, and at
    learning rate 1.0 even a little can grow: equal, both diverged (not below 1), or both
    below 1 and within a factor 2."""
    if _equal(value, expected):
        return True
    if _unstable(value) or _unstable(expected):
        return _unstable(value) and _unstable(expected)
    return value > 0 and expected / 2 <= value <= expected * 2


def _max_change(fn, name, x1, x2):
    """The largest difference between the learner's fn at x1 and at x2."""
    return (_call(fn, x1, name=name) - _call(fn, x2, name=name)).abs().max().item()


def _fmt_loss(loss):
    return f"{loss:.4g}"


def _log_distance(value, expected):
    """How far apart two final losses are, in orders of magnitude (diverged runs: 0 apart)."""
    if not (math.isfinite(value) and math.isfinite(expected)):
        return 0.0 if not (math.isfinite(value) or math.isfinite(expected)) else math.inf
    if value <= 0 or expected <= 0:
        return abs(value - expected)
    return abs(math.log(value) - math.log(expected))


def _check_variant_losses(losses, fns):
    """Tie the learner's losses to real runs: re-run the first of ``seeds(3)`` (the first
    entry) of every variant with the learner's functions and compare; name the usual mix-ups
    (another seed, accuracy, training loss, learning rate, another variant's numbers). Returns
    ``(seed, {name: re-run History}, names)``, ``names`` the variants whose number matched the
    re-run only approximately (not to float rounding): the success message says so."""
    told = seeds(VARIANT_SEEDS)[0]
    approximate = []
    runs = {name: _train_variant(fn, told, label) for name, (fn, label) in fns.items()}
    truth = {name: h.val_loss[-1] for name, h in runs.items()}
    others = _other_seeds(told, VARIANT_SEEDS)
    other_losses = {}

    def other_loss(name, seed):
        if (name, seed) not in other_losses:
            fn, label = fns[name]
            other_losses[name, seed] = _train_variant(fn, seed, label).val_loss[-1]
        return other_losses[name, seed]

    for name in VARIANT_NAMES:
        value, h, (fn, label) = losses[name][0], runs[name], fns[name]
        if _equal(value, truth[name]):
            continue
        where = f"`variant_loss[{name!r}][0]` is {_fmt_loss(value)}"
        rerun = f"the check's re-run of seed {told} gives {_fmt_loss(truth[name])}"
        for seed in others:
            if _equal(value, other_loss(name, seed)):
                raise _Wrong(
                    f"{where}: that is seed {seed}'s run, not seed {told}'s ({rerun}). The "
                    f"exercise's seeds are seeds(3) = {seeds(VARIANT_SEEDS)}, in that order: "
                    f"take them from `seeds(3)` rather than typing numbers."
                )
        # the usual mix-ups, (what the mistake gives, message), recognised when they match
        # exactly: on the same device the learner's run and the check's are the same computation
        mistakes = [
            (
                lambda h=h: h.train_loss[-1],
                f"{where}, the final training loss: report the final validation loss, "
                f"`h.val_loss[-1]` ({rerun}).",
            ),
            (
                lambda h=h: h.val_acc[-1],
                f"{where}, about the final validation accuracy ({h.val_acc[-1]:.3f}): report "
                f"the final validation loss, `h.val_loss[-1]` ({rerun}).",
            ),
            (
                lambda fn=fn, label=label: _train_variant(fn, told, label, lr=0.01).val_loss[-1],
                f"{where}, what seed {told} gives at learning rate 0.01 (train_model's "
                f"default). The exercise trains at learning rate {VARIANT_LR:g} "
                f"(`train_variant`'s default): {rerun}.",
            ),
        ] + [
            (
                lambda other=other: truth[other],
                f"{where}, the {other} net's loss (the check's re-run of seed {told} gives "
                f"{_fmt_loss(truth[other])} for {other} and {_fmt_loss(truth[name])} for "
                f"{name}). Check which function each entry was trained with.",
            )
            for other in VARIANT_NAMES
            if other != name
        ]
        for mistake, message in mistakes:
            if _equal(value, mistake()):
                raise _Wrong(message)
        # the same run on another device, or with a function that rounds differently: close to
        # the re-run, and closer to it than to any other seed's run
        if _same_run(value, truth[name]):
            gap = _log_distance(value, truth[name])
            nearest = min(others, key=lambda seed: _log_distance(value, other_loss(name, seed)))
            if gap <= _log_distance(value, other_loss(name, nearest)):
                approximate.append(name)
                continue
            raise _Wrong(
                f"{where}, nearer seed {nearest}'s run ({_fmt_loss(other_loss(name, nearest))}) "
                f"than seed {told}'s ({rerun}). The exercise's seeds are seeds(3) = "
                f"{seeds(VARIANT_SEEDS)}, in that order."
            )
        # an accuracy stands apart from a stable loss: recognise it loosely too (within 0.04,
        # 8 of the 200 validation samples); other mix-ups would match any made-up loss
        if abs(value - h.val_acc[-1]) <= 0.04:
            raise _Wrong(mistakes[1][1])
        yours = " with your function" if name != "BN" else ""
        raise _Wrong(
            f"`variant_loss[{name!r}]` should start with seed {told}'s final validation loss, "
            f"but the check re-ran that run{yours} (seed {told}, learning rate {VARIANT_LR:g}, "
            f"{VARIANT_EPOCHS} epochs, `h.val_loss[-1]`) and got "
            f"{_fmt_loss(truth[name])}, not {_fmt_loss(value)}. (Another device or rounding "
            f"changes it a little, not this much.) Fill `variant_loss` from your own runs, "
            f"`train_variant(fn, seed).val_loss[-1]` for the seeds {seeds(VARIANT_SEEDS)} "
            f"(`seeds(3)`) in that order."
        )
    return told, runs, approximate


@_check("7b")
def check_norm_variants(mean_only_norm, variance_only_norm, variant_loss, stable):
    """Exercise 7b. ``mean_only_norm(x, eps=1e-5)`` = x - batch mean; ``variance_only_norm(x,
    eps=1e-5)`` = x / sqrt(biased batch variance + eps); both per feature over the batch, for
    (N, C) input. ``variant_loss``: ``{"BN" | "mean-only" | "variance-only": [final validation
    loss per seed]}`` for the seeds ``seeds(3)`` in that order (the check re-runs the first of
    them with the learner's functions and compares; numbers of another seed are named as
    such); ``stable``: the names whose final validation loss is below 1 on every seed."""
    _missing(
        {"mean_only_norm": mean_only_norm, "variance_only_norm": variance_only_norm},
        "Write the two functions.",
    )
    eps = 1e-5
    x, *_ = _bn_inputs((16, 5), seed=_input_seed(3))
    cands = _variant_candidates(x, eps)
    for fn, name, key in (
        (mean_only_norm, "mean_only_norm", "mean-only"),
        (variance_only_norm, "variance_only_norm", "variance-only"),
    ):
        y = _as_tensor(_call(fn, x.clone(), name=name), name).detach().double()
        if y.shape != x.shape:
            raise _Wrong(f"`{name}` returned shape {tuple(y.shape)} for input {tuple(x.shape)}.")
        if torch.allclose(y, cands[key], rtol=1e-5, atol=1e-6):
            continue
        for cand, message in _VARIANT_MESSAGES[key].items():
            if torch.allclose(y, cands[cand], rtol=1e-5, atol=1e-6):
                raise _Wrong(message)
        raise _Wrong(
            f"`{name}` differs from the {key} normalization by up to "
            f"{(y - cands[key]).abs().max():.2e}."
        )
    # the invariances each variant keeps, measured on the learner's functions
    z = torch.randn(
        16, 5, generator=torch.Generator().manual_seed(_input_seed(4)), dtype=torch.float64
    )
    shift = torch.linspace(-5, 5, 5, dtype=torch.float64)
    scale = torch.linspace(0.2, 7, 5, dtype=torch.float64)
    shift_change = _max_change(mean_only_norm, "mean_only_norm", z + shift, z)
    scale_change = _max_change(variance_only_norm, "variance_only_norm", z * scale, z)
    invariances = (
        f"shifting each feature changes mean-only's output by {shift_change:.0e}; scaling each "
        f"feature by a positive factor changes variance-only's by {scale_change:.0e}"
    )
    if variant_loss is None or stable is None:
        raise _NotAttempted(
            f"Both functions are right ({invariances}). Now run the experiment: "
            f"`variant_loss` and `stable` are still None."
        )
    if not isinstance(variant_loss, dict) or set(variant_loss) != set(VARIANT_NAMES):
        got = (
            sorted(variant_loss) if isinstance(variant_loss, dict) else type(variant_loss).__name__
        )
        raise _Wrong(
            f"`variant_loss` should be a dict with the keys {list(VARIANT_NAMES)}, got {got}."
        )
    losses = {}
    for name, values in variant_loss.items():
        if not isinstance(values, (list, tuple)) or len(values) < 3:
            raise _Wrong(
                f"`variant_loss[{name!r}]` should be a list with one final validation loss per "
                f"seed, at least 3 seeds."
            )
        losses[name] = [_number(v, f"`variant_loss[{name!r}]` entries") for v in values]
    if len({len(v) for v in losses.values()}) != 1:
        raise _Wrong("Every variant needs the same seeds: the lists have different lengths.")
    if isinstance(stable, str) or not isinstance(stable, (list, tuple, set)):
        raise _Wrong(
            f"`stable` should be a list of names from {list(VARIANT_NAMES)}, got {stable!r}."
        )
    unknown = [s for s in stable if s not in VARIANT_NAMES]
    if unknown:
        raise _Wrong(f"`stable` contains {unknown}: use names from {list(VARIANT_NAMES)}.")
    told, runs, approximate = _check_variant_losses(
        losses,
        {
            "BN": (_full_norm, "full_norm"),
            "mean-only": (mean_only_norm, "mean_only_norm"),
            "variance-only": (variance_only_norm, "variance_only_norm"),
        },
    )
    truth = {n for n, v in losses.items() if all(math.isfinite(x) and x < 1 for x in v)}
    if set(stable) != truth:
        shown = "; ".join(f"{n}: {', '.join(f'{v:.3g}' for v in vs)}" for n, vs in losses.items())
        raise _Wrong(
            f"Your own losses are {shown}. Below 1 on every seed: {sorted(truth) or 'none'}."
        )
    rerun = ", ".join(f"{n} {_fmt_loss(h.val_loss[-1])}" for n, h in runs.items())
    agree = "agree, to float rounding, with"
    if approximate:
        yours = ", ".join(f"{n} {_fmt_loss(losses[n][0])}" for n in approximate)
        agree = (
            f"agree with (but not to float rounding: yours are {yours}, so the check cannot "
            f"prove they are seed {told}'s; the nearest of the seeds it tried)"
        )
    return (
        f"Both functions match their definitions ({invariances}). Your losses {agree} the "
        f"check's re-run of seed {told} ({rerun}). Stable (validation loss below 1 on every "
        f"seed): {', '.join(sorted(truth)) or 'none'}."
    )
