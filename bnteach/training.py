"""The plain PyTorch training loop the notebooks teach, returning a :class:`History`."""

import math
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class History:
    """Per-epoch results of one training run (lists have one entry per finished epoch).

    ``diverged_at`` is the 1-based epoch whose loss became NaN or infinite (training stopped
    there), or ``None`` if the run finished.
    """

    lr: float
    epochs: int
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    diverged_at: int | None = None

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
    """Raise a teaching error unless ``lr`` is a positive finite number."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise TypeError(f"lr must be a number such as 0.01, got {type(lr).__name__} {lr!r}.")
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(
            f"lr must be a positive, finite number (typical values 1e-4 to 1.0), got {lr!r}."
        )


def check_epochs(epochs):
    """Raise a teaching error unless ``epochs`` is an integer >= 1."""
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        raise TypeError(f"epochs must be a whole number such as 25, got {epochs!r}.")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")


def _first_linear(model):
    return next((m for m in model.modules() if isinstance(m, nn.Linear)), None)


def _peek(loader):
    """One ``(x, y)`` batch of ``loader``'s data without drawing from its shuffle generator."""
    if hasattr(loader, "X"):  # TensorLoader
        return loader.X[:2], loader.y[:2]
    if hasattr(loader, "dataset"):  # DataLoader
        x, y = loader.dataset[0]
        return x[None], y[None]
    return next(iter(loader))


def check_batch(model, xb, yb, name):
    """Raise a teaching error if one batch from ``name`` does not fit ``model``."""
    first = _first_linear(model)
    if xb.dim() != 2:
        raise ValueError(
            f"{name} yields inputs of shape {tuple(xb.shape)}; expected (batch, features)."
        )
    if first is not None and xb.shape[1] != first.in_features:
        raise ValueError(
            f"The model expects {first.in_features} input features but {name} gives "
            f"{xb.shape[1]}. Build the model with input_size={xb.shape[1]} "
            f"(e.g. X_train.shape[1])."
        )
    if yb.shape != (xb.shape[0], 1):
        raise ValueError(
            f"{name} yields targets of shape {tuple(yb.shape)} for {xb.shape[0]} samples, but "
            f"BCEWithLogitsLoss needs ({xb.shape[0]}, 1) to match the model's output. "
            f"Reshape with y.reshape(-1, 1)."
        )


def evaluate(model, loader, loss_fn=None, device=None):
    """``(mean loss, accuracy)`` of ``model`` over ``loader`` in eval mode, without gradients.

    The loss is sample-weighted; accuracy counts logits > 0 as class 1.
    """
    loss_fn = loss_fn or nn.BCEWithLogitsLoss()
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            logits = model(xb)
            total_loss += loss_fn(logits, yb).item() * xb.shape[0]
            correct += ((logits > 0).float() == yb).sum().item()
            n += xb.shape[0]
    return total_loss / n, correct / n


def train_model(model, train_loader, val_loader, epochs=25, lr=0.01, verbose=True):
    """Train ``model`` with Adam on ``BCEWithLogitsLoss``; return a :class:`History`.

    Each epoch: ``model.train()``, one pass over ``train_loader`` (sample-weighted mean loss),
    then ``model.eval()`` and the validation loss and accuracy under ``torch.no_grad()``.
    If the training loss becomes NaN or infinite, training stops and ``diverged_at`` says when.
    Batches go to the device of the model's parameters.
    """
    check_lr(lr)
    check_epochs(epochs)
    for loader, name in ((train_loader, "train_loader"), (val_loader, "val_loader")):
        if len(loader) == 0:
            raise ValueError(
                f"{name} yields no batches. Check that the dataset is not empty and, with "
                f"drop_last=True, that it holds at least one full batch."
            )
        check_batch(model, *_peek(loader), name)

    device = next(model.parameters()).device
    loss_fn = nn.BCEWithLogitsLoss()
    # fused=True: the same Adam update, computed in one kernel for all parameters (faster)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    history = History(lr=lr, epochs=epochs)

    for epoch in range(1, epochs + 1):
        model.train()
        total, n = 0.0, 0
        for xb, yb in train_loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * xb.shape[0]
            n += xb.shape[0]
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
    return history
