"""Train many replicas (models x seeds x learning rates) at once, for the notebooks' explorers.

``run(seeds=[0, 1, 2], lrs=[0.01])`` trains every model of ``models`` once per seed and
learning rate. Each replica is the same experiment that :func:`bnteach.training.train_model`
runs with ``torch.manual_seed(seed); model = MLP(...)`` and
``make_loaders(..., batch_size=batch_size, seed=seed)``: same initial weights, same shuffle
order, same Adam, same losses. Replicas of one architecture are stacked along a new first
dimension ``R`` (weights of shape ``(R, out, in)``) and trained together with batched matrix
products, which is many times faster than a Python loop over small models.

Forward and backward passes are written out by hand (no autograd). The BatchNorm backward is
the full one: the gradient flows through the batch mean and variance (facts item 14).
"""

import functools
import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bnteach import checks
from bnteach.data import load_data
from bnteach.models import ACTIVATIONS, MLP
from bnteach.training import History, check_epochs, check_lr

DEFAULT_MODELS = {"plain": {"norm": "none"}, "BN": {"norm": "batch"}}
MODEL_KWARGS = ("hidden_sizes", "norm", "activation", "placement", "bias")
_MODEL_DEFAULTS = {
    "hidden_sizes": (128, 64),
    "norm": "none",
    "activation": "relu",
    "placement": "before",
    "bias": True,
}
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults


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
    ``train_loss``, ``val_loss``, ``val_acc``: float64 tensors of shape ``(len(replicas),
    epochs_run)``, row ``k`` for ``replicas[k]``; NaN after a replica diverged.
    ``diverged_at``: per replica the 1-based epoch whose loss became NaN/inf, or ``None``.
    The facts of what was run: ``models`` (name -> MLP arguments), ``seeds``, ``lrs``,
    ``batch_size``, ``epochs`` (asked for) and ``epochs_run`` (done; fewer when an
    ``on_epoch`` callback stopped the run, or in a partial result of :func:`stream`), and
    ``device``: where the replicas were trained (a rerun on another device differs by
    rounding, which training amplifies).
    """

    def __init__(
        self,
        models,
        seeds,
        lrs,
        epochs,
        replicas,
        train_loss,
        val_loss,
        val_acc,
        device="cpu",
        batch_size=64,
        epochs_run=None,
    ):
        self.models, self.seeds, self.lrs, self.epochs = models, list(seeds), list(lrs), epochs
        self.batch_size = batch_size
        self.epochs_run = epochs if epochs_run is None else epochs_run
        self.device = torch.device(device)
        self.replicas = replicas
        self.train_loss, self.val_loss, self.val_acc = train_loss, val_loss, val_acc
        self.diverged_at = [r.history.diverged_at for r in replicas]

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

    def histories(self, model=None, lr=None, seed=None):
        """The :class:`History` of every replica matching the filter (``None`` matches all).

        Each filter is one value or a list of values, e.g. ``histories(model="BN", lr=0.01)``.
        """
        models = self._wanted(model, self.models, "model")
        lrs = self._wanted(lr, self.lrs, "lr")
        seeds = self._wanted(seed, self.seeds, "seed")
        return [
            r.history
            for r in self.replicas
            if r.model in models and r.lr in lrs and r.seed in seeds
        ]

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
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"seeds must be whole numbers such as [0, 1, 2], got {s!r}.")
    return seeds


def _check_lrs(lrs):
    lrs = _check_list(lrs, "lrs", "[0.01]")
    for lr in lrs:
        check_lr(lr)
    return [float(lr) for lr in lrs]


def normalize_models(models):
    if models is None:
        models = DEFAULT_MODELS
    if not isinstance(models, dict) or not models:
        raise TypeError(
            f"models must be a non-empty dict name -> MLP keyword arguments, such as "
            f"{DEFAULT_MODELS}, got {models!r}."
        )
    specs = {}
    for name, kwargs in models.items():
        if not isinstance(kwargs, dict):
            raise TypeError(f"models[{name!r}] must be a dict of MLP arguments, got {kwargs!r}.")
        unknown = sorted(set(kwargs) - set(MODEL_KWARGS))
        if unknown:
            fixed = {"input_size": "taken from the data", "output_size": "always 1 (one logit)"}
            notes = "".join(f" {k} is {fixed[k]}." for k in unknown if k in fixed)
            raise ValueError(
                f"models[{name!r}] has unknown argument(s) {unknown}; "
                f"valid ones are {list(MODEL_KWARGS)}.{notes}"
            )
        spec = {**_MODEL_DEFAULTS, **kwargs}
        if spec["norm"] is None:
            spec["norm"] = "none"
        sizes = spec["hidden_sizes"]
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
            sizes = (int(sizes),)
        if not isinstance(sizes, (list, tuple)):  # a string "64" would become ("6", "4")
            raise TypeError(
                f"models[{name!r}]: hidden_sizes must be a whole number or a list of them, "
                f"such as (128, 64), got {checks.describe(sizes)}."
            )
        spec["hidden_sizes"] = tuple(sizes)
        try:
            with torch.random.fork_rng(devices=[]):
                MLP(4, **spec)  # the models module's teaching errors for bad values
        except (TypeError, ValueError) as error:
            raise type(error)(f"models[{name!r}]: {error}") from None
        specs[name] = spec
    return specs


def check_data(data, dtype=None):
    """The same contract as :func:`bnteach.training.train_model`'s loaders: tensors of the
    models' dtype (``dtype``; default ``torch.get_default_dtype()``, float32), targets
    ``(N, 1)`` of 0s and 1s, no NaN. Nothing is cast silently: a wrong dtype is an error that
    says how to convert it."""
    if isinstance(data, torch.Tensor) or not isinstance(data, (tuple, list)) or len(data) != 4:
        raise TypeError(
            f"data must be the tuple (X_train, X_val, y_train, y_val) of load_data(), got "
            f"{checks.describe(data)}."
        )
    X_train, X_val, y_train, y_val = data
    dtype = torch.get_default_dtype() if dtype is None else dtype
    convert = "float()" if dtype == torch.float32 else f"to({dtype})"
    for X, y, split in ((X_train, y_train, "train"), (X_val, y_val, "val")):
        checks.tensor(X, f"X_{split}", dims=2, floating=False)
        checks.tensor(y, f"y_{split}", floating=False)
        if X.shape[0] == 0:
            raise ValueError(f"X_{split} holds no samples (shape {tuple(X.shape)}).")
        if X.dtype != dtype:
            raise TypeError(
                f"X_{split} has dtype {X.dtype}, but the models are built in {dtype}: convert "
                f"it with X_{split}.{convert}."
            )
        if y.shape != (X.shape[0], 1):
            got = f"shape {tuple(y.shape)}"
            if y.dim() == 1:
                got += ", one number per sample in a 1-D tensor"
            raise ValueError(
                f"y_{split} must have shape ({X.shape[0]}, 1), one target per row of X_{split}, "
                f"got {got}. Reshape with y_{split}.reshape(-1, 1)."
            )
        if y.dtype != dtype:
            what = "float targets" if not y.dtype.is_floating_point else f"targets in {dtype}"
            raise TypeError(
                f"y_{split} has dtype {y.dtype}, but BCEWithLogitsLoss needs {what} (the "
                f"models' dtype): convert it with y_{split}.{convert}."
            )
        checks.finite(X, f"X_{split}")
        checks.binary_labels(y, f"y_{split}")
    if X_val.shape[1] != X_train.shape[1]:
        raise ValueError(
            f"X_train has {X_train.shape[1]} features (columns) but X_val has {X_val.shape[1]}: "
            f"the validation data must have the same features. Check how X_val was made."
        )


def _check_batch_size(batch_size, n_train, uses_batchnorm):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be a whole number such as 64, got {batch_size!r}.")
    if batch_size < 2:
        raise ValueError(
            f"batch_size must be at least 2, got {batch_size}: BatchNorm needs more than one "
            f"sample per batch to compute a mean and a variance."
        )
    if uses_batchnorm and n_train % batch_size == 1:
        if n_train < 3:
            raise ValueError(f"BatchNorm needs at least 2 training samples, got {n_train}.")
        nearby = (b for d in range(1, n_train) for b in (batch_size - d, batch_size + d))
        better = next(b for b in nearby if b >= 2 and n_train % b != 1)
        raise ValueError(
            f"With {n_train} training samples and batch_size={batch_size} the last batch holds "
            f"a single sample, and BatchNorm cannot normalize one sample in training mode. "
            f"Choose another batch size, e.g. batch_size={better}."
        )


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


class _BatchNorm:
    """``nn.BatchNorm1d`` per replica: batch statistics in training, running ones in eval."""

    def __init__(self, params, grads, module, n_replicas, device):
        (self.weight, self.bias), (self.grad_weight, self.grad_bias) = params, grads
        self.gamma, self.beta = self.weight.unsqueeze(1), self.bias.unsqueeze(1)
        self.eps, self.momentum = module.eps, module.momentum
        # (R, F) as (R, 1, F): the shape of the batch statistics, so no reshaping per step.
        self.running_mean = module.running_mean.repeat(n_replicas, 1, 1).to(device)
        self.running_var = module.running_var.repeat(n_replicas, 1, 1).to(device)

    def forward(self, h, training):
        if not training:
            scale = self.gamma * (self.running_var + self.eps).rsqrt()
            shift = self.beta - self.running_mean * scale
            return torch.addcmul(shift, h, scale), None
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
        xhat, rstd = saved
        n = grad.shape[1]
        dbeta = torch.sum(grad, 1, out=self.grad_bias)
        dgamma = torch.sum(grad * xhat, 1, out=self.grad_weight)
        # Through xhat = (h - mean) / sqrt(var + eps), with mean and var depending on all of h:
        # dh = gamma * rstd * (dy - mean(dy) - xhat * mean(dy * xhat)).
        dh = (grad - dbeta.unsqueeze(1) / n).sub_(xhat * (dgamma.unsqueeze(1) / n))
        return dh.mul_(self.gamma * rstd)

    def zero_replicas(self, dead):
        self.running_mean.masked_fill_(dead.view(-1, 1, 1), 0.0)
        self.running_var.masked_fill_(dead.view(-1, 1, 1), 1.0)


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


# Each activation's backward is the ATen kernel that autograd itself calls.
_aten = torch.ops.aten
_ACTIVATION_FUNCS = {
    "relu": (torch.relu, lambda g, x, y: _aten.threshold_backward(g, y, 0.0)),
    "tanh": (torch.tanh, lambda g, x, y: _aten.tanh_backward(g, y)),
    "sigmoid": (torch.sigmoid, lambda g, x, y: _aten.sigmoid_backward(g, y)),
    "gelu": (F.gelu, lambda g, x, y: _aten.gelu_backward(g, x)),
}


class _Activation:
    def __init__(self, name):
        self.forward_fn, self.backward_fn = _ACTIVATION_FUNCS[name]

    def forward(self, x, training):
        y = self.forward_fn(x)
        return y, (x, y)

    def backward(self, grad, saved, need_input_grad=True):
        return self.backward_fn(grad, *saved)


_ACTIVATION_NAMES = {cls: name for name, cls in ACTIVATIONS.items()}


# ----------------------------------------------------------------------------------------
# One group: the replicas of one architecture
# ----------------------------------------------------------------------------------------


_VECTORS = ("params", "grads", "exp_avg", "exp_avg_sq")  # a _Group's flat vectors


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
    """Replicas sharing one architecture, their stacked parameters and Adam state.

    All parameters live in one flat vector (``params``), parameter-major: the ``R`` copies of
    each parameter are one block of ``R`` rows, so that Adam is one fused operation on the
    whole vector and each layer sees ``(R, *shape)`` views of it.
    """

    def __init__(self, inits, lrs, device):
        template = inits[0]
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
        self.grads = torch.zeros_like(self.params)
        self.exp_avg = torch.zeros_like(self.params)
        self.exp_avg_sq = torch.zeros_like(self.params)
        self._rows = {  # vector name -> parameter name -> its (R, width) block
            v: self._blocks(getattr(self, v), R) for v in _VECTORS
        }
        views = {}
        for name, shape in shapes.items():
            param, grad = self._rows["params"][name], self._rows["grads"][name]
            views[name] = (
                param[:, : shape.numel()].view(R, *shape),
                grad[:, : shape.numel()].view(R, *shape),
            )
        self.layers = []
        for i, module in enumerate(template.network):
            own = [
                views[f"network.{i}.{n}"] for n in ("weight", "bias") if f"network.{i}.{n}" in views
            ]
            params, grads = [p for p, _ in own], [g for _, g in own]
            if isinstance(module, nn.Linear):
                if module.bias is None:
                    params, grads = params + [None], grads + [None]
                self.layers.append(_Linear(params, grads))
            elif isinstance(module, nn.BatchNorm1d):
                self.layers.append(_BatchNorm(params, grads, module, R, device))
            elif isinstance(module, nn.LayerNorm):
                self.layers.append(_LayerNorm(params, grads, module))
            else:
                self.layers.append(_Activation(_ACTIVATION_NAMES[type(module)]))
        self.lr = torch.tensor(lrs, dtype=torch.float64, device=device)
        self.lrs = list(lrs)
        self.step = torch.zeros((), dtype=torch.float32, device=device)
        self._adam_lists(set(range(R)))

    def _blocks(self, flat, R):
        """name -> the (R, width) block of ``flat`` that holds that parameter's copies."""
        blocks, offset = {}, 0
        for name, width in self._widths.items():
            blocks[name] = flat[offset : offset + R * width].view(R, width)
            offset += R * width
        return blocks

    def _adam_lists(self, live):
        """Per learning rate, the live replicas' block rows, as lists for ``_fused_adam_``."""
        rows = {}
        for r in sorted(live):
            rows.setdefault(self.lrs[r], []).append(r)
        self._live = live
        if len(rows) == 1 and len(live) == len(self.lrs):  # all rows at once (same numbers)
            self._adam = [(self.lrs[0], *([getattr(self, v)] for v in _VECTORS), [self.step])]
            return
        self._adam = []
        for lr, rs in rows.items():
            runs = _runs(rs)  # rows r0..r1-1 of a block are one contiguous slice
            lists = [
                [b[r0:r1] for b in self._rows[v].values() for r0, r1 in runs] for v in _VECTORS
            ]
            self._adam.append((lr, *lists, [self.step] * len(lists[0])))

    def forward(self, x, training):
        saved = []
        for layer in self.layers:
            x, s = layer.forward(x, training)
            saved.append(s)
        return x, saved

    def backward(self, grad, saved):
        """Backpropagate ``grad`` (d loss / d logits) into ``self.grads``."""
        for i in range(len(self.layers) - 1, -1, -1):
            grad = self.layers[i].backward(grad, saved[i], need_input_grad=i > 0)

    def adam_step(self):
        """``torch.optim.Adam(..., fused=True)``: its fused kernel, once per learning rate, over
        the block rows of the replicas that use it. One pass over the parameters instead of
        about ten element-wise operations; each block row is padded to a multiple of 64
        numbers, so every number goes through the same vectorized code whichever rows are
        updated with it."""
        self.step += 1
        for lr, params, grads, exp_avgs, exp_avg_sqs, steps in self._adam:
            torch._fused_adam_(
                params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr, beta1=BETA1,
                beta2=BETA2, weight_decay=0.0, eps=ADAM_EPS, amsgrad=False, maximize=False,
            )  # fmt: skip

    def freeze(self, dead):
        """Stop replicas ``dead`` (bool (R,)): zero their lr, parameters and Adam state."""
        if not dead.any():  # one sync per epoch
            return
        self.lr.masked_fill_(dead, 0.0)
        for v in ("params", "exp_avg", "exp_avg_sq"):
            for block in self._rows[v].values():
                block.masked_fill_(dead.unsqueeze(1), 0.0)
        for layer in self.layers:
            if isinstance(layer, _BatchNorm):
                layer.zero_replicas(dead)
        live = {r for r in self._live if not bool(dead[r])}
        if live != self._live:
            self._adam_lists(live)


