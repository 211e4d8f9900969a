"""A small CNN for the 8x8 digits, with a choice of normalization, and two ways to train it.

Shapes: images ``(N, 1, 8, 8)``, labels ``(N,)`` int64 in 0-9, logits ``(N, 10)``.

``SmallCNN``: conv 3x3 (1 -> c1) -> [norm] -> ReLU -> max-pool 2 -> conv 3x3 (c1 -> c2) ->
[norm] -> ReLU -> max-pool 2 -> flatten (c2 * 2 * 2) -> Linear -> 10 logits.

``train_cnn`` is the plain loop (one model, Adam, ``CrossEntropyLoss``, ``model.train()`` for
the batches, ``model.eval()`` + ``no_grad`` for validation). ``train_cnns`` trains one model
per seed at once: the replicas are stacked along the channel axis of ONE network (grouped
convolutions, ``groups=R``), so each replica's channels only ever see its own channels. Batch
statistics are per channel, group statistics per group of one replica's channels, Adam is
elementwise and the loss is a sum of the replicas' own losses: every replica follows the same
arithmetic as ``train_cnn`` with the same seed (tests/test_cnn.py checks this in float64).

Why the CNN is not trained by :mod:`bnteach.sweep`, the engine of every MLP: measured on the
project's 2-core VM (2026-12-04, torch 2.13.0 CPU, one thread), training 8 seeds of the BN
CNN for 3 epochs took 1.5 s stacked here against 2.5 s one by one, and the stacked run spends
its time in the convolution, max-pooling and batch-norm kernels and their autograd backward,
each already one call for all replicas. A hand-written backward (the engine's way) would call
the same kernels and save only autograd's bookkeeping, at the price of writing out and
proving the convolution and pooling backward passes. So the CNN keeps autograd here.
"""

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from bnteach import checks
from bnteach.training import History, check_epochs, check_lr

__all__ = ["NORMS", "SmallCNN", "make_norm", "train_cnn", "train_cnns", "evaluate_cnn"]

NORMS = ("none", "batch", "layer", "group", "instance")


def make_norm(norm, channels, groups=4):
    """The normalization layer for ``channels`` feature maps (``nn.Identity`` for "none").

    batch: ``nn.BatchNorm2d`` (per channel over N, H, W). layer: ``nn.GroupNorm(1, C)`` (per
    sample over C, H, W). group: ``nn.GroupNorm(groups, C)`` (per sample over C / groups
    channels and H, W). instance: ``nn.GroupNorm(C, C)`` (per sample and channel over H, W;
    the same as ``nn.InstanceNorm2d(C, affine=True)``). All have a per-channel weight and bias.
    """
    if not isinstance(norm, str):
        raise TypeError(
            f"norm must be one of {', '.join(map(repr, NORMS))} (a string), got "
            f"{checks.describe(norm)}."
        )
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(map(repr, NORMS))}; got {norm!r}.")
    channels = checks.whole_number(channels, "channels", minimum=1, example=8)
    groups = checks.whole_number(groups, "groups", minimum=1, example=4)
    if norm == "none":
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group" and channels % groups:
        raise ValueError(
            f"GroupNorm needs the channel count ({channels}) to be a multiple of groups "
            f"({groups}); pick groups among the divisors of {channels}."
        )
    n_groups = {"layer": 1, "group": groups, "instance": channels}[norm]
    return nn.GroupNorm(n_groups, channels)


