"""THE engine: train many replicas of MLPs (models x seeds x learning rates) at once.

``run(seeds=[0, 1, 2], lrs=[0.01])`` trains every model of ``models`` once per seed and
learning rate. Each replica is the experiment that :func:`bnteach.training.train_model` runs
with ``torch.manual_seed(seed); model = MLP(...)`` and ``make_loaders(..., seed=seed)``: same
initial weights, same shuffle order, same optimizer, same losses. Replicas of one
architecture are stacked along a new first dimension ``R`` (weights of shape
``(R, out, in)``) and trained together with batched matrix products, which is many times
faster than a Python loop over small models. A replica's numbers do not depend on which other
replicas are trained with it (tested bitwise).

What a replica can be, each proven against plain PyTorch (autograd, ``torch.optim``) in
tests/test_sweep.py:

- any :class:`~bnteach.models.MLP` (norm none, batch, layer, ghost = per-device BN, renorm;
  any activation and placement; with or without bias and dropout) or
  :class:`~bnteach.models.ResidualMLP`, described by a spec (see :func:`normalize_models`);
- trained with Adam (``torch.optim.Adam``'s fused kernel) or plain SGD, with optional L2
  weight decay (``weight_decay``; ``decay_norm=False`` spares the norms' weight and bias);
- on binary targets ``(N, 1)`` (``BCEWithLogitsLoss``) or class labels ``(N,)`` (int64,
  cross-entropy with one logit per class);
- started from ``torch.manual_seed(seed)``'s weights, or from given modules (``inits``);
- evaluated (eval mode) after each epoch on the validation split and on ``eval_sets``.

:meth:`SweepResult.to_modules` gives each trained replica back as an ordinary module.
Forward and backward passes are written out by hand (no autograd); the BatchNorm backward is
the full one, with the gradient flowing through the batch mean and variance.

The CNN of notebooks 07 and 11 is trained by :mod:`bnteach.cnn` instead (see its docstring).
"""

import copy
import functools
import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.adam import adam

from bnteach import checks
from bnteach.batchnorm import BatchRenorm1d, GhostBatchNorm1d
from bnteach.data import load_data
from bnteach.models import ACTIVATIONS, ResidualBlock, build
from bnteach.training import History, check_epochs, check_lr

DEFAULT_MODELS = {"plain": {"norm": "none"}, "BN": {"norm": "batch"}}
MLP_DEFAULTS = {
    "hidden_sizes": (128, 64),
    "norm": "none",
    "activation": "relu",
    "placement": "before",
    "bias": True,
    "virtual_batch_size": None,
    "r_max": 3.0,
    "d_max": 5.0,
    "dropout": 0.0,
    "dropout_at": "every",
}
RESIDUAL_DEFAULTS = {"blocks": 8, "width": 32, "norm": "batch", "init": "default"}
TRAINING_DEFAULTS = {"optimizer": "adam", "weight_decay": 0.0, "decay_norm": True}
OPTIMIZERS = ("adam", "sgd")
MODEL_KWARGS = tuple(MLP_DEFAULTS) + ("blocks", "width", "init") + tuple(TRAINING_DEFAULTS)
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults
DROPOUT_SEEDS = 2**32  # replica with seed s draws its dropout masks from dropout_generator(s)


def dropout_generator(seed):
    """The ``torch.Generator`` a replica with ``seed`` draws its dropout masks from: each
    training forward, each dropout layer in order, ``torch.empty(n, features).bernoulli_(1 - p,
    generator=g)`` (the shuffle order has its own generator, seeded with ``seed``)."""
    return torch.Generator().manual_seed(DROPOUT_SEEDS + seed)


@dataclass
class Replica:
    """One trained replica: which model, seed and learning rate, and its :class:`History`."""

    model: str
    seed: int
    lr: float
    history: History

    @property
    def diverged_at(self):
        return self.history.diverged_at


class SweepResult:
    """What :func:`run` returns (and what :func:`stream` yields after each epoch).

    ``replicas``: one :class:`Replica` per (model, seed, lr), in that nesting order.
    ``train_loss``: float64 tensor ``(len(replicas), epochs_run)``, row ``k`` for
    ``replicas[k]``; NaN after a replica diverged. ``evals``: split name -> ``(loss, acc)``,
    two such tensors per split: ``"val"`` (the data's validation split, also as ``val_loss``
    and ``val_acc``) and each of ``eval_sets``. ``splits``: their names.
    ``diverged_at``: per replica the 1-based epoch whose loss became NaN/inf, or ``None``.
    The facts of what was run: ``models`` (name -> spec), ``seeds``, ``lrs``, ``batch_size``,
    ``epochs`` (asked for) and ``epochs_run`` (done; fewer when an ``on_epoch`` callback
    stopped the run, or in a partial result of :func:`stream`), and ``device``: where the
    replicas were trained (a rerun on another device differs by rounding, which training
    amplifies).
    """

    def __init__(self, plan, keys, train_loss, evals, done, groups=None):
        self.models, self.seeds, self.lrs = plan.specs, list(plan.seeds), list(plan.lrs)
        self.epochs, self.batch_size, self.device = plan.epochs, plan.batch_size, plan.device
        self.epochs_run = done
        self.train_loss, self.evals = train_loss, evals
        self.val_loss, self.val_acc = evals["val"]
        self.splits = list(evals)
        self._keys, self._groups = keys, groups
        self.replicas = [
            Replica(name, seed, lr, self._history(k, "val"))
            for k, (name, seed, lr) in enumerate(keys)
        ]
        self.diverged_at = [r.history.diverged_at for r in self.replicas]

    def _history(self, k, split):
        loss, acc = self.evals[split]
        finite = (self.train_loss[k].isfinite() & self.val_loss[k].isfinite()).tolist()
        diverged_at = finite.index(False) + 1 if not all(finite) else None
        last = self.epochs_run if diverged_at is None else diverged_at
        return History(
            lr=self._keys[k][2],
            epochs=self.epochs,
            train_loss=self.train_loss[k, :last].tolist(),
            val_loss=loss[k, :last].tolist(),
            val_acc=acc[k, :last].tolist(),
            diverged_at=diverged_at,
            batch_size=self.batch_size,
            device=str(self.device),
            seed=self._keys[k][1],
        )

    @property
    def finished(self):
        """Whether all ``epochs`` ran."""
        return self.epochs_run == self.epochs

    def __len__(self):
        return len(self.replicas)

    def _wanted(self, value, options, name):
        if value is None:
            return set(options)
        values = set(value) if isinstance(value, (list, tuple, set)) else {value}
        unknown = values - set(options)
        if unknown:
            raise ValueError(
                f"{name}={sorted(unknown, key=str)} is not in this sweep; "
                f"it has {name} in {list(options)}."
            )
        return values

    def _matching(self, model, lr, seed):
        models = self._wanted(model, self.models, "model")
        lrs = self._wanted(lr, self.lrs, "lr")
        seeds = self._wanted(seed, self.seeds, "seed")
        return [
            k
            for k, (name, s, rate) in enumerate(self._keys)
            if name in models and rate in lrs and s in seeds
        ]

    def histories(self, model=None, lr=None, seed=None, split="val"):
        """The :class:`History` of every replica matching the filter (``None`` matches all).

        Each filter is one value or a list of values, e.g. ``histories(model="BN", lr=0.01)``.
        ``split`` names whose loss and accuracy fill ``val_loss`` and ``val_acc``: ``"val"``
        or one of the run's ``eval_sets``.
        """
        if split not in self.evals:
            raise ValueError(f"split={split!r} is not in this sweep; it has {self.splits}.")
        ks = self._matching(model, lr, seed)
        if split == "val":
            return [self.replicas[k].history for k in ks]
        return [self._history(k, split) for k in ks]

    def to_modules(self, model=None, lr=None, seed=None):
        """The trained replicas matching the filter as ordinary modules (``MLP`` or
        ``ResidualMLP``, in eval mode, on ``device``), with their weights and BN buffers: in
        eval mode they give the engine's outputs. A replica that diverged gives ``None``.
        A partial result (from ``on_epoch`` or :func:`stream`) has modules while the run waits
        for it: inside the ``on_epoch`` callback, or until the stream is asked for the next
        epoch (then training changes them)."""
        if self._groups is None:
            raise ValueError(
                "This partial result's run has trained on since it was made, so its weights are "
                "gone: call to_modules() inside the on_epoch callback (or before asking the "
                "stream for the next epoch), or on the result the run returns."
            )
        out = []
        for k in self._matching(model, lr, seed):
            group, row = self._groups[k]
            out.append(None if self.diverged_at[k] is not None else group.module(row))
        return out

    def __repr__(self):
        n_div = sum(d is not None for d in self.diverged_at)
        run = "" if self.finished else f" ({self.epochs_run} run)"
        return (
            f"SweepResult({len(self.models)} models x {len(self.seeds)} seeds x "
            f"{len(self.lrs)} lrs = {len(self.replicas)} replicas, {self.epochs} epochs{run}, "
            f"{n_div} diverged)"
        )