def _bce(logits, y):
    """Per-replica mean ``BCEWithLogitsLoss``: logits and y (R, n, 1), loss (R,)."""
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean((1, 2))


def _bce_grad(logits, y):
    """The gradient of each replica's mean ``BCEWithLogitsLoss`` with respect to its logits."""
    return (torch.sigmoid(logits) - y) * (1.0 / (y.shape[1] * y.shape[2]))


def _epoch_loss(logits, y, batch_size):
    """An epoch's training loss from its steps' logits, as ``train_model`` reports it: each
    batch's mean loss weighted by the batch's size, over the epoch's samples. logits and y:
    (R, n, 1) in the epoch's order (computed once per epoch instead of once per step)."""
    R, n = y.shape[0], y.shape[1]
    losses = F.binary_cross_entropy_with_logits(logits, y, reduction="none").view(R, n)
    full = n - n % batch_size
    sums = losses[:, :full].view(R, -1, batch_size).mean(2).double() * batch_size
    total = sums.sum(1)
    if full < n:  # the last, smaller batch
        total += losses[:, full:].mean(1).double() * (n - full)
    return total / n


def _train_group(group, orders, data, epochs, batch_size):
    """Train one group, one epoch per ``next()``: yields ``(train_loss, val_loss, val_acc)``
    of that epoch, each an (R,) float64 tensor (NaN for replicas frozen earlier)."""
    X_train, X_val, y_train, y_val = data
    R, n = orders.shape[0], X_train.shape[0]
    device = X_train.device
    starts = range(0, n, batch_size)
    X_val_r, y_val_r = X_val.expand(R, *X_val.shape), y_val.expand(R, *y_val.shape)
    alive = torch.ones(R, dtype=torch.bool, device=device)

    for epoch in range(epochs):
        with torch.no_grad():
            order = orders[:, epoch]  # (R, n): this epoch's shuffle of each replica
            X_epoch, y_epoch = X_train[order], y_train[order]
            step_logits = []
            for s in starts:
                xb, yb = X_epoch[:, s : s + batch_size], y_epoch[:, s : s + batch_size]
                logits, saved = group.forward(xb, training=True)
                step_logits.append(logits)
                group.backward(_bce_grad(logits, yb), saved)
                group.adam_step()
            train_loss = _epoch_loss(torch.cat(step_logits, 1), y_epoch, batch_size)
            logits, _ = group.forward(X_val_r, training=False)
            val_loss = _bce(logits, y_val_r).double()
            val_acc = ((logits > 0).to(y_val_r.dtype) == y_val_r).double().mean((1, 2))
            # A replica whose loss is NaN/inf keeps this epoch's values, then is frozen.
            ok = train_loss.isfinite() & val_loss.isfinite()
            out = [t.masked_fill(~alive, math.nan) for t in (train_loss, val_loss, val_acc)]
            alive &= ok
            group.freeze(~alive)
        yield out


