"""The plain PyTorch training loop the notebooks teach, returning a :class:`History`."""

import copy
import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import nn

from bnteach import checks
from bnteach.batchnorm import bn_layers


@dataclass
class History:
    """Per-epoch results of one training run (lists have one entry per finished epoch).

    ``diverged_at`` is the 1-based epoch whose loss became NaN or infinite (training stopped
    there), or ``None`` if the run finished.

    What was run, where it is known (``None`` otherwise): ``batch_size`` (of the training
    loader), ``device`` (where the model was trained, e.g. ``"cpu"`` or ``"cuda:0"``) and
    ``seed``. :func:`train_model` fills ``batch_size`` and ``device``; it cannot know the seed
    your model was initialised with, so ``seed`` is whatever you pass to ``train_model``.
    """

    lr: float
    epochs: int
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    diverged_at: int | None = None
    batch_size: int | None = None
    device: str | None = None
    seed: int | None = None

    @property
    def diverged(self):
        return self.diverged_at is not None

    def __iter__(self):
        """Unpacks like the starting tutorial's return value:
        ``train_losses, val_losses = train_model(...)``."""
        return iter((self.train_loss, self.val_loss))

    def __repr__(self):
        done = len(self.train_loss)
        if done == 0:
            return f"History(lr={self.lr:g}, no epochs run)"
        status = f"diverged at epoch {self.diverged_at}" if self.diverged else "finished"
        return (
            f"History(lr={self.lr:g}, {done}/{self.epochs} epochs, {status}, "
            f"final train_loss={self.train_loss[-1]:.4f}, val_loss={self.val_loss[-1]:.4f}, "
            f"val_acc={self.val_acc[-1]:.3f})"
        )


def check_lr(lr):
    """``lr`` as a float; a teaching error unless it is a positive finite number."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a number such as 0.01, got {checks.describe(lr)}.")
    lr = float(lr)
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(
            f"lr must be a positive, finite number (typical values 1e-4 to 1.0), got {lr!r}."
        )
    return lr


def check_epochs(epochs):
    """``epochs`` as an int; a teaching error unless it is a whole number >= 1."""
    return checks.whole_number(epochs, "epochs", minimum=1, example=25)


def _first_linear(model):
    return next((m for m in model.modules() if isinstance(m, nn.Linear)), None)


def _last_linear(model):
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _tensors_of(loader, name):
    """``(X, y, where_X, where_y)``: all the data of a TensorLoader or of a DataLoader over a
    TensorDataset (with names saying where it lives), or ``None`` for other loaders."""
    if hasattr(loader, "X") and hasattr(loader, "y"):  # TensorLoader
        X, y = loader.X, loader.y
        if isinstance(X, torch.Tensor) and isinstance(y, torch.Tensor):
            return X, y, f"{name}.X", f"{name}.y"
    tensors = getattr(getattr(loader, "dataset", None), "tensors", None)  # TensorDataset
    if isinstance(tensors, tuple) and len(tensors) == 2:
        return (*tensors, f"{name}.dataset.tensors[0]", f"{name}.dataset.tensors[1]")
    return None


def _batching(loader):
    """``(number of samples, batch_size, drop_last)`` where the loader says so, else None."""
    batch_size = getattr(loader, "batch_size", None)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        return None
    if hasattr(loader, "X") and isinstance(getattr(loader, "X", None), torch.Tensor):
        n = loader.X.shape[0]
    elif hasattr(getattr(loader, "dataset", None), "__len__"):
        if getattr(loader, "batch_sampler", None) is not None and not hasattr(
            loader.batch_sampler, "batch_size"
        ):
            return None  # a custom batch sampler decides the batch sizes
        n = len(loader.dataset)
    else:
        return None
    return n, batch_size, bool(getattr(loader, "drop_last", False))


def _peek(loader):
    """One batch of ``loader``'s data without drawing from its shuffle generator."""
    data = _tensors_of(loader, "loader")
    if data is not None:
        return data[0][:2], data[1][:2]
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and hasattr(loader, "collate_fn") and hasattr(dataset, "__getitem__"):
        return loader.collate_fn([dataset[0]])  # a DataLoader: a batch of one, collated
    if isinstance(loader, (list, tuple)):
        return loader[0]
    return next(iter(loader))


def _pair(batch, name, who="train_model"):
    """``(x, y)`` of one batch, or a TypeError that says what the loader yields instead."""
    if (
        isinstance(batch, (tuple, list))
        and len(batch) == 2
        and all(isinstance(t, torch.Tensor) for t in batch)
    ):
        return batch
    raise TypeError(
        f"{name} yields {checks.describe(batch)} as a batch, but {who} needs pairs (x, y) of "
        f"two tensors: inputs and targets. Passing (X, y) itself? Wrap it in a list, [(X, y)] "
        f"(one batch), or build loaders with make_loaders(X_train, X_val, y_train, y_val)."
    )


