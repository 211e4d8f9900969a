"""bnteach.batchnorm as a careless learner uses it: every bad call gets a teaching error (or a
documented result), and a call that fails leaves the layer or model bitwise as it was.

Table-driven: each row is (what the learner did, the call, the error class, words the message
must contain). Where torch itself behaves differently the row is also a departure, pinned in
tests/test_batchnorm_torch_cases.py.
"""

import copy
import math

import pytest
import torch
from conftest import assert_teaching_error
from torch import nn

from bnteach import checks
from bnteach.batchnorm import (
    BatchNorm1d,
    BatchNorm2d,
    ChannelMismatchError,
    DtypeMismatchError,
    NonFiniteBatchError,
    NonFiniteStateError,
    batch_norm,
    bn_layers,
    fold_into_conv,
    fold_into_linear,
    freeze,
    recalibrate,
    unfreeze,
)
from bnteach.models import MLPWithBN, SimpleMLP

X = torch.randn(8, 3)


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_state(module, before):
    """Bitwise the same state dict (a NaN equals a NaN in the same place)."""
    now = module.state_dict()
    assert list(now) == list(before)
    for k, v in before.items():
        assert now[k].dtype == v.dtype, k
        torch.testing.assert_close(now[k], v, rtol=0, atol=0, equal_nan=True, msg=k)


def layer_with(**values):
    """A trained BatchNorm1d(3) whose named tensors have one entry set to a value."""
    bn = BatchNorm1d(3)
    bn(torch.randn(8, 3))
    with torch.no_grad():
        for name, value in values.items():
            getattr(bn, name)[1] = value
    return bn


# ----------------------------------------------------------------------------- the layers

LAYER_CASES = {
    # name: (make layer, mode, input, error, words)
    "training='False' to the module": (
        lambda: _set(BatchNorm1d(3), "training", "False"),
        None,
        X,
        TypeError,
        "training (set it with .train() or .eval()) must be True or False",
    ),
    "track_running_stats='False' set later": (
        lambda: _set(BatchNorm1d(3), "track_running_stats", "False"),
        "train",
        X,
        TypeError,
        "track_running_stats must be True or False",
    ),
    "NaN in a training batch": (
        lambda: BatchNorm1d(3),
        "train",
        X.index_fill(1, torch.tensor([2]), math.nan),
        NonFiniteBatchError,
        "channel(s) 2",
    ),
    "inf in a training batch of images": (
        lambda: BatchNorm2d(3),
        "train",
        torch.randn(2, 3, 2, 2).index_fill(1, torch.tensor([0]), math.inf),
        NonFiniteBatchError,
        "NaN or infinite values in channel(s) 0",
    ),
    "values whose variance overflows float32": (
        lambda: BatchNorm1d(3),
        "train",
        X * 1e20,
        NonFiniteBatchError,
        "overflows torch.float32",
    ),
    "NaN weight, training": (
        lambda: layer_with(weight=math.nan),
        "train",
        X,
        NonFiniteStateError,
        "weight holds NaN or infinite values in channel(s) 1",
    ),
    "inf bias, eval": (
        lambda: layer_with(bias=math.inf),
        "eval",
        X,
        NonFiniteStateError,
        "bias holds NaN",
    ),
    "NaN running_mean, eval": (
        lambda: layer_with(running_mean=math.nan),
        "eval",
        X,
        NonFiniteStateError,
        "running_mean holds NaN",
    ),
    "NaN running_var, training (it would stay NaN)": (
        lambda: layer_with(running_var=math.nan),
        "train",
        X,
        NonFiniteStateError,
        "running_var holds NaN",
    ),
    "negative running_var, eval": (
        lambda: layer_with(running_var=-1.0),
        "eval",
        X,
        NonFiniteStateError,
        "negative in channel(s) 1",
    ),
    "float64 input to a float32 layer": (
        lambda: BatchNorm1d(3),
        "train",
        X.double(),
        DtypeMismatchError,
        "one dtype for data and layer",
    ),
    "one image of one pixel": (
        lambda: BatchNorm2d(3),
        "train",
        torch.randn(1, 3, 1, 1),
        ValueError,
        "more than 1 value per channel",
    ),
    "momentum a string set later": (
        lambda: _set(BatchNorm1d(3), "momentum", "0.1"),
        "train",
        X,
        TypeError,
        "momentum must be a number",
    ),
    "eps 0 set later": (
        lambda: _set(BatchNorm1d(3), "eps", 0.0),
        "eval",
        X,
        ValueError,
        "eps must be positive",
    ),
}


