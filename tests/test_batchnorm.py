"""Tests for bnteach.batchnorm; torch.nn.BatchNorm1d / F.batch_norm are the oracle (float64)."""

import copy
import inspect
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnteach.batchnorm import (
    BatchNorm1d,
    batch_norm,
    bn_layers,
    fold_into_linear,
    freeze,
    recalibrate,
    unfreeze,
)

C = 4
DT = torch.float64

# torch.nn.BatchNorm1d gained the keyword-only bias= (and bias=... in its repr) in torch 2.13
TORCH_BN_HAS_BIAS = "bias" in inspect.signature(nn.BatchNorm1d).parameters
needs_torch_bn_bias = pytest.mark.skipif(
    not TORCH_BN_HAS_BIAS,
    reason="torch.nn.BatchNorm1d has no bias= keyword (nor bias= in its repr) in this PyTorch",
)

# (affine, bias) combinations for the torch-oracle tests; bias=False needs torch's keyword
AFFINE_BIAS = [
    pytest.param(True, True, id="affine"),
    pytest.param(True, False, id="affine-nobias", marks=needs_torch_bn_bias),
    pytest.param(False, True, id="noaffine"),
]


def bias_kwargs(bias):
    """{} for the default bias=True (works on any torch), else {"bias": False}."""
    return {} if bias else {"bias": False}


