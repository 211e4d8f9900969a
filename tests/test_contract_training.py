"""Bad inputs to bnteach.training (and the shared bnteach.checks): each gets a teaching error of
a sensible type, raised before anything trains, with a phrase that names the problem. A table:
(case id, a function that builds the call, the error type, a phrase the message must contain).
"""

import math

import numpy as np
import pytest
import torch
from conftest import assert_teaching_error, table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bnteach import checks
from bnteach.batchnorm import freeze
from bnteach.data import TensorLoader, load_data, make_loaders
from bnteach.models import MLP, SimpleMLP
from bnteach.training import History, check_batch, check_epochs, check_lr, evaluate, train_model


@pytest.fixture(scope="module")
def small():
    return load_data(n_samples=200)  # 160 train / 40 validation, 20 features


def plain(n_in=20, out=1):
    torch.manual_seed(0)
    return MLP(n_in, (8,), out)


def bn(n_in=20):
    torch.manual_seed(0)
    return MLP(n_in, (8,), norm="batch")


def with_value(t, index, value):
    t = t.clone()
    t[index] = value
    return t


def loaders(d, **kw):
    return make_loaders(*d, **kw)


def tensor_loaders(X_train, X_val, y_train, y_val, batch_size=64):
    """Loaders built by hand (make_loaders would already refuse bad data)."""
    train = TensorLoader.__new__(TensorLoader)
    train.X, train.y, train.batch_size = X_train, y_train, batch_size
    train.shuffle, train.drop_last, train.generator = False, False, None
    val = TensorLoader.__new__(TensorLoader)
    val.X, val.y, val.batch_size = X_val, y_val, X_val.shape[0]
    val.shuffle, val.drop_last, val.generator = False, False, None
    return train, val


def fit(model, train, val, **kw):
    return lambda: train_model(model, train, val, epochs=1, verbose=False, **kw)


