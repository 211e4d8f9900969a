"""bnteach.batchnorm for images: BatchNorm2d, batch_norm on (N, C, *), fold_into_conv.

torch.nn.BatchNorm2d, F.batch_norm and torch.nn.utils.fusion.fuse_conv_bn_eval are the
oracle, in float64."""

import copy
import io
import itertools
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from bnteach.batchnorm import (
    BatchNorm1d,
    BatchNorm2d,
    ChannelMismatchError,
    batch_norm,
    bn_layers,
    fold_into_conv,
)

DT = torch.float64


def rand(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=DT) * 1.7 + 0.4


def pair(C, momentum=0.1, affine=True, track=True, seed=0):
    kw = dict(momentum=momentum, affine=affine, track_running_stats=track, dtype=DT)
    ref, ours = nn.BatchNorm2d(C, **kw), BatchNorm2d(C, **kw)
    if affine:
        with torch.no_grad():
            for m in (ref, ours):
                g = torch.Generator().manual_seed(seed)
                m.weight.copy_(torch.rand(C, generator=g, dtype=DT) + 0.5)
                m.bias.copy_(torch.randn(C, generator=g, dtype=DT))
    return ref, ours


def same_buffers(ref, ours):
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        a, b = getattr(ref, name), getattr(ours, name)
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(b, a, rtol=0, atol=1e-12, msg=name)


def step(ref, ours, x, seed):
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_r, out_o = ref(xr), ours(xo)
    torch.testing.assert_close(out_o, out_r, rtol=0, atol=1e-10)
    w = rand(out_r.shape, seed + 99)
    (out_r * w).sum().backward()
    (out_o * w).sum().backward()
    torch.testing.assert_close(xo.grad, xr.grad, rtol=0, atol=1e-10)
    for name in ("weight", "bias"):
        pr, po = getattr(ref, name), getattr(ours, name)
        assert (pr is None) == (po is None)
        if pr is not None:
            torch.testing.assert_close(po.grad, pr.grad, rtol=0, atol=1e-10)
            pr.grad = po.grad = None
    same_buffers(ref, ours)


# 24 random configurations: shapes, momentum (incl. None), affine, tracking, a train/eval
# sequence; each compared with torch after every step.
_rng = random.Random(2018)
CONFIGS = [
    (
        (
            _rng.choice([1, 2, 3, 5]),
            _rng.choice([1, 3, 4]),
            _rng.choice([1, 2, 5]),
            _rng.choice([2, 3, 4]),
        ),
        _rng.choice([0.1, 0.0, 1.0, 0.37, None]),
        _rng.choice([True, False]),
        _rng.choice([True, False]),
        [_rng.choice(["train", "eval"]) for _ in range(4)],
    )
    for _ in range(24)
]


@pytest.mark.parametrize("shape,momentum,affine,track,modes", CONFIGS)
def test_module_matches_torch_on_random_configurations(shape, momentum, affine, track, modes):
    ref, ours = pair(shape[1], momentum, affine, track)
    for i, mode in enumerate(modes):
        ref.train(mode == "train")
        ours.train(mode == "train")
        step(ref, ours, rand(shape, i), seed=i)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(3, 4, 5, 2), (2, 3, 4), (4, 2, 2, 3, 2), (6, 5)])
def test_functional_matches_torch_on_any_rank(shape, training):
    C = shape[1]
    x = rand(shape, 1)
    rm_r, rv_r = rand((C,), 2), rand((C,), 3).abs() + 0.1
    rm_o, rv_o = rm_r.clone(), rv_r.clone()
    w, b = rand((C,), 4), rand((C,), 5)
    ref = F.batch_norm(x, rm_r, rv_r, w, b, training=training, momentum=0.2, eps=1e-3)
    ours = batch_norm(x, rm_o, rv_o, w, b, training=training, momentum=0.2, eps=1e-3)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(rm_o, rm_r, rtol=0, atol=1e-12)
    torch.testing.assert_close(rv_o, rv_r, rtol=0, atol=1e-12)