def _bn_trains(model):
    """Whether some BN layer of ``model`` uses batch statistics after ``model.train()``
    (frozen layers stay in eval mode). The model's modes are left as they were."""
    layers = bn_layers(model)
    if not layers:
        return False
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.train()
        return any(m.training for m in layers)
    finally:
        for m, mode in modes:
            m.training = mode


def _suggest_batch_size(n, batch_size):
    nearby = (b for d in range(1, n) for b in (batch_size - d, batch_size + d))
    return next((b for b in nearby if 2 <= b <= n and n % b != 1), None)


def _check_last_batch(loader, name):
    """A BN net cannot train on a batch of one sample: catch it before training starts."""
    info = _batching(loader)
    if info is None:
        return
    n, batch_size, drop_last = info
    if n < 2:
        raise ValueError(
            f"{name} holds {n} sample{'s' if n != 1 else ''}; BatchNorm needs at least 2 "
            f"samples per batch in training mode to compute a mean and a variance."
        )
    if batch_size == 1:
        raise ValueError(
            f"{name} has batch_size=1: BatchNorm in training mode cannot normalize a single "
            f"sample (its variance over the batch is 0). Use batch_size=2 or more."
        )
    if not drop_last and n % batch_size == 1:
        better = _suggest_batch_size(n, batch_size)
        suggestion = f"batch_size={better}, or " if better is not None else ""
        raise ValueError(
            f"With {n} training samples and batch_size={batch_size} the last batch of {name} "
            f"holds a single sample, and BatchNorm cannot normalize one sample in training "
            f"mode. Choose {suggestion}drop the incomplete batch with drop_last=True "
            f"(make_loaders(..., drop_last=True))."
        )


def check_batch(model, xb, yb, name, reference=None):
    """Raise a teaching error if one batch ``(xb, yb)`` from ``name`` does not fit ``model``
    trained with ``BCEWithLogitsLoss``: inputs ``(batch, features)`` of the model's dtype and
    feature count, targets ``(batch, 1)`` of a floating dtype. ``reference``: ``(loader name,
    its number of features)`` of the training loader, to say which loader disagrees, or
    ``"trained"`` for a model to evaluate (then the data, not the model, is to change)."""
    xb = checks.tensor(xb, f"the inputs x of {name}", floating=False)
    yb = checks.tensor(yb, f"the targets y of {name}", floating=False)
    first = _first_linear(model)
    if xb.dim() != 2:
        raise ValueError(
            f"{name} yields inputs of shape {tuple(xb.shape)}; expected (batch, features)."
        )
    if first is not None and xb.shape[1] != first.in_features:
        if reference == "trained":
            raise ValueError(
                f"The model expects {first.in_features} input features but {name} gives "
                f"{xb.shape[1]}: evaluate it on data with the features (columns) it was built "
                f"and trained for, e.g. X_val made like X_train."
            )
        if reference is not None and reference[1] == first.in_features:
            raise ValueError(
                f"{name} gives {xb.shape[1]} input features, but the model and "
                f"{reference[0]} have {first.in_features}: the validation data must have the "
                f"same features (columns) as the training data. Check how X_val was made."
            )
        raise ValueError(
            f"The model expects {first.in_features} input features but {name} gives "
            f"{xb.shape[1]}. Build the model with input_size={xb.shape[1]} "
            f"(e.g. X_train.shape[1])."
        )
    weight = next(model.parameters(), None)
    if not xb.dtype.is_floating_point:
        raise TypeError(
            f"{name} yields inputs of dtype {xb.dtype}, but a network computes with "
            f"floating-point numbers: convert the data with X.float()."
        )
    if weight is not None and xb.dtype != weight.dtype:
        raise TypeError(
            f"{name} yields inputs of dtype {xb.dtype} but the model's parameters are "
            f"{weight.dtype}: convert the data with X.to({weight.dtype}) (X.float() for "
            f"float32), or the model with model.to({xb.dtype})."
        )
    if yb.shape[0] != xb.shape[0]:
        raise ValueError(
            f"{name} yields {xb.shape[0]} inputs but {yb.shape[0]} targets in one batch: every "
            f"sample needs one target."
        )
    if yb.shape != (xb.shape[0], 1):
        n = xb.shape[0]
        if yb.dim() == 1:
            what = f"of shape {tuple(yb.shape)}, one number per sample in a 1-D tensor"
        else:
            what = f"of shape {tuple(yb.shape)} for a batch of {n} samples"
        raise ValueError(
            f"{name} yields targets {what}, but BCEWithLogitsLoss needs shape (batch, 1), "
            f"here ({n}, 1), to match the model's output (one logit per sample). Reshape "
            f"with y.reshape(-1, 1)."
        )
    if not yb.dtype.is_floating_point:
        raise TypeError(
            f"{name} yields targets of dtype {yb.dtype}, but BCEWithLogitsLoss needs "
            f"floating-point targets 0.0 / 1.0: convert them with y.float()."
        )


