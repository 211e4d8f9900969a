"""The starting experiment's data, done right: split first, then fit the scaler on train only.

Shapes: ``X_*`` is ``(N, n_features)`` float32, ``y_*`` is ``(N, 1)`` float32 holding 0.0 / 1.0.
"""

import math
import numbers

import torch
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from bnteach import checks


def load_data(
    n_samples=1000,
    n_features=20,
    noise=0.01,
    seed=42,
    test_size=0.2,
    leak=False,
):
    """The tutorial's dataset as float32 tensors ``X_train, X_val, y_train, y_val``.

    ``make_classification(n_samples, n_features, n_informative=n_features // 2,
    n_redundant=n_features // 4, n_classes=2, flip_y=noise, random_state=seed)``, split
    ``test_size`` for validation with ``random_state=seed``. The defaults reproduce the starting
    tutorial (800 train / 200 validation). ``noise`` is the fraction of samples given a random
    label (``flip_y``); with two classes about half of those keep their class by chance.

    The ``StandardScaler`` is fitted on the training split only. ``leak=True`` reproduces the
    tutorial's mistake (scaler fitted on all samples before the split) so you can measure it.
    """
    n_samples = checks.whole_number(n_samples, "n_samples", minimum=10, example=1000)
    if isinstance(n_features, bool) or not isinstance(n_features, numbers.Integral):
        checks.whole_number(n_features, "n_features", example=20)
    if n_features < 4:
        raise ValueError(
            f"n_features must be an integer >= 4 (some informative, some redundant), "
            f"got {n_features!r}."
        )
    n_features = int(n_features)
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
        raise TypeError(f"noise must be a number such as 0.01, got {checks.describe(noise)}.")
    if not 0.0 <= noise <= 1.0:  # also rejects NaN
        raise ValueError(
            f"noise is the fraction of samples given a random label and must be in [0, 1], "
            f"got {noise!r}."
        )
    seed = checks.seed(seed, maximum="sklearn")
    test_size = checks.fraction(test_size, "test_size", example=0.2)
    checks.flag(leak, "leak")
    n_val = math.ceil(n_samples * test_size)
    if n_samples - n_val < 2:
        raise ValueError(
            f"test_size={test_size!r} of {n_samples} samples leaves {n_samples - n_val} for "
            f"training: use a smaller test_size (0.2 is usual) or more samples."
        )

    X, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_features // 2,
        n_redundant=n_features // 4,
        n_classes=2,
        flip_y=noise,
        random_state=seed,
    )
    if leak:
        X = StandardScaler().fit_transform(X)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=test_size, random_state=seed)
    if not leak:
        scaler = StandardScaler().fit(X_train)
        X_train, X_val = scaler.transform(X_train), scaler.transform(X_val)

    def features(a):
        return torch.tensor(a, dtype=torch.float32)

    def targets(a):
        return torch.tensor(a, dtype=torch.float32).reshape(-1, 1)

    return features(X_train), features(X_val), targets(y_train), targets(y_val)


class TensorLoader:
    """Mini-batches ``(xb, yb)`` of in-memory tensors, like ``DataLoader(TensorDataset(X, y))``.

    With ``shuffle=True`` each pass takes a fresh ``torch.randperm(N, generator=generator)``:
    the same kind of shuffle as ``DataLoader(..., shuffle=True)``, several times faster for small
    tensors because it indexes whole batches instead of collating samples one by one.
    ``batch_size=None`` gives the whole set as one batch.
    """

    def __init__(self, X, y, batch_size=64, shuffle=False, drop_last=False, generator=None):
        checks.tensor(X, "X", floating=False)
        checks.tensor(y, "y", floating=False)
        if X.dim() == 0 or y.dim() == 0:
            raise ValueError(
                f"X and y must have one row per sample, got shapes {tuple(X.shape)} and "
                f"{tuple(y.shape)}."
            )
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}: they must match.")
        if batch_size is not None:
            batch_size = checks.whole_number(batch_size, "batch_size", minimum=1, example=64)
        checks.flag(shuffle, "shuffle")
        checks.flag(drop_last, "drop_last")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator (or None), got "
                f"{checks.describe(generator)}: e.g. torch.Generator().manual_seed(0)."
            )
        if X.shape[0] == 0:
            raise ValueError(
                f"X holds no samples (shape {tuple(X.shape)}): a loader over it would yield no "
                f"batch. Check how X was made (an empty split, or a filter that kept nothing)."
            )
        checks.finite(X, "X")
        checks.finite(y, "y")
        self.X, self.y = X, y
        # batch_size=None: the whole set in one batch
        self.batch_size = X.shape[0] if batch_size is None else batch_size
        self.shuffle, self.drop_last, self.generator = shuffle, drop_last, generator

    def __len__(self):
        n, b = self.X.shape[0], self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def __iter__(self):
        n = self.X.shape[0]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for i in range(len(self)):
            if order is None:
                sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
                yield self.X[sl], self.y[sl]
            else:
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield self.X[idx], self.y[idx]

    def __repr__(self):
        return (
            f"TensorLoader({self.X.shape[0]} samples, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, "
            f"{len(self)} batch{'es' if len(self) != 1 else ''})"
        )


