"""Bad inputs to bnteach.data: a table of (case, call, error type, phrase in the message)."""

import math

import numpy as np
import pytest
import torch
from conftest import assert_teaching_error, table

from bnteach import checks
from bnteach.data import TensorLoader, load_data, load_digits, make_loaders, shifted

X, Y = torch.randn(10, 3), (torch.rand(10, 1) > 0.5).float()


def nan_at(t, index, value=math.nan):
    t = t.clone()
    t[index] = value
    return t


def ml(**changes):
    """make_loaders with one argument changed."""
    args = {"X_train": X, "X_val": X[:4], "y_train": Y, "y_val": Y[:4], **changes}
    return lambda: make_loaders(**args)


CASES = [
    # load_data
    ("n_samples 5", lambda: load_data(n_samples=5), ValueError, "n_samples must be at least 10"),
    ("n_samples 100.0", lambda: load_data(n_samples=100.0), TypeError, "whole number"),
    ("n_samples True", lambda: load_data(n_samples=True), TypeError, "whole number"),
    ("n_samples '100'", lambda: load_data(n_samples="100"), TypeError, "whole number"),
    (
        "n_features 2",
        lambda: load_data(n_features=2),
        ValueError,
        "n_features must be an integer >= 4",
    ),
    ("n_features 8.5", lambda: load_data(n_features=8.5), TypeError, "whole number"),
    ("n_features None", lambda: load_data(n_features=None), TypeError, "whole number"),
    ("noise 1.5", lambda: load_data(noise=1.5), ValueError, "random label"),
    ("noise -0.1", lambda: load_data(noise=-0.1), ValueError, "random label"),
    ("noise nan", lambda: load_data(noise=math.nan), ValueError, "random label"),
    ("noise '0.1'", lambda: load_data(noise="0.1"), TypeError, "noise must be a number"),
    ("seed -1", lambda: load_data(seed=-1), ValueError, "seed must be at least 0"),
    ("seed 2**40", lambda: load_data(seed=2**40), ValueError, "2**32"),
    ("seed 1.5", lambda: load_data(seed=1.5), TypeError, "seed must be a whole number"),
    ("seed None", lambda: load_data(seed=None), TypeError, "seed must be a whole number"),
    ("test_size 1.5", lambda: load_data(test_size=1.5), ValueError, "test_size"),
    ("test_size 0", lambda: load_data(test_size=0), ValueError, "test_size"),
    ("test_size nan", lambda: load_data(test_size=math.nan), ValueError, "test_size"),
    ("test_size '0.2'", lambda: load_data(test_size="0.2"), TypeError, "test_size"),
    (
        "test_size leaves one",
        lambda: load_data(n_samples=10, test_size=0.95),
        ValueError,
        "leaves 0 for training",
    ),
    ("leak 'yes'", lambda: load_data(leak="yes"), TypeError, "True or False"),
    # TensorLoader
    (
        "numpy X",
        lambda: TensorLoader(X.numpy(), Y),
        TypeError,
        "torch.tensor(value, dtype=torch.float32)",
    ),
    ("list y", lambda: TensorLoader(X, [0, 1]), TypeError, "y must be a torch tensor"),
    (
        "lengths differ",
        lambda: TensorLoader(torch.zeros(5, 2), torch.zeros(4, 1)),
        ValueError,
        "must match",
    ),
    (
        "scalar X",
        lambda: TensorLoader(torch.tensor(1.0), torch.tensor(1.0)),
        ValueError,
        "one row per sample",
    ),
    ("batch_size 0", lambda: TensorLoader(X, Y, 0), ValueError, "batch_size must be at least 1"),
    (
        "batch_size 2.0",
        lambda: TensorLoader(X, Y, 2.0),
        TypeError,
        "batch_size must be a whole number",
    ),
    (
        "batch_size True",
        lambda: TensorLoader(X, Y, True),
        TypeError,
        "batch_size must be a whole number",
    ),
    (
        "shuffle 'yes'",
        lambda: TensorLoader(X, Y, shuffle="yes"),
        TypeError,
        "shuffle must be True or False",
    ),
    (
        "drop_last 1",
        lambda: TensorLoader(X, Y, drop_last=1),
        TypeError,
        "drop_last must be True or False",
    ),
    (
        "generator 0",
        lambda: TensorLoader(X, Y, generator=0),
        TypeError,
        "torch.Generator().manual_seed(0)",
    ),
    (
        "NaN in X",
        lambda: TensorLoader(nan_at(X, (2, 1)), Y),
        ValueError,
        "Your data contains NaN at X[2, 1]",
    ),
    (
        "inf in y",
        lambda: TensorLoader(X, nan_at(Y, (3, 0), math.inf)),
        ValueError,
        "infinite value at y[3, 0]",
    ),
    # make_loaders
    ("X_train numpy", ml(X_train=X.numpy()), TypeError, "X_train must be a torch tensor"),
    ("X_val int", ml(X_val=X[:4].long()), TypeError, "X_val must hold floating-point"),
    ("X_train 1-D", ml(X_train=X[:, 0]), ValueError, "X_train must have shape"),
    (
        "X_train empty",
        ml(X_train=X[:0], y_train=Y[:0]),
        ValueError,
        "X_train must have at least 1 sample",
    ),
    ("y_train numpy", ml(y_train=Y.numpy()), TypeError, "y_train must be a torch tensor"),
    (
        "y_train shorter",
        ml(y_train=Y[:9]),
        ValueError,
        "y_train has shape (9, 1) but X_train has 10 samples",
    ),
    (
        "y_val and y_train swapped",
        ml(y_train=Y[:4], y_val=Y),
        ValueError,
        "make_loaders(X_train, X_val, y_train, y_val)",
    ),
    ("X_val 19 features", ml(X_val=X[:4, :2]), ValueError, "X_val of shape (2,)"),
    ("y layouts differ", ml(y_val=Y[:4, 0]), ValueError, "y.reshape(-1, 1)"),
    (
        "NaN in X_train",
        ml(X_train=nan_at(X, (7, 2))),
        ValueError,
        "Your data contains NaN at X_train[7, 2]",
    ),
    (
        "NaN in y_val",
        ml(y_val=nan_at(Y[:4], (1, 0))),
        ValueError,
        "Your data contains NaN at y_val[1, 0]",
    ),
    (
        "batch_size 0",
        lambda: make_loaders(X, X, Y, Y, batch_size=0),
        ValueError,
        "batch_size must be at least 1",
    ),
    (
        "batch_size None",
        lambda: make_loaders(X, X, Y, Y, batch_size=None),
        TypeError,
        "batch_size must be a whole number",
    ),
    (
        "val_batch_size 0.5",
        lambda: make_loaders(X, X, Y, Y, val_batch_size=0.5),
        TypeError,
        "val_batch_size",
    ),
    (
        "seed '0'",
        lambda: make_loaders(X, X, Y, Y, seed="0"),
        TypeError,
        "seed must be a whole number",
    ),
    (
        "drop_last 'no'",
        lambda: make_loaders(X, X, Y, Y, drop_last="no"),
        TypeError,
        "drop_last must be True or False",
    ),
    (
        "drop_last drops all",
        lambda: make_loaders(X, X, Y, Y, batch_size=64, drop_last=True),
        ValueError,
        "drops every sample",
    ),
]