def test_running_var_uses_unbiased_factor_over_n_h_w():
    # the unbiased factor uses N * H * W values per channel (docs/references.md)
    x = rand((2, 3, 4, 5), 7)
    bn = BatchNorm2d(3, momentum=1.0, dtype=DT)
    bn(x)
    expected = x.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True)
    torch.testing.assert_close(bn.running_var, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(bn.running_mean, x.mean(dim=(0, 2, 3)), rtol=0, atol=1e-12)


def test_gradcheck_training_and_eval():
    x = rand((2, 3, 2, 3), 0).requires_grad_()
    w = rand((3,), 1).requires_grad_()
    b = rand((3,), 2).requires_grad_()

    def train_fn(x, w, b):
        return batch_norm(x, None, None, w, b, training=True)

    rm, rv = rand((3,), 3), rand((3,), 4).abs() + 0.5

    def eval_fn(x, w, b):
        return batch_norm(x, rm, rv, w, b, training=False)

    assert torch.autograd.gradcheck(train_fn, (x, w, b))
    assert torch.autograd.gradgradcheck(train_fn, (x, w, b))
    assert torch.autograd.gradcheck(eval_fn, (x, w, b))
    mod = BatchNorm2d(3, dtype=DT)
    assert torch.autograd.gradcheck(lambda x: mod(x), (x,))


def test_one_image_is_accepted_in_training_and_a_single_value_per_channel_is_not():
    # torch raises only when N * H * W == 1 (docs/references.md)
    ref, ours = pair(3)
    step(ref, ours, rand((1, 3, 2, 2), 0), seed=0)
    for bn in (nn.BatchNorm2d(3), BatchNorm2d(3)):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            bn(torch.randn(1, 3, 1, 1))
        bn.eval()
        assert bn(torch.randn(1, 3, 1, 1)).shape == (1, 3, 1, 1)


@pytest.mark.parametrize(
    "kwargs",
    [{}, dict(affine=False), dict(track_running_stats=False), dict(momentum=None, eps=1e-3)],
)
def test_repr_state_dict_keys_and_parameters_identical_to_torch(kwargs):
    ref, ours = nn.BatchNorm2d(5, **kwargs), BatchNorm2d(5, **kwargs)
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert type(ours)._version == type(ref)._version == 2


@pytest.mark.parametrize("direction", ["torch->ours", "ours->torch"])
def test_state_dict_loads_both_ways_after_training(direction):
    ref, ours = pair(4, momentum=None)
    ref.train(), ours.train()
    for i in range(3):
        step(ref, ours, rand((3, 4, 2, 2), i), seed=i)
    src, dst = (
        (ref, BatchNorm2d(4, dtype=DT))
        if direction == "torch->ours"
        else (ours, nn.BatchNorm2d(4, dtype=DT))
    )
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    dst.load_state_dict(torch.load(buf))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    x = rand((3, 4, 2, 2), 9)
    src.eval(), dst.eval()
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=1e-12)


def test_shares_its_code_with_batchnorm1d():
    # one implementation, two accepted ranks: the forward is literally the same function
    assert BatchNorm2d.forward is BatchNorm1d.forward
    assert BatchNorm2d.__mro__[1] is BatchNorm1d.__mro__[1]
    assert bn_layers(nn.Sequential(BatchNorm2d(2), nn.ReLU(), BatchNorm1d(2))) != []


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("shape", [(4, 3, 5), (4, 3), (2, 3, 4, 4, 4)])
def test_wrong_rank_gives_a_teaching_error(shape):
    with pytest.raises(ValueError, match=r"expected 4D input .*\(N, C, H, W\)") as info:
        BatchNorm2d(3)(torch.randn(shape))
    assert f"got {len(shape)}D input" in str(info.value)
    assert "unsqueeze(0)" in str(info.value)


def test_channel_mismatch_is_a_runtime_error_like_torch():
    with pytest.raises(RuntimeError):
        nn.BatchNorm2d(3)(torch.randn(2, 4, 3, 3))
    with pytest.raises(ChannelMismatchError, match="num_features = 3 but the input has 4") as e:
        BatchNorm2d(3)(torch.randn(2, 4, 3, 3))
    assert isinstance(e.value, RuntimeError) and isinstance(e.value, ValueError)
    assert "BatchNorm2d(4)" in str(e.value)