def make_loaders(
    X_train, X_val, y_train, y_val, batch_size=64, val_batch_size=None, seed=0, drop_last=False
):
    """``(train_loader, val_loader)``: shuffled training batches, unshuffled validation.

    The shuffle order comes from its own ``torch.Generator`` seeded with ``seed``, so it does
    not depend on (or disturb) the global seed used to initialise the model.
    ``val_batch_size=None`` evaluates the whole validation set in one batch.
    """
    for X, name in ((X_train, "X_train"), (X_val, "X_val")):
        checks.tensor(X, name, dims=(2, 3, 4), min_rows=1)
    for y, X, name in ((y_train, X_train, "y_train"), (y_val, X_val, "y_val")):
        checks.tensor(y, name, floating=False)
        if y.dim() == 0 or y.shape[0] != X.shape[0]:
            raise ValueError(
                f"{name} has shape {tuple(y.shape)} but X_{name[2:]} has {X.shape[0]} samples: "
                f"give one target per sample. (The order is make_loaders(X_train, X_val, "
                f"y_train, y_val), as load_data returns them.)"
            )
    if X_val.shape[1:] != X_train.shape[1:]:
        raise ValueError(
            f"X_train has samples of shape {tuple(X_train.shape[1:])} but X_val of shape "
            f"{tuple(X_val.shape[1:])}: validation data must have the training data's features "
            f"(columns). Check how X_val was made."
        )
    if y_val.shape[1:] != y_train.shape[1:]:
        raise ValueError(
            f"y_train has shape {tuple(y_train.shape)} but y_val {tuple(y_val.shape)}: give "
            f"both targets the same layout, e.g. (N, 1) with y.reshape(-1, 1)."
        )
    for t, name in ((X_train, "X_train"), (X_val, "X_val"), (y_train, "y_train"), (y_val, "y_val")):
        checks.finite(t, name)
    batch_size = checks.whole_number(batch_size, "batch_size", minimum=1, example=64)
    if val_batch_size is not None:
        val_batch_size = checks.whole_number(
            val_batch_size, "val_batch_size", minimum=1, example=64
        )
    seed = checks.seed(seed, minimum=None)
    checks.flag(drop_last, "drop_last")
    if drop_last and batch_size > X_train.shape[0]:
        raise ValueError(
            f"drop_last=True with batch_size={batch_size} and {X_train.shape[0]} training "
            f"samples drops every sample: use a batch size of at most {X_train.shape[0]}."
        )
    g = torch.Generator().manual_seed(seed)
    train = TensorLoader(
        X_train, y_train, batch_size, shuffle=True, drop_last=drop_last, generator=g
    )
    val = TensorLoader(X_val, y_val, val_batch_size, shuffle=False)
    return train, val


DIGITS_SHAPE = (1, 8, 8)