def _check_channels(channels):
    ok = (
        isinstance(channels, (tuple, list))
        and len(channels) == 2
        and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels)
    )
    if not ok:
        raise ValueError(f"channels must be two positive whole numbers (c1, c2), got {channels!r}.")
    return tuple(channels)


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head for (N, 1, 8, 8) images -> (N, 10) logits.

    norm: one of ``NORMS``, placed after each conv, before its ReLU. bias: whether the convs
    have a bias (True or False); None means "not when BN or instance norm follows" (their mean
    subtraction cancels a per-channel bias). groups: GroupNorm's group count (norm="group").
    n_classes: the number of outputs, at least 2.
    """

    def __init__(self, norm="none", channels=(8, 16), bias=None, groups=4, n_classes=10):
        super().__init__()
        c1, c2 = _check_channels(channels)
        if bias is not None:
            checks.flag(bias, "bias")
        n_classes = checks.whole_number(n_classes, "n_classes", minimum=2, example=10)
        if bias is None:
            bias = norm not in ("batch", "instance")
        self.norm, self.channels, self.groups = norm, (c1, c2), groups
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=bias),
            make_norm(norm, c1, groups),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=bias),
            make_norm(norm, c2, groups),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(c2 * 2 * 2, n_classes)

    def forward(self, x):
        """x (N, 1, 8, 8) -> logits (N, n_classes)."""
        checks.tensor(x, "x")
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(
                f"SmallCNN expects images of shape (N, 1, 8, 8), got {tuple(x.shape)}. "
                f"load_digits() gives that shape; a single image needs x.unsqueeze(0)."
            )
        return self.head(self.features(x).flatten(1))


# ----------------------------------------------------------------------------- the plain loop


def _check_model(model, what):
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{what} needs a model (an nn.Module such as SmallCNN('batch')), got "
            f"{checks.describe(model)}."
        )


def _check_images(X, y, name, n_classes=10):
    """Raise a teaching error unless X are float images (N, 1, 8, 8), N >= 1, finite, and y
    their int64 labels (N,) in 0 .. n_classes - 1. name: "train" or "val" (the errors say
    X_train, y_val, ...), or "" (X, y)."""
    name = f"_{name}" if name else ""
    checks.tensor(X, f"X{name}", floating=False)
    checks.tensor(y, f"y{name}", floating=False)
    if X.dim() != 4 or tuple(X.shape[1:]) != (1, 8, 8) or not X.is_floating_point():
        raise ValueError(f"X{name} must be float images (N, 1, 8, 8), got {tuple(X.shape)}.")
    if y.dtype != torch.long or y.shape != (X.shape[0],):
        raise ValueError(
            f"y{name} must be int64 labels of shape ({X.shape[0]},), got {y.dtype} "
            f"{tuple(y.shape)}."
        )
    if X.shape[0] == 0:
        raise ValueError(
            f"X{name} holds no images (shape {tuple(X.shape)}): a loss or an accuracy over "
            f"no samples is 0 / 0. Check how the split was made."
        )
    checks.finite(X, f"X{name}")
    if y.min() < 0 or y.max() >= n_classes:
        raise checks.DataError(
            f"y{name} holds labels from {int(y.min())} to {int(y.max())}, but the model has "
            f"{n_classes} outputs (classes): the labels must be 0 to {n_classes - 1}."
        )


def _check_data(data, n_classes=10):
    if not (isinstance(data, (tuple, list)) and len(data) == 4):
        raise ValueError(
            "data must be the 4 tensors (X_train, X_val, y_train, y_val) of load_digits()."
        )
    X_train, X_val, y_train, y_val = data
    for name, X, y in (("train", X_train, y_train), ("val", X_val, y_val)):
        _check_images(X, y, name, n_classes)
    return X_train, X_val, y_train, y_val


def _check_model_dtype(model, X):
    """Raise a TypeError unless the model's parameters have the data's dtype."""
    weight = next(model.parameters(), None)
    if weight is not None and weight.dtype != X.dtype:
        raise TypeError(
            f"The data is {X.dtype} but the model's parameters are {weight.dtype}: convert "
            f"one of them, e.g. model.to({X.dtype}) or X.to({weight.dtype})."
        )


def _check_batch_size(batch_size, n_train, drop_last):
    wrong_kind = isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
    if wrong_kind or batch_size < 2:
        raise (TypeError if wrong_kind else ValueError)(
            f"batch_size must be a whole number >= 2 (BatchNorm needs more than one image per "
            f"batch in training), got {batch_size!r}."
        )
    if not isinstance(drop_last, bool):
        raise TypeError(f"drop_last must be True or False, got {drop_last!r}.")
    if n_train % batch_size == 1 and not drop_last:
        raise ValueError(
            f"With {n_train} training images and batch_size={batch_size} the last batch holds "
            f"one image (a problem for BatchNorm's statistics in training): pass "
            f"drop_last=True, or pick another batch size."
        )
    if n_train < batch_size and drop_last:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {n_train} training images: with "
            f"drop_last=True no batch would be left."
        )


def _batches(order, batch_size, drop_last, dim=0):
    """Index batches of order (split along dim); without the last one if drop_last and short."""
    parts = list(order.split(batch_size, dim=dim))
    if drop_last and parts[-1].shape[dim] < batch_size:
        parts.pop()
    return parts


def _accuracy(logits, y, dim):
    """Fraction of samples whose argmax over `dim` is the label; a sample whose logits hold
    NaN (a run that diverged) counts as wrong, not as class 0. Returns a float64 tensor."""
    right = (logits.argmax(dim) == y) & ~torch.isnan(logits).any(dim)
    return right.double().mean(0)


def evaluate_cnn(model, X, y):
    """``(mean cross-entropy, accuracy)`` of model on (X, y) in eval mode, without gradients.

    X: images (N, 1, 8, 8), N >= 1, finite; y: int64 labels (N,). A model whose logits are NaN
    (a run that diverged) gets a NaN loss, and those samples count as wrong answers."""
    _check_model(model, "evaluate_cnn")
    head = getattr(model, "head", None)
    _check_images(X, y, "", head.out_features if isinstance(head, nn.Linear) else 10)
    _check_model_dtype(model, X)
    model.eval()
    with torch.no_grad():
        logits = model(X)
        return F.cross_entropy(logits, y).item(), _accuracy(logits, y, 1).item()


def _order(n, seed, epochs):
    """The shuffle orders of one run: a fresh randperm per epoch from a generator seeded
    with seed (the same orders as TensorLoader / make_loaders(seed=seed))."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g) for _ in range(epochs)]


