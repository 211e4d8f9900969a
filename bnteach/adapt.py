"""Test-time adaptation of BatchNorm to shifted data (notebook 11).

Three ways to let a trained BN net see unlabelled target data ``X`` (images ``(N, C, H, W)``
or rows ``(N, features)``, whatever the model takes; never labels):

- :func:`adabn` (Li et al. 2016): every BN layer's running statistics re-estimated on ``X``
  (one pass, one batch holding all of ``X``: :func:`bnteach.batchnorm.recalibrate`).
- :func:`predict_mixed`: predictions for test batches of ``batch_size`` images, each batch
  normalised with a prior-weighted mix of the training statistics and its own (Schneider et
  al. 2020): ``mean = w * running_mean + (1 - w) * batch mean``, the same for the (biased)
  variance, with ``w = prior / (prior + batch_size)``. ``prior=0`` is the batch's own
  statistics (a train-mode forward of each batch), a huge prior the training statistics.
- :func:`tent` (Wang et al. 2021): the BN layers' affine parameters (gamma, beta) trained by
  Adam to minimise the mean entropy of the predictions on ``X``, BN normalising with the
  statistics of ``X``; nothing else changes.

:func:`bn_input_stats` measures what a shift does to each BN layer's input. Every function
that changes a model changes it in place and returns it; if it fails, the model is left
exactly as it was.
"""

import contextlib
import copy
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from bnteach import checks
from bnteach.batchnorm import bn_layers, recalibrate

__all__ = ["adabn", "bn_input_stats", "predict_mixed", "tent"]


def _check_model(model, what):
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{what} needs a trained model (an nn.Module with BatchNorm layers, e.g. "
            f"SmallCNN('batch')), got {checks.describe(model)}."
        )
    layers = [m for m in bn_layers(model) if m.running_mean is not None]
    if not layers:
        raise ValueError(
            f"{what}: the model has no BatchNorm layer with running statistics, so there is "
            f"nothing to adapt. A net with LayerNorm or GroupNorm (or none) normalises each "
            f"sample on its own and keeps no training statistics: test-time adaptation of BN "
            f"does not apply to it."
        )
    return layers


def _check_unlabelled(X, what, model):
    """X: a float tensor (N, ...) with N >= 1, finite, of the model's dtype; never (X, y)."""
    if isinstance(X, (tuple, list)):
        raise TypeError(
            f"{what} adapts to UNLABELLED target data: pass the images X alone, not "
            f"{type(X).__name__} of {len(X)} items such as (X, y). Test-time adaptation never "
            f"sees the labels."
        )
    checks.tensor(X, "X", floating=False)
    if not X.is_floating_point():
        raise TypeError(
            f"X holds {X.dtype} values: are these labels? {what} needs the unlabelled images "
            f"(floating point, e.g. shifted(X_val, 'blur')), never the labels."
        )
    if X.dim() < 2 or X.shape[0] == 0:
        raise ValueError(
            f"X must hold at least one sample, of shape (N, ...) with N >= 1; got shape "
            f"{tuple(X.shape)}. An empty target set has no statistics to adapt to."
        )
    checks.finite(X, "X", "Adapting to it would fill the statistics with NaN.")
    if X.dim() == 2 and X.shape[0] == 1 and what != "predict_mixed":
        raise ValueError(
            f"X holds one sample of {X.shape[1]} features: a BatchNorm1d layer then has one "
            f"value per channel, whose variance is 0, so {what} has no statistics to adapt "
            f"to. Give it at least 2 target samples (images give more: BatchNorm2d pools the "
            f"pixels of each channel)."
        )
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    if weight is not None and weight.dtype != X.dtype:
        raise TypeError(
            f"X is {X.dtype} but the model's parameters are {weight.dtype}: convert one of "
            f"them, e.g. X.to({weight.dtype})."
        )
    return X


@contextlib.contextmanager
def _fits(X, what):
    """Turn torch's error for an X the model cannot take (a shape mismatch deep inside a
    layer) into a teaching error; bnteach's own errors (ValueError, TypeError) pass."""
    try:
        yield
    except (ValueError, TypeError):
        raise
    except (RuntimeError, IndexError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"{what}: the model cannot run on X of shape {tuple(X.shape)} (torch says: "
            f"{first}). Give X in the form the model was trained on: e.g. images (N, 1, 8, 8) "
            f"for SmallCNN, rows (N, 64) for an MLP on the flat digits. The model was left as "
            f"it was."
        ) from None