def _result(specs, seeds, lrs, epochs, batch_size, device, keys, values, done):
    """A :class:`SweepResult` over the first ``done`` epochs of ``values`` (3 x (K, epochs))."""
    train_loss, val_loss, val_acc = (v[:, :done].clone() for v in values)
    replicas = []
    for k, (name, seed, lr) in enumerate(keys):
        finite = (train_loss[k].isfinite() & val_loss[k].isfinite()).tolist()
        diverged_at = finite.index(False) + 1 if not all(finite) else None
        last = done if diverged_at is None else diverged_at
        history = History(
            lr=lr,
            epochs=epochs,
            train_loss=train_loss[k, :last].tolist(),
            val_loss=val_loss[k, :last].tolist(),
            val_acc=val_acc[k, :last].tolist(),
            diverged_at=diverged_at,
        )
        replicas.append(Replica(name, seed, lr, history))
    return SweepResult(
        specs,
        seeds,
        lrs,
        epochs,
        replicas,
        train_loss,
        val_loss,
        val_acc,
        device=device,
        batch_size=batch_size,
        epochs_run=done,
    )


def _prepare(seeds, lrs, epochs, batch_size, models, data, device):
    """Check the arguments; return ``(facts, data)`` with data on ``device``."""
    seeds = _check_seeds(seeds)
    lrs = _check_lrs(lrs)
    check_epochs(epochs)
    specs = normalize_models(models)
    data = _default_data() if data is None else data
    check_data(data)
    uses_bn = any(spec["norm"] == "batch" for spec in specs.values())
    _check_batch_size(batch_size, data[0].shape[0], uses_bn)
    device = checks.device(device)
    data = tuple(t.to(device) for t in data)
    return (specs, seeds, lrs, epochs, batch_size, device), data


