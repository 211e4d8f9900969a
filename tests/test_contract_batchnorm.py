"""Bad inputs to bnteach.batchnorm (the scratch layers, the functional form and the operations
that change a model): each gets a teaching error of a sensible type with a phrase that names the
problem. A table: (case id, a zero-argument call, the error type, a phrase in the message).
PyTorch's own test cases are ported in test_batchnorm_torch_cases.py."""

import math

import numpy as np
import pytest
import torch
from conftest import assert_teaching_error, table
from torch import nn

from bnteach import batchnorm as bn
from bnteach.batchnorm import BatchNorm1d, BatchNorm2d, batch_norm


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))


X = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))

CASES = [
    ("num_features 0", lambda: BatchNorm1d(0), ValueError, "at least 1"),
    ("num_features a float", lambda: BatchNorm1d(2.0), TypeError, "whole number"),
    ("num_features a bool", lambda: BatchNorm1d(True), TypeError, "whole number"),
    ("eps 0", lambda: BatchNorm1d(3, eps=0), ValueError, "positive and finite"),
    ("eps negative", lambda: BatchNorm2d(3, eps=-1e-5), ValueError, "positive and finite"),
    ("eps nan", lambda: BatchNorm1d(3, eps=math.nan), ValueError, "positive and finite"),
    ("eps a string", lambda: BatchNorm1d(3, eps="1e-5"), TypeError, "small positive number"),
    ("momentum 2", lambda: BatchNorm1d(3, momentum=2), ValueError, "weight of the NEW batch"),
    ("momentum a string", lambda: BatchNorm1d(3, momentum="0.1"), TypeError, "in [0, 1] or None"),
    ("input NumPy", lambda: BatchNorm1d(3)(np.zeros((4, 3))), TypeError, "torch.as_tensor"),
    ("input a list", lambda: BatchNorm1d(3)([[1.0, 2.0, 3.0]]), TypeError, "torch.Tensor"),
    ("input ints", lambda: BatchNorm1d(3)(torch.zeros(4, 3).long()), TypeError, "x.float()"),
    ("channels differ", lambda: BatchNorm1d(3)(torch.zeros(4, 5)), RuntimeError, "num_features"),
    ("1-D input", lambda: BatchNorm1d(3)(torch.zeros(3)), ValueError, "(N, C) or (N, C, L)"),
    ("images into 1d", lambda: BatchNorm1d(3)(torch.zeros(2, 3, 2, 2)), ValueError, "BatchNorm2d"),
    ("2-D into 2d", lambda: BatchNorm2d(3)(torch.zeros(4, 3)), ValueError, "(N, C, H, W)"),
    ("batch of one", lambda: BatchNorm1d(3)(torch.zeros(1, 3)), ValueError, "batch of one"),
    (
        "NaN batch does not poison the buffers",
        lambda: BatchNorm1d(3)(torch.full((4, 3), math.nan)),
        ValueError,
        "contains NaN or infinite values",
    ),
    ("F: eps -1", lambda: batch_norm(X, None, None, eps=-1), ValueError, "positive and finite"),
    (
        "F: momentum nan",
        lambda: batch_norm(X, torch.zeros(3), torch.ones(3), training=True, momentum=math.nan),
        ValueError,
        "momentum must be in [0, 1]",
    ),
    (
        "F: weight of the wrong size",
        lambda: batch_norm(X, None, None, weight=torch.ones(5)),
        RuntimeError,
        "weight has size 5",
    ),
    (
        "F: running_mean of the wrong size",
        lambda: batch_norm(X, torch.zeros(5), torch.ones(5), training=True),
        RuntimeError,
        "running_mean has size 5",
    ),
    ("F: NumPy input", lambda: batch_norm(np.zeros((4, 3)), None, None), TypeError, "torch.Tensor"),
    ("recalibrate a string", lambda: bn.recalibrate("model", []), TypeError, "nn.Module"),
    ("recalibrate empty loader", lambda: bn.recalibrate(net(), []), ValueError, "loader is empty"),
    (
        "recalibrate a tensor",
        lambda: bn.recalibrate(net(), X),
        TypeError,
        "must be a loader that yields batches",
    ),
    ("recalibrate a dict", lambda: bn.recalibrate(net(), {"x": X}), TypeError, "loader"),
    (
        "recalibrate without BN",
        lambda: bn.recalibrate(nn.Linear(3, 3), [(X, None)]),
        ValueError,
        "Nothing to recalibrate",
    ),
    (
        "recalibrate float64 batches",
        lambda: bn.recalibrate(net(), [(X.double(), None)]),
        TypeError,
        "float64 inputs",
    ),
    ("freeze a number", lambda: bn.freeze(3), TypeError, "nn.Module"),
    ("bn_layers a string", lambda: bn.bn_layers("x"), TypeError, "nn.Module"),
    (
        "fold: sizes differ",
        lambda: bn.fold_into_linear(nn.Linear(3, 4), nn.BatchNorm1d(5)),
        ValueError,
        "out_features=4 but bn has num_features=5",
    ),
    (
        "fold: not a BN",
        lambda: bn.fold_into_linear(nn.Linear(3, 4), nn.Linear(4, 4)),
        TypeError,
        "must be a BatchNorm layer",
    ),
    (
        "fold conv: sizes differ",
        lambda: bn.fold_into_conv(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(5)),
        ValueError,
        "out_channels=4",
    ),
]


@table(CASES)
def test_bad_input_gets_a_teaching_error(call, error, phrase):
    assert_teaching_error(call, error, phrase)


@pytest.mark.parametrize("loader", [X, {"x": X}, [(X.double(), None)], [(X[:1], None)], []])
def test_a_failed_recalibrate_leaves_the_model_bitwise_as_it_was(loader):
    model = net()
    model.train()
    model(torch.randn(16, 3))  # running statistics that are not the defaults
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises((TypeError, ValueError)):
        bn.recalibrate(model, loader)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model[1].momentum == 0.1