# ----------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------


def _check_list(values, name, example):
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, range)):
        raise TypeError(f"{name} must be a list such as {example}, got {values!r}.")
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty: give at least one, e.g. {name}={example}.")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} contains duplicates: {values}.")
    return values


def _check_seeds(seeds):
    seeds = _check_list(seeds, "seeds", "[0, 1, 2]")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise TypeError(f"seeds must be whole numbers >= 0 such as [0, 1, 2], got {s!r}.")
    return [int(s) for s in seeds]


def _check_lrs(lrs):
    lrs = _check_list(lrs, "lrs", "[0.01]")
    for lr in lrs:
        check_lr(lr)
    return [float(lr) for lr in lrs]


def _training_options(name, spec):
    """Check and remove the training options of ``spec``; return them (defaults filled)."""
    options = {k: spec.pop(k, v) for k, v in TRAINING_DEFAULTS.items()}
    where = f"models[{name!r}]"
    if options["optimizer"] not in OPTIMIZERS:
        raise ValueError(
            f"{where}: optimizer must be one of {list(OPTIMIZERS)}, got {options['optimizer']!r}."
        )
    checks.positive_number(
        options["weight_decay"], f"{where}: weight_decay", example=1e-4, allow_zero=True
    )
    options["weight_decay"] = float(options["weight_decay"])
    checks.flag(options["decay_norm"], f"{where}: decay_norm")
    return options


def _hidden_sizes(name, sizes):
    if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
        return (int(sizes),)
    if not isinstance(sizes, (list, tuple)):  # a string "64" would become ("6", "4")
        raise TypeError(
            f"models[{name!r}]: hidden_sizes must be a whole number or a list of them, "
            f"such as (128, 64), got {checks.describe(sizes)}."
        )
    return tuple(sizes)


def _spec(name, kwargs):
    if not isinstance(kwargs, dict):
        raise TypeError(f"models[{name!r}] must be a dict of MLP arguments, got {kwargs!r}.")
    unknown = sorted(set(kwargs) - set(MODEL_KWARGS))
    if unknown:
        fixed = {"input_size": "taken from the data", "output_size": "taken from the targets"}
        notes = "".join(f" {k} is {fixed[k]}." for k in unknown if k in fixed)
        raise ValueError(
            f"models[{name!r}] has unknown argument(s) {unknown}; "
            f"valid ones are {list(MODEL_KWARGS)}.{notes}"
        )
    kwargs = dict(kwargs)
    options = _training_options(name, kwargs)
    residual = "blocks" in kwargs
    defaults = RESIDUAL_DEFAULTS if residual else MLP_DEFAULTS
    if set(kwargs) - set(defaults):
        kind = "a residual MLP (a spec with blocks)" if residual else "an MLP"
        raise ValueError(
            f"models[{name!r}]: {sorted(set(kwargs) - set(defaults))} do not apply to {kind}; "
            f"its arguments are {list(defaults)} and {list(TRAINING_DEFAULTS)}."
        )
    spec = {**defaults, **kwargs}
    if spec["norm"] is None:
        spec["norm"] = "none"
    if not residual:
        spec["hidden_sizes"] = _hidden_sizes(name, spec["hidden_sizes"])
    try:
        with torch.random.fork_rng(devices=[]):
            build(4, 1, **spec)  # the models module's teaching errors for bad values
    except (TypeError, ValueError) as error:
        raise type(error)(f"models[{name!r}]: {error}") from None
    return {**spec, **options}


def normalize_models(models):
    """``models`` (name -> spec) with every default filled in, or a teaching error.

    A spec holds keyword arguments of :class:`~bnteach.models.MLP` (``hidden_sizes``,
    ``norm``, ``activation``, ``placement``, ``bias``, ``virtual_batch_size``, ``r_max``,
    ``d_max``, ``dropout``, ``dropout_at``) or, if it names ``blocks``, of
    :class:`~bnteach.models.ResidualMLP` (``blocks``, ``width``, ``norm``, ``init``), plus the
    training options ``optimizer`` ("adam" or "sgd"), ``weight_decay`` and ``decay_norm``.
    ``input_size`` and ``output_size`` come from the data.
    """
    if models is None:
        models = DEFAULT_MODELS
    if not isinstance(models, dict) or not models:
        raise TypeError(
            f"models must be a non-empty dict name -> MLP keyword arguments, such as "
            f"{DEFAULT_MODELS}, got {models!r}."
        )
    return {name: _spec(name, kwargs) for name, kwargs in models.items()}


