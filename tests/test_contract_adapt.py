"""Bad inputs to bnteach.adapt: each gets a teaching error with a phrase that names the problem,
and a failing adaptation leaves the model exactly as it was. A table: (case id, f(net, X) -> a
zero-argument call, the error type, a phrase the message must contain)."""

import copy
import math

import pytest
import torch
from conftest import assert_teaching_error, table
from torch import nn

from bnteach.adapt import adabn, bn_input_stats, predict_mixed, tent
from bnteach.cnn import SmallCNN
from bnteach.data import load_digits, shifted


def bn_net():
    torch.manual_seed(0)
    net = SmallCNN("batch")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def X():
    return shifted(load_digits()[1][:16], "blur", 1.0)


def with_nan(X):
    X = X.clone()
    X[3, 0, 2, 2] = float("nan")
    return X


MLP = nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10)).eval()
LABELS = load_digits()[3][:16]

CASES = [
    ("not a model", lambda n, X: lambda: adabn("net", X), TypeError, "nn.Module"),
    (
        "no BN: GroupNorm",
        lambda n, X: lambda: adabn(SmallCNN("group"), X),
        ValueError,
        "no BatchNorm layer",
    ),  # fmt: skip
    (
        "no BN: plain",
        lambda n, X: lambda: tent(SmallCNN("none"), X),
        ValueError,
        "nothing to adapt",
    ),  # fmt: skip
    ("(X, y) instead of X", lambda n, X: lambda: adabn(n, (X, LABELS)), TypeError, "UNLABELLED"),
    ("labels instead of X", lambda n, X: lambda: adabn(n, LABELS), TypeError, "labels"),
    ("numpy", lambda n, X: lambda: adabn(n, X.numpy()), TypeError, "torch tensor"),
    ("empty target", lambda n, X: lambda: adabn(n, X[:0]), ValueError, "empty target"),
    ("NaN in X", lambda n, X: lambda: adabn(n, with_nan(X)), ValueError, "NaN"),
    ("float64 X", lambda n, X: lambda: adabn(n, X.double()), TypeError, "convert"),
    (
        "flat rows for a CNN",
        lambda n, X: lambda: adabn(n, X.flatten(1)),
        ValueError,
        "(N, 1, 8, 8)",
    ),  # fmt: skip
    ("stats: labels", lambda n, X: lambda: bn_input_stats(n, (X, LABELS)), TypeError, "UNLABELLED"),
    ("mixed: batch 0", lambda n, X: lambda: predict_mixed(n, X, 0), ValueError, "batch_size"),
    ("mixed: batch 2.5", lambda n, X: lambda: predict_mixed(n, X, 2.5), TypeError, "batch_size"),
    (
        "mixed: prior NaN",
        lambda n, X: lambda: predict_mixed(n, X, 4, prior=math.nan),
        TypeError,
        "prior",
    ),  # fmt: skip
    ("mixed: prior -1", lambda n, X: lambda: predict_mixed(n, X, 4, prior=-1), ValueError, ">= 0"),
    (
        "mixed: prior '16'",
        lambda n, X: lambda: predict_mixed(n, X, 4, prior="16"),
        TypeError,
        "prior",
    ),  # fmt: skip
    (
        "mixed: batch of one, BatchNorm1d",
        lambda n, X: lambda: predict_mixed(MLP, X.flatten(1), 1),
        ValueError,
        "one value per channel",
    ),  # fmt: skip
    (
        "mixed: a last batch of one, BatchNorm1d",
        lambda n, X: lambda: predict_mixed(MLP, X.flatten(1)[:5], 4),
        ValueError,
        "one value per channel",
    ),  # fmt: skip
    (
        "adabn: one flat sample",
        lambda n, X: lambda: adabn(MLP, X.flatten(1)[:1]),
        ValueError,
        "one value per channel",
    ),  # fmt: skip
    (
        "tent: one flat sample",
        lambda n, X: lambda: tent(MLP, X.flatten(1)[:1]),
        ValueError,
        "at least 2",
    ),  # fmt: skip
    ("tent: steps 0", lambda n, X: lambda: tent(n, X, steps=0), ValueError, "steps"),
    ("tent: lr -1", lambda n, X: lambda: tent(n, X, lr=-1.0), ValueError, "lr"),
    (
        "tent: no affine",
        lambda n, X: (
            lambda: tent(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, affine=False)), X)
        ),
        ValueError,
        "affine=False",
    ),  # fmt: skip
    (
        "MLP: rows of the wrong width",
        lambda n, X: lambda: adabn(MLP, X.flatten(1)[:, :10]),
        ValueError,
        "cannot run on X of shape (16, 10)",
    ),  # fmt: skip
    (
        "mixed: rows of the wrong width",
        lambda n, X: lambda: predict_mixed(MLP, X.flatten(1)[:, :10], 4),
        ValueError,
        "cannot run on X",
    ),  # fmt: skip
    (
        "tent: one output per sample",
        lambda n, X: lambda: tent(nn.Sequential(MLP, nn.Linear(10, 1)), X.flatten(1)),
        ValueError,
        "at least 2 classes",
    ),  # fmt: skip
    (
        "stats: running_var 0",
        lambda n, X: lambda: bn_input_stats(zero_var(MLP), X.flatten(1)),
        ValueError,
        "running_var that is 0",
    ),  # fmt: skip
    (
        "stats: a BN layer never used",
        lambda n, X: lambda: bn_input_stats(with_spare_bn(), X.flatten(1)),
        ValueError,
        "never used it",
    ),  # fmt: skip
]


def zero_var(model):
    model = copy.deepcopy(model)
    model[1].running_var[2] = 0.0
    return model


class _Spare(nn.Module):
    """MLP with a BN layer its forward never calls."""

    def __init__(self):
        super().__init__()
        self.net, self.spare = copy.deepcopy(MLP), nn.BatchNorm1d(3)

    def forward(self, x):
        return self.net(x)


def with_spare_bn():
    return _Spare().eval()


@table(CASES)
def test_teaching_errors(X, call, error, phrase):
    assert_teaching_error(call(bn_net(), X), error, phrase)


def state(net):
    return copy.deepcopy(net.state_dict()), {n: p.requires_grad for n, p in net.named_parameters()}


@pytest.mark.parametrize(
    "fail",
    [
        lambda n, X: adabn(n, with_nan(X)),
        lambda n, X: adabn(n, X.flatten(1)),
        lambda n, X: predict_mixed(n, X.flatten(1), 4),
        lambda n, X: tent(n, X.flatten(1)),
        lambda n, X: tent(n, X, steps=3, lr=1e30),  # diverges: NaN entropies
        lambda n, X: bn_input_stats(n, X[:, :, :4]),
        lambda n, X: tent(nn.Sequential(n, nn.Linear(10, 1)), X),  # one output: no classes
    ],
    ids=[
        "adabn NaN",
        "adabn shape",
        "mixed shape",
        "tent shape",
        "tent diverges",
        "stats shape",
        "tent no classes",
    ],  # fmt: skip
)
def test_a_failing_call_leaves_the_model_as_it_was(X, fail):
    net = bn_net()
    net.features[1].train()  # a mode of the caller's, to be kept
    before, flags = state(net)
    modes = {m: m.training for m in net.modules()}
    with pytest.raises((ValueError, RuntimeError, TypeError)):
        fail(net, X)
    after, after_flags = state(net)
    assert all(torch.equal(before[k], v) for k, v in after.items())
    assert flags == after_flags
    assert modes == {m: m.training for m in net.modules()}
    assert all(p.grad is None for p in net.parameters())