def adabn(model, X):
    """AdaBN: every BN layer's running statistics re-estimated on the unlabelled X.

    X: target inputs (N, ...) as the model takes them, N >= 1, no labels. The same as
    ``recalibrate(model, [(X,)])``: one pass over X as one batch, BN layers in training mode
    with cumulative statistics, so each layer's running_mean and running_var become the mean
    and the unbiased variance of its input on X (earlier layers already normalised with X's
    statistics). Parameters do not change. On failure the model is left as it was.
    Returns model (in eval mode, ready to predict)."""
    _check_model(model, "adabn")
    _check_unlabelled(X, "adabn", model)
    with _fits(X, "adabn"):
        recalibrate(model, [(X,)])
    return model.eval()


def _input_stats(x):
    """Per-channel mean and biased variance of a BN layer's input x (N, C, ...): (C,), (C,)."""
    var, mean = torch.var_mean(x, [0, *range(2, x.dim())], correction=0)
    return mean, var


def bn_input_stats(model, X):
    """What each BN layer sees of X in eval mode, against what it learnt in training.

    X: inputs (N, ...), N >= 1. Returns one dict per BN layer (in forward order) with
    ``mean`` and ``var`` (C,) (the per-channel mean and biased variance of the layer's input
    on X, under eval mode: earlier layers use their running statistics), and ``mean_shift``
    and ``var_ratio`` (C,): ``(mean - running_mean) / sqrt(running_var)`` and
    ``var / running_var``. The model is not changed (its training flags are restored)."""
    layers = _check_model(model, "bn_input_stats")
    _check_unlabelled(X, "bn_input_stats", model)
    seen = {}

    def record(mod, args, out):
        seen[mod] = args[0].detach()  # returns None: the layer's output is not replaced

    named = {m: name for name, m in model.named_modules()}
    for m in layers:  # before the pass: what the shift and the ratio divide by
        bad = ~(torch.isfinite(m.running_mean) & torch.isfinite(m.running_var))
        if bool((bad | (m.running_var <= 0)).any()):
            raise ValueError(
                f"bn_input_stats: {named[m]!r} has a running_var that is 0, negative or not "
                f"finite (or a running_mean that is not finite), so a shift in units of its "
                f"standard deviation and a variance ratio are undefined. Were its running "
                f"statistics ever learnt (recalibrate(model, ...) on training data)?"
            )
    hooks = [m.register_forward_hook(record) for m in layers]
    flags = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad(), _fits(X, "bn_input_stats"):
            model.eval()(X)
    finally:
        for h in hooks:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    out = []
    for m in layers:
        if m not in seen:
            raise ValueError(
                f"bn_input_stats: the BN layer {named[m]!r} is part of the model but its "
                f"forward pass never used it, so it saw no input to measure."
            )
        mean, var = _input_stats(seen[m])
        out.append(
            {
                "mean": mean,
                "var": var,
                "mean_shift": (mean - m.running_mean) / m.running_var.sqrt(),
                "var_ratio": var / m.running_var,
            }
        )
    return out


def _mixed_bn_hook(batch_size, weight):
    """A forward hook that replaces a BN layer's output: consecutive groups of batch_size
    samples, each normalised with weight * running + (1 - weight) * its own statistics."""

    def hook(m, args, out):
        x = args[0]
        if weight == 0 and batch_size * math.prod(x.shape[2:]) == 1:
            raise ValueError(
                f"A test batch of {batch_size} sample(s) gives {type(m).__name__} one value "
                f"per channel: its own variance is 0 and its own mean is the value itself, so "
                f"normalising with them erases the input (PyTorch's train mode refuses it: "
                f"'Expected more than 1 value per channel'). Use prior > 0 (mix in the "
                f"training statistics) or larger test batches."
            )
        g = x.reshape(-1, batch_size, *x.shape[1:])  # (groups, b, C, ...)
        dims = [1, *range(3, g.dim())]
        var, mean = torch.var_mean(g, dims, correction=0, keepdim=True)
        shape = (1, 1, -1, *([1] * (g.dim() - 3)))
        mean = weight * m.running_mean.reshape(shape) + (1 - weight) * mean
        var = weight * m.running_var.reshape(shape) + (1 - weight) * var
        y = (g - mean) / (var + m.eps).sqrt()
        if m.weight is not None:
            y = y * m.weight.reshape(shape)
        if m.bias is not None:
            y = y + m.bias.reshape(shape)
        return y.reshape(x.shape)

    return hook


def _check_prior(prior):
    if isinstance(prior, bool) or not isinstance(prior, numbers.Real) or math.isnan(prior):
        raise TypeError(
            f"prior must be a number >= 0 (how many samples the training statistics count "
            f"as; 0 = the batch's own statistics, math.inf = the training statistics), got "
            f"{checks.describe(prior)}."
        )
    if prior < 0:
        raise ValueError(f"prior must be >= 0 (a number of samples), got {prior!r}.")
    return float(prior)