# Each entry: id, f(small) -> a zero-argument call, error type, phrase in the message.
CASES = [
    # --- data that is bad, reported as data (not as divergence)
    (
        "nan in X_train",
        lambda d: fit(plain(), *tensor_loaders(with_value(d[0], (12, 3), math.nan), *d[1:])),
        ValueError,
        "Your data contains NaN at train_loader.X[12, 3]",
    ),
    (
        "inf in X_val",
        lambda d: fit(
            plain(), *tensor_loaders(d[0], with_value(d[1], (5, 0), math.inf), d[2], d[3])
        ),
        ValueError,
        "infinite value at val_loader.X[5, 0]",
    ),
    (
        "nan in y_train",
        lambda d: fit(
            plain(), *tensor_loaders(d[0], d[1], with_value(d[2], (7, 0), math.nan), d[3])
        ),
        ValueError,
        "Your data contains NaN at train_loader.y[7, 0]",
    ),
    (
        "nan in a list of batches",
        lambda d: fit(plain(), [(with_value(d[0], (1, 2), math.nan), d[2])], [(d[1], d[3])]),
        ValueError,
        "NaN at batch 0 of train_loader, x[1, 2]",
    ),
    (
        "nan in a DataLoader",
        lambda d: fit(
            plain(),
            DataLoader(TensorDataset(with_value(d[0], (3, 4), math.nan), d[2]), batch_size=32),
            DataLoader(TensorDataset(d[1], d[3]), batch_size=40),
        ),
        ValueError,
        "NaN at train_loader.dataset.tensors[0][3, 4]",
    ),
    (
        "labels -1/+1",
        lambda d: fit(plain(), *tensor_loaders(d[0], d[1], d[2] * 2 - 1, d[3])),
        ValueError,
        "(y + 1) / 2",
    ),
    (
        "labels 0/2",
        lambda d: fit(plain(), *tensor_loaders(d[0], d[1], d[2] * 2, d[3])),
        ValueError,
        "labels 0 and 1",
    ),
    (
        "labels 0/2 in validation",
        lambda d: fit(plain(), *tensor_loaders(d[0], d[1], d[2], d[3] * 2)),
        ValueError,
        "val_loader.y holds the values {0, 2}",
    ),
    (
        "three classes",
        lambda d: fit(plain(), *tensor_loaders(d[0], d[1], d[2] + (d[0][:, :1] > 1), d[3])),
        ValueError,
        "CrossEntropyLoss",
    ),
    # --- loaders that are not loaders
    (
        "tensors instead of loaders",
        lambda d: lambda: train_model(plain(), d[0], d[2], epochs=1, verbose=False),
        TypeError,
        "train_loader, val_loader = make_loaders(X_train, X_val, y_train, y_val)",
    ),
    (
        "numpy arrays instead of loaders",
        lambda d: fit(plain(), d[0].numpy(), d[1].numpy()),
        TypeError,
        "make_loaders",
    ),
    (
        "a (X, y) tuple instead of a loader",
        lambda d: fit(plain(), (d[0], d[2]), (d[1], d[3])),
        TypeError,
        "Wrap it in a list, [(X, y)]",
    ),
    (
        "a generator instead of a loader",
        lambda d: fit(plain(), ((x, y) for x, y in [(d[0], d[2])]), [(d[1], d[3])]),
        TypeError,
        "used up after one epoch",
    ),
    ("a number instead of a loader", lambda d: fit(plain(), 64, 64), TypeError, "loader"),
    (
        "an empty validation loader",
        lambda d: fit(plain(), loaders(d)[0], []),
        ValueError,
        "val_loader yields no batches",
    ),
    (
        "an empty training loader",
        lambda d: fit(plain(), [], loaders(d)[1]),
        ValueError,
        "train_loader yields no batches",
    ),
    # --- shapes and dtypes that do not fit the model
    (
        "19-feature X_val",
        lambda d: fit(plain(), *tensor_loaders(d[0], d[1][:, :19], d[2], d[3])),
        ValueError,
        "val_loader gives 19 input features, but the model and train_loader have 20",
    ),
    (
        "model built for 10 features",
        lambda d: fit(plain(10), *loaders(d)),
        ValueError,
        "Build the model with input_size=20",
    ),
    (
        "y of shape (N,)",
        lambda d: fit(plain(), *tensor_loaders(d[0], d[1], d[2].flatten(), d[3].flatten())),
        ValueError,
        "of shape (160,), one number per sample",
    ),
    (
        "y one-hot (N, 2)",
        lambda d: fit(plain(), *tensor_loaders(d[0], d[1], torch.cat([d[2], 1 - d[2]], 1), d[3])),
        ValueError,
        "needs shape (batch, 1)",
    ),
    (
        "int64 targets",
        lambda d: fit(plain(), *tensor_loaders(d[0], d[1], d[2].long(), d[3].long())),
        TypeError,
        "y.float()",
    ),
    (
        "float64 inputs, float32 model",
        lambda d: fit(plain(), *tensor_loaders(d[0].double(), d[1].double(), d[2], d[3])),
        TypeError,
        "dtype torch.float64 but the model's parameters are torch.float32",
    ),
    (
        "int inputs",
        lambda d: fit(plain(), *tensor_loaders(d[0].long(), d[1].long(), d[2], d[3])),
        TypeError,
        "X.float()",
    ),
    (
        "3-D inputs",
        lambda d: fit(plain(), [(d[0][:, None], d[2])], [(d[1][:, None], d[3])]),
        ValueError,
        "expected (batch, features)",
    ),
    (
        "more targets than inputs in a batch",
        lambda d: fit(plain(), [(d[0][:10], d[2][:11])], [(d[1], d[3])]),
        ValueError,
        "10 inputs but 11 targets",
    ),
    # --- the model
    (
        "output_size=2 with BCE",
        lambda d: fit(plain(out=2), *loaders(d)),
        ValueError,
        "output_size=1",
    ),
    (
        "not a model",
        lambda d: lambda: train_model("MLP", *loaders(d), epochs=1),
        TypeError,
        "nn.Module",
    ),
    (
        "a model class, not an instance",
        lambda d: lambda: train_model(SimpleMLP, *loaders(d), epochs=1),
        TypeError,
        "nn.Module",
    ),
    (
        "a model without parameters",
        lambda d: lambda: train_model(nn.ReLU(), *loaders(d), epochs=1),
        ValueError,
        "no parameters",
    ),
    (
        "BN, last batch of one (161 = 2 * 80 + 1)",
        lambda d: fit(
            bn(),
            *make_loaders(
                torch.cat([d[0], d[0][:1]]), d[1], torch.cat([d[2], d[2][:1]]), d[3], batch_size=80
            ),
        ),
        ValueError,
        "drop_last=True",
    ),
    (
        "BN, last batch of one suggests a batch size",
        lambda d: fit(bn(), *make_loaders(*d, batch_size=53)),  # 160 = 3 * 53 + 1
        ValueError,
        "batch_size=52",
    ),
    (
        "BN, batch_size=1",
        lambda d: fit(bn(), *make_loaders(*d, batch_size=1)),
        ValueError,
        "batch_size=1",
    ),
    (
        "BN, DataLoader whose last batch holds one",
        lambda d: fit(
            bn(),
            DataLoader(TensorDataset(d[0], d[2]), batch_size=53),
            DataLoader(TensorDataset(d[1], d[3]), batch_size=40),
        ),
        ValueError,
        "holds a single sample",
    ),
    (
        "BN, a list with a batch of one",
        lambda d: fit(bn(), [(d[0][:10], d[2][:10]), (d[0][10:11], d[2][10:11])], [(d[1], d[3])]),
        ValueError,
        "single sample",
    ),
    # --- the numbers
    ("lr 0", lambda d: fit(plain(), *loaders(d), lr=0), ValueError, "positive, finite"),
    ("lr -0.1", lambda d: fit(plain(), *loaders(d), lr=-0.1), ValueError, "positive, finite"),
    ("lr nan", lambda d: fit(plain(), *loaders(d), lr=math.nan), ValueError, "positive, finite"),
    ("lr inf", lambda d: fit(plain(), *loaders(d), lr=math.inf), ValueError, "positive, finite"),
    ("lr '0.1'", lambda d: fit(plain(), *loaders(d), lr="0.1"), TypeError, "must be a number"),
    ("lr True", lambda d: fit(plain(), *loaders(d), lr=True), TypeError, "must be a number"),
    ("lr None", lambda d: fit(plain(), *loaders(d), lr=None), TypeError, "must be a number"),
    (
        "lr tensor",
        lambda d: fit(plain(), *loaders(d), lr=torch.tensor([0.1, 0.2])),
        TypeError,
        "must be a number",
    ),
    (
        "epochs 0",
        lambda d: lambda: train_model(plain(), *loaders(d), epochs=0),
        ValueError,
        "epochs must be at least 1",
    ),
    (
        "epochs 2.5",
        lambda d: lambda: train_model(plain(), *loaders(d), epochs=2.5),
        TypeError,
        "epochs must be a whole number",
    ),
    (
        "epochs 5.0",
        lambda d: lambda: train_model(plain(), *loaders(d), epochs=5.0),
        TypeError,
        "without the decimal point",
    ),
    (
        "epochs True",
        lambda d: lambda: train_model(plain(), *loaders(d), epochs=True),
        TypeError,
        "whole number",
    ),
    (
        "epochs '3'",
        lambda d: lambda: train_model(plain(), *loaders(d), epochs="3"),
        TypeError,
        "whole number",
    ),
    (
        "verbose 'yes'",
        lambda d: lambda: train_model(plain(), *loaders(d), epochs=1, verbose="yes"),
        TypeError,
        "True or False",
    ),
    ("seed 1.5", lambda d: fit(plain(), *loaders(d), seed=1.5), TypeError, "seed"),
    # --- evaluate
    (
        "evaluate, empty loader",
        lambda d: lambda: evaluate(plain(), []),
        ValueError,
        "nothing to evaluate",
    ),
    (
        "evaluate, tensors instead of a loader",
        lambda d: lambda: evaluate(plain(), d[1]),
        TypeError,
        "[(X_val, y_val)]",
    ),
    (
        "evaluate, a bare (X, y) tuple",
        lambda d: lambda: evaluate(plain(), (d[1], d[3])),
        TypeError,
        "evaluate needs pairs (x, y)",
    ),
    (
        "evaluate, NaN in the data",
        lambda d: lambda: evaluate(plain(), [(with_value(d[1], (2, 2), math.nan), d[3])]),
        ValueError,
        "Your data contains NaN at batch 0 of loader, x[2, 2]",
    ),
    (
        "evaluate, a loss class instead of an instance",
        lambda d: lambda: evaluate(plain(), [(d[1], d[3])], loss_fn="bce"),
        TypeError,
        "loss_fn",
    ),
    (
        "evaluate, labels -1/+1",
        lambda d: lambda: evaluate(plain(), [(d[1], d[3] * 2 - 1)]),
        ValueError,
        "batch 0 of loader, y holds the values {-1, 1}",
    ),
    (
        "evaluate, y of shape (N,)",
        lambda d: lambda: evaluate(plain(), [(d[1], d[3].flatten())]),
        ValueError,
        "of shape (40,), one number per sample",
    ),
    (
        "evaluate, not a model",
        lambda d: lambda: evaluate(None, [(d[1], d[3])]),
        TypeError,
        "nn.Module",
    ),
    (
        "evaluate, 19 features",
        lambda d: lambda: evaluate(plain(), [(d[1][:, :19], d[3])]),
        ValueError,
        "evaluate it on data with the features (columns) it was built",
    ),
]


