"""Input checks shared by bnteach's public functions.

Each check either returns the (normalized) value or raises a teaching error: what is wrong,
with the value it got, and what to do. ``TypeError`` for a value of the wrong kind (a string
where a number belongs, a NumPy array where a tensor belongs), ``ValueError`` for a value of
the right kind that is wrong (a negative learning rate, a NaN in the data, labels of -1/+1).

The errors say the truth: a NaN in the data is reported as "your data contains NaN at
X_train[12, 3]", never as a training run that diverged.
"""

import math
import numbers

import torch

__all__ = [
    "DataError",
    "whole_number",
    "positive_number",
    "finite_number",
    "fraction",
    "momentum",
    "flag",
    "tensor",
    "finite",
    "binary_labels",
    "loader",
    "MAKE_LOADERS",
    "describe",
    "device",
    "position",
]


class DataError(ValueError):
    """Bad values in the data itself (NaN, infinity, labels that are not 0/1): a ``ValueError``
    that training functions tell apart from a run that diverged."""


def describe(value):
    """A short description of ``value`` for an error message: its type and a bounded repr."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    kind = type(value).__name__
    if type(value).__module__ == "numpy" and hasattr(value, "shape"):
        return f"a NumPy {kind} of shape {tuple(value.shape)}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"


def _as_float(value, name, must):
    """float(value); an integer too large for a float gets a ValueError saying what `must` be."""
    try:
        return float(value)
    except OverflowError:
        digits = int(abs(int(value)).bit_length() * math.log10(2)) + 1
        raise ValueError(
            f"{name} must be {must}, got an integer of about {digits} digits, too large for a "
            f"float."
        ) from None


def whole_number(value, name, minimum=None, example=None):
    """``value`` as an ``int``: a whole number (not a bool, not a float) ``>= minimum``."""
    example = example if example is not None else (minimum if minimum is not None else 1)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        extra = ""
        if isinstance(value, float) and value.is_integer():
            extra = f" Write {int(value)} without the decimal point."
        raise TypeError(
            f"{name} must be a whole number such as {example}, got {describe(value)}.{extra}"
        )
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return value


SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts
SEED_LIMITS = {
    None: (SEED_RANGE[1], "at most 2**64 - 1 (the largest seed torch.manual_seed takes)"),
    "sklearn": (2**32 - 1, "below 2**32 (scikit-learn's limit)"),
}


def seed(value, name="seed", minimum=0, maximum=None):
    """``value`` as an ``int`` that ``torch.manual_seed`` takes: a whole number (a NumPy
    integer too) ``>= minimum`` (None: torch's lowest) and at most 2**64 - 1, or below
    2**32 with ``maximum="sklearn"`` (scikit-learn's limit)."""
    low = SEED_RANGE[0] if minimum is None else max(minimum, SEED_RANGE[0])
    value = whole_number(value, name, minimum=low, example=0)
    high, limit = SEED_LIMITS[maximum]
    if value > high:
        raise ValueError(f"{name} must be {limit}, got {value}. Any smaller one works, e.g. 0.")
    return value


def positive_number(value, name, example=0.01, allow_zero=False):
    """``value`` as a ``float``: a finite real number ``> 0`` (``>= 0`` with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number such as {example}, got {describe(value)}.")
    what = "a finite number >= 0" if allow_zero else "a positive, finite number"
    value = _as_float(value, name, what)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {what} (such as {example}), got {value!r}.")
    return value


def finite_number(value, name, example=1.0):
    """``value`` as a ``float``: a finite real number of either sign."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number such as {example}, got {describe(value)}.")
    value = _as_float(value, name, "a finite number")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number (such as {example}), got {value!r}.")
    return value


def fraction(value, name, low=0.0, high=1.0, closed=False, example=0.2):
    """``value`` as a ``float`` in ``(low, high)`` (``[low, high]`` with ``closed=True``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number such as {example}, got {describe(value)}.")
    value = _as_float(value, name, f"a fraction between {low:g} and {high:g}")
    inside = low <= value <= high if closed else low < value < high
    if not inside:  # NaN is never inside
        interval = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"
        raise ValueError(f"{name} must be a fraction in {interval}, got {value!r}.")
    return value


def momentum(value, name="momentum", allow_none=True):
    """``value`` as a ``float`` in [0, 1], PyTorch's weight of the NEW batch statistic in a
    running average; ``None`` (a cumulative average, as ``nn.BatchNorm1d`` allows) is
    returned as is where ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        none = " or None" if allow_none else ""
        raise TypeError(f"{name} must be a number in [0, 1]{none}, got {describe(value)}.")
    also = " (or None for a cumulative average)" if allow_none else ""
    value = _as_float(value, name, "in [0, 1]")
    if not 0 <= value <= 1:  # NaN is never inside
        raise ValueError(
            f"{name} must be in [0, 1]{also}, got {value!r}. In PyTorch momentum is the weight "
            f"of the NEW batch statistic (default 0.1): running = (1 - momentum) * running + "
            f"momentum * batch. Keras and CS231n use the opposite convention (the fraction "
            f"kept, e.g. 0.9 or 0.99): if you meant 'keep 0.9 of the old value', pass "
            f"momentum=0.1."
        )
    return value


def flag(value, name):
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {describe(value)}.")
    return value


def tensor(value, name, dims=None, floating=True, min_rows=None):
    """``value`` if it is a ``torch.Tensor`` with ``dims`` dimensions (an int or a tuple of the
    allowed ones), a floating dtype (``floating=True``) and at least ``min_rows`` rows."""
    if not isinstance(value, torch.Tensor):
        hint = ""
        if type(value).__module__.startswith(("numpy", "pandas")):
            hint = " Convert it with torch.tensor(value, dtype=torch.float32)."
        elif isinstance(value, (list, tuple)):
            hint = " Convert it with torch.tensor(...)."
        raise TypeError(f"{name} must be a torch tensor, got {describe(value)}.{hint}")
    if dims is not None:
        allowed = (dims,) if isinstance(dims, int) else tuple(dims)
        if value.dim() not in allowed:
            shapes = {0: "()", 1: "(N,)", 2: "(N, features)", 3: "(N, C, L)", 4: "(N, C, H, W)"}
            wanted = " or ".join(shapes.get(d, f"{d} dimensions") for d in allowed)
            raise ValueError(
                f"{name} must have shape {wanted}, got shape {tuple(value.shape)} "
                f"({value.dim()} dimension{'s' if value.dim() != 1 else ''})."
            )
    if floating and not value.dtype.is_floating_point:
        raise TypeError(
            f"{name} must hold floating-point numbers (float32), got dtype {value.dtype}. "
            f"Convert it with {name + '.float()' if name.isidentifier() else '.float()'}."
        )
    if min_rows is not None and value.dim() > 0 and value.shape[0] < min_rows:
        raise ValueError(
            f"{name} must have at least {min_rows} sample{'s' if min_rows != 1 else ''} "
            f"(rows), got shape {tuple(value.shape)}."
        )
    return value


def position(mask):
    """Index of the first True of ``mask`` as a string "[12, 3]", and how many are True."""
    positions = mask.nonzero()
    first = ", ".join(str(i) for i in positions[0].tolist())
    return f"[{first}]", positions.shape[0]


def finite(value, name, hint=None):
    """``value`` if the tensor holds no NaN or infinity; else a ``ValueError`` that says where:
    "your data contains NaN at X_train[12, 3]"."""
    tensor(value, name, floating=False)
    if not value.dtype.is_floating_point and not value.dtype.is_complex:
        return value  # integers and bools cannot be NaN
    bad = ~torch.isfinite(value)
    if not bool(bad.any()):
        return value
    nan = torch.isnan(value)
    kind, mask = ("NaN", nan) if bool(nan.any()) else ("an infinite value", bad)
    where, count = position(mask)
    total = int(bad.sum())
    more = f" ({total} non-finite values in all)" if total > 1 else ""
    hint = hint or (
        "Find where it comes from (a missing value, a division by zero, a log of 0) and remove "
        "or fill those samples before training: a model trained on it only reports NaN losses."
    )
    raise DataError(f"Your data contains {kind} at {name}{where}{more}. {hint}")


def binary_labels(y, name):
    """``y`` if every value is 0 or 1 (the targets of ``BCEWithLogitsLoss`` and of accuracy
    with threshold 0); else a ``ValueError`` that names the values found and how to map them."""
    finite(y, name)
    values = torch.unique(y.detach())
    if bool(((values == 0) | (values == 1)).all()):
        return y
    shown = values[:6].tolist()
    shown = ", ".join(f"{v:g}" for v in shown) + (", ..." if len(values) > 6 else "")
    if set(values.tolist()) <= {-1.0, 1.0}:
        advice = "Map -1/+1 labels to 0/1 with (y + 1) / 2."
    elif len(values) == 2:
        lo, hi = values.tolist()
        advice = f"With two classes, map them to 0 and 1, e.g. (y == {hi:g}).float()."
    else:
        advice = (
            "BCEWithLogitsLoss is for two classes: for more classes use nn.CrossEntropyLoss "
            "with one output per class."
        )
    raise DataError(
        f"{name} holds the values {{{shown}}}, but the binary cross-entropy (BCEWithLogitsLoss) "
        f"and the accuracy need labels 0 and 1. {advice}"
    )


MAKE_LOADERS = (
    "Build the loaders first: train_loader, val_loader = make_loaders(X_train, X_val, y_train, "
    "y_val)."
)


def loader(value, name, advice=MAKE_LOADERS):
    """``value`` if it can be iterated for batches (a ``DataLoader``, a ``TensorLoader``, a list
    of ``(x, y)``); a tensor, an array or a number gets a ``TypeError`` that says to build one
    (``advice``: the sentence that says how)."""
    if isinstance(value, torch.Tensor) or type(value).__module__.startswith("numpy"):
        raise TypeError(
            f"{name} is {describe(value)}, but it must be a loader that yields batches (x, y). "
            f"{advice}"
        )
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise TypeError(
            f"{name} must be a loader that yields batches (x, y), got {describe(value)}. {advice}"
        )
    return value


def device(value, name="device"):
    """``value`` as a ``torch.device`` that exists on this machine (``None`` is the CPU): a
    string such as ``"cpu"`` or ``"cuda"``, or a ``torch.device``."""
    if value is None:
        return torch.device("cpu")
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = f"cuda:{int(value)}"  # as torch reads an int: a GPU index
    if not isinstance(value, (str, torch.device)):
        raise TypeError(
            f"{name} must be a device such as 'cpu', 'cuda' or 'cuda:0', got {describe(value)}."
        )
    try:
        dev = torch.device(value)
    except RuntimeError:
        raise ValueError(
            f"{name}={value!r} is not a device torch knows: use 'cpu', or 'cuda' for a GPU."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name}={value!r} asks for a GPU, but CUDA is not available on this machine: "
                f"use device='cpu' (or leave device out)."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"{name}={value!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                f"numbered from 0."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={value!r}: MPS is not available here; use device='cpu'.")
    return dev
