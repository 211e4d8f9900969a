"""Bad arguments to bnteach.diagnostics: a table of (case, call, error type, phrase)."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from conftest import assert_teaching_error, table
from torch import nn

from bnteach.diagnostics import (
    LayerRecorder,
    NoiseInjection,
    bn_scale_response,
    covariate_shift,
    gradient_step_probe,
    linear_layers,
    update_to_data,
    weight_snapshot,
)
from bnteach.models import MLP


def net(norm="batch"):
    torch.manual_seed(0)
    return MLP(6, (5, 4), 3, norm=norm)


g = torch.Generator().manual_seed(0)
X = torch.randn(8, 6, generator=g)
Y = torch.randint(0, 3, (8,), generator=g)
W = torch.randn(4, 6, generator=g)
X_NAN = X.clone()
X_NAN[2, 3] = math.nan


CASES = [
    ("linear_layers of a list", lambda: linear_layers([nn.Linear(2, 2)]), TypeError, "nn.Module"),
    ("weight_snapshot of None", lambda: weight_snapshot(None), TypeError, "nn.Module"),
    ("LayerRecorder of a function", lambda: LayerRecorder(print), TypeError, "nn.Module"),
    (
        "update_to_data before=tensor",
        lambda: update_to_data(W, net()),
        TypeError,
        "weight_snapshot(model)",
    ),
    (
        "update_to_data before of numbers",
        lambda: update_to_data([1.0, 2.0, 3.0], net()),
        TypeError,
        "list of tensors",
    ),
    (
        "update_to_data other model",
        lambda: update_to_data(weight_snapshot(net()), MLP(6, (2,), 3)),
        ValueError,
        "weight_snapshot",
    ),
    ("update_to_data model None", lambda: update_to_data([], None), TypeError, "nn.Module"),
    (
        "noise num_features True",
        lambda: NoiseInjection(True),
        TypeError,
        "num_features must be a whole number",
    ),
    ("noise num_features 3.0", lambda: NoiseInjection(3.0), TypeError, "num_features"),
    ("noise shift nan", lambda: NoiseInjection(3, shift=math.nan), ValueError, "shift"),
    (
        "noise shift True",
        lambda: NoiseInjection(3, shift=True),
        TypeError,
        "shift must be a number",
    ),
    (
        "noise jitter '0.1'",
        lambda: NoiseInjection(3, jitter="0.1"),
        TypeError,
        "jitter must be a number",
    ),
    ("noise scale 1", lambda: NoiseInjection(3, scale=1), ValueError, "scale must be in [0, 1)"),
    (
        "noise scale None",
        lambda: NoiseInjection(3, scale=None),
        TypeError,
        "scale must be a number",
    ),
    (
        "noise forward numpy",
        lambda: NoiseInjection(3)(np.zeros((2, 3))),
        TypeError,
        "x must be a torch tensor",
    ),
    (
        "noise forward int",
        lambda: NoiseInjection(3)(torch.zeros(2, 3, dtype=torch.long)),
        TypeError,
        "floating-point",
    ),
    (
        "shift: model None",
        lambda: covariate_shift(None, F.cross_entropy, X, Y, 0.1),
        TypeError,
        "nn.Module",
    ),
    (
        "shift: numpy x",
        lambda: covariate_shift(net(), F.cross_entropy, X.numpy(), Y, 0.1),
        TypeError,
        "must be tensors",
    ),
    (
        "shift: loss class",
        lambda: covariate_shift(net(), nn.CrossEntropyLoss, X, Y, 0.1),
        TypeError,
        "note the parentheses",
    ),
    ("shift: loss string", lambda: covariate_shift(net(), "ce", X, Y, 0.1), TypeError, "loss_fn"),
    (
        "shift: lr True",
        lambda: covariate_shift(net(), F.cross_entropy, X, Y, True),
        TypeError,
        "lr must be a number",
    ),
    (
        "shift: lr nan",
        lambda: covariate_shift(net(), F.cross_entropy, X, Y, math.nan),
        ValueError,
        "lr must be a finite number >= 0",
    ),
    (
        "shift: lr '0.1'",
        lambda: covariate_shift(net(), F.cross_entropy, X, Y, "0.1"),
        TypeError,
        "lr must be a number",
    ),
    (
        "shift: NaN in x",
        lambda: covariate_shift(net(), F.cross_entropy, X_NAN, Y, 0.1),
        ValueError,
        "Your data contains NaN at x[2, 3]",
    ),
    (
        "shift: float64 x",
        lambda: covariate_shift(net(), F.cross_entropy, X.double(), Y, 0.1),
        TypeError,
        "x.to(torch.float32)",
    ),
    (
        "shift: int x",
        lambda: covariate_shift(net(), F.cross_entropy, X.long(), Y, 0.1),
        TypeError,
        "floating-point",
    ),
    (
        "shift: one sample, BN",
        lambda: covariate_shift(net(), F.cross_entropy, X[:1], Y[:1], 0.1),
        ValueError,
        "single sample",
    ),
    (
        "shift: 0-D x",
        lambda: covariate_shift(net(), F.cross_entropy, X[0, 0], Y, 0.1),
        ValueError,
        "shape",
    ),
    (
        "probe: step_sizes '0.1'",
        lambda: gradient_step_probe(net(), F.cross_entropy, X, Y, "0.1"),
        TypeError,
        "step_sizes must be a list",
    ),
    (
        "probe: step_sizes ['0.1']",
        lambda: gradient_step_probe(net(), F.cross_entropy, X, Y, ["0.1"]),
        TypeError,
        "it contains str",
    ),
    (
        "probe: step_sizes [True]",
        lambda: gradient_step_probe(net(), F.cross_entropy, X, Y, [True]),
        TypeError,
        "step_sizes",
    ),
    (
        "probe: step_sizes [nan]",
        lambda: gradient_step_probe(net(), F.cross_entropy, X, Y, [math.nan]),
        ValueError,
        "positive finite",
    ),
    (
        "probe: step_sizes None",
        lambda: gradient_step_probe(net(), F.cross_entropy, X, Y, None),
        TypeError,
        "step_sizes",
    ),
    (
        "probe: NaN in x",
        lambda: gradient_step_probe(net(), F.cross_entropy, X_NAN, Y, 0.1),
        ValueError,
        "NaN at x[2, 3]",
    ),
    (
        "probe: y shorter",
        lambda: gradient_step_probe(net(), F.cross_entropy, X, Y[:3], 0.1),
        ValueError,
        "must match",
    ),
    (
        "scale: numpy weight",
        lambda: bn_scale_response(W.numpy(), X, [1.0]),
        TypeError,
        "weight must be a torch tensor",
    ),
    (
        "scale: int x",
        lambda: bn_scale_response(W, X.long(), [1.0]),
        TypeError,
        "x must hold floating-point",
    ),
    (
        "scale: dtypes differ",
        lambda: bn_scale_response(W, X.double(), [1.0]),
        TypeError,
        "same dtype and device",
    ),
    ("scale: NaN in x", lambda: bn_scale_response(W, X_NAN, [1.0]), ValueError, "NaN at x[2, 3]"),
    ("scale: scales '2'", lambda: bn_scale_response(W, X, "2"), TypeError, "scales must be a list"),
    ("scale: scales []", lambda: bn_scale_response(W, X, []), ValueError, "scales is empty"),
    ("scale: scales [0]", lambda: bn_scale_response(W, X, [0]), ValueError, "positive"),
    (
        "scale: eps -1",
        lambda: bn_scale_response(W, X, [1.0], eps=-1),
        ValueError,
        "eps must be a finite number >= 0",
    ),
    ("scale: eps nan", lambda: bn_scale_response(W, X, [1.0], eps=math.nan), ValueError, "eps"),
    (
        "scale: eps '1e-5'",
        lambda: bn_scale_response(W, X, [1.0], eps="1e-5"),
        TypeError,
        "eps must be a number",
    ),
    (
        "scale: seed 0.5",
        lambda: bn_scale_response(W, X, [1.0], seed=0.5),
        TypeError,
        "seed must be a whole number",
    ),
]


@table(CASES)
def test_bad_argument_gets_a_teaching_error(call, error, phrase):
    assert_teaching_error(call, error, phrase)


def test_valid_arguments_still_work():
    assert len(bn_scale_response(W, X, 3.0)) == 1  # one scale given as a number
    assert len(gradient_step_probe(net(), F.cross_entropy, X, Y, np.float64(0.1))["losses"]) == 1
    rows = covariate_shift(net("none"), F.cross_entropy, X[:1], Y[:1], 0)  # plain: one sample is ok
    assert all(r["l2"] == 0 for r in rows)
