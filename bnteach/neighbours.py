"""What BatchNorm does to its neighbours: probes for notebook 12.

- The weights in front of BN. BN makes a layer's output independent of the scale of the
  weights that feed it, so their norm changes only how fast they turn:
  :func:`scale_invariant_linears` finds them, :func:`weight_norms` and
  :func:`effective_steps` (SGD's step on their direction, ``lr / ||w||^2``) measure them,
  :func:`decay_bound` is the norm that weight decay alone would leave, and
  :func:`norm_trajectory` trains on the engine in chunks of epochs and records the norms
  at every chunk's end.
- Dropout in front of BN: :func:`variance_shift`, the eval-time variance of each BN layer's
  input over its running variance (Li et al. 2019's "variance shift").
- Small batches: :func:`mode_gap`, the accuracy of a model in training mode (batch
  statistics of ``batch_size`` samples) and in eval mode (running statistics).

Models are ordinary modules (what ``SweepResult.to_modules()`` gives); no probe changes them.
"""

import copy
import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

from bnteach import checks, sweep
from bnteach.batchnorm import bn_layers

__all__ = [
    "scale_invariant_linears",
    "weight_norms",
    "effective_steps",
    "decay_bound",
    "norm_trajectory",
    "Trajectory",
    "variance_shift",
    "mode_gap",
    "ModeGap",
]


def _device(model):
    first = next(iter([*model.parameters(), *model.buffers()]), None)
    return torch.device("cpu") if first is None else first.device


def _module(model, what):
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} needs a model (an nn.Module), got {checks.describe(model)}.")
    return model


# ----------------------------------------------------------------------------- weights


def scale_invariant_linears(model):
    """``[(name, linear)]``: every ``nn.Linear`` whose output goes straight into a BN layer
    (the next module of the same ``nn.Sequential``), in order. BN makes the output
    independent of such a layer's scale: ``BN((a W) x) = BN(W x)`` for ``a > 0`` (up to eps;
    with a bias, of ``W`` and ``b`` scaled together)."""
    _module(model, "scale_invariant_linears")
    norms = set(map(id, bn_layers(model)))
    if not norms:
        raise ValueError(
            "This model has no BatchNorm layer, so no weight is scale-invariant: the probes of "
            "the weights in front of BN need a model with BN (e.g. MLP(norm='batch'))."
        )
    found = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for (name, first), (_, second) in zip(children, children[1:]):
            if isinstance(first, nn.Linear) and id(second) in norms:
                found.append((f"{prefix}.{name}" if prefix else name, first))
    if not found:
        raise ValueError(
            "No Linear layer of this model feeds a BatchNorm layer directly (BN after the "
            "activation, placement='after'?): the probes of the weights in front of BN need "
            "Linear -> BatchNorm in one nn.Sequential."
        )
    return found


def weight_norms(model):
    """``{name: ||w||}`` for every Linear that feeds a BN layer (see
    :func:`scale_invariant_linears`): the Frobenius norm of its weight ``(out, in)``, its bias
    included when it has one (the vector that BN makes scale-invariant)."""
    out = {}
    for name, linear in scale_invariant_linears(model):
        squares = linear.weight.detach().double().square().sum()
        if linear.bias is not None:
            squares = squares + linear.bias.detach().double().square().sum()
        out[name] = math.sqrt(float(squares))
    return out


def effective_steps(model, lr):
    """``{name: lr / ||w||^2}`` for every Linear that feeds a BN layer: how far one SGD step
    of learning rate ``lr`` turns the DIRECTION of ``w``, which is all the output depends on
    (the gradient scales as ``1 / ||w||``, so the relative step scales as ``1 / ||w||^2``)."""
    lr = checks.positive_number(lr, "lr", example=0.1)
    steps = {}
    for name, norm in weight_norms(model).items():
        step = lr / norm**2 if 0 < norm < math.inf else math.nan
        if not math.isfinite(step):
            raise ValueError(
                f"{name}.weight has norm {norm:g}, so lr / ||w||^2 is not a finite number: "
                f"BN makes the output independent of ||w||, but a weight of norm 0 (or NaN, "
                f"infinite, or so small that the step overflows) has no direction to turn."
            )
        steps[name] = step
    return steps