@table(CASES)
def test_bad_input_gets_a_teaching_error(call, error, phrase):
    assert_teaching_error(call, error, phrase)


def test_nan_is_reported_as_data():
    with pytest.raises(checks.DataError):
        make_loaders(nan_at(X, (0, 0)), X, Y, Y)


def test_valid_inputs_still_work():
    assert len(TensorLoader(X, Y, None)) == 1
    # an empty loader is refused at once: it would yield no batch at all
    with pytest.raises(ValueError, match="X holds no samples"):
        TensorLoader(torch.zeros(0, 2), torch.zeros(0, 1))
    assert len(TensorLoader(X, Y[:, 0].long(), np.int64(4))) == 3  # class labels, numpy size
    assert len(TensorLoader(torch.zeros(6, 1, 8, 8), torch.zeros(6, dtype=torch.long), 2)) == 3
    train, val = make_loaders(X, X[:4], Y, Y[:4], batch_size=4, drop_last=True)
    assert len(train) == 2 and len(val) == 1
    assert load_data(n_samples=np.int64(50), seed=np.int32(1))[0].shape == (40, 20)
    noisy = shifted(DIGITS, "noise", seed=np.int64(3))  # a NumPy seed is a seed
    assert torch.equal(noisy, shifted(DIGITS, "noise", seed=3))