def make_input(shape, seed):
    """Random float64 input with a non-zero per-channel mean and non-unit spread."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=DT) * 2.0 + 0.5
    return x


def make_pair(momentum, affine, track, bias=True):
    """(torch BN, our BN) with identical arguments and identical random weight/bias."""
    kwargs = dict(momentum=momentum, affine=affine, track_running_stats=track, dtype=DT)
    kwargs.update(bias_kwargs(bias))
    ref, ours = nn.BatchNorm1d(C, **kwargs), BatchNorm1d(C, **kwargs)
    if affine:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in (ref, ours):
                g.manual_seed(0)
                m.weight.copy_(torch.rand(C, generator=g, dtype=DT) + 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(C, generator=g, dtype=DT))
    return ref, ours


def assert_same_state(ref, ours):
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        a, b = getattr(ref, name), getattr(ours, name)
        if a is None:
            assert b is None, name
        else:
            torch.testing.assert_close(b, a, rtol=0, atol=1e-12, msg=name)


def step_and_compare(ref, ours, shape, seed):
    """One forward/backward on both modules; compare output, grads and buffers."""
    x = make_input(shape, seed)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_ours = ref(x_ref), ours(x_ours)
    torch.testing.assert_close(out_ours, out_ref, rtol=0, atol=1e-10)
    w = make_input(out_ref.shape, seed + 1000)
    (out_ref * w).sum().backward()
    (out_ours * w).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=0, atol=1e-10)
    for name in ("weight", "bias"):
        p_ref, p_ours = getattr(ref, name), getattr(ours, name)
        if p_ref is None:
            assert p_ours is None
        else:
            torch.testing.assert_close(p_ours.grad, p_ref.grad, rtol=0, atol=1e-10)
            p_ref.grad, p_ours.grad = None, None
    assert_same_state(ref, ours)


# ----------------------------------------------------------------------------- module vs torch


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("shape", [(8, C), (5, C, 3)], ids=["NC", "NCL"])
@pytest.mark.parametrize("track", [True, False], ids=["track", "notrack"])
@pytest.mark.parametrize("affine, bias", AFFINE_BIAS)
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_module_matches_torch(momentum, affine, bias, track, shape, mode):
    ref, ours = make_pair(momentum, affine, track, bias)
    if mode == "eval":  # give the running statistics non-trivial values first
        for seed in range(2):
            step_and_compare(ref, ours, shape, seed=100 + seed)
        ref.eval()
        ours.eval()
    for seed in range(4):
        step_and_compare(ref, ours, shape, seed)


def test_turning_tracking_off_after_training_matches_torch():
    # a known PyTorch pattern: buffers stay, training stops updating them, eval still uses them
    ref, ours = make_pair(0.1, True, True)
    for seed in range(2):
        step_and_compare(ref, ours, (8, C), seed)
    ref.track_running_stats = ours.track_running_stats = False
    for seed in range(2, 4):
        step_and_compare(ref, ours, (8, C), seed)
    assert ours.num_batches_tracked.item() == 2
    ref.eval()
    ours.eval()
    step_and_compare(ref, ours, (8, C), seed=4)


def test_initial_state_matches_torch():
    ref, ours = nn.BatchNorm1d(C), BatchNorm1d(C)
    assert_same_state(ref, ours)
    torch.testing.assert_close(ours.weight, ref.weight)
    torch.testing.assert_close(ours.bias, ref.bias)
    assert ours.num_batches_tracked.dtype == torch.long
    assert [n for n, _ in ours.named_parameters()] == ["weight", "bias"]


def test_mode_follows_self_training_not_grad_mode():
    ref, ours = make_pair(0.1, True, True)
    step_and_compare(ref, ours, (8, C), seed=0)
    x = make_input((8, C), seed=1)
    ref.eval()
    ours.eval()
    with torch.enable_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-10)
    assert ours.num_batches_tracked.item() == 1  # eval: no update even with grad enabled
    ref.train()
    ours.train()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-10)
    assert ours.num_batches_tracked.item() == 2  # train: updates even under no_grad
    assert_same_state(ref, ours)


@needs_torch_bn_bias
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"bias": False},
        {"affine": False},
        {"affine": False, "bias": False},
        {"momentum": None, "affine": False, "track_running_stats": False},
        {"eps": 1e-3, "momentum": 0.3, "bias": False, "track_running_stats": False},
        {"momentum": 1.0, "eps": 0.5},  # eps=0 is rejected: see test_batchnorm_torch_cases
    ],
    ids=repr,
)
def test_repr_identical_to_torch(kwargs):
    assert repr(BatchNorm1d(3, **kwargs)) == repr(nn.BatchNorm1d(3, **kwargs))


def test_bias_false_has_weight_but_no_bias():
    bn = BatchNorm1d(C, bias=False)
    assert bn.bias is None and "bias" in bn._parameters  # registered as None, like torch
    assert [n for n, _ in bn.named_parameters()] == ["weight"]
    assert "bias" not in bn.state_dict()
    with torch.no_grad():
        bn.weight.add_(1.0)
    bn.reset_parameters()
    assert torch.equal(bn.weight, torch.ones(C))
    x = make_input((8, C), seed=0).float()
    bn.eval()
    expected = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight
    torch.testing.assert_close(bn(x), expected)
    # without affine there is no bias whatever bias= says
    assert BatchNorm1d(C, affine=False, bias=True).bias is None
    with pytest.raises(TypeError):
        BatchNorm1d(C, 1e-5, 0.1, True, True, None, None, False)  # bias is keyword-only


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.9, 1.0, None])
def test_momentum_in_range_is_accepted(momentum):
    assert BatchNorm1d(C, momentum=momentum).momentum == momentum


@pytest.mark.parametrize("momentum", [-0.1, 1.5, 10, float("nan")])
def test_momentum_out_of_range_explains_convention(momentum):
    with pytest.raises(ValueError, match="weight of the NEW batch statistic") as info:
        BatchNorm1d(C, momentum=momentum)
    assert "momentum=0.1" in str(info.value)


@pytest.mark.parametrize("momentum", ["0.1", True, torch.tensor(0.1)])
def test_momentum_not_a_number_is_rejected(momentum):
    with pytest.raises(TypeError, match="momentum must be a number"):
        BatchNorm1d(C, momentum=momentum)


def test_reset_running_stats_and_parameters():
    bn = BatchNorm1d(C, dtype=DT)
    bn(make_input((8, C), seed=0))
    with torch.no_grad():
        bn.weight.add_(1.0)
        bn.bias.add_(1.0)
    bn.reset_running_stats()
    assert bn.num_batches_tracked.item() == 0
    assert torch.equal(bn.running_mean, torch.zeros(C, dtype=DT))
    assert torch.equal(bn.running_var, torch.ones(C, dtype=DT))
    assert torch.equal(bn.weight, torch.full((C,), 2.0, dtype=DT))  # parameters untouched
    bn.reset_parameters()
    assert torch.equal(bn.weight, torch.ones(C, dtype=DT))
    assert torch.equal(bn.bias, torch.zeros(C, dtype=DT))


# ----------------------------------------------------------------------------- state_dict


def _train_a_few_steps(bn):
    for seed in range(3):
        bn(make_input((8, C), seed))


@pytest.mark.parametrize("track", [True, False], ids=["track", "notrack"])
@pytest.mark.parametrize("affine, bias", AFFINE_BIAS)
def test_state_dict_keys_identical(affine, bias, track):
    kwargs = dict(affine=affine, track_running_stats=track, **bias_kwargs(bias))
    ref, ours = nn.BatchNorm1d(C, **kwargs), BatchNorm1d(C, **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]


@pytest.mark.parametrize("bias", [True, pytest.param(False, marks=needs_torch_bn_bias)])
@pytest.mark.parametrize("direction", ["ours_to_torch", "torch_to_ours"])
def test_state_dict_round_trip(direction, bias):
    ref, ours = make_pair(0.3, True, True, bias)
    src, dst = (ours, ref) if direction == "ours_to_torch" else (ref, ours)
    _train_a_few_steps(src)
    dst.load_state_dict(src.state_dict(), strict=True)
    assert_same_state(src, dst)
    torch.testing.assert_close(dst.weight, src.weight)
    if bias:
        torch.testing.assert_close(dst.bias, src.bias)
    else:
        assert src.bias is None and dst.bias is None
    src.eval()
    dst.eval()
    x = make_input((6, C), seed=9)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- functional


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(8, C), (5, C, 3)], ids=["NC", "NCL"])
def test_functional_matches_torch(shape, training):
    x = make_input(shape, seed=0)
    w, b = make_input((C,), seed=1), make_input((C,), seed=2)
    rm_ref, rv_ref = make_input((C,), seed=3), make_input((C,), seed=4).abs() + 0.5
    rm_ours, rv_ours = rm_ref.clone(), rv_ref.clone()
    rm_before = rm_ref.clone()
    expected = F.batch_norm(x, rm_ref, rv_ref, w, b, training=training, momentum=0.3, eps=1e-3)
    got = batch_norm(x, rm_ours, rv_ours, w, b, training=training, momentum=0.3, eps=1e-3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(rm_ours, rm_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(rv_ours, rv_ref, rtol=0, atol=1e-12)
    assert torch.equal(rm_ours, rm_before) != training  # updated in place iff training


def test_functional_without_running_stats_matches_torch():
    x = make_input((8, C), seed=0)
    expected = F.batch_norm(x, None, None, training=True)
    torch.testing.assert_close(batch_norm(x, None, None, training=True), expected)
    # our functional also uses batch statistics in eval mode when there are no buffers
    torch.testing.assert_close(batch_norm(x, None, None, training=False), expected)


def test_functional_momentum_none_is_rejected_with_a_hint():
    with pytest.raises(TypeError, match="num_batches_tracked"):
        batch_norm(
            make_input((8, C), 0), torch.zeros(C), torch.ones(C), training=True, momentum=None
        )


@pytest.mark.parametrize("shape", [(6, 3), (3, 3, 2)], ids=["NC", "NCL"])
def test_gradcheck_training(shape):
    x = make_input(shape, seed=0).requires_grad_()
    w = make_input((3,), seed=1).requires_grad_()
    b = make_input((3,), seed=2).requires_grad_()
    rm, rv = torch.zeros(3, dtype=DT), torch.ones(3, dtype=DT)

    def f(x, w, b):  # fresh buffers each call: the in-place update must not disturb gradcheck
        return batch_norm(x, rm.clone(), rv.clone(), w, b, training=True)

    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradcheck(
        lambda x, w, b: batch_norm(x, None, None, w, b, training=True), (x, w, b)
    )


def test_gradcheck_eval():
    x = make_input((6, 3), seed=0).requires_grad_()
    w = make_input((3,), seed=1).requires_grad_()
    b = make_input((3,), seed=2).requires_grad_()
    rm, rv = make_input((3,), seed=3), make_input((3,), seed=4).abs() + 0.5
    assert torch.autograd.gradcheck(
        lambda x, w, b: batch_norm(x, rm, rv, w, b, training=False), (x, w, b)
    )


def test_gradient_flows_through_batch_statistics():
    # with batch stats, the gradient of sum(y) wrt x is exactly 0 (mean is subtracted);
    # a version that detaches mean/var would give 1/sqrt(var + eps) instead
    x = make_input((8, C), seed=0).requires_grad_()
    batch_norm(x, None, None, training=True).sum().backward()
    torch.testing.assert_close(x.grad, torch.zeros_like(x), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("shape", [(1, C), (1, C, 1)], ids=["NC", "NCL"])
def test_batch_of_one_in_training_raises_teaching_error(shape):
    bn = BatchNorm1d(C)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel") as info:
        bn(torch.randn(shape))
    assert str(info.value).startswith(
        f"Expected more than 1 value per channel when training, got input size {torch.Size(shape)}"
    )
    assert "drop_last" in str(info.value)
    assert bn.num_batches_tracked.item() == 0  # nothing changed by the failed call


def test_batch_of_one_in_eval_is_fine():
    bn = BatchNorm1d(C, dtype=DT)
    _train_a_few_steps(bn)
    bn.eval()
    x = make_input((1, C), seed=5)
    expected = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(bn(x), expected)


def test_length_one_with_batch_of_two_is_fine_in_training():
    out = BatchNorm1d(C)(torch.randn(2, C, 1))
    assert out.shape == (2, C, 1)


@pytest.mark.parametrize("shape", [(2, C, 3, 3), (C,)])
def test_wrong_rank_raises(shape):
    # the message starts as torch's does, then explains
    with pytest.raises(ValueError, match=r"expected 2D or 3D input .*\(N, C\) or \(N, C, L\)"):
        BatchNorm1d(C)(torch.randn(shape))


def test_wrong_channel_count_raises_with_both_sizes():
    with pytest.raises(ValueError, match="num_features = 4 but the input has 5 channels"):
        BatchNorm1d(4)(torch.randn(8, 5))
    with pytest.raises(ValueError, match="weight has size 3 but the input has 4 channels"):
        batch_norm(torch.randn(8, 4), None, None, weight=torch.ones(3), training=True)
    with pytest.raises(ValueError, match="running_mean has size 5 but the input has 4"):
        batch_norm(torch.randn(8, 4), torch.zeros(5), torch.ones(5))


# ----------------------------------------------------------------------------- fold_into_linear


def _trained_linear_bn(bn_cls, linear_bias, affine, dtype):
    torch.manual_seed(0)
    linear = nn.Linear(3, C, bias=linear_bias, dtype=dtype)
    bn = bn_cls(C, affine=affine, dtype=dtype)
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.normal_()
    with torch.no_grad():
        for _ in range(3):
            bn(linear(torch.randn(16, 3, dtype=dtype) * 3 + 1))
    return linear.eval(), bn.eval()


@pytest.mark.parametrize("bn_cls", [nn.BatchNorm1d, BatchNorm1d], ids=["torchBN", "ourBN"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("linear_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fold_into_linear_matches_bn_of_linear(bn_cls, affine, linear_bias, dtype):
    linear, bn = _trained_linear_bn(bn_cls, linear_bias, affine, dtype)
    assert bn.running_var.sub(1).abs().max() > 0.1  # running stats are non-trivial
    W_before = linear.weight.detach().clone()
    folded = fold_into_linear(linear, bn)
    assert folded is not linear and folded.bias is not None
    assert folded.weight.dtype == dtype
    x = torch.randn(10, 3, dtype=dtype)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    with torch.no_grad():
        torch.testing.assert_close(folded(x), bn(linear(x)), rtol=tol, atol=tol)
    assert torch.equal(linear.weight, W_before)  # the original is untouched


@pytest.mark.parametrize(
    "bn_cls",
    [pytest.param(nn.BatchNorm1d, marks=needs_torch_bn_bias), BatchNorm1d],
    ids=["torchBN", "ourBN"],
)
def test_fold_into_linear_bn_without_bias(bn_cls):
    linear = nn.Linear(3, C, dtype=DT)
    bn = bn_cls(C, bias=False, dtype=DT)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn(linear(torch.randn(16, 3, dtype=DT) * 3 + 1))
    bn.eval()
    x = torch.randn(5, 3, dtype=DT)
    with torch.no_grad():
        torch.testing.assert_close(fold_into_linear(linear, bn)(x), bn(linear(x)))


@pytest.mark.parametrize("bn_cls", [nn.BatchNorm1d, BatchNorm1d], ids=["torchBN", "ourBN"])
def test_fold_into_linear_errors(bn_cls):
    with pytest.raises(ValueError, match="track_running_stats=False"):
        fold_into_linear(nn.Linear(3, C), bn_cls(C, track_running_stats=False))
    with pytest.raises(ValueError, match="out_features=5 but bn has num_features=4"):
        fold_into_linear(nn.Linear(3, 5), bn_cls(C))
    with pytest.raises(TypeError, match="must be a BatchNorm layer"):
        fold_into_linear(nn.Linear(3, C), nn.LayerNorm(C))


# ----------------------------------------------------------------------------- bn_layers


def _model():
    """Linear -> torch BN -> ReLU -> Dropout -> Linear -> our BN, in float64."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3, 5, dtype=DT),
        nn.BatchNorm1d(5, momentum=0.1, dtype=DT),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(5, 4, dtype=DT),
        BatchNorm1d(4, momentum=0.3, dtype=DT),
    )