def _check_weight_decay(weight_decay):
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real):
        raise TypeError(
            f"weight_decay must be a number such as 1e-3, got {checks.describe(weight_decay)}."
        )
    value = float(weight_decay)
    if not (math.isfinite(value) and value >= 0):  # NaN fails too
        raise ValueError(
            f"weight_decay must be a finite number >= 0 (such as 1e-3; 0 for none), got "
            f"{weight_decay!r}. A negative weight decay would grow the weights instead."
        )
    return value


MAX_STEPS = 10**12  # decay_bound's largest step count (far beyond any training run)


def decay_bound(norm, lr, weight_decay, steps):
    """``norm * (1 - lr * weight_decay) ** steps``: the norm that ``steps`` SGD steps with L2
    weight decay leave when the gradient adds nothing. For a weight in front of BN the
    gradient is orthogonal to ``w`` (scale invariance), so each step gives ``||w'||^2 =
    (1 - lr wd)^2 ||w||^2 + lr^2 ||g||^2`` and the real norm stays above this bound.
    ``norm``: a number or a tensor of them (>= 0)."""
    if isinstance(norm, torch.Tensor):
        checks.finite(norm, "norm")
        if bool((norm < 0).any()):
            raise ValueError("norm holds a negative value: a norm is >= 0.")
    else:
        norm = checks.positive_number(norm, "norm", example=6.5, allow_zero=True)
    lr = checks.positive_number(lr, "lr", example=0.1)
    weight_decay = _check_weight_decay(weight_decay)
    steps = checks.whole_number(steps, "steps", minimum=0, example=920)
    if steps > MAX_STEPS:
        raise ValueError(
            f"steps must be at most {MAX_STEPS:g} (a count of SGD steps), got {steps}."
        )
    factor = 1.0 - lr * weight_decay
    if factor <= 0:
        raise ValueError(
            f"lr * weight_decay = {lr * weight_decay:g} >= 1: one step would multiply the "
            f"weights by {factor:g} (flip or zero them). Use a weight decay below 1 / lr."
        )
    return norm * factor**steps


@dataclass
class Trajectory:
    """What :func:`norm_trajectory` returns.

    ``steps``: the optimizer steps done at each recorded point, ``[0, ...]`` (chunks + 1).
    ``layers``: model name -> the names of its Linears that feed a BN layer.
    ``norms``: model name -> float64 tensor ``(seeds, chunks + 1, layers)`` of their norms
    (NaN once a replica diverged). ``val_acc``: model name -> ``(seeds, chunks * epochs)``,
    validation accuracy after every epoch. ``result``: the last chunk's ``SweepResult``
    (its ``to_modules()`` are the trained nets). ``seeds``, ``lr``: what was run.
    """

    seeds: list
    lr: float
    steps: list
    layers: dict
    norms: dict
    val_acc: dict
    result: object

    def effective_steps(self, model):
        """``lr / ||w||^2`` at every recorded point: ``(seeds, chunks + 1, layers)``."""
        if model not in self.norms:
            raise ValueError(
                f"model={model!r} is not in this trajectory; it has {list(self.norms)}."
            )
        return self.lr / self.norms[model] ** 2


def _check_trajectory_models(models):
    specs = sweep.normalize_models(models)  # the engine's teaching errors for bad specs
    for name, spec in specs.items():
        if spec["norm"] not in ("batch", "ghost", "renorm"):
            raise ValueError(
                f"models[{name!r}] has norm={spec['norm']!r}: the norms recorded are those of "
                f"the weights in front of BatchNorm, so every model needs BN ('norm': 'batch')."
            )
    return specs


def _check_seeds(seeds):
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (list, tuple, range)):
        raise TypeError(f"seeds must be a list such as seeds(10), got {checks.describe(seeds)}.")
    return [checks.whole_number(s, "each seed", minimum=0, example=0) for s in seeds]