@table(CASES)
def test_bad_input_gets_a_teaching_error(small, call, error, phrase):
    assert "diverged" not in str(assert_teaching_error(call(small), error, phrase))


def test_bad_data_is_data_not_divergence(small, capsys):
    X_train = with_value(small[0], (12, 3), math.nan)
    with pytest.raises(checks.DataError, match=r"NaN at train_loader\.X\[12, 3\]"):
        train_model(plain(), *tensor_loaders(X_train, *small[1:]), epochs=2)
    assert "diverged" not in capsys.readouterr().out


def test_failing_run_leaves_the_model_as_it_was(small):
    """Bad data found only mid-run (a loader that cannot be read up front): the model is put
    back exactly as it was, modes included."""

    class Stream:
        def __init__(self, batches):
            self.batches = batches

        def __iter__(self):
            return iter(self.batches)

    X = small[0].clone()
    good = [(X[:80], small[2][:80])]
    bad = (with_value(X[80:], (5, 1), math.nan), small[2][80:])
    model = bn()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(checks.DataError, match=r"batch 1 of train_loader, x\[5, 1\]"):
        train_model(model, Stream([*good, bad]), [(small[1], small[3])], epochs=1, verbose=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training


def test_checks_do_not_change_the_model(small):
    model = bn()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError):
        train_model(model, *make_loaders(*small, batch_size=53), epochs=1, verbose=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m.training for m in model.modules())