def test_bn_layers_finds_torch_and_ours_only():
    model = _model()
    model.append(nn.InstanceNorm1d(4))
    model.append(nn.LayerNorm(4))
    assert bn_layers(model) == [model[1], model[5]]
    assert bn_layers(nn.Linear(2, 2)) == []


# ----------------------------------------------------------------------------- recalibrate


def _expected_recalibrated_stats(model, batches):
    """By hand: what BN1/BN2 see during a train-mode BN pass with dropout off; per layer,
    (average of the batch means, average of the unbiased batch variances)."""
    lin1, bn1, lin2 = model[0], model[1], model[4]
    seen1, seen2 = [], []
    with torch.no_grad():
        for x in batches:
            h = lin1(x)
            m, v = h.mean(0), h.var(0, unbiased=False)
            z = torch.relu((h - m) / torch.sqrt(v + bn1.eps) * bn1.weight + bn1.bias)
            seen1.append(h)
            seen2.append(lin2(z))
    return [
        (
            torch.stack([s.mean(0) for s in seen]).mean(0),
            torch.stack([s.var(0, unbiased=True) for s in seen]).mean(0),
        )
        for seen in (seen1, seen2)
    ]


@pytest.mark.parametrize("n_batches", [1, 4])
@pytest.mark.parametrize("mode_before", ["train", "eval", "mixed"])
def test_recalibrate_averages_per_batch_statistics(n_batches, mode_before):
    model = _model()
    X = torch.randn(64, 3, dtype=DT) * 2 + 1
    y = torch.zeros(64)
    with torch.no_grad():  # move the running stats somewhere arbitrary first
        model.train()(X[:8] * 5 - 3)
    {"train": model.train, "eval": model.eval, "mixed": model.train}[mode_before]()
    if mode_before == "mixed":
        model[1].eval()
        model[3].eval()
    flags = [m.training for m in model.modules()]

    batches = list(zip(X.chunk(n_batches), y.chunk(n_batches), strict=True))
    assert recalibrate(model, batches) is model

    expected = _expected_recalibrated_stats(model, [x for x, _ in batches])
    for bn, (mean, var) in zip(bn_layers(model), expected, strict=True):
        torch.testing.assert_close(bn.running_mean, mean, rtol=0, atol=1e-10)
        torch.testing.assert_close(bn.running_var, var, rtol=0, atol=1e-10)
        assert bn.num_batches_tracked.item() == n_batches
    h = model[0](X).detach()  # the whole set, as the first BN layer sees it
    # equal batch sizes: the average of the batch means is the population mean
    torch.testing.assert_close(model[1].running_mean, h.mean(0))
    if n_batches == 1:  # one batch over everything: the unbiased population variance
        torch.testing.assert_close(model[1].running_var, h.var(0, unbiased=True))
    else:  # the spread between the batch means is left out
        assert not torch.allclose(model[1].running_var, h.var(0, unbiased=True))
    assert [m.training for m in model.modules()] == flags
    assert (model[1].momentum, model[5].momentum) == (0.1, 0.3)


