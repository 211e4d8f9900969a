"""Measuring instruments for "why does BatchNorm help?" (notebook 06).

Each piece measures one thing:

- :class:`LayerRecorder`: forward/backward hooks that record per-layer statistics of one pass
  (pre-activation and activation mean/std, saturated or dead units, gradient sizes).
- :func:`weight_snapshot` and :func:`update_to_data`: how large an optimizer step was,
  relative to the weights it changed.
- :class:`NoiseInjection`: Santurkar et al.'s "noisy BatchNorm" ingredient, random shift and
  scale noise that changes every step.
- :func:`covariate_shift`: Santurkar et al.'s gradient-based measure of internal covariate shift.
- :func:`gradient_step_probe`: loss range, gradient predictiveness and "effective
  beta-smoothness" along the gradient direction.
- :func:`bn_scale_response`: BN's invariance to the scale of the weights in front of it.

Probes work on a copy of the model: the model you pass in (its parameters, gradients, running
statistics and mode) is left exactly as it was. Shapes: N = batch size, C = features.
"""

import copy
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from bnteach import checks
from bnteach.batchnorm import bn_layers
from bnteach.stats import seeds

__all__ = [
    "linear_layers",
    "LayerRecorder",
    "weight_snapshot",
    "update_to_data",
    "NoiseInjection",
    "covariate_shift",
    "gradient_step_probe",
    "bn_scale_response",
]

# An activation counts as saturated where its slope is below this fraction of its largest slope:
# almost no gradient passes through it there.
SATURATION_SLOPE = 0.1


# ----------------------------------------------------------------------------------- data


# ------------------------------------------------------------------------ layer statistics


def _module(model, name="model"):
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{name} must be an nn.Module (a model such as MLPWithBN(20, 128, 64, 1)), got "
            f"{checks.describe(model)}."
        )
    return model


def linear_layers(model):
    """The ``nn.Linear`` modules of ``model``, in the order ``model.modules()`` lists them."""
    _module(model)
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _saturation(module, out):
    """("saturated" or "dead", fraction) for an activation's output ``out`` (N, C), or None."""
    if isinstance(module, nn.Sigmoid):  # slope out * (1 - out), at most 1/4
        return "saturated", (out * (1 - out) < SATURATION_SLOPE * 0.25).float().mean().item()
    if isinstance(module, nn.Tanh):  # slope 1 - out**2, at most 1
        return "saturated", (1 - out * out < SATURATION_SLOPE).float().mean().item()
    if isinstance(module, nn.ReLU):  # a unit is dead if it is 0 for every sample of the batch
        return "dead", (out == 0).all(0).float().mean().item()
    return None


ACTIVATION_TYPES = (nn.Sigmoid, nn.Tanh, nn.ReLU, nn.GELU)


def _std(t):
    """Standard deviation of all values of t (unbiased, as Tensor.std)."""
    return t.std()


def _norm(t):
    """Euclidean norm of all values of t."""
    return t.norm()