def _check_targets(y, X, split, dtype, convert):
    if y.dim() == 1 and not y.is_floating_point():
        if y.shape != (X.shape[0],) or y.dtype != torch.long:
            raise ValueError(
                f"y_{split} holds class labels: they must be int64 of shape ({X.shape[0]},), "
                f"one label per row of X_{split}, got {y.dtype} of shape {tuple(y.shape)}."
            )
        if y.numel() and int(y.min()) < 0:
            raise checks.DataError(f"y_{split} holds a negative class label ({int(y.min())}).")
        return "classes"
    if y.shape != (X.shape[0], 1):
        got = f"shape {tuple(y.shape)}"
        if y.dim() == 1:
            got += ", one number per sample in a 1-D tensor"
        raise ValueError(
            f"y_{split} must have shape ({X.shape[0]}, 1), one target per row of X_{split}, "
            f"got {got}. Reshape with y_{split}.reshape(-1, 1) (or give class labels as int64 "
            f"of shape ({X.shape[0]},))."
        )
    if y.dtype != dtype:
        what = "float targets" if not y.dtype.is_floating_point else f"targets in {dtype}"
        raise TypeError(
            f"y_{split} has dtype {y.dtype}, but BCEWithLogitsLoss needs {what} (the "
            f"models' dtype): convert it with y_{split}.{convert}."
        )
    checks.binary_labels(y, f"y_{split}")
    return "binary"


def _check_split(X, y, split, dtype):
    """Check one split (X, y); return its task: "binary" or "classes"."""
    convert = "float()" if dtype == torch.float32 else f"to({dtype})"
    checks.tensor(X, f"X_{split}", dims=2, floating=False)
    checks.tensor(y, f"y_{split}", floating=False)
    if X.shape[0] == 0:
        raise ValueError(f"X_{split} holds no samples (shape {tuple(X.shape)}).")
    if X.dtype != dtype:
        raise TypeError(
            f"X_{split} has dtype {X.dtype}, but the models are built in {dtype}: convert "
            f"it with X_{split}.{convert}."
        )
    task = _check_targets(y, X, split, dtype, convert)
    checks.finite(X, f"X_{split}")
    return task


def check_data(data, dtype=None):
    """The data contract of :func:`run`: ``(X_train, X_val, y_train, y_val)`` with X ``(N, F)``
    float32 or float64 (``dtype``, default: X_train's if it is float64, else float32), no NaN;
    targets either ``(N, 1)`` 0/1 of X's dtype (one logit, ``BCEWithLogitsLoss``) or int64
    class labels ``(N,)`` (cross-entropy). Nothing is cast silently: a wrong dtype is an error
    that says how to convert it. Returns the task: ``"binary"`` or ``"classes"``."""
    if isinstance(data, torch.Tensor) or not isinstance(data, (tuple, list)) or len(data) != 4:
        raise TypeError(
            f"data must be the tuple (X_train, X_val, y_train, y_val) of load_data(), got "
            f"{checks.describe(data)}."
        )
    X_train, X_val, y_train, y_val = data
    if dtype is None:
        float64 = isinstance(X_train, torch.Tensor) and X_train.dtype == torch.float64
        dtype = torch.float64 if float64 else torch.get_default_dtype()
    tasks = {_check_split(X, y, split, dtype) for X, y, split in
             ((X_train, y_train, "train"), (X_val, y_val, "val"))}  # fmt: skip
    if len(tasks) > 1:
        raise ValueError(
            "y_train and y_val must be the same kind of targets: both (N, 1) 0/1 floats or "
            "both int64 class labels (N,)."
        )
    if X_val.shape[1] != X_train.shape[1]:
        raise ValueError(
            f"X_train has {X_train.shape[1]} features (columns) but X_val has {X_val.shape[1]}: "
            f"the validation data must have the same features. Check how X_val was made."
        )
    return tasks.pop()


def _check_eval_sets(eval_sets, data, task):
    """``eval_sets`` as a dict name -> (X, y), checked like the validation split."""
    if eval_sets is None:
        return {}
    if not isinstance(eval_sets, dict):
        raise TypeError(
            f"eval_sets must be a dict name -> (X, y), such as {{'shifted': (X_s, y_s)}}, got "
            f"{checks.describe(eval_sets)}."
        )
    out = {}
    for name, pair in eval_sets.items():
        if not isinstance(name, str) or name == "val":
            raise ValueError(
                f"eval_sets names must be strings other than 'val' (the validation split), got "
                f"{name!r}."
            )
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(
                f"eval_sets[{name!r}] must be a pair (X, y), got {checks.describe(pair)}."
            )
        X, y = pair
        if _check_split(X, y, name, data[0].dtype) != task or X.shape[1] != data[0].shape[1]:
            raise ValueError(
                f"eval_sets[{name!r}] must have the training data's features "
                f"({data[0].shape[1]}) and kind of targets."
            )
        out[name] = (X, y)
    return out


def _chunk_sizes(n, batch_size, chunk):
    """The sizes of the groups BatchNorm normalizes in an epoch of n samples."""
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    if chunk is None:
        return set(sizes)
    return {s % chunk or chunk for s in sizes} | {min(s, chunk) for s in sizes}


def _check_batch_size(batch_size, n_train, specs):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be a whole number such as 64, got {batch_size!r}.")
    if batch_size < 2:
        raise ValueError(
            f"batch_size must be at least 2, got {batch_size}: BatchNorm needs more than one "
            f"sample per batch to compute a mean and a variance."
        )
    for spec in specs.values():
        if spec["norm"] not in ("batch", "ghost", "renorm"):
            continue
        if n_train < 3:
            raise ValueError(f"BatchNorm needs at least 2 training samples, got {n_train}.")
        chunk = spec["virtual_batch_size"] if spec["norm"] == "ghost" else None
        if 1 not in _chunk_sizes(n_train, batch_size, chunk):
            continue
        nearby = (b for d in range(1, n_train) for b in (batch_size - d, batch_size + d))
        better = next(b for b in nearby if b >= 2 and 1 not in _chunk_sizes(n_train, b, chunk))
        where = "the last batch holds" if chunk is None else "a device's share of a batch holds"
        raise ValueError(
            f"With {n_train} training samples and batch_size={batch_size} {where} a single "
            f"sample, and BatchNorm cannot normalize one sample in training mode. Choose "
            f"another batch size, e.g. batch_size={better}."
        )


def _check_inits(inits, specs, seeds):
    """``inits`` as a function (name, seed) -> module, or None."""
    if inits is None or callable(inits):
        return inits
    if not isinstance(inits, dict):
        raise TypeError(
            f"inits must be a dict {{model name: {{seed: module}}}} or a function (name, seed) "
            f"-> module, got {checks.describe(inits)}."
        )
    for name, per_seed in inits.items():
        if name not in specs:
            raise ValueError(f"inits names model {name!r}, which is not in models {list(specs)}.")
        missing = [s for s in seeds if not isinstance(per_seed, dict) or s not in per_seed]
        if missing:
            raise ValueError(
                f"inits[{name!r}] must map every seed to a module: missing seeds {missing}."
            )
    return lambda name, seed: inits[name][seed] if name in inits else None


@functools.lru_cache(maxsize=1)
def _default_data():
    return load_data()


# ----------------------------------------------------------------------------------------
# The layers, batched over replicas: activations are (R, batch, features)
# ----------------------------------------------------------------------------------------


