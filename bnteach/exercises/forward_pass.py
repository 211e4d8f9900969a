"""Notebook 05's checks of normalization functions the learner writes: the BN forward pass (7a:
output, gradients, running statistics, eval mode, (N, C, L) input) and the mean-only and
variance-only variants (7b: the functions, then the learner's training losses, tied to a re-run
of the first of ``seeds(3)`` with the learner's own functions). A wrong output is matched against
the usual wrong versions (unbiased variance, misplaced eps, wrong axes, ...) to name the
mistake."""

import math

import torch
from torch import nn

from bnteach.data import load_data, make_loaders
from bnteach.exercises import kit
from bnteach.exercises.kit import NotAttempted, Wrong
from bnteach.models import MLP
from bnteach.stats import seeds
from bnteach.training import train_model

NB = kit.notebook("05")
EPS = 1e-5

# ============================================================================ 7a BN forward


def _bn_reference(x, mean, var, weight, bias, eps=EPS):
    """BN's output for per-channel mean and variance (C,)."""
    y = kit.standardize(x, kit.per_channel(mean, x), kit.per_channel(var, x), eps)
    return y * kit.per_channel(weight, x) + kit.per_channel(bias, x)


def _stats(x, dims, detach=()):
    """Per-channel batch mean and biased variance (C,) of x over dims; ``detach``: which of
    "mean", "var" to cut from the autograd graph (the detach mistake)."""
    mean, var = kit.moments(x, dims)
    mean = mean.detach() if "mean" in detach else mean
    var = var.detach() if "var" in detach else var
    return mean.reshape(-1), var.reshape(-1)


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


def _run_bn(fn, x, rm, rv, weight, bias, training, momentum=0.1, eps=EPS):
    args = (x, rm, rv, weight, bias, training)
    why = kit.refusal(fn, *args, momentum=momentum, eps=eps)
    if why is not None:
        raise Wrong(
            "`my_batch_norm` must accept `momentum` and `eps` keyword arguments: def "
            "my_batch_norm(x, running_mean, running_var, weight, bias, training, momentum=0.1, "
            f"eps=1e-5). ({why})"
        )
    y = kit.call(fn, *args, momentum=momentum, eps=eps, name="my_batch_norm")
    y = kit.tensor(y, "The output of `my_batch_norm`", none="is None: return the normalized tensor")
    if y.shape != x.shape:
        raise Wrong(
            f"For input of shape {tuple(x.shape)} `my_batch_norm` returned shape "
            f"{tuple(y.shape)}: the output has the input's shape. Per-feature tensors (C,) "
            f"must be reshaped to broadcast, e.g. (1, C) or (1, C, 1)."
        )
    return y


def _close_buffers(a, b):
    return torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def _check_running(rm, rv, rm0, rv0, mean, var_biased, n, momentum, where):
    """Compare updated running buffers with PyTorch's rule; raise Wrong with the mistake."""
    kit.finite(rm, f"{where}: running_mean after the call")
    kit.finite(rv, f"{where}: running_var after the call")
    if rm.requires_grad or rv.requires_grad:
        raise Wrong(
            "After the call running_mean/running_var require gradients: you updated them with "
            "tensors that are part of the autograd graph. Update them under `torch.no_grad()` "
            "(or with `.detach()`): they are bookkeeping, not something to differentiate."
        )
    rm, rv = rm.detach().double(), rv.detach().double()
    exp_m = (1 - momentum) * rm0 + momentum * mean
    exp_v = (1 - momentum) * rv0 + momentum * var_biased * n / (n - 1)
    close = _close_buffers
    if close(rm, rm0) and close(rv, rv0):
        raise Wrong(
            f"{where}: running_mean and running_var did not change. Update them in place, e.g. "
            f"`running_mean.mul_(1 - momentum).add_(momentum * mean)`; writing "
            f"`running_mean = ...` only rebinds a local name and the caller's tensor stays as "
            f"it was."
        )
    if not close(rm, exp_m):
        mistakes = [
            (
                momentum * rm0 + (1 - momentum) * mean,
                f"{where}: running_mean kept a fraction `momentum` of the old value. In PyTorch "
                f"`momentum` is the weight of the NEW batch: running = (1 - momentum) * running "
                f"+ momentum * batch (Keras and CS231n use the opposite convention).",
            ),
            (
                mean,
                f"{where}: running_mean was replaced by the batch mean; blend it in with "
                f"weight `momentum`.",
            ),
        ]
        kit.name_mistake(rm, mistakes, close)
        raise Wrong(
            f"{where}: running_mean should become (1 - momentum) * running_mean + momentum * "
            f"batch mean; yours differs by up to {(rm - exp_m).abs().max():.2e}."
        )
    mistakes = [
        (rv0, f"{where}: running_mean was updated but running_var was not."),
        (
            (1 - momentum) * rv0 + momentum * var_biased,
            f"{where}: running_var was updated with the biased variance. PyTorch normalizes "
            f"with the biased variance (divide by n) but updates running_var with the unbiased "
            f"one (multiply by n / (n - 1)), n being the number of values per feature.",
        ),
    ]
    if not close(rv, exp_v):
        kit.name_mistake(rv, mistakes, close)
        raise Wrong(
            f"{where}: running_var should become (1 - momentum) * running_var + momentum * "
            f"unbiased batch variance; yours differs by up to {(rv - exp_v).abs().max():.2e}."
        )