def _set(module, name, value):
    setattr(module, name, value)
    return module


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_bad_layer_call_raises_and_changes_nothing(case):
    make, mode, x, error, words = LAYER_CASES[case]
    bn = make()
    if mode is not None:
        bn.train(mode == "train")
    before = state(bn)
    assert_teaching_error(lambda: bn(x), error, words)
    assert_same_state(bn, before)


CONSTRUCTOR_CASES = {
    "affine='False'": (dict(affine="False"), TypeError, "affine must be True or False"),
    "track_running_stats=1": (dict(track_running_stats=1), TypeError, "track_running_stats"),
    "bias='no'": (dict(bias="no"), TypeError, "bias must be True or False"),
    "dtype=torch.long": (dict(dtype=torch.long), TypeError, "floating-point torch dtype"),
    "dtype='float32'": (dict(dtype="float32"), TypeError, "floating-point torch dtype"),
    "eps=nan": (dict(eps=math.nan), ValueError, "eps must be positive and finite"),
    "momentum=0.9 + 1": (dict(momentum=1.9), ValueError, "weight of the NEW batch"),
}


@pytest.mark.parametrize("case", list(CONSTRUCTOR_CASES))
def test_bad_constructor_arguments(case):
    kwargs, error, words = CONSTRUCTOR_CASES[case]
    with pytest.raises(error, match=words):
        BatchNorm1d(3, **kwargs)


# ----------------------------------------------------------------------------- the function

RM, RV = torch.zeros(3), torch.ones(3)

FUNCTION_CASES = {
    "training='False'": (dict(training="False"), TypeError, "training must be True or False"),
    "training=1": (dict(training=1), TypeError, "training must be True or False"),
    "training=None": (dict(training=None), TypeError, "training must be True or False"),
    "weight a list": (dict(weight=[1.0, 1.0, 1.0]), TypeError, "weight must be a tensor"),
    "running_mean of shape (1, 3)": (
        dict(running_mean=RM[None], running_var=RV[None]),
        ChannelMismatchError,
        "must have shape (C,) = (3,)",
    ),
    "integer running statistics": (
        dict(running_mean=RM.long(), running_var=RV.long()),
        DtypeMismatchError,
        "running_mean must hold floating-point numbers",
    ),
    "weight float64, buffers float32": (
        dict(weight=torch.ones(3, dtype=torch.float64)),
        DtypeMismatchError,
        "weight is torch.float64",
    ),
    "float16 input, float32 weight, float16 buffers": (
        dict(input=X.half(), running_mean=RM.half(), running_var=RV.half(), weight=torch.ones(3)),
        DtypeMismatchError,
        "mix dtypes",
    ),
    "NaN weight": (
        dict(weight=torch.tensor([1.0, math.nan, 1.0])),
        NonFiniteStateError,
        "weight holds NaN",
    ),
    "eps=0": (dict(eps=0.0), ValueError, "eps must be positive"),
    "eps a tensor": (dict(eps=torch.tensor(1e-5)), TypeError, "eps must be a small positive"),
    "momentum a tensor": (dict(momentum=torch.tensor(0.1)), TypeError, "momentum must be"),
}


@pytest.mark.parametrize("case", list(FUNCTION_CASES))
def test_bad_function_call_raises_and_changes_nothing(case):
    kwargs, error, words = FUNCTION_CASES[case]
    args = dict(input=X, running_mean=RM.clone(), running_var=RV.clone(), training=True)
    args |= kwargs
    before = [args["running_mean"].clone(), args["running_var"].clone()]
    assert_teaching_error(lambda: batch_norm(**args), error, words)
    assert torch.equal(args["running_mean"], before[0])
    assert torch.equal(args["running_var"], before[1])


