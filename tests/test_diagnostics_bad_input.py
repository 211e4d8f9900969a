"""bnteach.diagnostics with the inputs a careless learner gives: no NaN, inf or 0 / 0 comes back
as a number. Each row: what the learner did, the call, the error, words of the message. The
model passed in is left bitwise as it was (the probes work on copies)."""

import math

import pytest
import torch
from conftest import assert_teaching_error
from torch import nn

from bnteach.diagnostics import (
    LayerRecorder,
    NoiseInjection,
    bn_scale_response,
    covariate_shift,
    gradient_step_probe,
    update_to_data,
    weight_snapshot,
)

LOSS = nn.BCEWithLogitsLoss()


def net(bn=True, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 6)] + ([nn.BatchNorm1d(6)] if bn else [])
    layers += [nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 1)]
    return nn.Sequential(*layers)


def data(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), (torch.rand(n, 1, generator=g) > 0.5).float()


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model, before):
    now = model.state_dict()
    for k, v in before.items():
        torch.testing.assert_close(now[k], v, rtol=0, atol=0, equal_nan=True, msg=k)


# ----------------------------------------------------------------------------- LayerRecorder


def _record(model, x, y=None):
    with LayerRecorder(model) as rec:
        out = model(x)
        if y is not None:
            LOSS(out, y).backward()
    return rec


def _with_nan(x):
    x = x.clone()
    x[2, 1] = math.nan
    return x


RECORDER_CASES = {
    # name: (model, x, y, words)
    "a batch of one (the output layer has one unit)": (
        lambda: net(bn=False),
        lambda: data()[0][:1],
        lambda: data()[1][:1],
        "standard deviation over a single value",
    ),
    "a batch of one, eval mode, forward only": (
        lambda: net().eval(),
        lambda: data()[0][:1],
        lambda: None,
        "layer 3's pre_std",
    ),
    "a NaN in the batch": (
        lambda: net(bn=False),
        lambda: _with_nan(data()[0]),
        lambda: data()[1],
        "NaN or infinity reached layer 1",
    ),
    "an empty batch": (
        lambda: net(bn=False),
        lambda: data()[0][:0],
        lambda: data()[1][:0],
        "the batch of the last pass was empty",
    ),
    "weights made infinite by a huge step": (
        lambda: net(bn=False).apply(_huge),
        lambda: data()[0],
        lambda: None,
        "NaN or infinity reached layer",
    ),
}


def _huge(m):
    if isinstance(m, nn.Linear):
        with torch.no_grad():
            m.weight.mul_(1e30)


@pytest.mark.parametrize("case", list(RECORDER_CASES))
def test_recorder_reports_no_number_for_an_undefined_statistic(case):
    make_model, make_x, make_y, words = RECORDER_CASES[case]
    model = make_model()
    rec = _record(model, make_x(), make_y())
    with pytest.raises(ValueError, match="LayerRecorder has no value for layer") as info:
        rec.table()
    assert words in str(info.value)
    with pytest.raises(ValueError):
        rec.column("pre_std")


def test_recorder_recovers_on_the_next_good_pass():
    model = net(bn=False)
    x, y = data()
    with LayerRecorder(model) as rec:
        model(_with_nan(x))
        LOSS(model(x), y).backward()
    rows = rec.table()
    assert all(math.isfinite(v) for row in rows for v in row.values())