def _check_model(model):
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch nn.Module such as MLPWithBN(20, 128, 64, 1), got "
            f"{checks.describe(model)}."
        )
    if next(model.parameters(), None) is None:
        raise ValueError(f"{type(model).__name__} has no parameters to train.")
    last = _last_linear(model)
    if last is not None and last.out_features != 1:
        raise ValueError(
            f"The model's last layer has {last.out_features} outputs per sample, but "
            f"train_model trains with BCEWithLogitsLoss for two classes, which needs one "
            f"logit per sample: build the model with output_size=1."
        )


def _check_loader(model, loader, name, reference=None):
    """Check a loader for train_model before anything trains; return its number of features."""
    checks.loader(loader, name)
    if iter(loader) is loader:
        raise TypeError(
            f"{name} is an iterator ({type(loader).__name__}): it would be used up after one "
            f"epoch. Pass a loader (make_loaders(...)) or a list of (x, y) batches."
        )
    try:
        n_batches = len(loader)
    except TypeError:
        n_batches = None
    if n_batches == 0:
        raise ValueError(
            f"{name} yields no batches. Check that the dataset is not empty and, with "
            f"drop_last=True, that it holds at least one full batch."
        )
    data = _tensors_of(loader, name)
    if data is not None:
        X, y, where_X, where_y = data
        if X.shape[0] == 0:
            raise ValueError(f"{name} holds no samples: {where_X} has shape {tuple(X.shape)}.")
        check_batch(model, X, y, name, reference)
        checks.finite(X, where_X)
        checks.binary_labels(y, where_y)
    else:
        batches = loader if isinstance(loader, (list, tuple)) else [_peek(loader)]
        for i, batch in enumerate(batches):
            xb, yb = _pair(batch, name)
            check_batch(model, xb, yb, name, reference)
            _check_not_empty(xb, name, i)
            checks.finite(xb, f"batch {i} of {name}, x")
            checks.binary_labels(yb, f"batch {i} of {name}, y")
        X = batches[0][0]
    return X.shape[1]


def _check_not_empty(xb, name, index):
    """An empty batch has no loss (its mean is NaN): a teaching error instead."""
    if xb.shape[0] == 0:
        raise ValueError(
            f"Batch {index} of {name} holds no samples (x of shape {tuple(xb.shape)}): its mean "
            f"loss would be NaN (0 / 0). Remove empty batches from the loader."
        )


def _correct(logits, yb):
    """How many logits (N, 1) > 0 match the 0/1 targets yb; a NaN logit counts as wrong."""
    return (((logits > 0).float() == yb) & ~torch.isnan(logits)).sum().item()


def _bad_batch(xb, yb, name, index):
    """After a non-finite loss: raise checks.DataError if the batch itself is bad."""
    checks.finite(xb, f"batch {index} of {name}, x")
    checks.binary_labels(yb, f"batch {index} of {name}, y")