def test_batch_norm_with_training_false_changes_nothing_even_with_a_truthy_flag_refused():
    # the case: batch_norm(..., training='False') used to update the running stats
    rm, rv = RM.clone(), RV.clone()
    with pytest.raises(TypeError):
        batch_norm(X, rm, rv, training="False")
    batch_norm(X, rm, rv, training=False)
    assert torch.equal(rm, RM) and torch.equal(rv, RV)


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 5), (4, 3, 0), (4, 0)])
def test_empty_input_returns_an_empty_output_and_changes_nothing(shape):
    # documented: as in torch, an input with no values has nothing to normalize and nothing to
    # learn from; the running statistics stay as they were (not reset to 0 / 1)
    x = torch.randn(shape)
    c = shape[1]
    rm, rv = torch.full((c,), 0.5), torch.full((c,), 2.0)
    for training in (True, False):
        out = batch_norm(x, rm, rv, training=training)
        assert out.shape == x.shape
        assert torch.equal(rm, torch.full((c,), 0.5)) and torch.equal(rv, torch.full((c,), 2.0))
    if c:
        bn = BatchNorm1d(c)
        bn(torch.randn(4, c))
        before = state(bn)
        assert bn(x).shape == x.shape
        assert_same_state(bn, before)  # not counted either (a departure from torch)


def test_constant_channel_is_finite():
    # variance 0 is fine: eps keeps the division finite, the output is 0 (then bias)
    out = batch_norm(torch.ones(8, 3), None, None, training=True)
    assert torch.equal(out, torch.zeros(8, 3))


# ----------------------------------------------------------------------------- folding


def _bn(**values):
    bn = nn.BatchNorm1d(2).eval()
    with torch.no_grad():
        for name, value in values.items():
            getattr(bn, name).fill_(value)
    return bn


FOLD_CASES = {
    "eps 0 and a zero running_var": (
        lambda: (nn.Linear(3, 2), _set(_bn(running_var=0.0), "eps", 0.0)),
        "running_var + eps is 0",
    ),
    "negative running_var": (lambda: (nn.Linear(3, 2), _bn(running_var=-1.0)), "not positive"),
    "NaN running_mean": (lambda: (nn.Linear(3, 2), _bn(running_mean=math.nan)), "running_mean"),
    "inf weight": (lambda: (nn.Linear(3, 2), _bn(weight=math.inf)), "bn.weight holds NaN"),
    "NaN in the linear's weight": (
        lambda: (
            _set(nn.Linear(3, 2), "weight", nn.Parameter(torch.full((2, 3), math.nan))),
            _bn(),
        ),
        "the linear's weight holds NaN",
    ),
    "NaN eps on the layer": (
        lambda: (nn.Linear(3, 2), _set(_bn(), "eps", math.nan)),
        "running_var + eps",
    ),
}


@pytest.mark.parametrize("case", list(FOLD_CASES))
def test_fold_refuses_what_would_give_nan_weights(case):
    make, words = FOLD_CASES[case]
    linear, bn = make()
    before = [state(linear), state(bn)]
    with pytest.raises(ValueError) as info:
        fold_into_linear(linear, bn)
    assert words in str(info.value)
    assert_same_state(linear, before[0])
    assert_same_state(bn, before[1])


def test_fold_into_conv_refuses_nan_statistics_too():
    conv, bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2).eval()
    with torch.no_grad():
        bn.running_mean[0] = math.nan
    with pytest.raises(
        ValueError, match=r"running_mean holds NaN or infinite values in channel\(s\) 0"
    ):
        fold_into_conv(conv, bn)


# ----------------------------------------------------------------------------- recalibrate