def _check_output(fn, x, rm, rv, w, b):
    """Training mode on (N, C): the output, then its gradient through the batch statistics.
    rm, rv: the running statistics, which the learner's function updates in place."""
    rm0, rv0 = rm.clone(), rv.clone()
    xg = x.clone().requires_grad_()
    wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
    y = _run_bn(fn, xg, rm, rv, wg, bg, True)
    expected = _bn_reference(x, *_stats(x, (0,)), w, b)
    if not kit.close(y.detach(), expected):
        raise Wrong(
            kit.bn_mistake(y.detach(), x, w, b, EPS, running=(rm0, rv0))
            or f"In training mode your output differs from BN's by up to "
            f"{(y.detach().double() - expected).abs().max():.2e}. BN computes, per feature "
            f"over the batch, y = (x - mean) / sqrt(var + eps) * weight + bias with the "
            f"biased variance."
        )
    if y.grad_fn is None:
        raise Wrong(
            "Your output is not connected to the autograd graph (no grad_fn): did you compute it "
            "under torch.no_grad() or call .detach()? Only the running-statistics update belongs "
            "under no_grad."
        )
    g = torch.Generator().manual_seed(kit.input_seed(1))
    upstream = torch.randn(x.shape, generator=g, dtype=torch.float64)
    (y.double() * upstream).sum().backward()

    def ref_grad(detach=()):
        xr = x.clone().requires_grad_()
        (_bn_reference(xr, *_stats(xr, (0,), detach), w, b) * upstream).sum().backward()
        return xr.grad

    if xg.grad is None:
        raise Wrong("No gradient reached x: keep the computation of y differentiable.")
    if not kit.close(xg.grad, ref_grad()):
        detached = (
            "The output is right but the gradient is not: you detached {} (or computed it under "
            "no_grad). BN's gradient flows through the batch statistics: each sample's gradient "
            "depends on the whole batch. Only the running-statistics update should be detached."
        )
        mistakes = [
            (lambda: ref_grad(("mean", "var")), detached.format("the batch mean and variance")),
            (lambda: ref_grad(("mean",)), detached.format("the batch mean")),
            (lambda: ref_grad(("var",)), detached.format("the batch variance")),
        ]
        kit.name_mistake(xg.grad, mistakes)
        raise Wrong("The output is right but the gradient with respect to x differs from BN's.")
    if wg.grad is None or bg.grad is None:
        raise Wrong("No gradient reached `weight` or `bias`: use them directly in the output.")
    return expected


def _check_modes(fn, x, updated, rm, rv, w, b, expected):
    """The running statistics (``updated`` by the first call, then another momentum), the eps
    argument and eval mode. rm, rv: the running statistics before any call."""
    mean, var = _stats(x, (0,))
    _check_running(*updated, rm, rv, mean, var, 8, 0.1, "Training mode")
    r_mean, r_var = rm.clone(), rv.clone()
    _run_bn(fn, x, r_mean, r_var, w, b, True, momentum=0.3)
    _check_running(r_mean, r_var, rm, rv, mean, var, 8, 0.3, "With momentum=0.3")
    y_eps = _run_bn(fn, x, rm.clone(), rv.clone(), w, b, True, eps=0.1)
    if not kit.close(y_eps, _bn_reference(x, mean, var, w, b, 0.1)):
        message = "With eps=0.1 your output is not BN's with that eps."
        same = "With eps=0.1 your output is unchanged: use the `eps` argument, not a fixed 1e-5."
        kit.name_mistake(y_eps, [(expected, same)])
        raise Wrong(message)
    r_mean, r_var = rm.clone(), rv.clone()
    y_eval = _run_bn(fn, x, r_mean, r_var, w, b, False).detach()
    if not (torch.equal(r_mean, rm) and torch.equal(r_var, rv)):
        raise Wrong(
            "In eval mode (training=False) the running statistics must not change: update them "
            "only in training mode."
        )
    if not kit.close(y_eval, _bn_reference(x, rm, rv, w, b)):
        batch = (
            "In eval mode (training=False) you normalized with the batch's statistics: use "
            "running_mean and running_var, so a prediction does not depend on the batch."
        )
        kit.name_mistake(y_eval, [(expected, batch)])
        raise Wrong(
            "In eval mode the output should be (x - running_mean) / sqrt(running_var + eps) * "
            "weight + bias."
        )