def _norm_row(module, layers):
    if module is None:  # diverged
        return [math.nan] * len(layers)
    norms = weight_norms(module)
    return [norms[name] for name in layers]


def norm_trajectory(seeds, lr, models, data, chunks, epochs, batch_size=64, device=None):
    """Train ``models`` (name -> spec, each with BN) with ONE ``sweep.run`` of ``chunks *
    epochs`` epochs, and record :func:`weight_norms` at the start and after every ``epochs``
    epochs (read inside the run's ``on_epoch`` callback, where a partial result's
    ``to_modules()`` are the nets as they are then). A replica that diverged reads NaN from
    then on. Returns a :class:`Trajectory`.
    """
    specs = _check_trajectory_models(models)
    seeds = _check_seeds(seeds)
    chunks = checks.whole_number(chunks, "chunks", minimum=1, example=8)
    epochs = checks.whole_number(epochs, "epochs", minimum=1, example=5)
    lr = checks.positive_number(lr, "lr", example=0.1)
    starts = sweep.start_modules(seeds, models, data)
    layers = {name: [n for n, _ in scale_invariant_linears(starts[name][seeds[0]])]
              for name in specs}  # fmt: skip
    norms = {name: [[_norm_row(starts[name][s], layers[name])] for s in seeds] for name in specs}

    def record(partial):
        for name in specs:
            for i, module in enumerate(partial.to_modules(model=name)):
                norms[name][i].append(_norm_row(module, layers[name]))

    def on_epoch(epoch, partial):
        if epoch % epochs == 0:
            record(partial)

    result = sweep.run(
        seeds, [lr], epochs=chunks * epochs, batch_size=batch_size, models=models, data=data,
        device=device, on_epoch=on_epoch,
    )  # fmt: skip
    steps_per_epoch = -(-data[0].shape[0] // batch_size)
    return Trajectory(
        seeds=seeds,
        lr=lr,
        steps=[k * epochs * steps_per_epoch for k in range(chunks + 1)],
        layers=layers,
        norms={name: torch.tensor(norms[name], dtype=torch.float64) for name in specs},
        val_acc={
            name: result.val_acc[[k for k, r in enumerate(result.replicas) if r.model == name]]
            for name in specs
        },  # fmt: skip
        result=result,
    )


# ----------------------------------------------------------------------------- dropout


def _check_inputs(X, name="X", min_rows=2):
    checks.tensor(X, name, dims=2, min_rows=min_rows)
    checks.finite(X, name)
    return X


def _run(model, X, what):
    """``model(X)`` under no_grad; a failing forward pass (X of the wrong width or dtype)
    becomes a teaching error."""
    try:
        with torch.no_grad():
            return model(X)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(
            f"{what} ran the model on X of shape {tuple(X.shape)} and dtype {X.dtype}, and the "
            f"model failed: {err}. X must be what the model takes: (N, input_size), in the "
            f"model's dtype."
        ) from None


def variance_shift(model, X):
    """For every BN layer with running statistics, in forward order: the variance of its
    input over ``X`` (N, F) in eval mode, divided by its ``running_var``, averaged over
    channels. 1 means the statistics BN learned in training match what it sees at test time;
    dropout in front of BN makes it below 1 (Li et al. 2019). The model is not changed.
    Returns a list of floats."""
    _module(model, "variance_shift")
    layers = [m for m in bn_layers(model) if getattr(m, "running_var", None) is not None]
    if not layers:
        raise ValueError(
            "variance_shift compares a BatchNorm layer's input with its running statistics, but "
            "this model has no BatchNorm layer with running statistics (norm='batch')."
        )
    _check_inputs(X)
    probe = copy.deepcopy(model).eval()
    copies = {id(m) for m in bn_layers(probe) if getattr(m, "running_var", None) is not None}
    seen = []  # (layer, its input) in the order the forward pass calls them

    def keep(module, args, output):
        if all(m is not module for m, _ in seen):
            seen.append((module, args[0].detach()))

    hooks = [m.register_forward_hook(keep) for m in bn_layers(probe) if id(m) in copies]
    try:
        _run(probe, X.to(_device(probe)), "variance_shift")
    finally:
        for h in hooks:
            h.remove()
    out = []
    for m, x in seen:
        x = x.double().transpose(0, 1).flatten(1)  # (C, N * L): one row per channel
        out.append(float((x.var(1, unbiased=False) / m.running_var.double()).mean()))
    return out


# ----------------------------------------------------------------------------- small batches


@dataclass(frozen=True)
class ModeGap:
    """Accuracy of one model in training mode and in eval mode on the same samples;
    ``gap = eval_mode - train_mode``."""

    train_mode: float
    eval_mode: float

    @property
    def gap(self):
        return self.eval_mode - self.train_mode


def _check_labels_fit(logits, y):
    """Raise unless y fits the model's logits (N, K): class labels (N,) in [0, K), or 0/1
    targets (N, 1) with K = 1."""
    if y.dim() == 1:
        if logits.dim() != 2 or bool(((y < 0) | (y >= logits.shape[1])).any()):
            raise ValueError(
                f"y holds class labels from {int(y.min())} to {int(y.max())}, but the model "
                f"gives logits of shape {tuple(logits.shape)}: labels must run from 0 to "
                f"{logits.shape[-1] - 1}, one per output."
            )
    elif logits.shape != y.shape:  # (the values were checked by _check_labels)
        raise ValueError(
            f"y holds 0/1 targets of shape {tuple(y.shape)}, which need one logit per row, but "
            f"the model gives shape {tuple(logits.shape)}. For several classes, pass int64 "
            f"class labels of shape (N,)."
        )


def _correct(logits, y):
    """Which rows the logits (N, K) classify right (y as checked by _check_labels_fit)."""
    if y.dim() == 1:
        return logits.argmax(1) == y
    return (logits > 0).to(y.dtype) == y


def _check_labels(y, X):
    checks.tensor(y, "y", floating=False)
    ok_classes = y.dim() == 1 and y.dtype == torch.long
    ok_binary = y.dim() == 2 and y.shape[1:] == (1,) and y.is_floating_point()
    if not (ok_classes or ok_binary) or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"y must hold one target per row of X ({X.shape[0]}): int64 class labels of shape "
            f"({X.shape[0]},) or 0/1 floats of shape ({X.shape[0]}, 1); got "
            f"{checks.describe(y)}."
        )
    if ok_binary:
        checks.binary_labels(y, "y")


