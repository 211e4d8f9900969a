"""Bad inputs to bnteach.cnn, bnteach.init and bnteach.graphs: each gets a teaching error with a
phrase that names the problem, raised before anything trains. A table: (case id, f(data) -> a
zero-argument call, the error type, a phrase the message must contain)."""

import math

import pytest
from conftest import assert_teaching_error, table
from torch import nn

from bnteach import checks, cnn, graphs, init
from bnteach.data import load_digits


@pytest.fixture(scope="module")
def digits():
    X_train, X_val, y_train, y_val = load_digits()
    return X_train[:120], X_val[:40], y_train[:120], y_val[:40]


def with_value(t, index, value):
    t = t.clone()
    t[index] = value
    return t


def fit(data, model=None, seed=0, **kw):
    return lambda: cnn.train_cnn(model or cnn.SmallCNN("batch"), data, seed, epochs=1, **kw)


CASES = [
    ("norm unknown", lambda d: lambda: cnn.make_norm("bn", 8), ValueError, "norm must be one of"),
    ("channels 0", lambda d: lambda: cnn.make_norm("batch", 0), ValueError, "at least 1"),
    ("groups 0", lambda d: lambda: cnn.make_norm("group", 8, groups=0), ValueError, "at least 1"),
    (
        "groups not a divisor",
        lambda d: lambda: cnn.make_norm("group", 8, 3),
        ValueError,
        "divisors",
    ),
    ("one channel count", lambda d: lambda: cnn.SmallCNN(channels=(8,)), ValueError, "(c1, c2)"),
    ("model a string", lambda d: fit(d, model="cnn"), TypeError, "needs a model"),
    ("seed a string", lambda d: fit(d, seed="0"), TypeError, "seed must be a whole number"),
    ("data 3 tensors", lambda d: fit(d[:3]), ValueError, "the 4 tensors"),
    ("flat images", lambda d: fit((d[0].flatten(1), d[1], *d[2:])), ValueError, "(N, 1, 8, 8)"),
    ("float labels", lambda d: fit((*d[:2], d[2].float(), d[3])), ValueError, "int64 labels"),
    (
        "NaN pixel",
        lambda d: fit((with_value(d[0], (3, 0, 2, 2), math.nan), *d[1:])),
        checks.DataError,
        "NaN at X_train[3, 0, 2, 2]",
    ),
    (
        "label 10 for 10 classes",
        lambda d: fit((*d[:2], with_value(d[2], 5, 10), d[3])),
        checks.DataError,
        "labels must be 0 to 9",
    ),
    (
        "label 3 for 3 classes",
        lambda d: fit((*d[:2], d[2] % 4, d[3] % 3), model=cnn.SmallCNN(n_classes=3)),
        checks.DataError,
        "3 outputs",
    ),
    ("numpy images", lambda d: fit((d[0].numpy(), *d[1:])), TypeError, "torch tensor"),
    ("batch size 1", lambda d: fit(d, batch_size=1), ValueError, ">= 2"),
    ("lr 0", lambda d: fit(d, lr=0), ValueError, "positive, finite"),
    (
        "many: seeds a string",
        lambda d: lambda: cnn.train_cnns("01", d, epochs=1),
        TypeError,
        "seeds",
    ),
    (
        "evaluate a string",
        lambda d: lambda: cnn.evaluate_cnn("cnn", d[1], d[3]),
        TypeError,
        "needs a model",
    ),
    (
        "evaluate flat images",
        lambda d: lambda: cnn.evaluate_cnn(cnn.SmallCNN(), d[1].flatten(1), d[3]),
        ValueError,
        "(N, 1, 8, 8)",
    ),
    # --- init
    (
        "init: activation",
        lambda d: lambda: init.init_std(10, 10, "swish"),
        ValueError,
        "activation",
    ),
    ("init: fan_in 0", lambda d: lambda: init.init_std(0, 10, "relu"), ValueError, "fan_in"),
    ("init: fan_in 2.5", lambda d: lambda: init.init_std(2.5, 10, "relu"), TypeError, "fan_in"),
    (
        "scale: not an MLP",
        lambda d: lambda: init.scale_init_(nn.Linear(3, 3), 2.0),
        TypeError,
        "MLP",
    ),
    # --- graphs
    ("graph: width 0", lambda d: lambda: graphs.bn_graph_figure(width=0), ValueError, "width"),
    (
        "graph: gradients 1",
        lambda d: lambda: graphs.bn_graph_figure(gradients=1),
        TypeError,
        "True",
    ),
]


@table(CASES)
def test_bad_input_gets_a_teaching_error(digits, call, error, phrase):
    assert_teaching_error(call(digits), error, phrase)


def test_train_cnns_reads_the_class_count_of_the_models_given(digits):
    X_train, X_val, y_train, y_val = digits
    models = [cnn.SmallCNN(n_classes=3)]
    with pytest.raises(checks.DataError, match="3 outputs"):
        cnn.train_cnns([0], digits, epochs=1, models=models)
    three = (X_train, X_val, y_train % 3, y_val % 3)
    (history,) = cnn.train_cnns([0], three, epochs=1, models=models)
    assert len(history.val_acc) == 1