class _Linear:
    """``y = x W^T + b`` with ``W`` (R, out, in) and ``b`` (R, out) or ``None``."""

    def __init__(self, params, grads):
        (self.weight, self.bias), (self.grad_weight, self.grad_bias) = params, grads
        self.weight_t = self.weight.mT
        self.bias_row = None if self.bias is None else self.bias.unsqueeze(1)

    def forward(self, x, training):
        if self.bias is None:
            return torch.bmm(x, self.weight_t), x
        return torch.baddbmm(self.bias_row, x, self.weight_t), x

    def backward(self, grad, x, need_input_grad=True):
        torch.bmm(grad.mT, x, out=self.grad_weight)
        if self.bias is not None:
            torch.sum(grad, 1, out=self.grad_bias)
        return torch.bmm(grad, self.weight) if need_input_grad else None


def _normalize(h, dim, eps):
    """Batch statistics along ``dim``: ``(mean, biased var, xhat, rstd)``; ``h`` is reused."""
    mean = h.mean(dim, keepdim=True)
    centered = h - mean
    var = (centered * centered).mean(dim, keepdim=True)  # biased: divide by n
    rstd = (var + eps).rsqrt_()
    return mean, var, centered.mul_(rstd), rstd


def _bn_input_grad(g, xhat, rstd, dim):
    """Through xhat = (h - mean) / sqrt(var + eps), mean and var depending on all of h:
    dh = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = d loss / d xhat."""
    return (
        (g - g.mean(dim, keepdim=True)).sub_(xhat * (g * xhat).mean(dim, keepdim=True)).mul_(rstd)
    )