def mode_gap(model, X, y, batch_size, seed=0):
    """Accuracy on ``(X, y)`` in training mode, batch statistics of ``batch_size`` samples
    (the rows in the order of ``torch.randperm`` seeded with ``seed``; a last batch of
    fewer rows is left out, as ``drop_last`` does), and in eval mode (running statistics).
    Training mode runs on a copy under ``no_grad`` (dropout active, as in training), so the
    model and its running statistics are not changed. ``y``: (N,) int64 labels or (N, 1)
    0/1 floats. Returns a :class:`ModeGap`."""
    _module(model, "mode_gap")
    _check_inputs(X)
    _check_labels(y, X)
    batch_size = checks.whole_number(batch_size, "batch_size", minimum=2, example=4)
    seed = checks.seed(seed)
    if batch_size > X.shape[0]:
        raise ValueError(f"batch_size={batch_size} is larger than X's {X.shape[0]} rows.")
    device = _device(model)
    X, y = X.to(device), y.to(device)
    order = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed))
    order = order[: X.shape[0] - X.shape[0] % batch_size].to(device)
    probe = copy.deepcopy(model).train()  # its running statistics change; the model's don't
    eval_logits = _run(copy.deepcopy(model).eval(), X, "mode_gap")
    _check_labels_fit(eval_logits, y)
    eval_hits = _correct(eval_logits, y)
    hits = [_correct(_run(probe, X[i], "mode_gap"), y[i]) for i in order.split(batch_size)]
    hits = torch.cat(hits)
    return ModeGap(float(hits.float().mean()), float(eval_hits.float().mean()))