def test_recalibrate_with_dataloader_and_bare_tensors():
    model = _model()
    X = torch.randn(32, 3, dtype=DT)
    loader = torch.utils.data.DataLoader(X, batch_size=32)  # yields bare tensors
    recalibrate(model, loader)
    torch.testing.assert_close(model[1].running_mean, model[0](X).detach().mean(0))


def test_recalibrate_unequal_batches_weight_each_batch_equally():
    model = _model()
    X = torch.randn(40, 3, dtype=DT) * 2 + 1
    batches = [X[:32], X[32:]]
    recalibrate(model, batches)
    h = [model[0](x).detach() for x in batches]
    expected = (h[0].mean(0) + h[1].mean(0)) / 2
    torch.testing.assert_close(model[1].running_mean, expected, rtol=0, atol=1e-10)
    assert not torch.allclose(model[1].running_mean, torch.cat(h).mean(0))


@pytest.mark.parametrize(
    "bn_cls",
    [pytest.param(nn.BatchNorm1d, marks=needs_torch_bn_bias), BatchNorm1d],
    ids=["torchBN", "ourBN"],
)
def test_recalibrate_freeze_unfreeze_with_bn_without_bias(bn_cls):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, C, dtype=DT), bn_cls(C, bias=False, dtype=DT))
    X = torch.randn(32, 3, dtype=DT)
    recalibrate(model, [X])
    torch.testing.assert_close(model[1].running_mean, model[0](X).detach().mean(0))
    freeze(model)
    model.train()
    assert not model[1].training and not model[1].weight.requires_grad
    before = _bn_snapshot(model)
    _train_step(model, seed=0)
    assert _all_equal(_bn_snapshot(model), before)
    unfreeze(model)
    assert model[1].weight.requires_grad and model[1].bias is None


