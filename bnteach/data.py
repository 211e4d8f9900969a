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
    seed = checks.whole_number(seed, "seed", minimum=0, example=42)
    if seed >= 2**32:
        raise ValueError(f"seed must be below 2**32 (scikit-learn's limit), got {seed}.")
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
        checks.finite(X, "X")
        checks.finite(y, "y")
        self.X, self.y = X, y
        # batch_size=None: the whole set in one batch (an empty set gives no batch)
        self.batch_size = max(X.shape[0], 1) if batch_size is None else batch_size
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
    seed = checks.whole_number(seed, "seed", example=0)
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


def load_digits_images(test_size=0.2, seed=42):
    """scikit-learn's 8x8 digits as image tensors ``X_train, X_val, y_train, y_val``.

    ``X_*``: ``(N, 1, 8, 8)`` float32 (one channel), ``y_*``: ``(N,)`` int64 class labels 0-9
    (for ``CrossEntropyLoss``). 1797 images ship with scikit-learn (no download); the split is
    stratified, ``test_size`` for validation with ``random_state=seed`` (defaults: 1437 train /
    360 validation). Standardised with ONE mean and standard deviation over all training pixels
    (fitted on the training split only), so an image stays an image: every pixel is scaled
    alike, and the validation split is scaled with the training split's numbers.
    """
    from sklearn.datasets import load_digits

    if isinstance(test_size, bool) or not isinstance(test_size, float) or not 0 < test_size < 1:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be a whole number, got {seed!r}.")
    digits = load_digits()
    X_train, X_val, y_train, y_val = train_test_split(
        digits.images,
        digits.target,
        test_size=test_size,
        random_state=seed,
        stratify=digits.target,
    )
    mean, std = X_train.mean(), X_train.std()

    def images(a):
        return torch.tensor((a - mean) / std, dtype=torch.float32).unsqueeze(1)

    def labels(a):
        return torch.tensor(a, dtype=torch.long)

    return images(X_train), images(X_val), labels(y_train), labels(y_val)