def stream(seeds, lrs, epochs=25, batch_size=64, models=None, data=None, device=None):
    """Like :func:`run`, as a generator: yields a :class:`SweepResult` over the epochs done so
    far after each epoch (``epochs_run`` = 1, 2, ..., ``epochs``). Stop iterating to stop
    training. The arguments are checked at the call, before the first epoch."""
    facts, data = _prepare(seeds, lrs, epochs, batch_size, models, data, device)
    return (_result(*facts, keys, values, done) for keys, values, done in _epochs(facts, data))


def _epochs(facts, data):
    """Train; after each epoch yield ``(keys, values, epochs_done)``, values 3 x (K, epochs)."""
    specs, seeds, lrs, epochs, batch_size, device = facts
    n_train, n_features = data[0].shape
    # Each seed's shuffle orders, drawn exactly as make_loaders' TensorLoader draws them.
    orders = {}
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        orders[seed] = torch.stack([torch.randperm(n_train, generator=g) for _ in range(epochs)])

    # Replicas: models x seeds x lrs. Models with the same architecture share a group.
    keys = [(name, seed, lr) for name in specs for seed in seeds for lr in lrs]
    groups = {}
    for k, (name, _, _) in enumerate(keys):
        arch = tuple(sorted(specs[name].items()))
        groups.setdefault(arch, []).append(k)

    trainers = []
    for arch, members in groups.items():
        # Rows with the same learning rate next to each other: Adam then updates each lr's
        # rows of a parameter as one slice (row order does not change a replica's numbers).
        members = sorted(members, key=lambda k: keys[k][2])
        spec = dict(arch)
        inits = {}
        with torch.random.fork_rng(devices=[]):
            for k in members:
                seed = keys[k][1]
                if seed not in inits:
                    torch.manual_seed(seed)
                    inits[seed] = MLP(n_features, **spec)
        # A group of one replica is trained as two copies: with one replica, torch.bmm of a
        # (1, n, k) by a (1, k, 1) (the output layer) takes another kernel (a matrix-vector
        # product) whose rounding differs from the batched one used for 2 or more replicas.
        rows = members * 2 if len(members) == 1 else members
        group = _Group([inits[keys[k][1]] for k in rows], [keys[k][2] for k in rows], device)
        group_orders = torch.stack([orders[keys[k][1]] for k in rows]).to(device)
        trainer = _train_group(group, group_orders, data, epochs, batch_size)
        trainers.append((members, trainer))

    values = [torch.full((len(keys), epochs), math.nan, dtype=torch.float64) for _ in range(3)]
    for epoch in range(epochs):
        for members, trainer in trainers:
            for v, column in zip(values, next(trainer)):
                v[members, epoch] = column[: len(members)].cpu()
        yield keys, values, epoch + 1