def _check_3d(fn):
    """(N, C, L) input: statistics per channel over N and L, n = N * L in the unbiased factor."""
    x, rm, rv, w, b = _bn_inputs((6, 4, 3), seed=kit.input_seed(2))
    rm0, rv0 = rm.clone(), rv.clone()
    y = _run_bn(fn, x, rm, rv, w, b, True).detach().double()
    mean, var = _stats(x, (0, 2))
    if not kit.close(y, _bn_reference(x, mean, var, w, b)):
        raise Wrong(
            kit.bn_mistake(y, x, w, b, EPS, running=(rm0, rv0))
            or "For (N, C, L) input your output differs from BN's (statistics per channel, "
            "over dims 0 and 2)."
        )
    if not _close_buffers(rv, 0.9 * rv0 + 0.1 * var * 18 / 17):
        if _close_buffers(rv, 0.9 * rv0 + 0.1 * var * 6 / 5):
            raise Wrong(
                "For (N, C, L) input the unbiased factor is n / (n - 1) with n = N * L values "
                "per channel (here 18), not N."
            )
        _check_running(rm, rv, rm0, rv0, mean, var, 18, 0.1, "For (N, C, L) input")


@NB.check("7a", "BN forward pass")
def check_batch_norm(my_batch_norm):
    """Exercise 7a. ``my_batch_norm(x, running_mean, running_var, weight, bias, training,
    momentum=0.1, eps=1e-5)`` for x of shape (N, C) or (N, C, L); updates the running buffers
    in place in training mode; returns y shaped like x."""
    kit.function(my_batch_norm, "my_batch_norm")
    x, rm, rv, w, b = _bn_inputs((8, 5), seed=kit.input_seed(0))
    updated = rm.clone(), rv.clone()
    expected = _check_output(my_batch_norm, x, *updated, w, b)
    _check_modes(my_batch_norm, x, updated, rm, rv, w, b, expected)
    _check_3d(my_batch_norm)
    return (
        "Outputs, gradients (through the batch statistics), running statistics, eval mode and "
        "(N, C, L) input all match BatchNorm's, in float64."
    )


# ============================================================================ 7b variants