def test_frozen_bn_may_train_on_a_batch_of_one(small):
    """A frozen BN layer stays in eval mode, so a last batch of one is fine."""
    model = freeze(bn())
    h = train_model(model, *make_loaders(*small, batch_size=53), epochs=1, verbose=False)
    assert len(h.train_loss) == 1


def test_valid_uses_still_train(small):
    d = small
    for train, val in [
        make_loaders(*d),
        ([(d[0], d[2])], [(d[1], d[3])]),
        (
            DataLoader(TensorDataset(d[0], d[2]), batch_size=32, shuffle=True),
            DataLoader(TensorDataset(d[1], d[3]), batch_size=40),
        ),
        make_loaders(*d, batch_size=53, drop_last=True),
    ]:
        h = train_model(bn(), train, val, epochs=1, verbose=False)
        assert len(h.train_loss) == 1 and not h.diverged
    # numpy numbers are numbers
    h = train_model(
        plain(), *make_loaders(*d), epochs=np.int64(1), lr=np.float64(0.01), verbose=False
    )
    assert h.epochs == 1 and h.lr == 0.01


def test_history_records_what_was_run(small):
    h = train_model(plain(), *make_loaders(*small, batch_size=32), epochs=1, verbose=False)
    assert h.batch_size == 32 and h.device == "cpu" and h.seed is None
    h = train_model(plain(), *make_loaders(*small), epochs=1, verbose=False, seed=3)
    assert h.seed == 3 and h.batch_size == 64
    h = train_model(
        plain(), [(small[0], small[2])], [(small[1], small[3])], epochs=1, verbose=False
    )
    assert h.batch_size is None  # unknown for a list of batches
    assert History(lr=0.1, epochs=3).device is None