class LayerRecorder:
    """Hooks that record per-layer statistics of the forward and backward passes.

    Layer ``k`` (1-based) is the ``k``-th ``nn.Linear`` of ``model`` together with the
    ``k``-th activation module (Sigmoid, Tanh, ReLU or GELU); the output layer has no
    activation. For the most recent pass, ``table()`` gives one dict per layer with:

    - ``pre_mean``, ``pre_std``: the Linear's output ``(N, out)`` (for BN nets: before BN);
    - ``act_mean``, ``act_std``: the activation's output;
    - ``saturated`` (Sigmoid, Tanh): fraction of values where the activation's slope is below
      10% of its maximum, or ``dead`` (ReLU): fraction of units that are 0 for the whole batch;
    - after ``backward()``: ``grad_std`` of d loss / d (Linear output), and ``weight_grad_norm``,
      the norm of d loss / d weight (equal to ``weight.grad`` for this pass);
    - ``weight_norm``: the Linear's weight norm.

    Use it as a context manager, or call ``close()`` to remove every hook::

        with LayerRecorder(model) as rec:
            loss_fn(model(x), y).backward()
        rows = rec.table()

    The hooks never change or stop the pass. A statistic that is undefined for the last pass
    (a standard deviation over a single value: a batch of one through a layer of one unit;
    any statistic of an empty batch) or not finite (NaN or infinity reached the layer) is not
    reported as a number: ``table()`` and ``column()`` raise a ValueError that names the
    layer, the statistic and the reason.
    """

    def __init__(self, model):
        if not isinstance(model, nn.Module):
            raise TypeError(f"LayerRecorder needs an nn.Module, got {type(model).__name__}.")
        self.linears = linear_layers(model)
        if not self.linears:
            raise ValueError("LayerRecorder found no nn.Linear layer in this model to record.")
        self.activations = [m for m in model.modules() if isinstance(m, ACTIVATION_TYPES)]
        self.records = {}
        self.problems = {}  # (layer, statistic) -> why it has no value for the last pass
        self._handles = []
        for k, linear in enumerate(self.linears, start=1):
            self._handles.append(linear.register_forward_hook(self._linear_hook(k)))
        for k, act in enumerate(self.activations, start=1):
            self._handles.append(act.register_forward_hook(self._activation_hook(k)))

    def _row(self, k):
        return self.records.setdefault(k, {"layer": k})

    def _record(self, k, key, t, stat):
        """row[key] = stat(t).item() for layer k, or note why that has no value."""
        row = self._row(k)
        self.problems.pop((k, key), None)
        if t.numel() == 0:
            why = "the batch of the last pass was empty (0 samples)"
        elif stat is _std and t.numel() < 2:
            why = (
                f"it is a standard deviation over a single value (a tensor of shape "
                f"{tuple(t.shape)}: a batch of one through a layer of one unit)"
            )
        else:
            value = stat(t).item()
            row[key] = value
            if math.isfinite(value):
                return
            why = f"it is {value}: NaN or infinity reached layer {k} in the last pass"
        row[key] = math.nan
        self.problems[(k, key)] = why

    def _linear_hook(self, k):
        def hook(module, inputs, output):
            with torch.no_grad():
                x = inputs[0].detach()
                out = output.detach()
                self._record(k, "pre_mean", out, torch.mean)
                self._record(k, "pre_std", out, _std)
                self._record(k, "weight_norm", module.weight.detach(), _norm)
            if output.requires_grad:

                def grad_hook(grad):
                    with torch.no_grad():
                        self._record(k, "grad_std", grad, _std)
                        weight_grad = grad.reshape(-1, grad.shape[-1]).T @ x.reshape(
                            -1, x.shape[-1]
                        )
                        self._record(k, "weight_grad_norm", weight_grad, _norm)

                output.register_hook(grad_hook)

        return hook

    def _activation_hook(self, k):
        def hook(module, inputs, output):
            with torch.no_grad():
                out = output.detach()
                self._record(k, "act_mean", out, torch.mean)
                self._record(k, "act_std", out, _std)
                if out.numel() == 0:
                    return
                sat = _saturation(module, out.reshape(-1, out.shape[-1]))
                if sat is not None:
                    self._row(k)[sat[0]] = sat[1]

        return hook

    def table(self):
        """One dict per layer (``layer`` 1, 2, ...) with the statistics of the last pass.

        Raises a ValueError if a statistic of the last pass has no finite value (see the
        class docstring)."""
        if not self.records:
            raise RuntimeError(
                "Nothing recorded yet: run a forward pass (and backward, for gradient "
                "statistics) while the recorder is open."
            )
        if self.problems:
            (k, key), why = min(self.problems.items())
            more = len(self.problems) - 1
            raise ValueError(
                f"LayerRecorder has no value for layer {k}'s {key} in the last pass: {why}."
                f"{f' ({more} more such statistics.)' if more else ''} Record a pass over a "
                f"batch of 2 or more samples with finite inputs and weights (check "
                f"torch.isfinite(x).all())."
            )
        return [dict(self.records[k]) for k in sorted(self.records)]

    def column(self, key):
        """``[value of key for layer 1, 2, ...]``; ``None`` where a layer lacks it."""
        return [row.get(key) for row in self.table()]

    @property
    def closed(self):
        return not self._handles

    def close(self):
        """Remove every hook; the records stay readable."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self.closed else "recording"
        return (
            f"LayerRecorder({len(self.linears)} Linear layers, "
            f"{len(self.activations)} activations, {state})"
        )


def weight_snapshot(model):
    """Detached copies of every ``nn.Linear`` weight of ``model``, for :func:`update_to_data`."""
    return [m.weight.detach().clone() for m in linear_layers(model)]


def update_to_data(before, model):
    """Per Linear layer, ``||W_now - W_before|| / ||W_before||``: the step's relative size.

    ``before``: :func:`weight_snapshot` taken before the optimizer step. For plain SGD the
    numerator is ``||lr * grad||``. A common rule of thumb puts healthy values near 1e-3.
    A ValueError instead of NaN or inf: for weights that were all zero before the step, or
    that are NaN or infinite before or after it.
    """
    if isinstance(before, torch.Tensor) or not isinstance(before, (list, tuple)):
        raise TypeError(
            f"before must be the list that weight_snapshot(model) returns, got "
            f"{checks.describe(before)}."
        )
    if not all(isinstance(b, torch.Tensor) for b in before):
        raise TypeError("before must be a list of tensors: take it with weight_snapshot(model).")
    now = weight_snapshot(model)
    if len(now) != len(before) or any(a.shape != b.shape for a, b in zip(now, before)):
        raise ValueError(
            "before does not match this model's Linear layers: take it with "
            "weight_snapshot(model) on the same model."
        )
    ratios = []
    for k, (a, b) in enumerate(zip(now, before), start=1):
        for when, w in (("before the step (in before)", b), ("after the step", a)):
            if not bool(torch.isfinite(w).all()):
                raise ValueError(
                    f"Layer {k}'s weights hold NaN or infinity {when}, so the size of the step "
                    f"is not a number: the training diverged (a learning rate too large?)."
                )
        if b.norm().item() == 0:
            raise ValueError(
                f"Layer {k}'s weights were all zero before the step (||W_before|| = 0), so the "
                f"step's size relative to them is undefined (a division by zero). Compare "
                f"absolute step sizes, or initialise the weights (e.g. the layer's "
                f"reset_parameters())."
            )
        ratios.append(((a - b).norm() / b.norm()).item())
    return ratios


# ------------------------------------------------------------------------------ noisy BN


class NoiseInjection(nn.Module):
    """Random per-unit scale and shift, resampled every step: ``y = s * x + m``.

    The "noisy BatchNorm" of Santurkar et al. (2018) puts such a layer right after each BN
    layer so that the distribution the next layer sees keeps moving. In training mode, at each
    forward call and for each unit (feature) ``j``:

    - a step-wide shift ``mu_j ~ Uniform(-shift, shift)`` and scale ``sigma_j ~
      Uniform(1 - scale, 1 + scale)`` (non-zero mean, non-unit variance, new every step);
    - per sample ``b``: ``m[b, j] ~ Normal(mu_j, jitter**2)`` and
      ``s[b, j] ~ Normal(sigma_j, jitter**2)``.

    x: ``(N, C)``; returns ``(N, C)``. In eval mode it is the identity. The last noise drawn is
    kept in ``last_scale`` and ``last_shift`` (``(N, C)`` each) so you can inspect it.
    """

    def __init__(self, num_features, shift=0.5, scale=0.5, jitter=0.1):
        super().__init__()
        num_features = checks.whole_number(num_features, "num_features", minimum=1, example=64)
        for name, value in (("shift", shift), ("jitter", jitter)):
            checks.positive_number(value, name, example=0.5, allow_zero=True)
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise TypeError(f"scale must be a number such as 0.5, got {checks.describe(scale)}.")
        if not 0 <= scale < 1:
            raise ValueError(
                f"scale must be in [0, 1): the step's scale is drawn from "
                f"Uniform(1 - scale, 1 + scale) and must stay positive, got {scale!r}."
            )
        self.num_features = num_features
        self.shift, self.scale, self.jitter = float(shift), float(scale), float(jitter)
        self.last_scale = self.last_shift = None

    def forward(self, x):
        """x: (N, C) -> (N, C)."""
        checks.tensor(x, "x")
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"NoiseInjection({self.num_features}) expects input of shape "
                f"(N, {self.num_features}), got {tuple(x.shape)}."
            )
        if not self.training:
            return x
        C = self.num_features
        kw = {"device": x.device, "dtype": x.dtype}
        mu = (torch.rand(C, **kw) * 2 - 1) * self.shift
        sigma = 1 + (torch.rand(C, **kw) * 2 - 1) * self.scale
        m = mu + self.jitter * torch.randn(x.shape, **kw)
        s = sigma + self.jitter * torch.randn(x.shape, **kw)
        self.last_scale, self.last_shift = s, m
        out = s * x + m
        if not torch.compiler.is_compiling() and bool(
            (~torch.isfinite(out) & torch.isfinite(x)).any()
        ):
            raise ValueError(
                f"NoiseInjection(shift={self.shift:g}, jitter={self.jitter:g}) made finite "
                f"inputs infinite: the noise is too large for {x.dtype} (largest number "
                f"{torch.finfo(x.dtype).max:.3g}). Use a shift and jitter of order 1."
            )
        return out

    def extra_repr(self):
        return (
            f"{self.num_features}, shift=±{self.shift:g}, scale=1±{self.scale:g}, "
            f"jitter={self.jitter:g}"
        )


# ------------------------------------------------------------------------------- probes


def _check_batch(model, x, y, loss_fn):
    _module(model)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"x and y must be tensors (one batch of inputs and targets), got "
            f"{checks.describe(x)} and {checks.describe(y)}."
        )
    if not callable(loss_fn) or isinstance(loss_fn, type):
        raise TypeError(
            f"loss_fn must be a loss function such as nn.BCEWithLogitsLoss() (an instance: "
            f"note the parentheses) or F.binary_cross_entropy_with_logits, got "
            f"{checks.describe(loss_fn)}."
        )
    checks.tensor(x, "x", dims=tuple(range(1, 6)), min_rows=1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}: they must match.")
    weight = next(model.parameters(), None)
    if weight is None:
        raise ValueError(f"{type(model).__name__} has no parameters to probe.")
    if x.dtype != weight.dtype:
        raise TypeError(
            f"x has dtype {x.dtype} but the model's parameters are {weight.dtype}: convert "
            f"one of them, e.g. x.to({weight.dtype}) or model.to({x.dtype})."
        )
    if x.shape[0] < 2 and bn_layers(model):
        raise ValueError(
            "x holds a single sample, and the probe runs the model in training mode, where "
            "BatchNorm cannot normalize one sample: give a batch of 2 or more."
        )
    checks.finite(x, "x")
    checks.finite(y, "y")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            f"{type(model).__name__} has no trainable parameters (every requires_grad is "
            f"False), so there is no gradient to probe."
        )
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise ValueError(
                f"The model's parameter {name} holds NaN or infinity, so every loss and "
                f"gradient the probe computes would be NaN: the model diverged (a learning "
                f"rate too large?). Probe a model whose parameters are finite."
            )


def _finite_or_raise(values, what, advice):
    """Raise a ValueError naming `what` unless every number in values is finite."""
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} is NaN or infinite: {advice}")


def _grads(model, loss_fn, x, y, params):
    """Loss and the gradients of ``params`` (fresh tensors; .grad is not touched)."""
    loss = loss_fn(model(x), y)
    return loss.detach(), torch.autograd.grad(loss, params)


def _training_copy(model):
    copied = copy.deepcopy(model)
    copied.train()
    for p in copied.parameters():
        p.grad = None
    return copied


def covariate_shift(model, loss_fn, x, y, lr):
    """Santurkar et al.'s internal covariate shift of every Linear layer but the first.

    For layer ``k``: ``G`` = d loss / d ``W_k`` on the batch ``(x, y)``; then every parameter
    registered before ``W_k`` (the layers below it, with their BN parameters) takes one SGD
    step ``p -= lr * grad``, and ``G'`` = d loss / d ``W_k`` on the same batch again. The shift
    is how much layer ``k``'s gradient changed because the layers below it moved.

    Runs in training mode on a copy of ``model``. Returns one dict per layer ``k >= 2``:
    ``{"layer": k, "l2": ||G - G'||, "relative": ||G - G'|| / ||G||, "cos": cos(G, G')}``.
    ``lr=0`` gives zero shift.
    A ValueError instead of NaN, inf or 0 / 0: when ``lr`` is so large that the step takes
    the loss or the gradients to NaN or infinity (e.g. ``lr=1e30``), when the model's
    parameters are already NaN, or when a layer's gradient ``G`` is exactly zero.
    """
    _check_batch(model, x, y, loss_fn)
    lr = checks.positive_number(lr, "lr", example=0.1, allow_zero=True)
    probe = _training_copy(model)
    names = [n for n, p in probe.named_parameters() if p.requires_grad]
    params = dict(probe.named_parameters())
    weights = {id(m.weight): k for k, m in enumerate(linear_layers(probe), start=1)}
    if len(weights) < 2:
        raise ValueError("covariate_shift needs a model with at least two nn.Linear layers.")
    state = copy.deepcopy(probe.state_dict())
    _, grads = _grads(probe, loss_fn, x, y, [params[n] for n in names])
    grads = dict(zip(names, grads))
    rows = []
    for i, name in enumerate(names):
        k = weights.get(id(params[name]))
        if k is None or k == 1:
            continue
        probe.load_state_dict(state)
        with torch.no_grad():
            for lower in names[:i]:
                params[lower] -= lr * grads[lower]
        loss_after, (g_after,) = _grads(probe, loss_fn, x, y, [params[name]])
        g = grads[name]
        diff = (g - g_after).norm().item()
        _finite_or_raise(
            [loss_after.item(), diff, g.norm().item()],
            f"After the layers below layer {k} took a step of lr={lr:g}, the loss or layer "
            f"{k}'s gradient",
            "the step threw the weights far outside any useful range. Use a learning rate "
            "of the size training uses (e.g. 0.1).",
        )
        if g.norm().item() == 0:
            raise ValueError(
                f"Layer {k}'s gradient is exactly zero on this batch (dead units or zero "
                f"weights?), so the relative shift and the cosine are 0 / 0. Probe a model "
                f"whose layers all get a gradient (e.g. a freshly initialised one)."
            )
        rows.append(
            {
                "layer": k,
                "l2": diff,
                "relative": diff / max(g.norm().item(), 1e-30),
                "cos": F.cosine_similarity(g.flatten(), g_after.flatten(), dim=0).item(),
            }
        )
    return rows


def gradient_step_probe(model, loss_fn, x, y, step_sizes):
    """How the loss and the gradient change along one gradient step, for several step sizes.

    With ``g`` the gradient of all trainable parameters (flattened) at the current point ``w``
    on the batch ``(x, y)``, for each step size ``eta``: the loss and gradient at
    ``w - eta * g``. Returns a dict:

    - ``losses``: loss at each step (list, one per step size), ``loss0``: loss at ``w``;
    - ``loss_range``: max - min of the loss over ``w`` and all the steps;
    - ``grad_change``: max over steps of ``||g(w) - g(w - eta g)||`` ("gradient
      predictiveness": small means the gradient stays a good guide);
    - ``beta``: max over steps of ``||g(w) - g(w - eta g)|| / ||eta g||`` ("effective
      beta-smoothness"; for a quadratic it is at most the largest Hessian eigenvalue);
    - ``grad_norm``: ``||g||``.

    Runs in training mode on a copy of ``model``; the model itself is untouched. step_sizes:
    one positive number or a list of them. A ValueError instead of NaN or inf: when a step is
    so large that the loss or the gradient after it is NaN or infinite (e.g. 1e30), or the
    model's parameters are already NaN.
    """
    _check_batch(model, x, y, loss_fn)
    step_sizes = _positive_list(step_sizes, "step_sizes", "[0.1, 0.5, 1.0]")
    probe = _training_copy(model)
    params = [p for p in probe.parameters() if p.requires_grad]
    state = copy.deepcopy(probe.state_dict())
    loss0, g = _grads(probe, loss_fn, x, y, params)
    g_flat = torch.cat([t.flatten() for t in g])
    _finite_or_raise(
        [loss0.item(), g_flat.norm().item()],
        "The loss or its gradient at the model's current weights",
        "check the batch and the loss function.",
    )
    losses, changes, betas = [], [], []
    for eta in step_sizes:
        probe.load_state_dict(state)
        with torch.no_grad():
            for p, gp in zip(params, g):
                p -= eta * gp
        loss, g_new = _grads(probe, loss_fn, x, y, params)
        change = (torch.cat([t.flatten() for t in g_new]) - g_flat).norm().item()
        _finite_or_raise(
            [loss.item(), change],
            f"After a gradient step of size {eta:g}, the loss or the gradient",
            "that step size throws the weights far outside any useful range. Use step sizes "
            "of the size of learning rates (e.g. [0.1, 0.5, 1.0]).",
        )
        losses.append(loss.item())
        changes.append(change)
        betas.append(change / max(eta * g_flat.norm().item(), 1e-30))
    every = [loss0.item(), *losses]
    return {
        "step_sizes": step_sizes,
        "loss0": loss0.item(),
        "losses": losses,
        "loss_range": max(every) - min(every),
        "grad_change": max(changes),
        "beta": max(betas),
        "grad_norm": g_flat.norm().item(),
    }


def _positive_list(values, name, example):
    """One positive finite number or a list of them (a tensor or NumPy array too), as a list
    of floats."""
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, torch.Tensor) or type(values).__module__ == "numpy":
        if values.ndim > 1 or values.dtype == bool or values.dtype == torch.bool:
            raise TypeError(
                f"{name} must be numbers such as {example}, got {checks.describe(values)}."
            )
        values = values.tolist() if values.ndim == 1 else [values.item()]
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a list of numbers such as {example}, got {values!r}.")
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty: give at least one, e.g. {example}.")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(
                f"{name} must be numbers such as {example}; it contains {checks.describe(v)}."
            )
    values = [float(v) for v in values]
    if any(not 0 < v < math.inf for v in values):
        raise ValueError(f"{name} must be positive finite numbers, got {values!r}.")
    return values


def _check_scaled_run(a, var, z, grad, eps):
    """Raise a ValueError if bn_scale_response's run at scale a gave no meaningful numbers."""
    if eps == 0 and not bool((var > 0).all()):
        channels = (var <= 0).nonzero().flatten().tolist()
        raise ValueError(
            f"At a = {a:g}, channel(s) {channels} of x (a W)^T are constant over the batch "
            f"(variance {var.min().item():g}) and eps = 0, so BN divides 0 by 0 there. A zero "
            f"row of the weight, constant inputs, or a scale so small that the variance "
            f"underflows {var.dtype} cause this: use eps > 0, other data, or a larger scale."
        )
    if not (
        bool(torch.isfinite(var).all())
        and bool(torch.isfinite(z).all())
        and bool(torch.isfinite(grad).all())
    ):
        raise ValueError(
            f"At a = {a:g} the computation leaves the range of {var.dtype} (the variance of "
            f"x (a W)^T or its gradient overflows, largest number "
            f"{torch.finfo(var.dtype).max:.3g}), so BN's output and gradient there are not "
            f"meaningful. Use moderate scales (e.g. 1e-3 to 1e3), or float64."
        )


def bn_scale_response(weight, x, scales, eps=0.0, seed=None):
    """BN after a Linear layer whose weight is scaled by ``a``: output and gradient, per ``a``.

    weight: ``(C, D)``; x: ``(N, D)``; scales: positive numbers. For each ``a`` this computes
    ``z = BN(x (a W)^T)`` (batch statistics, no affine part, ``eps`` inside the square root)
    (written out: ``F.batch_norm`` refuses ``eps=0`` in training mode) and ``G``, the gradient
    of the fixed random loss ``sum(z * R)`` with respect to the weight
    actually used, ``a W``. Returns one dict per ``a``:
    ``{"a", "output_change": max |z(a) - z(1)|, "grad_ratio": ||G(a)|| / ||G(1)||,
    "grad_cos_weight": cos(G(a), W)}``. With ``eps=0``: ``output_change`` is 0 and
    ``grad_ratio`` is ``1 / a`` (up to rounding), and ``G`` is orthogonal to ``W``.
    Use float64 to see the exact invariance. ``seed`` draws ``R``; ``None`` takes the first
    of ``bnteach.stats.seeds(1)`` (``BNTEACH_SEED_OFFSET`` shifts it). scales: one number or a
    list (a tensor or NumPy array too). A ValueError instead of NaN or inf: for an all-zero
    weight; with eps = 0, for a channel that is constant over the batch (0 / 0); for a scale
    at which the variance or the gradient overflows the dtype.
    """
    checks.tensor(weight, "weight")
    checks.tensor(x, "x")
    if weight.dim() != 2 or x.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"weight must be (C, D) and x (N, D) with the same D, got weight "
            f"{tuple(weight.shape)} and x {tuple(x.shape)}."
        )
    if x.shape[0] < 2:
        raise ValueError("x needs at least 2 samples: BN's batch statistics need a spread.")
    if x.dtype != weight.dtype or x.device != weight.device:
        raise TypeError(
            f"weight and x must have the same dtype and device, got {weight.dtype} on "
            f"{weight.device} and {x.dtype} on {x.device}: e.g. x.to(weight)."
        )
    checks.finite(weight, "weight")
    checks.finite(x, "x")
    if not bool(weight.any()):
        raise ValueError(
            "weight is all zeros: scaling it by a changes nothing (a * 0 = 0), and BN of a "
            "constant output is 0 / 0. Use a random weight, e.g. torch.randn(C, D)."
        )
    scales = _positive_list(scales, "scales", "[1, 10, 100]")
    eps = checks.positive_number(eps, "eps", example=1e-5, allow_zero=True)
    seed = seeds(1)[0] if seed is None else checks.seed(seed, minimum=None)
    g = torch.Generator().manual_seed(seed)
    R = torch.randn(x.shape[0], weight.shape[0], generator=g, dtype=x.dtype).to(x.device)

    def run(a):
        w = (a * weight.detach()).requires_grad_()
        h = x @ w.T  # (N, C)
        mean = h.mean(0)
        var = ((h - mean) ** 2).mean(0)  # biased, as BN in training mode
        z = (h - mean) / torch.sqrt(var + eps)
        (grad,) = torch.autograd.grad((z * R).sum(), w)
        _check_scaled_run(a, var, z, grad, eps)
        return z.detach(), grad

    z1, g1 = run(1.0)
    rows = []
    for a in scales:
        z, grad = run(a)
        rows.append(
            {
                "a": a,
                "output_change": (z - z1).abs().max().item(),
                "grad_ratio": (grad.norm() / g1.norm()).item(),
                "grad_cos_weight": F.cosine_similarity(
                    grad.flatten(), weight.flatten(), dim=0
                ).item(),
            }
        )
    return rows
