"""Bad inputs to bnteach.sweep: each gets a teaching error raised before anything trains, with a
phrase that names the problem. Nothing is cast or clamped silently. A table: (case id, a function
that makes the call, the error type, a phrase the message must contain)."""

import math

import pytest
import torch
from conftest import assert_teaching_error, table

from bnteach import checks, sweep
from bnteach.data import load_data


@pytest.fixture(scope="module")
def d():
    return load_data(n_samples=200)  # 160 train / 40 validation, 20 features


def with_value(t, index, value):
    t = t.clone()
    t[index] = value
    return t


def run(**kw):
    args = {"seeds": [0], "lrs": [0.01], "epochs": 1, **kw}
    return lambda: sweep.run(**args)


CASES = [
    ("seeds a string", lambda d: run(seeds="012"), TypeError, "seeds must be a list"),
    ("seeds empty", lambda d: run(seeds=[]), ValueError, "seeds is empty"),
    ("seeds duplicates", lambda d: run(seeds=[1, 1]), ValueError, "duplicates"),
    ("seed a float", lambda d: run(seeds=[0.5]), TypeError, "whole numbers"),
    ("lr a scalar", lambda d: run(lrs=0.01), TypeError, "lrs must be a list"),
    ("lr negative", lambda d: run(lrs=[-0.1]), ValueError, "positive, finite"),
    ("lr nan", lambda d: run(lrs=[math.nan]), ValueError, "positive, finite"),
    ("epochs 0", lambda d: run(epochs=0), ValueError, "at least 1"),
    ("epochs a float", lambda d: run(epochs=2.0), TypeError, "without the decimal point"),
    ("batch size 1", lambda d: run(batch_size=1), ValueError, "at least 2"),
    ("batch size a float", lambda d: run(batch_size=64.0), TypeError, "whole number"),
    (
        "last batch of one",
        lambda d: run(batch_size=53, data=d),
        ValueError,
        "the last batch holds a single sample",
    ),
    ("models a list", lambda d: run(models=["BN"]), TypeError, "non-empty dict"),
    ("unknown argument", lambda d: run(models={"a": {"dropout_p": 0.1}}), ValueError, "dropout_p"),
    (
        "input_size given",
        lambda d: run(models={"a": {"input_size": 3}}),
        ValueError,
        "from the data",
    ),
    ("norm unknown", lambda d: run(models={"a": {"norm": "group"}}), ValueError, "norm must be"),
    (
        "hidden_sizes a string",
        lambda d: run(models={"a": {"hidden_sizes": "64"}}),
        TypeError,
        "hidden_sizes must be a whole number or a list",
    ),
    (
        "hidden_sizes of strings",
        lambda d: run(models={"a": {"hidden_sizes": ("6", "4")}}),
        TypeError,
        "positive integers",
    ),
    ("data one tensor", lambda d: run(data=d[0]), TypeError, "(X_train, X_val, y_train, y_val)"),
    ("data 3 items", lambda d: run(data=d[:3]), TypeError, "(X_train, X_val, y_train, y_val)"),
    (
        "float64 X_train: the float32 targets are not cast",
        lambda d: run(data=(d[0].double(), *d[1:])),
        TypeError,
        "y_train.to(torch.float64)",
    ),
    (
        "float64 training data: a float32 X_val is not cast",
        lambda d: run(data=(d[0].double(), d[1], d[2].double(), d[3].double())),
        TypeError,
        "X_val.to(torch.float64)",
    ),
    (
        "int labels are not cast",
        lambda d: run(data=(*d[:2], d[2].long(), d[3])),
        TypeError,
        "y_train.float()",
    ),
    (
        "float64 labels are not cast",
        lambda d: run(data=(*d[:2], d[2].double(), d[3].double())),
        TypeError,
        "y_train.float()",
    ),
    (
        "int X",
        lambda d: run(data=(d[0].long(), *d[1:])),
        TypeError,
        "X_train has dtype torch.int64",
    ),
    (
        "1-D labels",
        lambda d: run(data=(*d[:2], d[2].flatten(), d[3])),
        ValueError,
        "y_train.reshape(-1, 1)",
    ),
    (
        "nan in X is data, not divergence",
        lambda d: run(data=(with_value(d[0], (12, 3), math.nan), *d[1:])),
        checks.DataError,
        "Your data contains NaN at X_train[12, 3]",
    ),
    (
        "inf in X_val",
        lambda d: run(data=(d[0], with_value(d[1], (2, 0), math.inf), *d[2:])),
        checks.DataError,
        "infinite value at X_val[2, 0]",
    ),
    (
        "labels -1/+1",
        lambda d: run(data=(*d[:2], d[2] * 2 - 1, d[3])),
        checks.DataError,
        "(y + 1) / 2",
    ),
    ("labels 0/2", lambda d: run(data=(*d[:3], d[3] * 2)), checks.DataError, "labels 0 and 1"),
    (
        "features differ",
        lambda d: run(data=(d[0], d[1][:, :19], *d[2:])),
        ValueError,
        "same features",
    ),
    ("empty X", lambda d: run(data=(d[0][:0], d[1], d[2][:0], d[3])), ValueError, "no samples"),
    ("device unknown", lambda d: run(device="tpu"), ValueError, "not a device torch knows"),
    ("device a number", lambda d: run(device=3.5), TypeError, "device such as 'cpu'"),
    ("on_epoch not callable", lambda d: run(on_epoch=3), TypeError, "on_epoch must be a function"),
]
if not torch.cuda.is_available():
    CASES.append(("cuda absent", lambda d: run(device="cuda"), ValueError, "CUDA is not available"))


@table(CASES)
def test_bad_input_gets_a_teaching_error(d, call, error, phrase):
    assert_teaching_error(call(d), error, phrase)


def test_stream_checks_at_the_call_not_at_the_first_epoch():
    with pytest.raises(ValueError, match="seeds is empty"):
        sweep.stream(seeds=[], lrs=[0.01])


def test_histories_filters_name_what_the_sweep_holds():
    result = sweep.run(seeds=[0, 1], lrs=[0.01], epochs=1)
    with pytest.raises(ValueError, match="it has model in"):
        result.histories(model="ResNet")
    with pytest.raises(ValueError, match="it has lr in"):
        result.histories(lr=0.5)


def test_good_data_is_accepted_as_given(d):
    result = sweep.run(seeds=[0], lrs=[0.01], epochs=1, data=d)
    assert result.batch_size == 64 and result.device == torch.device("cpu")
    assert result.epochs_run == 1 and result.seeds == [0]


def test_nan_logits_count_as_wrong_answers(d):
    """A replica whose logits are NaN answers nothing: accuracy 0 at the epoch it diverged,
    not the share of class-0 samples."""
    result = sweep.run([0], [1e30], epochs=1, data=d)
    assert result.diverged_at == [1, 1]
    assert result.val_acc[:, 0].tolist() == [0.0, 0.0]