class _BatchNorm:
    """BatchNorm per replica: ``nn.BatchNorm1d``, ``GhostBatchNorm1d`` (chunks of
    ``virtual_batch_size`` rows, running statistics from the first) or ``BatchRenorm1d``;
    batch statistics in training, running ones in eval."""

    def __init__(self, params, grads, modules, device):
        (self.weight, self.bias), (self.grad_weight, self.grad_bias) = params, grads
        self.gamma, self.beta = self.weight.unsqueeze(1), self.bias.unsqueeze(1)
        module = modules[0]
        self.eps, self.momentum = module.eps, module.momentum
        self.chunk = getattr(module, "virtual_batch_size", None)
        self.renorm = (module.r_max, module.d_max) if isinstance(module, BatchRenorm1d) else None
        # (R, F) as (R, 1, F): the shape of the batch statistics, so no reshaping per step.
        self.running_mean = torch.stack([m.running_mean for m in modules]).unsqueeze(1).to(device)
        self.running_var = torch.stack([m.running_var for m in modules]).unsqueeze(1).to(device)
        self.tracked = torch.stack([m.num_batches_tracked for m in modules])
        self.steps = 0

    def forward(self, h, training):
        if not training:
            scale = self.gamma * (self.running_var + self.eps).rsqrt()
            shift = self.beta - self.running_mean * scale
            return torch.addcmul(shift, h, scale), None
        self.steps += 1
        if self.chunk is not None:
            return self._forward_ghost(h)
        if self.renorm is not None:
            return self._forward_renorm(h)
        n = h.shape[1]
        mean = h.mean(1, keepdim=True)
        centered = h - mean
        var = (centered * centered).mean(1, keepdim=True)  # biased: divide by n
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(var * (n / (n - 1)), self.momentum)  # unbiased
        rstd = (var + self.eps).rsqrt_()
        xhat = centered.mul_(rstd)
        return torch.addcmul(self.beta, xhat, self.gamma), (xhat, rstd)

    def backward(self, grad, saved, need_input_grad=True):
        if self.chunk is not None or self.renorm is not None:
            return self._backward_variant(grad, saved)
        xhat, rstd = saved
        n = grad.shape[1]
        dbeta = torch.sum(grad, 1, out=self.grad_bias)
        dgamma = torch.sum(grad * xhat, 1, out=self.grad_weight)
        # Through xhat = (h - mean) / sqrt(var + eps), with mean and var depending on all of h:
        # dh = gamma * rstd * (dy - mean(dy) - xhat * mean(dy * xhat)).
        dh = (grad - dbeta.unsqueeze(1) / n).sub_(xhat * (dgamma.unsqueeze(1) / n))
        return dh.mul_(self.gamma * rstd)

    def _pieces(self, t):
        """t (R, n, F) as chunk views: (R, k, chunk, F) for the full chunks, then (R, 1, rest,
        F) for a shorter last one."""
        R, n, width = t.shape
        full = n - n % self.chunk
        pieces = [t[:, :full].view(R, full // self.chunk, self.chunk, width)] if full else []
        return pieces + ([t[:, full:].unsqueeze(1)] if full < n else [])

    def _forward_ghost(self, h):
        outs, saved = [], []
        for i, piece in enumerate(self._pieces(h)):
            mean, var, xhat, rstd = _normalize(piece, 2, self.eps)
            if i == 0:  # the first chunk's statistics go into the running ones (DDP's rank 0)
                n0 = piece.shape[2]
                self.running_mean.lerp_(mean[:, 0], self.momentum)
                self.running_var.lerp_(var[:, 0] * (n0 / (n0 - 1)), self.momentum)
            outs.append(torch.addcmul(self.beta.unsqueeze(1), xhat, self.gamma.unsqueeze(1)))
            saved.append((xhat, rstd))
        R, width = h.shape[0], h.shape[2]
        return torch.cat([o.reshape(R, -1, width) for o in outs], 1), ("ghost", saved)

    def _forward_renorm(self, h):
        r_max, d_max = self.renorm
        mean, var, xhat, rstd = _normalize(h, 1, self.eps)
        sigma_b = (var + self.eps).sqrt_()
        sigma = (self.running_var + self.eps).sqrt_()
        r = (sigma_b / sigma).clamp_(1.0 / r_max, r_max)
        d = ((mean - self.running_mean) / sigma).clamp_(-d_max, d_max)
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.copy_(sigma.lerp_(sigma_b, self.momentum).square_().sub_(self.eps))
        z = torch.addcmul(d, xhat, r)
        return torch.addcmul(self.beta, z, self.gamma), ("renorm", (xhat, rstd, r, z))

    def _backward_variant(self, grad, saved):
        kind, saved = saved
        torch.sum(grad, 1, out=self.grad_bias)
        if kind == "renorm":
            xhat, rstd, r, z = saved
            torch.sum(grad * z, 1, out=self.grad_weight)
            return _bn_input_grad(grad * (self.gamma * r), xhat, rstd, 1)
        pieces = self._pieces(grad)
        self.grad_weight.zero_()
        dh = []
        for g, (xhat, rstd) in zip(pieces, saved):
            self.grad_weight += (g * xhat).sum((1, 2))
            dh.append(_bn_input_grad(g * self.gamma.unsqueeze(1), xhat, rstd, 2))
        return torch.cat([d.reshape(grad.shape[0], -1, grad.shape[2]) for d in dh], 1)

    def zero_replicas(self, dead):
        self.running_mean.masked_fill_(dead.view(-1, 1, 1), 0.0)
        self.running_var.masked_fill_(dead.view(-1, 1, 1), 1.0)

    def state(self, row):
        """Row ``row``'s buffers, as the module's state_dict holds them."""
        return {
            "running_mean": self.running_mean[row, 0],
            "running_var": self.running_var[row, 0],
            "num_batches_tracked": self.tracked[row] + self.steps,
        }


class _LayerNorm:
    """``nn.LayerNorm`` per replica: statistics over the features of each sample."""

    def __init__(self, params, grads, module):
        (self.weight, self.bias), (self.grad_weight, self.grad_bias) = params, grads
        self.gamma, self.beta = self.weight.unsqueeze(1), self.bias.unsqueeze(1)
        self.eps = module.eps

    def forward(self, h, training):
        mean = h.mean(2, keepdim=True)
        centered = h - mean
        rstd = ((centered * centered).mean(2, keepdim=True) + self.eps).rsqrt()
        xhat = centered * rstd
        return torch.addcmul(self.beta, xhat, self.gamma), (xhat, rstd)

    def backward(self, grad, saved, need_input_grad=True):
        xhat, rstd = saved
        torch.sum(grad, 1, out=self.grad_bias)
        torch.sum(grad * xhat, 1, out=self.grad_weight)
        dxhat = grad * self.gamma
        dh = dxhat - dxhat.mean(2, keepdim=True) - xhat * (dxhat * xhat).mean(2, keepdim=True)
        return dh * rstd


def _aten(name):
    """``torch.ops.aten.<name>``: the kernel autograd itself calls for an activation's
    backward (the ATen operator set is PyTorch's documented operator namespace; checked on
    torch 2.4-2.13 by tests/test_sweep.py, which also proves the fallback equal)."""
    packet = getattr(torch.ops.aten, name, None)
    return None if packet is None else packet.default


def _fallbacks():
    """Public formulas for the activations' backward, used where an ATen op is missing."""
    return {
        "threshold_backward": lambda g, y, _: g * (y > 0).to(g.dtype),
        "tanh_backward": lambda g, y: g * (1 - y * y),
        "sigmoid_backward": lambda g, y: g * y * (1 - y),
        "gelu_backward": lambda g, x: g * (0.5 * (1 + torch.erf(x * 0.5**0.5))
                                            + x * torch.exp(-0.5 * x * x) * (2 * math.pi) ** -0.5),
    }  # fmt: skip


@functools.cache
def _backward_op(name):
    return _aten(name) or _fallbacks()[name]


_ACTIVATION_FUNCS = {
    "relu": (torch.relu, lambda g, x, y: _backward_op("threshold_backward")(g, y, 0.0)),
    "tanh": (torch.tanh, lambda g, x, y: _backward_op("tanh_backward")(g, y)),
    "sigmoid": (torch.sigmoid, lambda g, x, y: _backward_op("sigmoid_backward")(g, y)),
    "gelu": (F.gelu, lambda g, x, y: _backward_op("gelu_backward")(g, x)),
}


class _Activation:
    def __init__(self, name):
        self.forward_fn, self.backward_fn = _ACTIVATION_FUNCS[name]

    def forward(self, x, training):
        y = self.forward_fn(x)
        return y, (x, y)

    def backward(self, grad, saved, need_input_grad=True):
        return self.backward_fn(grad, *saved)


class _Dropout:
    """``nn.Dropout(p)`` per replica, each row drawing its masks from its own generator."""

    def __init__(self, p, generators):
        self.keep, self.generators = 1.0 - p, generators

    def forward(self, x, training):
        if not training:
            return x, None
        n, width = x.shape[1], x.shape[2]
        masks = [
            torch.empty(n, width, dtype=x.dtype).bernoulli_(self.keep, generator=g)
            for g in self.generators
        ]
        mask = torch.stack(masks).to(x.device).div_(self.keep)
        return x * mask, mask

    def backward(self, grad, mask, need_input_grad=True):
        return grad * mask


class _Residual:
    """``x + alpha * branch(x)`` (the activation after it is the next layer); ``alpha`` (R,)
    for SkipInit, else ``None``."""

    def __init__(self, branch, alpha=None):
        self.branch = branch
        self.alpha, self.grad_alpha = alpha if alpha is not None else (None, None)

    def forward(self, x, training):
        b, saved = _forward(self.branch, x, training)
        if self.alpha is None:
            return x + b, saved
        return torch.addcmul(x, b, self.alpha.view(-1, 1, 1)), (saved, b)

    def backward(self, grad, saved, need_input_grad=True):
        if self.alpha is not None:
            saved, b = saved
            torch.sum(grad * b, (1, 2), out=self.grad_alpha)
            return grad + _backward(self.branch, grad * self.alpha.view(-1, 1, 1), saved, True)
        return grad + _backward(self.branch, grad, saved, True)


def _forward(layers, x, training):
    saved = []
    for layer in layers:
        x, s = layer.forward(x, training)
        saved.append(s)
    return x, saved


def _backward(layers, grad, saved, need_input_grad):
    for i in range(len(layers) - 1, -1, -1):
        grad = layers[i].backward(grad, saved[i], need_input_grad=need_input_grad or i > 0)
    return grad


_ACTIVATION_NAMES = {cls: name for name, cls in ACTIVATIONS.items()}
_BN_TYPES = (nn.BatchNorm1d, GhostBatchNorm1d, BatchRenorm1d)


# ----------------------------------------------------------------------------------------
# The task: loss, its gradient and accuracy, for binary targets or class labels
# ----------------------------------------------------------------------------------------


class _Binary:
    """One logit per sample, ``BCEWithLogitsLoss``; logits and y (R, n, 1)."""

    @staticmethod
    def expand(y, R):
        return y.expand(R, *y.shape)

    @staticmethod
    def losses(logits, y):
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none").view(y.shape[:2])

    @staticmethod
    def grad(logits, y):
        return (torch.sigmoid(logits) - y) * (1.0 / (y.shape[1] * y.shape[2]))

    @staticmethod
    def metrics(logits, y):
        loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean((1, 2))
        hit = ((logits > 0).to(y.dtype) == y) & logits.isfinite()  # NaN is no answer
        return loss.double(), hit.double().mean((1, 2))


class _Classes:
    """One logit per class, cross-entropy; logits (R, n, C), y (R, n) int64."""

    @staticmethod
    def expand(y, R):
        return y.expand(R, *y.shape)

    @staticmethod
    def losses(logits, y):
        return F.cross_entropy(logits.transpose(1, 2), y, reduction="none")

    @staticmethod
    def grad(logits, y):
        probs = torch.softmax(logits, 2)
        probs.scatter_add_(2, y.unsqueeze(2), torch.full_like(probs[..., :1], -1.0))
        return probs.mul_(1.0 / y.shape[1])

    @staticmethod
    def metrics(logits, y):
        loss = _Classes.losses(logits, y).mean(1)
        hit = (logits.argmax(2) == y) & logits.isfinite().all(2)  # NaN is no answer
        return loss.double(), hit.double().mean(1)


# ----------------------------------------------------------------------------------------
# One group: the replicas of one architecture
# ----------------------------------------------------------------------------------------


_VECTORS = ("params", "grads", "exp_avg", "exp_avg_sq")  # a _Group's flat vectors


def _fused_kernel():
    """``torch._fused_adam_`` where this torch has it, else None."""
    return getattr(torch, "_fused_adam_", None)


def _adam_step(params, grads, exp_avgs, exp_avg_sqs, step, lr):
    """One ``torch.optim.Adam(fused=True)`` step on lists of tensors; ``step`` (a 0-d tensor)
    already counts it. Calls the fused kernel, ``torch._fused_adam_`` (private: checked on
    torch 2.4-2.13 by tests/test_sweep.py, which fails with a clear message on a torch without
    it), directly: through the public ``torch.optim.adam.adam(fused=True)``, which calls the
    same kernel, multi-rate sweeps measured 6% slower (it regroups the tensors and counts the
    steps itself on every call). Without the kernel, that public route (bitwise the same)."""
    kernel = _fused_kernel()
    kwargs = {"lr": lr, "beta1": BETA1, "beta2": BETA2, "weight_decay": 0.0, "eps": ADAM_EPS,
              "amsgrad": False, "maximize": False}  # fmt: skip
    if kernel is not None:
        kernel(params, grads, exp_avgs, exp_avg_sqs, [], [step] * len(params), **kwargs)
        return
    steps = [(step - 1).clone() for _ in params]  # the public form adds 1 to each
    adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, fused=True, **kwargs)


def _runs(rows):
    """Sorted row numbers as runs of consecutive ones: [0, 1, 2, 5, 6] -> [(0, 3), (5, 7)]."""
    runs = []
    for r in rows:
        if runs and runs[-1][1] == r:
            runs[-1] = (runs[-1][0], r + 1)
        else:
            runs.append((r, r + 1))
    return runs


class _Group:
    """Replicas sharing one architecture, their stacked parameters and optimizer state.

    All parameters live in one flat vector (``params``), parameter-major: the ``R`` copies of
    each parameter are one block of ``R`` rows, so that the optimizer is one fused operation
    on the whole vector and each layer sees ``(R, *shape)`` views of it.
    """

    def __init__(self, inits, lrs, options, seeds, device):
        template = self.template = inits[0]
        R, shapes = len(inits), {name: p.shape for name, p in template.named_parameters()}
        # Each block row is padded to a multiple of 64 numbers. Then every number goes through
        # the same vectorized code in Adam's fused kernel, so a replica's result does not
        # depend on its row (nor on which other replicas are trained with it); and a parameter
        # that fills its rows (most do) is a contiguous (R, *shape) view, into which the
        # matrix products write weight gradients in place (into a strided one they take
        # about twice as long, for the copy).
        self._widths = {name: -(-shape.numel() // 64) * 64 for name, shape in shapes.items()}
        dtype = next(template.parameters()).dtype
        params = torch.zeros(R * sum(self._widths.values()), dtype=dtype)
        blocks = self._blocks(params, R)
        for r, m in enumerate(inits):
            for name, p in m.named_parameters():
                blocks[name][r, : p.numel()] = p.detach().reshape(-1)
        self.params = params.to(device)
        for v in _VECTORS[1:]:
            setattr(self, v, torch.zeros_like(self.params))
        self._rows = {  # vector name -> parameter name -> its (R, width) block
            v: self._blocks(getattr(self, v), R) for v in _VECTORS
        }
        self.views = {}
        for name, shape in shapes.items():
            param, grad = self._rows["params"][name], self._rows["grads"][name]
            self.views[name] = (
                param[:, : shape.numel()].view(R, *shape),
                grad[:, : shape.numel()].view(R, *shape),
            )
        self.norms = {}  # module name -> its _BatchNorm, for the buffers
        generators = [dropout_generator(s) for s in seeds]
        self.layers = self._layers(template.network, "network.", inits, generators, device)
        self.options, self.lrs, self.device = options, list(lrs), device
        self.step = torch.zeros((), dtype=torch.float32, device=device)  # Adam's step count
        self._decayed = [
            name for name in shapes if options["decay_norm"] or not self._is_norm(name)
        ]
        self._lr_lists(set(range(R)))

    def _is_norm(self, name):
        module = self.template.get_submodule(name.rsplit(".", 1)[0])
        return isinstance(module, (*_BN_TYPES, nn.LayerNorm))

    def _layers(self, sequence, prefix, inits, generators, device):
        """The engine's layers for ``sequence`` (an nn.Sequential of the template)."""
        layers = []
        for i, module in enumerate(sequence):
            name = f"{prefix}{i}"
            own = [self.views.get(f"{name}.{n}", (None, None)) for n in ("weight", "bias")]
            params, grads = [p for p, _ in own], [g for _, g in own]
            if isinstance(module, nn.Linear):
                layers.append(_Linear(params, grads))
            elif isinstance(module, _BN_TYPES):
                same = [m.get_submodule(name) for m in inits]
                layers.append(_BatchNorm(params, grads, same, device))
                self.norms[name] = layers[-1]
            elif isinstance(module, nn.LayerNorm):
                layers.append(_LayerNorm(params, grads, module))
            elif isinstance(module, nn.Dropout):
                layers.append(_Dropout(module.p, generators))
            elif isinstance(module, ResidualBlock):
                branch = self._layers(module.branch, f"{name}.branch.", inits, generators, device)
                layers.append(_Residual(branch, self.views.get(f"{name}.alpha")))
                layers.append(_Activation(_ACTIVATION_NAMES[type(module.act)]))
            else:
                layers.append(_Activation(_ACTIVATION_NAMES[type(module)]))
        return layers

    def _blocks(self, flat, R):
        """name -> the (R, width) block of ``flat`` that holds that parameter's copies."""
        blocks, offset = {}, 0
        for name, width in self._widths.items():
            blocks[name] = flat[offset : offset + R * width].view(R, width)
            offset += R * width
        return blocks

    def _lr_lists(self, live):
        """Per learning rate, the live replicas' block rows, as lists for the optimizer."""
        rows = {}
        for r in sorted(live):
            rows.setdefault(self.lrs[r], []).append(r)
        self._live = live
        if len(rows) == 1 and len(live) == len(self.lrs):  # all rows at once (same numbers)
            lists = {lr: [[getattr(self, v)] for v in _VECTORS] for lr in rows}
        else:  # rows r0..r1-1 of a block are one contiguous slice
            lists = {
                lr: [[b[r0:r1] for b in self._rows[v].values() for r0, r1 in _runs(rs)]
                     for v in _VECTORS]
                for lr, rs in rows.items()
            }  # fmt: skip
        self._steps = [(lr, *vectors) for lr, vectors in lists.items()]

    def forward(self, x, training):
        return _forward(self.layers, x, training)

    def backward(self, grad, saved):
        """Backpropagate ``grad`` (d loss / d logits) into ``self.grads``."""
        _backward(self.layers, grad, saved, need_input_grad=False)

    def optimizer_step(self):
        """One step of the replicas' optimizer. L2 weight decay first adds ``weight_decay *
        param`` to the gradient (what ``torch.optim.Adam``/``SGD``'s ``weight_decay`` does).
        Adam: its fused kernel, once per learning rate, over the block rows of the replicas
        that use it; each block row is padded to a multiple of 64 numbers, so every number
        goes through the same vectorized code whichever rows are updated with it. SGD:
        ``param -= lr * grad``."""
        wd = self.options["weight_decay"]
        if wd:
            for name in self._decayed:
                self._rows["grads"][name].add_(self._rows["params"][name], alpha=wd)
        self.step += 1
        for lr, params, grads, exp_avgs, exp_avg_sqs in self._steps:
            if self.options["optimizer"] == "sgd":
                for p, g in zip(params, grads):
                    p.add_(g, alpha=-lr)
            else:
                _adam_step(params, grads, exp_avgs, exp_avg_sqs, self.step, lr)

    def freeze(self, dead):
        """Stop replicas ``dead`` (bool (R,)): zero their parameters and optimizer state."""
        if not dead.any():  # one sync per epoch
            return
        for v in ("params", "exp_avg", "exp_avg_sq"):
            for block in self._rows[v].values():
                block.masked_fill_(dead.unsqueeze(1), 0.0)
        for layer in self.norms.values():
            layer.zero_replicas(dead)
        live = {r for r in self._live if not bool(dead[r])}
        if live != self._live:
            self._lr_lists(live)

    def module(self, row):
        """Replica ``row`` as a module like the template, with its weights and buffers."""
        state = {name: p[row].detach().clone() for name, (p, _) in self.views.items()}
        for name, layer in self.norms.items():
            state.update({f"{name}.{k}": v.clone() for k, v in layer.state(row).items()})
        module = copy.deepcopy(self.template)
        module.load_state_dict(state)
        return module.to(self.params.device).eval()


def _epoch_loss(losses, batch_size):
    """An epoch's training loss from its steps' per-sample losses (R, n), as ``train_model``
    reports it: each batch's mean loss weighted by the batch's size, over the epoch's samples
    (computed once per epoch from the steps' logits instead of once per step)."""
    R, n = losses.shape
    full = n - n % batch_size
    sums = losses[:, :full].view(R, -1, batch_size).mean(2).double() * batch_size
    total = sums.sum(1)
    if full < n:  # the last, smaller batch
        total += losses[:, full:].mean(1).double() * (n - full)
    return total / n


def _train_group(group, orders, data, plan):
    """Train one group, one epoch per ``next()``: yields ``[train_loss, val_loss, val_acc,
    (loss, acc of each eval set)]`` of that epoch, each an (R,) float64 tensor (NaN for
    replicas frozen earlier)."""
    X_train, y_train = data[0], data[2]
    task, batch_size = plan.task, plan.batch_size
    R, n = orders.shape[0], X_train.shape[0]
    starts = range(0, n, batch_size)
    splits = [(X.expand(R, *X.shape), task.expand(y, R)) for X, y in plan.splits(data)]
    alive = torch.ones(R, dtype=torch.bool, device=X_train.device)

    for epoch in range(plan.epochs):
        with torch.no_grad():
            order = orders[:, epoch]  # (R, n): this epoch's shuffle of each replica
            X_epoch, y_epoch = X_train[order], y_train[order]
            step_logits = []
            for s in starts:
                xb, yb = X_epoch[:, s : s + batch_size], y_epoch[:, s : s + batch_size]
                logits, saved = group.forward(xb, training=True)
                step_logits.append(logits)
                group.backward(task.grad(logits, yb), saved)
                group.optimizer_step()
            train_loss = _epoch_loss(task.losses(torch.cat(step_logits, 1), y_epoch), batch_size)
            out = [train_loss]
            for X, y in splits:
                out += task.metrics(group.forward(X, training=False)[0], y)
            # A replica whose loss is NaN/inf keeps this epoch's values, then is frozen.
            ok = train_loss.isfinite() & out[1].isfinite()
            out = [t.masked_fill(~alive, math.nan) for t in out]
            alive &= ok
            group.freeze(~alive)
        yield out


# ----------------------------------------------------------------------------------------
# A run: the plan, the groups, the epochs
# ----------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What a run trains, checked: the arguments of :func:`run` in normalized form."""

    specs: dict
    seeds: list
    lrs: list
    epochs: int
    batch_size: int
    device: torch.device
    task: type
    n_outputs: int
    eval_sets: dict
    inits: object

    def splits(self, data):
        """``[(X, y)]`` of every evaluated split: validation first, then the eval sets."""
        return [(data[1], data[3]), *self.eval_sets.values()]


def _n_outputs(task, data, eval_sets):
    if task == "binary":
        return 1
    labels = [data[2], data[3], *(y for _, y in eval_sets.values())]
    n_classes = int(data[2].max()) + 1
    top = max(int(y.max()) for y in labels if y.numel())
    if top >= n_classes:
        raise checks.DataError(
            f"A label {top} appears outside the training split's classes 0-{n_classes - 1}: "
            f"the models get one output per class seen in training."
        )
    return n_classes


def _prepare(seeds, lrs, epochs, batch_size, models, data, device, eval_sets, inits):
    """Check the arguments; return ``(plan, data)`` with data on ``device``."""
    seeds = _check_seeds(seeds)
    lrs = _check_lrs(lrs)
    check_epochs(epochs)
    specs = normalize_models(models)
    data = _default_data() if data is None else data
    task = check_data(data)
    eval_sets = _check_eval_sets(eval_sets, data, task)
    _check_batch_size(batch_size, data[0].shape[0], specs)
    inits = _check_inits(inits, specs, seeds)
    device = checks.device(device)
    data = tuple(t.to(device) for t in data)
    eval_sets = {k: tuple(t.to(device) for t in v) for k, v in eval_sets.items()}
    plan = _Plan(
        specs, seeds, lrs, epochs, batch_size, device,
        _Binary if task == "binary" else _Classes, _n_outputs(task, data, eval_sets),
        eval_sets, inits,
    )  # fmt: skip
    return plan, data


def _start(plan, name, seed, n_features, dtype):
    """Replica ``(name, seed)``'s starting module: built from ``torch.manual_seed(seed)`` or,
    with ``inits``, the given module's weights and buffers loaded into that architecture."""
    spec = {k: v for k, v in plan.specs[name].items() if k not in TRAINING_DEFAULTS}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build(n_features, plan.n_outputs, **spec).to(dtype)
    given = plan.inits(name, seed) if plan.inits is not None else None
    if given is None:
        return module
    if not isinstance(given, nn.Module):
        raise TypeError(
            f"inits for {name!r}, seed {seed}: expected a module, got {checks.describe(given)}."
        )
    try:
        module.load_state_dict(given.state_dict())
    except RuntimeError as error:
        raise ValueError(
            f"inits for {name!r}, seed {seed}: the module does not have the architecture of "
            f"models[{name!r}] ({error})."
        ) from None
    return module


def start_modules(seeds, models=None, data=None):
    """``{model name: {seed: module}}``: every replica's starting module as :func:`run` builds
    it (the weights of ``torch.manual_seed(seed)``; input and output sizes from ``data``,
    default ``load_data()``). The global random state is left as it was."""
    data = _default_data() if data is None else data
    n = data[0].shape[0] if isinstance(data, (tuple, list)) and data else None
    plan, data = _prepare(seeds, [1.0], 1, n, models, data, None, None, None)
    n_features, dtype = data[0].shape[1], data[0].dtype
    return {
        name: {seed: _start(plan, name, seed, n_features, dtype) for seed in plan.seeds}
        for name in plan.specs
    }


def _groups(plan, data):
    """The groups of replicas (one per architecture and training options), each with its
    keys' indices, its _Group and the shuffle orders of its rows."""
    n_train, n_features = data[0].shape
    orders = {}  # each seed's shuffle orders, drawn exactly as make_loaders' TensorLoader does
    for seed in plan.seeds:
        g = torch.Generator().manual_seed(seed)
        orders[seed] = torch.stack(
            [torch.randperm(n_train, generator=g) for _ in range(plan.epochs)]
        )
    keys = [(name, seed, lr) for name in plan.specs for seed in plan.seeds for lr in plan.lrs]
    by_arch = {}
    for k, (name, _, _) in enumerate(keys):
        by_arch.setdefault(tuple(sorted(plan.specs[name].items())), []).append(k)
    groups = []
    for members in by_arch.values():
        # Rows with the same learning rate next to each other: the optimizer then updates
        # each lr's rows of a parameter as one slice (row order does not change a replica's
        # numbers).
        members = sorted(members, key=lambda k: keys[k][2])
        starts = {(keys[k][0], keys[k][1]) for k in members}
        starts = {key: _start(plan, *key, n_features, data[0].dtype) for key in starts}
        # A group of one replica is trained as two copies: with one replica, torch.bmm of a
        # (1, n, k) by a (1, k, 1) (the output layer) takes another kernel (a matrix-vector
        # product) whose rounding differs from the batched one used for 2 or more replicas.
        rows = members * 2 if len(members) == 1 else members
        options = {k: plan.specs[keys[members[0]][0]][k] for k in TRAINING_DEFAULTS}
        group = _Group(
            [starts[keys[k][:2]] for k in rows], [keys[k][2] for k in rows], options,
            [keys[k][1] for k in rows], plan.device,
        )  # fmt: skip
        group_orders = torch.stack([orders[keys[k][1]] for k in rows]).to(plan.device)
        groups.append((members, group, group_orders))
    return keys, groups


def _epochs(plan, data):
    """Train; after each epoch yield ``(keys, values, epochs_done, placement)``: values a list
    of (K, epochs) tensors, placement k -> (group, row) once the last epoch is done."""
    keys, groups = _groups(plan, data)
    trainers = [(m, _train_group(g, o, data, plan)) for m, g, o in groups]
    n_values = 1 + 2 * (1 + len(plan.eval_sets))
    values = [
        torch.full((len(keys), plan.epochs), math.nan, dtype=torch.float64) for _ in range(n_values)
    ]
    placement = {k: (g, row) for m, g, _ in groups for row, k in enumerate(m)}
    for epoch in range(plan.epochs):
        for members, trainer in trainers:
            for v, column in zip(values, next(trainer)):
                v[members, epoch] = column[: len(members)].cpu()
        yield keys, values, epoch + 1, placement


def _result(plan, keys, values, done, placement=None):
    """A :class:`SweepResult` over the first ``done`` epochs of ``values``."""
    values = [v[:, :done].clone() for v in values]
    names = ["val", *plan.eval_sets]
    evals = {name: (values[1 + 2 * i], values[2 + 2 * i]) for i, name in enumerate(names)}
    return SweepResult(plan, keys, values[0], evals, done, placement)


def stream(seeds, lrs, epochs=25, batch_size=64, models=None, data=None, device=None,
           eval_sets=None, inits=None):  # fmt: skip
    """Like :func:`run`, as a generator: yields a :class:`SweepResult` over the epochs done so
    far after each epoch (``epochs_run`` = 1, 2, ..., ``epochs``). Stop iterating to stop
    training. The arguments are checked at the call, before the first epoch. A result's
    :meth:`~SweepResult.to_modules` works until the next epoch is asked for."""
    plan, data = _prepare(seeds, lrs, epochs, batch_size, models, data, device, eval_sets, inits)
    return _stream(plan, data)


def _stream(plan, data):
    for keys, values, done, placement in _epochs(plan, data):
        result = _result(plan, keys, values, done, placement)
        yield result
        result._groups = None  # asked for the next epoch: training changes the weights


def run(seeds, lrs, epochs=25, batch_size=64, models=None, data=None, device=None,
        on_epoch=None, eval_sets=None, inits=None):  # fmt: skip
    """Train each of ``models`` for each seed and learning rate; return a :class:`SweepResult`.

    seeds: list of ints. Seed ``s`` gives the initial weights of ``torch.manual_seed(s);
        MLP(...)`` and the shuffle order of ``make_loaders(..., seed=s)`` (and the dropout
        masks, from :func:`dropout_generator`).
    lrs: list of learning rates (of each model's optimizer, Adam unless its spec says "sgd").
    models: dict name -> spec (see :func:`normalize_models`); default ``{"plain": {"norm":
        "none"}, "BN": {"norm": "batch"}}``, the tutorial's ``SimpleMLP`` and ``MLPWithBN``.
    data: ``(X_train, X_val, y_train, y_val)``; default ``load_data()`` (cached). X: (N, F)
        float32 or float64; y: (N, 1) 0/1 of X's dtype, or (N,) int64 class labels; no NaN.
        Moved to ``device`` but never cast (see :func:`check_data`).
    device: where to train (default CPU; ``"cuda"`` is checked to exist).
    on_epoch: ``callback(epoch, partial)`` called after each epoch (1-based) with a
        ``SweepResult`` over the epochs done so far, e.g. to draw curves as they grow. If it
        returns ``False`` the run stops there; the result's ``epochs_run`` says how many ran.
        Inside the callback ``partial.to_modules()`` gives the replicas as they are then.
    eval_sets: ``{name: (X, y)}``: more splits evaluated (eval mode) after each epoch, read
        with ``result.histories(split=name)`` or ``result.evals[name]``.
    inits: ``{model name: {seed: module}}`` or a function ``(name, seed) -> module`` (or
        ``None`` to build that replica as usual): start replicas from these modules' weights
        and BN buffers instead of ``torch.manual_seed(seed)``'s (a replica's seed still sets
        its shuffle order). Each module must have the model's architecture.

    Each replica's numbers depend only on its own model, seed, lr, batch size, epochs, start
    and device, not on which or how many other replicas the run holds (tested bitwise).
    The global random state is left as it was.
    """
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"on_epoch must be a function (epoch, partial_result), got {on_epoch!r}.")
    plan, data = _prepare(seeds, lrs, epochs, batch_size, models, data, device, eval_sets, inits)
    for keys, values, done, placement in _epochs(plan, data):  # noqa: B007 (used after)
        if on_epoch is None:
            continue
        partial = _result(plan, keys, values, done, placement)
        go_on = on_epoch(done, partial)
        partial._groups = None  # the run goes on: its weights would change
        if go_on is False:
            break
    return _result(plan, keys, values, done, placement)