@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.bool])
def test_non_float_input_gives_a_teaching_error(dtype):
    with pytest.raises(TypeError, match=r"floating-point input.*x\.float\(\)"):
        BatchNorm2d(3)(torch.ones(2, 3, 2, 2, dtype=dtype))


def test_not_a_tensor_gives_a_teaching_error():
    with pytest.raises(TypeError, match="expects a torch.Tensor, got list"):
        BatchNorm2d(1)([[[[1.0, 2.0]]]])


@pytest.mark.parametrize(
    "num_features,err", [(0, ValueError), (2.5, TypeError), (True, TypeError), ("3", TypeError)]
)
def test_bad_num_features(num_features, err):
    with pytest.raises(err, match="num_features"):
        BatchNorm2d(num_features)


# ----------------------------------------------------------------------------- fold_into_conv


def trained_conv_bn(conv_kwargs, bn_kwargs, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(**conv_kwargs).to(DT)
    bn = nn.BatchNorm2d(conv.out_channels, dtype=DT, **bn_kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if bn.weight is not None:
            bn.weight.copy_(torch.rand(bn.num_features, generator=g, dtype=DT) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=g, dtype=DT))
        bn.train()
        for _ in range(5):
            bn(conv(torch.randn(4, conv.in_channels, 6, 6, generator=g, dtype=DT) * 2 + 1))
    return conv.eval(), bn.eval()


CONV_CASES = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=3, out_channels=4, kernel_size=3, bias=False, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 1), stride=2, groups=2, dilation=1),
    dict(in_channels=2, out_channels=2, kernel_size=2, padding=1, padding_mode="reflect"),
]


@pytest.mark.parametrize("conv_kwargs", CONV_CASES)
@pytest.mark.parametrize("bn_kwargs", [{}, dict(affine=False), dict(eps=1e-2)])
def test_fold_into_conv_agrees_with_torch_fusion_and_with_bn_of_conv(conv_kwargs, bn_kwargs):
    conv, bn = trained_conv_bn(conv_kwargs, bn_kwargs)
    before = {
        **copy.deepcopy(conv.state_dict()),
        **{"bn." + k: v.clone() for k, v in bn.state_dict().items()},
    }
    ours = fold_into_conv(conv, bn)
    theirs = fuse_conv_bn_eval(conv, bn)
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.bias, theirs.bias, rtol=0, atol=1e-12)
    x = rand((3, conv.in_channels, 7, 7), 5)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), bn(conv(x)), rtol=0, atol=1e-10)
    for attr in ("stride", "padding", "dilation", "groups", "padding_mode", "kernel_size"):
        assert getattr(ours, attr) == getattr(conv, attr), attr
    after = {**conv.state_dict(), **{"bn." + k: v for k, v in bn.state_dict().items()}}
    assert all(torch.equal(before[k], after[k]) for k in before)  # inputs unchanged


def test_fold_into_conv_with_our_batchnorm2d():
    conv, ref_bn = trained_conv_bn(CONV_CASES[0], {})
    ours_bn = BatchNorm2d(4, dtype=DT).eval()
    ours_bn.load_state_dict(ref_bn.state_dict())
    torch.testing.assert_close(
        fold_into_conv(conv, ours_bn).weight, fold_into_conv(conv, ref_bn).weight, rtol=0, atol=0
    )


def test_fold_into_conv_errors():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="out_channels=4 but bn has num_features=5"):
        fold_into_conv(conv, nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        fold_into_conv(conv, nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(TypeError, match="must be a BatchNorm layer"):
        fold_into_conv(conv, nn.GroupNorm(2, 4))
    with pytest.raises(TypeError, match="fold_into_linear"):
        fold_into_conv(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_folded_conv_is_one_conv_without_bn():
    conv, bn = trained_conv_bn(CONV_CASES[0], {})
    folded = fold_into_conv(conv, bn)
    assert isinstance(folded, nn.Conv2d) and not bn_layers(folded)


def test_every_random_config_was_distinct_enough():
    # guard the generator above: both modes, momentum None and tracking off all occur
    flat = list(itertools.chain.from_iterable(c[4] for c in CONFIGS))
    assert {"train", "eval"} <= set(flat)
    assert any(c[1] is None for c in CONFIGS) and any(not c[3] for c in CONFIGS)
    assert any(not c[2] for c in CONFIGS)