def train_cnn(model, data, seed, epochs=5, lr=0.01, batch_size=64, drop_last=False):
    """Train one model with Adam on ``CrossEntropyLoss``; return a ``History``.

    data: ``(X_train, X_val, y_train, y_val)``. seed: the shuffle order's seed (the model's
    initialisation is up to the caller). Each epoch: ``model.train()``, one pass over shuffled
    batches (sample-weighted mean loss; ``drop_last`` skips a last, smaller batch), then
    ``model.eval()`` on the whole validation set. A learning rate so large that the loss
    becomes NaN is not an error: ``diverged_at`` says when.
    """
    _check_model(model, "train_cnn")
    check_lr(lr)
    check_epochs(epochs)
    head = getattr(model, "head", None)
    n_classes = head.out_features if isinstance(head, nn.Linear) else 10
    X_train, X_val, y_train, y_val = _check_data(data, n_classes)
    _check_batch_size(batch_size, X_train.shape[0], drop_last)
    seed = checks.seed(seed)
    _check_model_dtype(model, X_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = History(lr=lr, epochs=epochs)
    for order in _order(X_train.shape[0], seed, epochs):
        order = order.to(X_train.device)
        model.train()
        total, seen = 0.0, 0
        for idx in _batches(order, batch_size, drop_last):
            loss = F.cross_entropy(model(X_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * idx.numel()
            seen += idx.numel()
        history.train_loss.append(total / seen)
        val_loss, val_acc = evaluate_cnn(model, X_val, y_val)
        history.val_loss.append(val_loss)
        history.val_acc.append(val_acc)
        if not math.isfinite(history.train_loss[-1]) and history.diverged_at is None:
            history.diverged_at = len(history.train_loss)
    return history


# ----------------------------------------------------------------------------- many at once


def _stack_norm(layers):
    """One normalization layer for R replicas' layers of one kind (channels side by side)."""
    first = layers[0]
    if isinstance(first, nn.Identity):
        return nn.Identity()
    R = len(layers)
    if isinstance(first, nn.BatchNorm2d):
        out = nn.BatchNorm2d(first.num_features * R, eps=first.eps, momentum=first.momentum)
        out.running_mean.copy_(torch.cat([m.running_mean for m in layers]))
        out.running_var.copy_(torch.cat([m.running_var for m in layers]))
        out.num_batches_tracked.copy_(first.num_batches_tracked)
    else:  # GroupNorm: replica r's groups are the r-th block of groups
        out = nn.GroupNorm(first.num_groups * R, first.num_channels * R, eps=first.eps)
    with torch.no_grad():
        out.weight.copy_(torch.cat([m.weight for m in layers]))
        out.bias.copy_(torch.cat([m.bias for m in layers]))
    return out


def _kind(layer):
    return (type(layer), getattr(layer, "num_groups", None))


class _MixedNorm(nn.Module):
    """The normalization layers of R replicas, possibly of different kinds: each run of
    consecutive replicas with the same kind is one stacked layer over its block of channels."""

    def __init__(self, layers, channels):
        super().__init__()
        self.runs, self.blocks = [], nn.ModuleList()
        start = 0
        while start < len(layers):
            stop = start + 1
            while stop < len(layers) and _kind(layers[stop]) == _kind(layers[start]):
                stop += 1
            self.runs.append((start, stop))
            self.blocks.append(_stack_norm(layers[start:stop]))
            start = stop
        self.channels = channels

    def forward(self, h):
        if len(self.blocks) == 1:
            return self.blocks[0](h)
        sizes = [(stop - start) * self.channels for start, stop in self.runs]
        parts = h.split(sizes, dim=1)
        return torch.cat([block(part) for block, part in zip(self.blocks, parts)], dim=1)

    def unstack_into(self, layers):
        with torch.no_grad():
            for (start, stop), block in zip(self.runs, self.blocks):
                if isinstance(block, nn.Identity):
                    continue
                n = stop - start
                for j, layer in enumerate(layers[start:stop]):
                    layer.weight.copy_(block.weight.chunk(n)[j])
                    layer.bias.copy_(block.bias.chunk(n)[j])
                    if isinstance(block, nn.BatchNorm2d):
                        layer.running_mean.copy_(block.running_mean.chunk(n)[j])
                        layer.running_var.copy_(block.running_var.chunk(n)[j])
                        layer.num_batches_tracked.copy_(block.num_batches_tracked)


def _stack_conv(convs):
    """One grouped conv for R replicas' convs: replica r's filters see only its channels."""
    first, R = convs[0], len(convs)
    if any((c.bias is None) != (first.bias is None) for c in convs):
        raise ValueError(
            "All models trained together must agree on the conv bias: pass bias=True or "
            "bias=False explicitly when mixing normalizations."
        )
    out = nn.Conv2d(
        first.in_channels * R,
        first.out_channels * R,
        first.kernel_size,
        padding=first.padding,
        groups=R,
        bias=first.bias is not None,
    )
    with torch.no_grad():
        out.weight.copy_(torch.cat([c.weight for c in convs]))
        if first.bias is not None:
            out.bias.copy_(torch.cat([c.bias for c in convs]))
    return out


class _Stack(nn.Module):
    """R SmallCNNs as one network: input (N, R, 8, 8) (channel r is replica r's image) ->
    logits (N, R, n_classes). Replicas may differ in their normalization."""

    def __init__(self, models):
        super().__init__()
        self.R = len(models)
        feats = [m.features for m in models]
        self.conv1 = _stack_conv([f[0] for f in feats])
        self.norm1 = _MixedNorm([f[1] for f in feats], models[0].channels[0])
        self.conv2 = _stack_conv([f[4] for f in feats])
        self.norm2 = _MixedNorm([f[5] for f in feats], models[0].channels[1])
        self.head_weight = nn.Parameter(torch.stack([m.head.weight.detach() for m in models]))
        self.head_bias = nn.Parameter(torch.stack([m.head.bias.detach() for m in models]))

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.norm1(self.conv1(x))), 2)
        h = F.max_pool2d(F.relu(self.norm2(self.conv2(h))), 2)  # (N, R * c2, 2, 2)
        h = h.reshape(h.shape[0], self.R, -1)  # (N, R, c2 * 4), each replica's own order
        return torch.einsum("nrf,rkf->nrk", h, self.head_weight) + self.head_bias

    def unstack_into(self, models):
        """Copy replica r's parameters and buffers back into models[r]."""
        with torch.no_grad():
            for conv, i in ((self.conv1, 0), (self.conv2, 4)):
                for r, m in enumerate(models):
                    m.features[i].weight.copy_(conv.weight.chunk(self.R)[r])
                    if conv.bias is not None:
                        m.features[i].bias.copy_(conv.bias.chunk(self.R)[r])
            self.norm1.unstack_into([m.features[1] for m in models])
            self.norm2.unstack_into([m.features[5] for m in models])
            for r, m in enumerate(models):
                m.head.weight.copy_(self.head_weight[r])
                m.head.bias.copy_(self.head_bias[r])


def _check_seeds(seeds):
    """seeds as a non-empty list of whole numbers, or a teaching error."""
    if isinstance(seeds, (str, bytes, dict)) or not hasattr(seeds, "__iter__"):
        raise TypeError(
            f"seeds must be a list of whole numbers such as seeds(5) or [0, 1, 2], got "
            f"{checks.describe(seeds)}."
        )
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed, e.g. seeds(5).")
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in seeds):
        raise TypeError(f"seeds must be a non-empty list of whole numbers, got {seeds!r}.")
    return seeds