def run(seeds, lrs, epochs=25, batch_size=64, models=None, data=None, device=None, on_epoch=None):
    """Train each of ``models`` for each seed and learning rate; return a :class:`SweepResult`.

    seeds: list of ints. Seed ``s`` gives the initial weights of ``torch.manual_seed(s);
        MLP(...)`` and the shuffle order of ``make_loaders(..., seed=s)``.
    lrs: list of Adam learning rates.
    models: dict name -> keyword arguments of :class:`bnteach.models.MLP` (``hidden_sizes``,
        ``norm``, ``activation``, ``placement``, ``bias``); default ``{"plain": {"norm":
        "none"}, "BN": {"norm": "batch"}}``, the tutorial's ``SimpleMLP`` and ``MLPWithBN``.
    data: ``(X_train, X_val, y_train, y_val)``; default ``load_data()`` (cached). X: (N, F)
        and y: (N, 1) float tensors of the default dtype (float32), labels 0/1, no NaN; they
        are moved to ``device`` but never cast (see :func:`check_data`).
    device: where to train (default CPU; ``"cuda"`` is checked to exist).
    on_epoch: ``callback(epoch, partial)`` called after each epoch (1-based) with a
        ``SweepResult`` over the epochs done so far, e.g. to draw curves as they grow. If it
        returns ``False`` the run stops there; the result's ``epochs_run`` says how many ran.

    Each replica's numbers depend only on its own model, seed, lr, batch size, epochs and
    device, not on which or how many other replicas the run holds (tested bitwise).
    The global random state is left as it was.
    """
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"on_epoch must be a function (epoch, partial_result), got {on_epoch!r}.")
    facts, data = _prepare(seeds, lrs, epochs, batch_size, models, data, device)
    for keys, values, done in _epochs(facts, data):
        if on_epoch is not None and on_epoch(done, _result(*facts, keys, values, done)) is False:
            break
    return _result(*facts, keys, values, done)