def test_recalibrate_errors():
    with pytest.raises(ValueError, match="Nothing to recalibrate"):
        recalibrate(nn.Sequential(nn.Linear(3, 3)), [torch.randn(4, 3)])
    with pytest.raises(ValueError, match="Nothing to recalibrate"):
        recalibrate(nn.Sequential(BatchNorm1d(3, track_running_stats=False)), [torch.randn(4, 3)])
    model = _model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="loader is empty"):
        recalibrate(model, [])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_recalibrate_restores_modes_when_forward_fails():
    model = _model()
    model.train()
    with pytest.raises(RuntimeError):
        recalibrate(model, [torch.randn(4, 7, dtype=DT)])  # wrong feature count
    assert all(m.training for m in model.modules())
    assert (model[1].momentum, model[5].momentum) == (0.1, 0.3)


# ----------------------------------------------------------------------------- freeze


def _bn_snapshot(model):
    return [t.detach().clone() for bn in bn_layers(model) for t in bn.state_dict().values()]


def _train_step(model, seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    loss = model(torch.randn(16, 3, generator=g, dtype=DT)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _all_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_freeze_survives_model_train_and_optimizer_steps():
    model = _model()
    assert freeze(model) is model
    model.train()
    assert model[0].training and model[3].training  # the rest of the model trains
    assert not any(bn.training for bn in bn_layers(model))
    assert not any(p.requires_grad for bn in bn_layers(model) for p in bn.parameters())
    before = _bn_snapshot(model)
    lin_before = model[0].weight.detach().clone()
    for seed in range(3):
        _train_step(model, seed)
    assert _all_equal(_bn_snapshot(model), before)
    assert not torch.equal(model[0].weight, lin_before)


def test_requires_grad_false_alone_does_not_freeze_running_stats():
    model = _model()
    for bn in bn_layers(model):
        bn.requires_grad_(False)
    before = _bn_snapshot(model)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, dtype=DT))
    assert not _all_equal(_bn_snapshot(model), before)