def test_recorder_batch_of_two_is_fine_and_raises_no_warning():
    import warnings

    model = net(bn=False)
    x, y = data(n=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = _record(model, x, y).table()
    assert len(rows) == 3 and all(math.isfinite(r["grad_std"]) for r in rows)


# ----------------------------------------------------------------------------- update_to_data


def _zeroed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def test_update_to_data_with_zero_weights_before_the_step():
    model = _zeroed(net(bn=False))
    before = weight_snapshot(model)
    with pytest.raises(ValueError, match=r"Layer 1's weights were all zero before the step"):
        update_to_data(before, model)


def test_update_to_data_after_a_step_that_diverged():
    model = net(bn=False)
    before = weight_snapshot(model)
    with torch.no_grad():
        model[2].weight[0, 0] = math.inf
    with pytest.raises(ValueError, match=r"Layer 2's weights hold NaN or infinity after the step"):
        update_to_data(before, model)


def test_update_to_data_with_nan_in_the_snapshot():
    model = net(bn=False)
    before = weight_snapshot(model)
    before[0][0, 0] = math.nan
    with pytest.raises(ValueError, match="before the step"):
        update_to_data(before, model)


# ----------------------------------------------------------------------------- probes

X, Y = data()

PROBE_CASES = {
    # name: (call on a model, error, words)
    "gradient_step_probe at a step of 1e30": (
        lambda m: gradient_step_probe(m, LOSS, X, Y, [0.1, 1e30]),
        ValueError,
        "After a gradient step of size 1e+30",
    ),
    "covariate_shift at lr 1e30": (
        lambda m: covariate_shift(m, LOSS, X, Y, lr=1e30),
        ValueError,
        "lr=1e+30",
    ),
    "gradient_step_probe on a model with a NaN weight": (
        lambda m: gradient_step_probe(_nan_param(m), LOSS, X, Y, 0.1),
        ValueError,
        "parameter 0.weight holds NaN",
    ),
    "covariate_shift on a model with an infinite bias": (
        lambda m: covariate_shift(_nan_param(m, "2.bias", math.inf), LOSS, X, Y, lr=0.1),
        ValueError,
        "parameter 2.bias holds NaN or infinity",
    ),
    "covariate_shift on a model with zero weights (zero gradients)": (
        lambda m: covariate_shift(_zeroed(m), LOSS, X, Y, lr=0.1),
        ValueError,
        "gradient is exactly zero",
    ),
    "a model with nothing to train": (
        lambda m: gradient_step_probe(m.requires_grad_(False), LOSS, X, Y, [0.1]),
        ValueError,
        "no trainable parameters",
    ),
}


def _nan_param(model, name="0.weight", value=math.nan):
    with torch.no_grad():
        dict(model.named_parameters())[name].view(-1)[0] = value
    return model


@pytest.mark.parametrize("case", list(PROBE_CASES))
def test_probe_refuses_instead_of_returning_nan(case):
    call, error, words = PROBE_CASES[case]
    model = net(bn=False)
    assert_teaching_error(lambda: call(model), error, words)


@pytest.mark.parametrize("probe", ["gradient_step_probe", "covariate_shift"])
def test_failed_probe_leaves_the_model_as_it_was(probe):
    model = net()
    model.train()
    before = state(model)
    with pytest.raises(ValueError):
        if probe == "gradient_step_probe":
            gradient_step_probe(model, LOSS, X, Y, [1e30])
        else:
            covariate_shift(model, LOSS, X, Y, lr=1e30)
    assert_same_state(model, before)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_large_but_finite_steps_are_still_measured():
    result = gradient_step_probe(net(bn=False), LOSS, X, Y, 1e3)
    assert result["step_sizes"] == [1e3] and math.isfinite(result["beta"])


# ----------------------------------------------------------------------------- bn_scale_response

W = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
XS = torch.randn(8, 3, generator=torch.Generator().manual_seed(4))

SCALE_CASES = {
    "an all-zero weight": (lambda: bn_scale_response(torch.zeros(4, 3), XS, [1, 10]), "all zeros"),
    "an all-zero weight, eps > 0": (
        lambda: bn_scale_response(torch.zeros(4, 3), XS, [1, 10], eps=1e-5),
        "all zeros",
    ),
    "a zero row of the weight, eps 0": (
        lambda: bn_scale_response(torch.cat([torch.zeros(1, 3), W[1:]]), XS, [1, 10]),
        "channel(s) [0] of x (a W)^T are constant",
    ),
    "constant inputs, eps 0": (
        lambda: bn_scale_response(W, torch.ones(8, 3), [1, 10]),
        "constant over the batch",
    ),
    "a scale of 1e30 (float32 overflows)": (
        lambda: bn_scale_response(W, XS, [1e30]),
        "leaves the range of torch.float32",
    ),
    "a scale of 1e-30 (the variance underflows)": (
        lambda: bn_scale_response(W, XS, [1e-30]),
        "variance underflows",
    ),
    "a scale of 1e200 in float64": (
        lambda: bn_scale_response(W.double(), XS.double(), [1e200]),
        "leaves the range of torch.float64",
    ),
}


@pytest.mark.parametrize("case", list(SCALE_CASES))
def test_bn_scale_response_refuses_meaningless_numbers(case):
    call, words = SCALE_CASES[case]
    with pytest.raises(ValueError) as info:
        call()
    assert words in str(info.value)


@pytest.mark.parametrize(
    "scales",
    [10, 10.0, torch.tensor(10.0), torch.tensor([10.0]), [10], (10,)],
    ids=["int", "float", "0-d tensor", "1-d tensor", "list", "tuple"],
)
def test_bn_scale_response_takes_one_scale_in_any_form(scales):
    # documented: scales may be one number or a list (a tensor or array too)
    (row,) = bn_scale_response(W.double(), XS.double(), scales, seed=0)
    assert row["a"] == 10.0
    assert row["output_change"] < 1e-12 and abs(row["grad_ratio"] - 0.1) < 1e-12


@pytest.mark.parametrize("scales", [torch.ones(2, 2), torch.tensor([True]), "10"])
def test_bn_scale_response_refuses_scales_of_the_wrong_kind(scales):
    with pytest.raises(TypeError, match="scales must be"):
        bn_scale_response(W, XS, scales)


# ----------------------------------------------------------------------------- NoiseInjection


def test_noise_too_large_for_the_dtype_is_refused():
    layer = NoiseInjection(4, shift=1e300)
    with pytest.raises(ValueError, match="too large for torch.float32"):
        layer(torch.ones(3, 4))
    assert layer.training


def test_noise_keeps_a_nan_of_the_input_where_it_was():
    # NaN in, NaN out at that place: the layer does not hide or spread it
    x = torch.ones(3, 4)
    x[1, 2] = math.nan
    out = NoiseInjection(4)(x)
    assert torch.isnan(out[1, 2]) and torch.isnan(out).sum() == 1
