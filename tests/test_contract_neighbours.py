"""Bad inputs to bnteach.neighbours: each gets a teaching error with a phrase that names the
problem, and leaves the model as it was. A table: (case id, f(data) -> a zero-argument call,
the error type, a phrase the message must contain)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from bnteach import checks, neighbours
from bnteach.data import load_digits
from bnteach.models import MLP


@pytest.fixture(scope="module")
def digits():
    X_train, X_val, y_train, y_val = load_digits(flat=True)
    return X_train[:64], X_val[:32], y_train[:64], y_val[:32]


def bn_net():
    torch.manual_seed(0)
    return MLP(64, (8,), 10, norm="batch", bias=False, dropout=0.2)


PLAIN = MLP(64, (8,), 10, norm="none")
AFTER = MLP(64, (8,), 10, norm="batch", placement="after")
SGD = {"hidden_sizes": (8,), "norm": "batch", "bias": False, "optimizer": "sgd"}


def trajectory(d, models=None, **kw):
    args = {"seeds": [0, 1], "lr": 0.1, "models": models or {"m": SGD}, "data": d,
            "chunks": 1, "epochs": 1, **kw}  # fmt: skip
    return lambda: neighbours.norm_trajectory(**args)


def with_value(t, index, value):
    t = t.clone()
    t[index] = value
    return t


def zero_first_weight():
    net = bn_net()
    with torch.no_grad():
        net.network[0].weight.zero_()
    return net


CASES = [
    (
        "effective step of a zero weight",
        lambda d: lambda: neighbours.effective_steps(zero_first_weight(), 0.1),
        ValueError,
        "norm 0",
    ),
    (
        "decay_bound steps 10**400",
        lambda d: lambda: neighbours.decay_bound(6.5, 0.1, 1e-3, 10**400),
        ValueError,
        "steps must be at most",
    ),
    (
        "mode_gap labels out of range",
        lambda d: lambda: neighbours.mode_gap(bn_net(), d[0], d[2] + 10, 4),
        ValueError,
        "labels must run from 0 to 9",
    ),
    (
        "mode_gap 0/1 targets for ten outputs",
        lambda d: lambda: neighbours.mode_gap(bn_net(), d[0], (d[2] % 2).float()[:, None], 4),
        ValueError,
        "one logit per row",
    ),
    # which weights
    ("model a string", lambda d: lambda: neighbours.weight_norms("mlp"), TypeError, "nn.Module"),
    ("no BN", lambda d: lambda: neighbours.weight_norms(PLAIN), ValueError, "no BatchNorm layer"),
    (
        "BN after the activation",
        lambda d: lambda: neighbours.weight_norms(AFTER),
        ValueError,
        "feeds a BatchNorm layer directly",
    ),
    (
        "Linear alone",
        lambda d: lambda: neighbours.scale_invariant_linears(nn.Linear(3, 2)),
        ValueError,
        "no BatchNorm layer",
    ),
    ("lr negative", lambda d: lambda: neighbours.effective_steps(bn_net(), -0.1), ValueError, "lr"),
    ("lr NaN", lambda d: lambda: neighbours.effective_steps(bn_net(), math.nan), ValueError, "nan"),
    ("lr a string", lambda d: lambda: neighbours.effective_steps(bn_net(), "0.1"), TypeError, "lr"),
    # weight decay
    (
        "weight decay negative",
        lambda d: lambda: neighbours.decay_bound(6.5, 0.1, -1e-3, 10),
        ValueError,
        "grow the weights",
    ),
    (
        "weight decay NaN",
        lambda d: lambda: neighbours.decay_bound(6.5, 0.1, math.nan, 10),
        ValueError,
        "finite number >= 0",
    ),
    (
        "weight decay inf",
        lambda d: lambda: neighbours.decay_bound(6.5, 0.1, math.inf, 10),
        ValueError,
        "finite number >= 0",
    ),
    (
        "weight decay a string",
        lambda d: lambda: neighbours.decay_bound(6.5, 0.1, "1e-3", 10),
        TypeError,
        "weight_decay must be a number",
    ),
    (
        "weight decay True",
        lambda d: lambda: neighbours.decay_bound(6.5, 0.1, True, 10),
        TypeError,
        "weight_decay must be a number",
    ),
    (
        "lr * weight decay >= 1",
        lambda d: lambda: neighbours.decay_bound(6.5, 10.0, 0.2, 10),
        ValueError,
        "below 1 / lr",
    ),
    (
        "steps negative",
        lambda d: lambda: neighbours.decay_bound(6.5, 0.1, 0.0, -1),
        ValueError,
        "at least 0",
    ),  # fmt: skip
    (
        "steps 1.5",
        lambda d: lambda: neighbours.decay_bound(6.5, 0.1, 0.0, 1.5),
        TypeError,
        "whole number",
    ),  # fmt: skip
    (
        "norm negative",
        lambda d: lambda: neighbours.decay_bound(-1, 0.1, 0.0, 1),
        ValueError,
        "norm",
    ),  # fmt: skip
    (
        "norm tensor with NaN",
        lambda d: lambda: neighbours.decay_bound(torch.tensor([1.0, math.nan]), 0.1, 0.0, 1),
        checks.DataError,
        "NaN",
    ),
    (
        "norm tensor negative",
        lambda d: lambda: neighbours.decay_bound(torch.tensor([1.0, -1.0]), 0.1, 0.0, 1),
        ValueError,
        "negative",
    ),
    # trajectory
    (
        "trajectory without BN",
        lambda d: trajectory(d, {"m": {**SGD, "norm": "none"}}),
        ValueError,
        "every model needs BN",
    ),
    (
        "trajectory weight decay negative",
        lambda d: trajectory(d, {"m": {**SGD, "weight_decay": -1e-3}}),
        ValueError,
        "weight_decay",
    ),
    (
        "trajectory weight decay NaN",
        lambda d: trajectory(d, {"m": {**SGD, "weight_decay": math.nan}}),
        ValueError,
        "weight_decay",
    ),
    ("trajectory chunks 0", lambda d: trajectory(d, chunks=0), ValueError, "chunks"),
    ("trajectory epochs '5'", lambda d: trajectory(d, epochs="5"), TypeError, "epochs"),
    ("trajectory lr 0", lambda d: trajectory(d, lr=0.0), ValueError, "lr"),
    ("trajectory seeds '01'", lambda d: trajectory(d, seeds="01"), TypeError, "seeds"),
    ("trajectory seed -1", lambda d: trajectory(d, seeds=[-1]), ValueError, "at least 0"),
    ("trajectory data 3 tensors", lambda d: trajectory(d[:3]), TypeError, "data must be"),
    ("trajectory models a list", lambda d: trajectory(d, ["m"]), TypeError, "models"),
    # variance shift
    (
        "variance shift without BN",
        lambda d: lambda: neighbours.variance_shift(PLAIN, d[0]),
        ValueError,
        "no BatchNorm layer",
    ),
    (
        "variance shift of numpy",
        lambda d: lambda: neighbours.variance_shift(bn_net(), d[0].numpy()),
        TypeError,
        "torch tensor",
    ),
    (
        "variance shift 1-D X",
        lambda d: lambda: neighbours.variance_shift(bn_net(), d[0][0]),
        ValueError,
        "(N, features)",
    ),
    (
        "variance shift one row",
        lambda d: lambda: neighbours.variance_shift(bn_net(), d[0][:1]),
        ValueError,
        "at least 2",
    ),
    (
        "variance shift NaN in X",
        lambda d: lambda: neighbours.variance_shift(bn_net(), with_value(d[0], (3, 5), math.nan)),
        checks.DataError,
        "NaN at X[3, 5]",
    ),
    (
        "variance shift wrong features",
        lambda d: lambda: neighbours.variance_shift(bn_net(), d[0][:, :20]),
        ValueError,
        "X must be what the model takes",
    ),
    (
        "variance shift model None",
        lambda d: lambda: neighbours.variance_shift(None, d[0]),
        TypeError,
        "nn.Module",
    ),
    # mode gap
    (
        "mode gap batch 1",
        lambda d: lambda: neighbours.mode_gap(bn_net(), d[0], d[2], 1),
        ValueError,
        "at least 2",
    ),
    (
        "mode gap batch 2.5",
        lambda d: lambda: neighbours.mode_gap(bn_net(), d[0], d[2], 2.5),
        TypeError,
        "whole number",
    ),
    (
        "mode gap batch larger than X",
        lambda d: lambda: neighbours.mode_gap(bn_net(), d[0], d[2], 100),
        ValueError,
        "larger than X",
    ),
    (
        "mode gap float labels (N,)",
        lambda d: lambda: neighbours.mode_gap(bn_net(), d[0], d[2].float(), 4),
        ValueError,
        "int64 class labels",
    ),
    (
        "mode gap labels too short",
        lambda d: lambda: neighbours.mode_gap(bn_net(), d[0], d[2][:10], 4),
        ValueError,
        "one target per row",
    ),
    (
        "mode gap labels numpy",
        lambda d: lambda: neighbours.mode_gap(bn_net(), d[0], np.zeros(64), 4),
        TypeError,
        "torch tensor",
    ),
    (
        "mode gap seed -1",
        lambda d: lambda: neighbours.mode_gap(bn_net(), d[0], d[2], 4, seed=-1),
        ValueError,
        "at least 0",
    ),
    (
        "mode gap wrong features",
        lambda d: lambda: neighbours.mode_gap(bn_net(), d[0][:, :20], d[2], 4),
        ValueError,
        "X must be what the model takes",
    ),
    (
        "mode gap model a function",
        lambda d: lambda: neighbours.mode_gap(print, d[0], d[2], 4),
        TypeError,
        "nn.Module",
    ),
]


@pytest.mark.parametrize("case, make, error, phrase", CASES, ids=[c[0] for c in CASES])
def test_teaching_errors(digits, case, make, error, phrase):
    with pytest.raises(error) as info:
        make(digits)()
    assert phrase in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "probe",
    [
        lambda m, d: neighbours.variance_shift(m, d[0][:, :20]),
        lambda m, d: neighbours.mode_gap(m, d[0][:, :20], d[2], 4),
        lambda m, d: neighbours.mode_gap(m, d[0], d[2][:10], 4),
    ],
)
def test_a_failing_probe_leaves_the_model_as_it_was(digits, probe):
    model = bn_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError):
        probe(model, digits)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_trajectory_effective_steps_of_an_unknown_model(digits):
    tr = trajectory(digits)()
    with pytest.raises(ValueError, match="not in this trajectory"):
        tr.effective_steps("M")