DIGITS = load_digits()[1][:8]
SHIFT_CASES = [
    ("digits flat 'yes'", lambda: load_digits(flat="yes"), TypeError, "flat must be True or False"),
    ("digits seed -1", lambda: load_digits(seed=-1), ValueError, "seed must be at least 0"),
    ("digits seed 0.5", lambda: load_digits(seed=0.5), TypeError, "whole number"),
    ("digits test_size 2", lambda: load_digits(test_size=2), ValueError, "test_size"),
    ("digits test_size '0.2'", lambda: load_digits(test_size="0.2"), TypeError, "test_size"),
    ("digits test_size 0.001", lambda: load_digits(test_size=0.001), ValueError, "fewer than 10"),
    ("shift kind unknown", lambda: shifted(DIGITS, "fog"), ValueError, "'offset', 'contrast'"),
    ("shift kind None", lambda: shifted(DIGITS, None), TypeError, "kind must be a string"),
    ("shift 1-D X", lambda: shifted(DIGITS.flatten(), "offset"), ValueError, "(N, 1, H, W)"),
    ("shift 5-D X", lambda: shifted(DIGITS[None], "noise", seed=0), ValueError, "load_digits"),
    ("shift empty rows", lambda: shifted(DIGITS[:, :, :0], "blur"), ValueError, "no empty"),
    ("noise seed 2**64", lambda: shifted(DIGITS, "noise", seed=2**64), ValueError, "2**64 - 1"),
    ("severity nan", lambda: shifted(DIGITS, "blur", math.nan), ValueError, "severity"),
    ("severity -1", lambda: shifted(DIGITS, "offset", -1.0), ValueError, "severity"),
    ("severity 9", lambda: shifted(DIGITS, "offset", 9.0), ValueError, "severity"),
    ("severity '1'", lambda: shifted(DIGITS, "offset", "1"), TypeError, "severity"),
    (
        "rotation of flat rows",
        lambda: shifted(DIGITS.reshape(-1, 64), "rotation"),
        ValueError,
        "needs images (N, 1, H, W)",
    ),
    ("blur of flat rows", lambda: shifted(DIGITS.reshape(-1, 64), "blur"), ValueError, "reshape"),
    ("noise without a seed", lambda: shifted(DIGITS, "noise"), ValueError, "give a seed"),
    ("noise seed -3", lambda: shifted(DIGITS, "noise", seed=-3), ValueError, "seed"),
    ("shift a list", lambda: shifted([[1.0]], "offset"), TypeError, "tensor"),
    ("shift empty", lambda: shifted(DIGITS[:0], "offset"), ValueError, "X"),
    (
        "shift NaN pixels",
        lambda: shifted(with_nan(DIGITS), "offset"),
        ValueError,
        "NaN",
    ),
]


def with_nan(X):
    X = X.clone()
    X[1, 0, 2, 2] = math.nan
    return X


@table(SHIFT_CASES)
def test_digits_and_shifts_get_teaching_errors(call, error, phrase):
    assert_teaching_error(call, error, phrase)