def trained(model_cls):
    torch.manual_seed(0)
    if model_cls == "ours":
        model = nn.Sequential(nn.Linear(5, 4), BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
    else:
        model = MLPWithBN(5, 4, 3, 1)
    for _ in range(3):
        model(torch.randn(16, 5) * 2 + 1)
    return model.eval()


def _nan_weights(model):
    with torch.no_grad():
        next(model.parameters())[0, 0] = math.nan
    return model


RECALIBRATE_CASES = {
    # name: (loader, error, words); the model is MLPWithBN (torch's layers) or ours
    "NaN in a later batch": (
        lambda: [torch.randn(16, 5), torch.randn(16, 5).index_fill(0, torch.tensor([3]), math.nan)],
        checks.DataError,
        r"batch 1 of the loader, x\[3, 0\]",
    ),
    "inf in a later (x, y) batch": (
        lambda: [(torch.randn(16, 5), 0), (torch.full((16, 5), math.inf), 0)],
        checks.DataError,
        "an infinite value at batch 1",
    ),
    "values so large the statistics overflow": (
        lambda: [torch.randn(16, 5) * 1e30],
        ValueError,  # from recalibrate (torch's layers) or from our layer itself
        "would hold NaN or infinity|overflows torch.float32",
    ),
    "an empty batch": (lambda: [torch.randn(16, 5), torch.empty(0, 5)], ValueError, "no samples"),
    "integer inputs": (lambda: [torch.ones(16, 5, dtype=torch.long)], TypeError, "torch.int64"),
    "(X, y) instead of a loader": (
        lambda: (torch.randn(16, 5), torch.zeros(16, 1)),
        TypeError,
        r"looks like \(X, y\)",
    ),
}


@pytest.mark.parametrize("layers", ["torch", "ours"])
@pytest.mark.parametrize("case", list(RECALIBRATE_CASES))
def test_failed_recalibrate_leaves_the_state_dict_as_it_was(case, layers):
    make, error, words = RECALIBRATE_CASES[case]
    model = trained(layers)
    before = state(model)
    with pytest.raises(error, match=words):
        recalibrate(model, make())
    assert_same_state(model, before)
    assert all(not m.training for m in model.modules())


@pytest.mark.parametrize("layers", ["torch", "ours"])
def test_recalibrate_refuses_a_model_whose_weights_are_nan(layers):
    model = _nan_weights(trained(layers))
    before = state(model)
    with pytest.raises(
        ValueError, match="weights that diverged|layer before this one that diverged"
    ):
        recalibrate(model, [torch.randn(16, 5)])
    assert_same_state(model, before)


def test_recalibrate_still_gives_the_population_statistics_after_a_refusal():
    model = trained("torch")
    x = torch.randn(64, 5)
    with pytest.raises(ValueError):
        recalibrate(model, [x, torch.empty(0, 5)])
    recalibrate(model, [x])
    h = model.network[0](x)
    torch.testing.assert_close(model.network[1].running_mean, h.mean(0))


# ----------------------------------------------------------------------------- freeze


@pytest.mark.parametrize("op", [freeze, unfreeze, recalibrate])
def test_a_model_without_batchnorm_is_refused_alike(op):
    # freeze and unfreeze now do what recalibrate does: a ValueError that says why
    model = SimpleMLP(5, 4, 3, 1)
    before = state(model)
    args = (model, [torch.randn(4, 5)]) if op is recalibrate else (model,)
    with pytest.raises(ValueError, match="Nothing to"):
        op(*args)
    assert_same_state(model, before)


def test_freeze_and_unfreeze_still_work_on_a_bn_model():
    model = MLPWithBN(5, 4, 3, 1)
    freeze(model)
    model.train()
    assert not any(m.training for m in bn_layers(model))
    unfreeze(model)
    model.train()
    assert all(m.training for m in bn_layers(model))


def test_deepcopy_of_a_layer_refused_a_nan_batch_is_usable():
    bn = BatchNorm1d(3)
    with pytest.raises(NonFiniteBatchError):
        bn(torch.full((4, 3), math.nan))
    clone = copy.deepcopy(bn)
    clone(torch.randn(4, 3))
    assert clone.num_batches_tracked.item() == 1
