"""The checks of notebook 07's exercises: right answers pass, each usual mistake gets its own
message, and a learner's exception, NaN, wrong shape/dtype, wrong keyword or None is feedback,
never an internal error."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnteach import exercises
from bnteach.batchnorm import fold_into_conv
from bnteach.exercises import cnn as ex
from bnteach.exercises import kit


def good_spatial_bn(x, weight, bias, eps):
    N, C, H, W = x.shape
    flat = x.permute(0, 2, 3, 1).reshape(-1, C)
    mean = flat.mean(0)
    var = flat.var(0, unbiased=False)
    y = (flat - mean) / torch.sqrt(var + eps) * weight + bias
    return y.reshape(N, H, W, C).permute(0, 3, 1, 2)


def _norm(x, dims, eps, unbiased=False):
    m = x.mean(dims, keepdim=True)
    return (x - m) / torch.sqrt(x.var(dims, keepdim=True, unbiased=unbiased) + eps)


def ch(t):
    return t.reshape(1, -1, 1, 1)


SPATIAL_MISTAKES = {
    "no permute": (
        lambda x, w, b, e: (
            (lambda f: (f - f.mean(0)) / torch.sqrt(f.var(0, unbiased=False) + e))(
                x.reshape(-1, x.shape[1])
            ).reshape(x.shape)
            * ch(w)
            + ch(b)
        ),
        "mixes channels",
    ),
    "per pixel": (lambda x, w, b, e: _norm(x, (0,), e) * ch(w) + ch(b), "per pixel"),
    "instance": (lambda x, w, b, e: _norm(x, (2, 3), e) * ch(w) + ch(b), "InstanceNorm"),
    "layer": (lambda x, w, b, e: _norm(x, (1, 2, 3), e) * ch(w) + ch(b), "LayerNorm"),
    "unbiased": (lambda x, w, b, e: _norm(x, (0, 2, 3), e, True) * ch(w) + ch(b), "unbiased"),
    "no affine": (lambda x, w, b, e: _norm(x, (0, 2, 3), e), "scale and shift"),
    "no bias": (lambda x, w, b, e: _norm(x, (0, 2, 3), e) * ch(w), "lacks the shift"),
    "eps outside": (
        lambda x, w, b, e: (
            (x - x.mean((0, 2, 3), keepdim=True))
            / (x.var((0, 2, 3), keepdim=True, unbiased=False).sqrt() + e)
            * ch(w)
            + ch(b)
        ),
        "outside the square root",
    ),
    "detached": (
        lambda x, w, b, e: (
            (x - x.mean((0, 2, 3), keepdim=True).detach())
            / torch.sqrt(x.var((0, 2, 3), keepdim=True, unbiased=False).detach() + e)
            * ch(w)
            + ch(b)
        ),
        "detached",
    ),
    "no grad": (lambda x, w, b, e: good_spatial_bn(x, w, b, e).detach(), "No gradient flows"),
    "in place": (lambda x, w, b, e: _inplace(x, w, b, e), "in place"),
    "raises": (lambda x, w, b, e: 1 / 0, "raised ZeroDivisionError"),
    "nan": (lambda x, w, b, e: x * float("nan"), "contains NaN"),
    "shape": (lambda x, w, b, e: good_spatial_bn(x, w, b, e).reshape(-1, x.shape[1]), "shape"),
    "dtype": (lambda x, w, b, e: good_spatial_bn(x, w, b, e).float(), "dtype"),
    "list": (lambda x, w, b, e: [1.0], "torch tensor"),
    "kwarg": (lambda x, weight, bias, *, eps: x, "does not accept that"),
}


def _inplace(x, w, b, e):
    out = good_spatial_bn(x.clone(), w, b, e)
    x.mul_(2)
    return out


def test_spatial_bn_right_answer():
    fb = ex.check_spatial_bn(good_spatial_bn, show=False)
    assert fb.correct, fb.message


@pytest.mark.parametrize("name", list(SPATIAL_MISTAKES))
def test_spatial_bn_mistakes_get_specific_feedback(name):
    fn, phrase = SPATIAL_MISTAKES[name]
    fb = ex.check_spatial_bn(fn, show=False)
    assert fb.status == "wrong", fb.message
    assert phrase in fb.message, fb.message
    assert "Internal error" not in fb.message


def test_spatial_bn_placeholders_are_not_attempted():
    def todo(x, weight, bias, eps):
        raise NotImplementedError

    assert ex.check_spatial_bn(None, show=False).status == "not attempted"
    assert ex.check_spatial_bn(todo, show=False).status == "not attempted"
    assert ex.check_spatial_bn(lambda x, w, b, e: None, show=False).status == "not attempted"


RIGHT_AXES = {"batch": (0, 2, 3), "layer": (1, 2, 3), "instance": (2, 3)}


@pytest.mark.parametrize("choice", ["group", "layer", "instance"])
def test_norm_axes_right_answers(choice):
    fb = ex.check_norm_axes(RIGHT_AXES, choice, show=False)
    assert fb.correct, fb.message
    fb = ex.check_norm_axes(
        {"batch": [0, -2, -1], "layer": (1, 2, 3), "instance": (3, 2)}, choice, show=False
    )
    assert fb.correct, fb.message


@pytest.mark.parametrize(
    "axes,choice,phrase",
    [
        ({**RIGHT_AXES, "batch": (1, 2, 3)}, "group", "axes of layer"),
        ({**RIGHT_AXES, "layer": (0, 2, 3)}, "group", "axes of batch"),
        ({**RIGHT_AXES, "instance": (0,)}, "group", "per pixel"),
        ({**RIGHT_AXES, "batch": (0, 5)}, "group", "not a set of distinct dims"),
        ({**RIGHT_AXES, "batch": "0,2,3"}, "group", "tuple of dims"),
        ({"batch": (0, 2, 3)}, "group", "lacks 'layer', 'instance'"),
        ({**RIGHT_AXES, "group": (1,)}, "group", "unexpected 'group'"),
        (RIGHT_AXES, "batch", "depends on the batch"),
        (RIGHT_AXES, "GroupNorm", "should be one of"),
        ([(0, 2, 3)], "group", "should be a dict"),
    ],
)
def test_norm_axes_mistakes(axes, choice, phrase):
    fb = ex.check_norm_axes(axes, choice, show=False)
    assert fb.status == "wrong" and phrase in fb.message, fb.message


def test_norm_axes_none_and_wrong_call():
    assert ex.check_norm_axes(None, None, show=False).status == "not attempted"
    blank = {"batch": None, "layer": None, "instance": None}
    assert ex.check_norm_axes(blank, None, show=False).status == "not attempted"
    assert ex.check_norm_axes({**RIGHT_AXES, "layer": None}, "group", show=False).status == (
        "not attempted"
    )
    fb = ex.check_norm_axes(RIGHT_AXES, show=False)  # a missing argument is the learner's
    assert fb.status == "wrong" and "arguments it does not take" in fb.message
    assert "Internal error" not in fb.message
    fb = ex.check_norm_axes(RIGHT_AXES, choise="group", show=False)
    assert "arguments it does not take" in fb.message


def test_fold_conv_right_answers():
    assert ex.check_fold_conv(fold_into_conv, show=False).correct

    def manual(conv, bn):
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        new = copy.deepcopy(conv)
        b = conv.bias if conv.bias is not None else torch.zeros_like(s)
        with torch.no_grad():
            new.weight.mul_(s.reshape(-1, 1, 1, 1))
            new.bias = nn.Parameter((b - bn.running_mean) * s + bn.bias)
        return new

    fb = ex.check_fold_conv(manual, show=False)
    assert fb.correct, fb.message


def _variant(fault):
    def fold(conv, bn):
        folded = kit.fold_variant(conv, bn, fault)
        return folded

    return fold


def _in_place(conv, bn):
    with torch.no_grad():
        conv.weight.mul_(2)
    return fold_into_conv(conv, bn)


def _runs_train(conv, bn):
    bn.train()
    bn(torch.randn(4, 4, 3, 3))
    bn.eval()
    return fold_into_conv(conv, bn)


def _batch_stats(conv, bn):
    x = torch.randn(6, 4, 5, 5, generator=torch.Generator().manual_seed(3)) * 2 + 0.5
    h = conv(x).detach()
    fake = copy.deepcopy(bn)
    fake.running_mean = h.mean((0, 2, 3))
    fake.running_var = h.var((0, 2, 3), unbiased=False)
    return fold_into_conv(conv, fake)


def _no_bias_support(conv, bn):
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    new = copy.deepcopy(conv)
    with torch.no_grad():
        new.weight.mul_(s.reshape(-1, 1, 1, 1))
        new.bias.copy_((conv.bias - bn.running_mean) * s + bn.bias)
    return new


@pytest.mark.parametrize(
    "fn,phrase",
    [
        (_variant("eps none"), "leaves out `eps`"),
        (_variant("var"), "instead of its square root"),
        (_variant("in axis"), "INPUT channels"),
        (_variant("no beta"), "drops BN's shift"),
        (_variant("no layer bias"), "drops the conv's own bias"),
        (_variant("no mean"), "subtract running_mean"),
        (_in_place, "in place"),
        (_runs_train, "training mode"),
        (_batch_stats, "training mode (batch statistics)"),
        (_no_bias_support, "the conv has no bias"),
        (lambda conv, bn: nn.Sequential(conv, bn), "should return an nn.Conv2d"),
        (lambda conv, bn: nn.Conv2d(4, 4, 3), "shape"),
        (lambda conv, bn: nn.Conv2d(4, 4, 3, padding=1, bias=False), "has no bias"),
        (lambda conv, bn: 1 / 0, "raised ZeroDivisionError"),
        (lambda conv: conv, "does not accept that"),
    ],
)
def test_fold_conv_mistakes(fn, phrase):
    fb = ex.check_fold_conv(fn, show=False)
    assert fb.status == "wrong" and phrase in fb.message, fb.message


def test_fold_conv_nan_output():
    def nan_fold(conv, bn):
        new = fold_into_conv(conv, bn)
        with torch.no_grad():
            new.bias.fill_(float("nan"))
        return new

    fb = ex.check_fold_conv(nan_fold, show=False)
    assert fb.status == "wrong" and "NaN" in fb.message


def test_fold_conv_none():
    assert ex.check_fold_conv(None, show=False).status == "not attempted"
    assert ex.check_fold_conv(lambda c, b: None, show=False).status == "not attempted"


def test_progress_is_separate_from_notebook_05():
    ex.reset()
    assert not ex.progress().all_correct
    ex.check_spatial_bn(good_spatial_bn, show=False)
    ex.check_norm_axes(RIGHT_AXES, "group", show=False)
    ex.check_fold_conv(fold_into_conv, show=False)
    assert ex.progress().all_correct
    assert "3 of 3" in repr(ex.progress())
    assert "07.1" not in exercises.EXERCISES  # 05's table is unchanged
    assert exercises.cnn is ex  # registered in the package


def test_checks_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ex.check_fold_conv(fold_into_conv, show=False)
    ex.check_spatial_bn(good_spatial_bn, show=False)
    assert torch.equal(torch.rand(3), expected)


def test_reference_solution_agrees_with_torch():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    w, b = torch.rand(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64)
    torch.testing.assert_close(
        good_spatial_bn(x, w, b, 1e-5), F.batch_norm(x, None, None, w, b, training=True)
    )


def test_notebooks_07_and_08_share_the_feedback_core():
    """A learner's own exception, or a wrong keyword, is named as theirs in 07 and 08 too (the
    checks use the kit's Notebook.check with their own titles): never an internal error."""
    from bnteach.exercises import backward

    def broken(*args):
        raise ZeroDivisionError("oops")

    for check in (ex.check_spatial_bn, backward.check_mean_only_backward):
        fb = check(broken, show=False)
        assert fb.status == "wrong" and "raised ZeroDivisionError: oops" in fb.message
        assert "Internal error" not in fb.message
        fb = check(broken, colour="red", show=False)
        assert "arguments it does not take" in fb.message and "colour" in fb.message
    assert backward.check_variance_term(None, show=False).exercise.startswith("Exercise 08.2")