def _check_models(models, n_seeds):
    """Raise a teaching error unless models is a list of n_seeds SmallCNNs."""
    if isinstance(models, nn.Module) or not isinstance(models, (list, tuple)):
        raise TypeError(
            f"models must be a list of SmallCNN models, one per seed, got "
            f"{checks.describe(models)}."
        )
    for m in models:
        if not isinstance(m, SmallCNN):
            raise TypeError(
                f"models must hold SmallCNN models (train_cnns stacks their layers), got "
                f"{checks.describe(m)}."
            )
    if len(models) != n_seeds:
        raise ValueError(f"Got {len(models)} models for {n_seeds} seeds: pass one per seed.")


def _build(seed, norm, channels, dtype, bias=None):
    """SmallCNN initialised from torch.manual_seed(seed), without disturbing the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SmallCNN(norm=norm, channels=channels, bias=bias).to(dtype)


def train_cnns(
    seeds,
    data,
    norm="none",
    epochs=5,
    lr=0.01,
    batch_size=64,
    channels=(8, 16),
    bias=None,
    drop_last=False,
    models=None,
):
    """Train one ``SmallCNN(norm, channels, bias)`` per seed, all at once; a list of History.

    Replica for seed s: the weights of ``torch.manual_seed(s); SmallCNN(norm, channels,
    bias)``, the shuffle orders of ``train_cnn(..., seed=s)``; the same computation as
    ``train_cnn`` on that model, up to floating-point rounding (tests/test_cnn.py), whatever
    the other replicas are. norm: one name for all, or a list with one per seed (then give
    ``bias`` explicitly: all replicas share the conv-bias setting). drop_last: skip a last,
    smaller batch (as in ``train_cnn``). models: optional list of
    already built models (one per seed; trained in place) instead of building them.
    A learning rate so large that the loss becomes NaN (e.g. 1e30) is not an error: each
    History's ``diverged_at`` says when, and NaN outputs count as wrong in ``val_acc``.
    """
    check_lr(lr)
    check_epochs(epochs)
    head = getattr(models[0], "head", None) if isinstance(models, (list, tuple)) else None
    n_classes = head.out_features if isinstance(head, nn.Linear) else 10
    X_train, X_val, y_train, y_val = _check_data(data, n_classes)
    _check_batch_size(batch_size, X_train.shape[0], drop_last)
    seeds = _check_seeds(seeds)
    norms = [norm] * len(seeds) if isinstance(norm, str) else list(norm)
    if len(norms) != len(seeds):
        raise ValueError(f"Got {len(norms)} norms for {len(seeds)} seeds: pass one per seed.")
    if bias is not None:
        checks.flag(bias, "bias")
    if models is None:
        for n in norms:
            make_norm(n, 4)  # a teaching error for an unknown name, before any work
        models = [_build(s, n, channels, X_train.dtype, bias) for s, n in zip(seeds, norms)]
    else:
        _check_models(models, len(seeds))
    device = X_train.device  # the replicas train where the data lives
    stack = _Stack([m.to(device) for m in models]).to(device=device, dtype=X_train.dtype)
    R, n = len(seeds), X_train.shape[0]
    optimizer = torch.optim.Adam(stack.parameters(), lr=lr)
    histories = [History(lr=lr, epochs=epochs) for _ in seeds]
    orders = [_order(n, s, epochs) for s in seeds]
    val_in = X_val.expand(-1, R, -1, -1)  # every replica sees the whole validation set
    for epoch in range(epochs):
        stack.train()
        order = torch.stack([o[epoch] for o in orders]).to(device)  # (R, n)
        totals = torch.zeros(R, dtype=torch.float64, device=device)
        seen = 0
        for idx in _batches(order, batch_size, drop_last, dim=1):  # (R, B)
            xb = X_train[idx].squeeze(2).transpose(0, 1)  # (B, R, 8, 8)
            yb = y_train[idx].T  # (B, R)
            logits = stack(xb)  # (B, R, 10)
            losses = F.cross_entropy(logits.permute(0, 2, 1), yb, reduction="none").mean(0)
            optimizer.zero_grad()
            losses.sum().backward()
            optimizer.step()
            totals += losses.detach().double() * idx.shape[1]
            seen += idx.shape[1]
        stack.eval()
        with torch.no_grad():
            logits = stack(val_in)  # (N_val, R, 10)
            yv = y_val[:, None].expand(-1, R)
            val_loss = F.cross_entropy(logits.permute(0, 2, 1), yv, reduction="none").mean(0)
            val_acc = _accuracy(logits, yv, 2)
        for r, h in enumerate(histories):
            h.train_loss.append(float(totals[r]) / seen)
            h.val_loss.append(float(val_loss[r]))
            h.val_acc.append(float(val_acc[r]))
            if not math.isfinite(h.train_loss[-1]) and h.diverged_at is None:
                h.diverged_at = epoch + 1
    stack.unstack_into(models)
    for m in models:
        m.eval()
    return histories