def load_digits(flat=False, test_size=0.2, seed=42):
    """scikit-learn's 8x8 digits as tensors ``X_train, X_val, y_train, y_val``; no download.

    ``X_*``: ``(N, 1, 8, 8)`` float32 images, or ``(N, 64)`` rows with ``flat=True`` (the same
    numbers, ``X.reshape(-1, 64)``); ``y_*``: ``(N,)`` int64 class labels 0-9 (what
    ``CrossEntropyLoss`` expects). The 1797 images are split stratified by class, ``test_size``
    for validation with ``random_state=seed`` (defaults: 1437 train / 360 validation), and
    standardised with ONE mean and standard deviation over all training pixels (fitted on the
    training split only): every pixel is scaled alike, so an image stays an image and a
    brightness or contrast change stays one after scaling.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    checks.flag(flat, "flat")
    test_size = checks.fraction(test_size, "test_size", example=0.2)
    if not 10 / 1797 <= test_size <= 1 - 10 / 1797:
        raise ValueError(
            f"test_size={test_size!r} leaves fewer than 10 of the 1797 digits on one side of "
            f"the split, too few to hold every class: use a fraction such as 0.2."
        )
    seed = checks.seed(seed, maximum="sklearn")
    digits = sklearn_digits()
    X_train, X_val, y_train, y_val = train_test_split(
        digits.images, digits.target, test_size=test_size, random_state=seed,
        stratify=digits.target,
    )  # fmt: skip
    mean, std = X_train.mean(), X_train.std()
    shape = (-1, 64) if flat else (-1, *DIGITS_SHAPE)

    def images(a):
        return torch.tensor((a - mean) / std, dtype=torch.float32).reshape(shape)

    def labels(a):
        return torch.tensor(a, dtype=torch.long)

    return images(X_train), images(X_val), labels(y_train), labels(y_val)


# ----------------------------------------------------------------------------- shifted data

SHIFTS = {
    "offset": "every pixel brighter by 0.75 * severity (the training pixels' std is 1)",
    "contrast": "pixels scaled by 2 ** -severity around 0 (x0.5 at severity 1)",
    "blur": "Gaussian blur of standard deviation severity pixels",
    "rotation": "rotated by 20 * severity degrees about the centre",
    "noise": "Gaussian noise of standard deviation 0.5 * severity added to every pixel",
}
MAX_SEVERITY = 5.0
_NEEDS_IMAGES = ("blur", "rotation")


def _check_shift(X, kind, severity, seed):
    if not isinstance(kind, str):
        raise TypeError(
            f"kind must be a string, one of {list(SHIFTS)}, got {checks.describe(kind)}."
        )
    if kind not in SHIFTS:
        raise ValueError(f"kind must be one of {list(SHIFTS)}, got {kind!r}.")
    checks.fraction(severity, "severity", 0.0, MAX_SEVERITY, closed=True, example=1.0)
    checks.tensor(X, "X", floating=True, min_rows=1)
    if X.dim() not in (2, 4) or X.numel() == 0 or (X.dim() == 4 and X.shape[1] != 1):
        raise ValueError(
            f"X must be digits as load_digits() gives them: images (N, 1, H, W) or flat rows "
            f"(N, features), with no empty dimension; got shape {tuple(X.shape)}."
        )
    checks.finite(X, "X")
    if kind in _NEEDS_IMAGES and X.dim() != 4:
        raise ValueError(
            f"kind={kind!r} moves pixels, so it needs images (N, 1, H, W) such as "
            f"load_digits() gives, got shape {tuple(X.shape)}. For flat rows (N, 64) pass "
            f"X.reshape(-1, 1, 8, 8) and flatten the result again."
        )
    if kind == "noise" and seed is None:
        raise ValueError("kind='noise' draws random numbers: give a seed, e.g. seed=0.")
    return None if seed is None else checks.seed(seed)


def shifted(X, kind, severity=1.0, seed=None):
    """A shifted copy of the digits ``X``: the same shape, dtype and order (labels unchanged).

    X: ``(N, 1, 8, 8)`` images or ``(N, 64)`` rows of :func:`load_digits`. kind: one of
    :data:`SHIFTS` (blur and rotation need the image form). severity: 0 (the identity) to
    ``MAX_SEVERITY``. seed: for ``"noise"`` (required; the other kinds are deterministic).
    Pure: ``X`` is not changed. Blur and rotation use ``scipy.ndimage`` (edges: the nearest
    pixel, so the background stays background).
    """
    seed = _check_shift(X, kind, severity, seed)
    if severity == 0:
        return X.clone()
    if kind == "offset":
        return X + 0.75 * severity
    if kind == "contrast":
        return X * 2.0**-severity
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(X.shape, generator=g, dtype=X.dtype).to(X.device)
        return X + 0.5 * severity * noise
    from scipy import ndimage

    a = X.detach().cpu().double().numpy()
    if kind == "blur":
        out = ndimage.gaussian_filter(a, sigma=(0, 0, severity, severity), mode="nearest")
    else:
        out = ndimage.rotate(a, 20.0 * severity, axes=(3, 2), reshape=False, order=1,
                             mode="nearest")  # fmt: skip
    return torch.from_numpy(out).to(dtype=X.dtype, device=X.device)