def test_public_checks_return_the_value():
    assert check_lr(np.float32(0.5)) == 0.5 and isinstance(check_lr(1), float)
    assert check_epochs(np.int64(3)) == 3
    with pytest.raises(ValueError, match="features"):
        check_batch(plain(), torch.zeros(2, 3), torch.zeros(2, 1), "loader")


SHARED = [
    (lambda: checks.whole_number(True, "n"), TypeError, "whole number"),
    (lambda: checks.whole_number(3.0, "n"), TypeError, "Write 3 without the decimal point"),
    (lambda: checks.whole_number(0, "n", minimum=1), ValueError, "at least 1"),
    (lambda: checks.positive_number(math.nan, "x"), ValueError, "positive, finite"),
    (lambda: checks.positive_number("1", "x"), TypeError, "must be a number"),
    (lambda: checks.positive_number(0, "x"), ValueError, "positive"),
    (lambda: checks.fraction(1.0, "f"), ValueError, "(0, 1)"),
    (lambda: checks.fraction(math.nan, "f", closed=True), ValueError, "[0, 1]"),
    (lambda: checks.flag(1, "b"), TypeError, "True or False"),
    (
        lambda: checks.tensor(np.zeros(3), "X"),
        TypeError,
        "torch.tensor(value, dtype=torch.float32)",
    ),
    (lambda: checks.tensor([1.0], "X"), TypeError, "torch.tensor"),
    (lambda: checks.tensor(torch.zeros(3), "X", dims=2), ValueError, "(N, features)"),
    (lambda: checks.tensor(torch.zeros(3, 2).long(), "X"), TypeError, "X.float()"),
    (lambda: checks.tensor(torch.zeros(0, 2), "X", min_rows=1), ValueError, "at least 1 sample"),
    (lambda: checks.finite(torch.tensor([[0.0, math.nan]]), "X"), ValueError, "NaN at X[0, 1]"),
    (lambda: checks.binary_labels(torch.tensor([0.0, 0.5]), "y"), ValueError, "0 and 1"),
    (lambda: checks.loader(torch.zeros(2), "l"), TypeError, "make_loaders"),
    (lambda: checks.loader({"x": 1}, "l"), TypeError, "batches (x, y)"),
]


@pytest.mark.parametrize("call, error, phrase", SHARED)
def test_shared_checks(call, error, phrase):
    assert_teaching_error(call, error, phrase)


def test_shared_checks_accept_good_values():
    assert checks.whole_number(np.int32(4), "n", minimum=1) == 4
    assert checks.positive_number(0, "x", allow_zero=True) == 0.0
    assert checks.fraction(0.2, "f") == 0.2 and checks.flag(False, "b") is False
    t = torch.ones(2, 2)
    assert (
        checks.finite(t, "t") is t
        and checks.binary_labels(torch.tensor([0.0, 1.0]), "y") is not None
    )
    assert checks.finite(torch.tensor([1, 2]), "ints") is not None