def test_unfreeze_restores_normal_behaviour():
    model = freeze(_model())
    assert unfreeze(model) is model
    model.train()
    assert all(bn.training for bn in bn_layers(model))
    assert all(p.requires_grad for p in model.parameters())
    before = _bn_snapshot(model)
    _train_step(model, seed=0)
    assert not _all_equal(_bn_snapshot(model), before)
    model.eval()
    assert not any(bn.training for bn in bn_layers(model))


def test_freeze_survives_deepcopy_and_torch_save():
    model = freeze(_model())
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    for clone in (copy.deepcopy(model), torch.load(buf, weights_only=False)):
        clone.train()
        assert not any(bn.training for bn in bn_layers(clone))
        assert bn_layers(clone)[0].train.args[0] is bn_layers(clone)[0]  # bound to the copy


# ----------------------------------------------------------------------------- PyTorch facts


def test_fact_functional_normalizes_with_biased_variance():
    x = make_input((5, C), seed=0)
    out = F.batch_norm(x, None, None, training=True, eps=1e-5)
    m = x.mean(0)
    torch.testing.assert_close(out, (x - m) / torch.sqrt(x.var(0, unbiased=False) + 1e-5))
    assert not torch.allclose(out, (x - m) / torch.sqrt(x.var(0, unbiased=True) + 1e-5))