def predict_mixed(model, X, batch_size, prior=0.0):
    """Logits (N, classes) for X cut into consecutive test batches of batch_size samples,
    each batch normalised by every BN layer with a mix of the training statistics and the
    batch's own (Schneider et al. 2020).

    In each BN layer, per channel: ``w = prior / (prior + batch_size)``; ``mean = w *
    running_mean + (1 - w) * batch mean`` and ``var = w * running_var + (1 - w) * batch
    variance`` (biased, as a train-mode forward uses); the layer's gamma and beta as usual.
    Deeper layers see inputs normalised with the mix. prior=0: each batch's own statistics,
    exactly a train-mode forward of each batch (without touching the running statistics);
    ``math.inf``: the training statistics (eval mode). A last batch with fewer samples is
    normalised with its own size in ``w``. Nothing of the model changes."""
    layers = _check_model(model, "predict_mixed")
    _check_unlabelled(X, "predict_mixed", model)
    batch_size = checks.whole_number(batch_size, "batch_size", minimum=1, example=16)
    prior = _check_prior(prior)
    flags = {m: m.training for m in model.modules()}
    full = X.shape[0] - X.shape[0] % batch_size
    parts = [(X[:full], batch_size), (X[full:], X.shape[0] - full)]
    outs = []
    try:
        model.eval()
        with torch.no_grad():
            for part, b in parts:
                if part.shape[0] == 0:
                    continue
                w = 1.0 if math.isinf(prior) else prior / (prior + b)
                hooks = [m.register_forward_hook(_mixed_bn_hook(b, w)) for m in layers]
                try:
                    with _fits(X, "predict_mixed"):
                        outs.append(model(part))
                finally:
                    for h in hooks:
                        h.remove()
    finally:
        for m, flag in flags.items():
            m.training = flag
    return torch.cat(outs)


def _entropy(logits):
    """Mean Shannon entropy (nats) of softmax(logits) over the rows of logits (N, classes)."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"tent minimises the entropy of the predicted class probabilities, softmax over "
            f"the classes, so it needs logits of shape (N, classes) with at least 2 classes; "
            f"the model gives shape {tuple(logits.shape)}. (With one output per sample, "
            f"softmax is always 1 and its entropy 0: nothing to minimise.)"
        )
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(1).mean()


def tent(model, X, steps=10, lr=1e-3):
    """TENT: train only the BN layers' gamma and beta to minimise the mean entropy of the
    model's predictions on the unlabelled X (N, ...), with Adam(lr), for ``steps`` steps on
    all of X as one batch; BN normalises with X's own statistics throughout.

    Afterwards the running statistics are X's (as :func:`adabn` sets them, computed with the
    adapted gamma and beta), so eval mode predicts with what TENT adapted. Every other
    parameter and every ``requires_grad`` flag stays as it was. Returns the list of mean
    entropies, one before each step. On failure the model is left exactly as it was."""
    layers = _check_model(model, "tent")
    _check_unlabelled(X, "tent", model)
    steps = checks.whole_number(steps, "steps", minimum=1, example=10)
    lr = checks.positive_number(lr, "lr", example=1e-3)
    affine = [p for m in layers for p in (m.weight, m.bias) if p is not None]
    if not affine:
        raise ValueError(
            "tent trains BN's gamma and beta, but the model's BN layers have none "
            "(affine=False): there is nothing for it to adapt."
        )
    state = copy.deepcopy(model.state_dict())
    flags = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    entropies = []
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in affine:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(affine, lr=lr)
        model.eval()
        for m in layers:
            m.training = True  # directly: a frozen layer's train() would refuse
        saved = [(m.momentum, m) for m in layers]
        for m in layers:
            m.momentum = 0.0  # normalise with X's statistics; leave the running ones alone
        try:
            for _ in range(steps):
                with _fits(X, "tent"):
                    logits = model(X)
                loss = _entropy(logits)
                entropies.append(loss.item())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        finally:
            for momentum, m in saved:
                m.momentum = momentum
        checks.finite(torch.tensor(entropies), "tent's entropies", "Use a smaller lr.")
        recalibrate(model, [(X,)])
    except Exception as err:
        model.load_state_dict(state)
        err.add_note("tent failed; the model was left exactly as it was before the call.")
        raise
    finally:
        for m, flag in flags.items():
            m.training = flag
        for p, flag in grads.items():
            p.requires_grad_(flag)
            p.grad = None
    return entropies