def _variant_candidates(x, eps=EPS):
    mean, var = kit.moments(x, (0,))
    _, var_u = kit.moments(x, (0,), unbiased=True)
    sm, sv = kit.moments(x, (1,))
    return {
        "full": (x - mean) / torch.sqrt(var + eps),
        "mean-only": x - mean,
        "variance-only": x / torch.sqrt(var + eps),
        "rms": x / torch.sqrt((x**2).mean(0) + eps),
        "unbiased": x / torch.sqrt(var_u + eps),
        "no eps": x / torch.sqrt(var),
        "eps outside": x / (torch.sqrt(var) + eps),
        "per sample mean": x - sm,
        "per sample var": x / torch.sqrt(sv + eps),
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


def _full_norm(x, eps=EPS):
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
    device = kit.device()
    X_train, X_val, y_train, y_val = (t.to(device) for t in load_data())
    with kit.fork_rng():
        torch.manual_seed(seed)
        model = MLP(20, (128, 64), norm="batch")
    for i, layer in enumerate(model.network):
        if isinstance(layer, nn.BatchNorm1d):
            model.network[i] = _FunctionNorm(fn, layer.num_features)
    loaders = make_loaders(X_train, X_val, y_train, y_val, seed=seed)
    try:
        return train_model(model.to(device), *loaders, epochs=epochs, lr=lr, verbose=False)
    except Exception as err:
        raise Wrong(
            f"Re-running seed {seed} with your `{name}` in the net raised "
            f"{type(err).__name__}: {err}"
        ) from None


def _unstable(loss):
    return not (math.isfinite(loss) and loss < 1)


def _equal(value, expected):
    """Equal up to float rounding: what the same run on the same device gives."""
    return kit.same(value, expected, 0) or abs(value - expected) <= 1e-5 * abs(expected)


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


def _log_distance(value, expected):
    """How far apart two final losses are, in orders of magnitude (diverged runs: 0 apart)."""
    if not (math.isfinite(value) and math.isfinite(expected)):
        return 0.0 if not (math.isfinite(value) or math.isfinite(expected)) else math.inf
    if value <= 0 or expected <= 0:
        return abs(value - expected)
    return abs(math.log(value) - math.log(expected))


class _Histories(dict):
    """The check's re-runs: ``runs[name, seed, lr]`` is the History of the variant ``name``."""

    def __init__(self, fns):
        super().__init__()
        self.fns = fns

    def __missing__(self, key):
        name, seed, lr = key
        fn, label = self.fns[name]
        self[key] = _train_variant(fn, seed, label, lr=lr)
        return self[key]


def _check_variant_losses(losses, fns):
    """Tie the learner's losses to real runs: re-run the first of ``seeds(3)`` (the first
    entry) of every variant with the learner's functions and compare; name the usual mix-ups
    (another seed, accuracy, training loss, learning rate, another variant's numbers). Returns
    ``(seed, {name: re-run History}, names)``, ``names`` the variants whose number matched the
    re-run only approximately (not to float rounding): the success message says so."""
    runs = _Histories(fns)
    reruns = {
        name: kit.Rerun(
            lambda seed, name=name: runs[name, seed, VARIANT_LR].val_loss[-1],
            VARIANT_SEEDS,
            equal=_equal,
            near=_same_run,
            distance=_log_distance,
        )
        for name in VARIANT_NAMES
    }
    told = seeds(VARIANT_SEEDS)[0]
    truth = {name: r() for name, r in reruns.items()}
    approximate = []
    for name in VARIANT_NAMES:
        h, said = runs[name, told, VARIANT_LR], reruns[name].said()
        where = f"`variant_loss[{name!r}][0]` is {losses[name][0]:.4g}"
        accuracy = (
            f"{where}, about the final validation accuracy ({h.val_acc[-1]:.3f}): report the "
            f"final validation loss, `h.val_loss[-1]` ({said})."
        )
        mistakes = [
            (
                h.train_loss[-1],
                f"{where}, the final training loss: report the final validation loss, "
                f"`h.val_loss[-1]` ({said}).",
            ),
            (h.val_acc[-1], accuracy),
            (
                lambda name=name: runs[name, told, 0.01].val_loss[-1],
                f"{where}, what seed {told} gives at learning rate 0.01 (train_model's "
                f"default). The exercise trains at learning rate {VARIANT_LR:g} "
                f"(`train_variant`'s default): {said}.",
            ),
        ] + [
            (
                truth[other],
                f"{where}, the {other} net's loss (the check's re-run of seed {told} gives "
                f"{truth[other]:.4g} for {other} and {truth[name]:.4g} for {name}). Check which "
                f"function each entry was trained with.",
            )
            for other in VARIANT_NAMES
            if other != name
        ]
        # an accuracy stands apart from a stable loss: recognised loosely too (within 0.04, 8 of
        # the 200 validation samples); other mix-ups would match any made-up loss
        yours = " with your function" if name != "BN" else ""
        final = (
            f"`variant_loss[{name!r}]` should start with seed {told}'s final validation loss, "
            f"but the check re-ran that run{yours} (seed {told}, learning rate {VARIANT_LR:g}, "
            f"{VARIANT_EPOCHS} epochs, `h.val_loss[-1]`) and got {truth[name]:.4g}, not "
            f"{losses[name][0]:.4g}. (Another device or rounding changes it a little, not this "
            f"much.) Fill `variant_loss` from your own runs, `train_variant(fn, "
            f"seed).val_loss[-1]` for the seeds {seeds(VARIANT_SEEDS)} (`seeds(3)`) in that "
            f"order."
        )
        loose = [(h.val_acc[-1], accuracy)]
        if not reruns[name].judge(losses[name][0], where, final, mistakes, loose):
            approximate.append(name)
    return told, {name: runs[name, told, VARIANT_LR] for name in VARIANT_NAMES}, approximate


def _check_variant_functions(mean_only_norm, variance_only_norm):
    """Both functions against their definitions; returns the invariances they keep."""
    x, *_ = _bn_inputs((16, 5), seed=kit.input_seed(3))
    cands = _variant_candidates(x)
    for fn, name, key in (
        (mean_only_norm, "mean_only_norm", "mean-only"),
        (variance_only_norm, "variance_only_norm", "variance-only"),
    ):
        y = kit.tensor(
            kit.call(fn, x.clone(), name=name),
            f"The output of `{name}`",
            none="is None: return the normalized tensor",
        ).detach()
        if y.shape != x.shape:
            raise Wrong(f"`{name}` returned shape {tuple(y.shape)} for input {tuple(x.shape)}.")
        if kit.close(y, cands[key]):
            continue
        kit.name_mistake(y, [(cands[c], m) for c, m in _VARIANT_MESSAGES[key].items()])
        raise Wrong(
            f"`{name}` differs from the {key} normalization by up to "
            f"{(y.double() - cands[key]).abs().max():.2e}."
        )
    # the invariances each variant keeps, measured on the learner's functions
    g = torch.Generator().manual_seed(kit.input_seed(4))
    z = torch.randn(16, 5, generator=g, dtype=torch.float64)
    shift = torch.linspace(-5, 5, 5, dtype=torch.float64)
    scale = torch.linspace(0.2, 7, 5, dtype=torch.float64)

    def change(fn, name, moved):
        return (kit.call(fn, moved, name=name) - kit.call(fn, z, name=name)).abs().max().item()

    return (
        f"shifting each feature changes mean-only's output by "
        f"{change(mean_only_norm, 'mean_only_norm', z + shift):.0e}; scaling each feature by a "
        f"positive factor changes variance-only's by "
        f"{change(variance_only_norm, 'variance_only_norm', z * scale):.0e}"
    )


def _read_losses(variant_loss, stable):
    """The learner's ``variant_loss`` as lists of floats, after checking ``stable``'s form."""
    losses = kit.per_seed(variant_loss, "variant_loss", VARIANT_NAMES, "final validation losses")
    if isinstance(stable, str) or not isinstance(stable, (list, tuple, set)):
        raise Wrong(
            f"`stable` should be a list of names from {list(VARIANT_NAMES)}, got {stable!r}."
        )
    unknown = [s for s in stable if s not in VARIANT_NAMES]
    if unknown:
        raise Wrong(f"`stable` contains {unknown}: use names from {list(VARIANT_NAMES)}.")
    return losses


@NB.check("7b", "mean-only and variance-only")
def check_norm_variants(mean_only_norm, variance_only_norm, variant_loss, stable):
    """Exercise 7b. ``mean_only_norm(x, eps=1e-5)`` = x - batch mean; ``variance_only_norm(x,
    eps=1e-5)`` = x / sqrt(biased batch variance + eps); both per feature over the batch, for
    (N, C) input. ``variant_loss``: ``{"BN" | "mean-only" | "variance-only": [final validation
    loss per seed]}`` for the seeds ``seeds(3)`` in that order (the check re-runs the first of
    them with the learner's functions and compares; numbers of another seed are named as
    such); ``stable``: the names whose final validation loss is below 1 on every seed."""
    kit.missing(
        {"mean_only_norm": mean_only_norm, "variance_only_norm": variance_only_norm},
        "Write the two functions.",
    )
    invariances = _check_variant_functions(mean_only_norm, variance_only_norm)
    if variant_loss is None or stable is None:
        raise NotAttempted(
            f"Both functions are right ({invariances}). Now run the experiment: "
            f"`variant_loss` and `stable` are still None."
        )
    losses = _read_losses(variant_loss, stable)
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
        raise Wrong(
            f"Your own losses are {shown}. Below 1 on every seed: {sorted(truth) or 'none'}."
        )
    rerun = ", ".join(f"{n} {h.val_loss[-1]:.4g}" for n, h in runs.items())
    agree = kit.agreement([f"{n} ({losses[n][0]:.4g})" for n in approximate], told)
    return (
        f"Both functions match their definitions ({invariances}). Your losses {agree} the "
        f"check's re-run of seed {told} ({rerun}). Stable (validation loss below 1 on every "
        f"seed): {', '.join(sorted(truth)) or 'none'}."
    )