def test_fact_running_var_uses_unbiased_variance():
    x = make_input((5, C), seed=0)
    bn = nn.BatchNorm1d(C, momentum=1.0, dtype=DT)
    bn(x)
    torch.testing.assert_close(bn.running_mean, x.mean(0))
    torch.testing.assert_close(bn.running_var, x.var(0, unbiased=True))
    assert not torch.allclose(bn.running_var, x.var(0, unbiased=False))


def test_fact_momentum_none_is_cumulative_average():
    bn = nn.BatchNorm1d(C, momentum=None, dtype=DT)
    xs = [make_input((6, C), seed) for seed in range(5)]
    for x in xs:
        bn(x)
    assert bn.num_batches_tracked.item() == 5
    torch.testing.assert_close(bn.running_mean, torch.stack([x.mean(0) for x in xs]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([x.var(0) for x in xs]).mean(0))


def test_fact_initial_buffers_and_state_dict():
    bn = nn.BatchNorm1d(C)
    assert torch.equal(bn.running_mean, torch.zeros(C))
    assert torch.equal(bn.running_var, torch.ones(C))
    assert bn.num_batches_tracked.dtype == torch.long and bn.num_batches_tracked.item() == 0
    assert {"running_mean", "running_var", "num_batches_tracked"} <= set(bn.state_dict())
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]


def test_fact_torch_batch_of_one_message():
    with pytest.raises(ValueError) as info:
        nn.BatchNorm1d(C)(torch.randn(1, C))
    assert str(info.value).startswith("Expected more than 1 value per channel when training")