def evaluate(model, loader, loss_fn=None, device=None):
    """``(mean loss, accuracy)`` of ``model`` over ``loader`` in eval mode, without gradients.

    The loss is sample-weighted; accuracy counts logits > 0 as class 1. ``loader`` yields
    ``(x, y)`` batches (a loader, or a list such as ``[(X_val, y_val)]``); an empty batch is a
    ValueError. A model whose outputs are NaN (a run that diverged) gets a NaN loss, and its
    NaN outputs count as wrong answers in the accuracy. ``device``: where to move the batches
    (None: leave them where they are).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {checks.describe(model)}.")
    checks.loader(
        loader,
        "loader",
        "Pass a loader (e.g. val_loader from make_loaders) or a list of batches, [(X_val, y_val)].",
    )
    if loss_fn is not None and (not callable(loss_fn) or isinstance(loss_fn, type)):
        raise TypeError(
            f"loss_fn must be a loss such as nn.BCEWithLogitsLoss() (an instance: note the "
            f"parentheses), got {checks.describe(loss_fn)}."
        )
    if device is not None:
        device = checks.device(device)
    bce = loss_fn is None
    loss_fn = loss_fn or nn.BCEWithLogitsLoss()
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            xb, yb = _pair(batch, "loader", "evaluate")
            _check_not_empty(xb, "loader", i)
            if bce:  # the default loss: check what it and the accuracy assume
                if i == 0:
                    check_batch(model, xb, yb, "loader", "trained")
                checks.binary_labels(yb, f"batch {i} of loader, y")
            xb, yb = xb.to(device), yb.to(device)
            logits = model(xb)
            loss = loss_fn(logits, yb).item()
            if not math.isfinite(loss):
                _bad_batch(xb, yb, "loader", i)
            total_loss += loss * xb.shape[0]
            correct += _correct(logits, yb)
            n += xb.shape[0]
    if n == 0:
        raise ValueError(
            "The loader yielded no samples, so there is nothing to evaluate: check that the "
            "validation data is not empty."
        )
    return total_loss / n, correct / n


def train_model(model, train_loader, val_loader, epochs=25, lr=0.01, verbose=True, seed=None):
    """Train ``model`` with Adam on ``BCEWithLogitsLoss``; return a :class:`History`.

    Each epoch: ``model.train()``, one pass over ``train_loader`` (sample-weighted mean loss),
    then ``model.eval()`` and the validation loss and accuracy under ``torch.no_grad()``.
    If the training loss becomes NaN or infinite, training stops and ``diverged_at`` says when.
    Batches go to the device of the model's parameters. ``seed`` (optional) is only recorded
    in the History: the seed you initialised the model with.

    Before anything trains, the model and both loaders are checked (teaching errors): one
    logit per sample, features and dtypes that fit the model, targets ``(N, 1)`` holding 0/1,
    no NaN or infinity in the data, and for a BN net no training batch of a single sample.
    If the data turns out bad during training (a loader whose data cannot be read up front:
    NaN, labels other than 0/1, an empty batch), the model is put back as it was and the error
    says where. A learning rate so large that the loss becomes NaN or infinite (e.g. 1e30) is
    not an error: training stops, ``diverged_at`` says when, and with ``verbose`` it is
    printed.
    """
    _check_model(model)
    train_loader = checks.loader(train_loader, "train_loader")
    val_loader = checks.loader(val_loader, "val_loader")
    lr = check_lr(lr)
    epochs = check_epochs(epochs)
    checks.flag(verbose, "verbose")
    if seed is not None:
        seed = checks.seed(seed, minimum=None)
    n_features = _check_loader(model, train_loader, "train_loader")
    _check_loader(model, val_loader, "val_loader", reference=("train_loader", n_features))
    if _bn_trains(model):
        _check_last_batch(train_loader, "train_loader")

    device = next(model.parameters()).device
    loss_fn = nn.BCEWithLogitsLoss()
    # fused=True: the same Adam update, computed in one kernel for all parameters (faster)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    batch_size = getattr(train_loader, "batch_size", None)
    history = History(
        lr=lr,
        epochs=epochs,
        batch_size=batch_size if isinstance(batch_size, int) else None,
        device=str(device),
        seed=seed,
    )
    uses_bn = bool(bn_layers(model))
    before = copy.deepcopy(model.state_dict())
    modes = [(m, m.training) for m in model.modules()]

    try:
        for epoch in range(1, epochs + 1):
            model.train()
            total, n = 0.0, 0
            for i, batch in enumerate(train_loader):
                xb, yb = _pair(batch, "train_loader")
                _check_not_empty(xb, "train_loader", i)
                if uses_bn and xb.shape[0] == 1 and _bn_trains(model):
                    raise ValueError(
                        f"Batch {i} of train_loader holds a single sample, and BatchNorm cannot "
                        f"normalize one sample in training mode. Use a loader whose batches "
                        f"all hold 2 or more samples (drop_last=True drops a short last one)."
                    )
                xb, yb = xb.to(device), yb.to(device)
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                optimizer.step()
                value = loss.item()
                if not math.isfinite(value):
                    _bad_batch(xb, yb, "train_loader", i)
                total += value * xb.shape[0]
                n += xb.shape[0]
            if n == 0:
                raise ValueError("train_loader yielded no samples in this epoch.")
            train_loss = total / n
            val_loss, val_acc = evaluate(model, val_loader, loss_fn, device)
            history.train_loss.append(train_loss)
            history.val_loss.append(val_loss)
            history.val_acc.append(val_acc)

            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                history.diverged_at = epoch
                if verbose:
                    print(f"Epoch {epoch}: loss is {train_loss}: training diverged, stopping.")
                break
            if verbose and (epoch == 1 or epoch % 5 == 0):
                print(
                    f"Epoch {epoch:3d}/{epochs}: train loss {train_loss:.4f}, "
                    f"val loss {val_loss:.4f}, val acc {val_acc:.3f}"
                )
    except Exception:
        # bad data found while training (or any other failure): put the model back as it
        # was, then explain
        model.load_state_dict(before)
        for m, mode in modes:
            m.training = mode
        raise
    return history
