"""bnteach.batchnorm's variants: GhostBatchNorm1d (per-device BN in one process) and
BatchRenorm1d (Ioffe 2017), against torch's BatchNorm and the formulas, in float64."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnteach.batchnorm import BatchRenorm1d, GhostBatchNorm1d

f64 = torch.float64


def batch(n=10, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, c, generator=g, dtype=f64) * torch.tensor([1.0, 3.0, 0.5], dtype=f64)[:c] + 2
    )


# ----------------------------------------------------------------------------- ghost BN


@pytest.mark.parametrize("n, v", [(12, 4), (10, 4), (9, 3), (5, 8)])
def test_ghost_normalizes_each_chunk_alone(n, v):
    x = batch(n).requires_grad_()
    ghost = GhostBatchNorm1d(3, v).double()
    with torch.no_grad():
        ghost.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
        ghost.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    y = ghost(x)
    x2 = x.detach().clone().requires_grad_()
    chunks = [
        F.batch_norm(c, None, None, ghost.weight, ghost.bias, training=True) for c in x2.split(v)
    ]
    ref = torch.cat(chunks)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-12)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-12)


def test_ghost_running_statistics_come_from_the_first_chunk():
    """What DistributedDataParallel leaves with broadcast_buffers=True: rank 0's."""
    x = batch(12)
    ghost, bn = GhostBatchNorm1d(3, 4).double(), nn.BatchNorm1d(3).double()
    ghost(x)
    bn(x[:4])
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ghost, name), getattr(bn, name), rtol=0, atol=1e-15)


def test_ghost_in_eval_mode_is_batchnorm():
    x = batch(12)
    ghost, bn = GhostBatchNorm1d(3, 4).double(), nn.BatchNorm1d(3).double()
    for _ in range(3):
        ghost(x)
    bn.load_state_dict(ghost.state_dict())
    torch.testing.assert_close(ghost.eval()(x[:5]), bn.eval()(x[:5]), rtol=0, atol=1e-15)


def test_ghost_with_a_chunk_as_large_as_the_batch_is_batchnorm():
    x = batch(12).requires_grad_()
    ghost, bn = GhostBatchNorm1d(3, 16).double(), nn.BatchNorm1d(3).double()
    torch.testing.assert_close(ghost(x), bn(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(ghost.running_var, bn.running_var, rtol=0, atol=1e-12)


def test_ghost_refuses_a_one_sample_chunk_and_changes_nothing():
    ghost = GhostBatchNorm1d(3, 4).double()
    before = {k: v.clone() for k, v in ghost.state_dict().items()}
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ghost(batch(9))  # chunks 4, 4, 1
    assert all(torch.equal(before[k], v) for k, v in ghost.state_dict().items())


@pytest.mark.parametrize("bad, error", [(1, ValueError), (0, ValueError), (2.5, TypeError),
                                        ("4", TypeError), (None, TypeError)])  # fmt: skip
def test_ghost_rejects_bad_chunk_sizes(bad, error):
    with pytest.raises(error, match="virtual_batch_size"):
        GhostBatchNorm1d(3, bad)


# ----------------------------------------------------------------------------- renorm


def renorm_reference(x, layer):
    """The paper's Algorithm 1, written out: (output, new running mean, new running var)."""
    mean, var = x.mean(0), x.var(0, unbiased=False)
    sigma_b = torch.sqrt(var + layer.eps)
    sigma = torch.sqrt(layer.running_var + layer.eps)
    r = (sigma_b / sigma).clamp(1 / layer.r_max, layer.r_max).detach()
    d = ((mean - layer.running_mean) / sigma).clamp(-layer.d_max, layer.d_max).detach()
    y = ((x - mean) / sigma_b * r + d) * layer.weight + layer.bias
    m = layer.momentum
    new_sigma = sigma + m * (sigma_b.detach() - sigma)
    return (
        y,
        layer.running_mean + m * (mean.detach() - layer.running_mean),
        new_sigma**2 - layer.eps,
    )


@pytest.mark.parametrize("r_max, d_max", [(3.0, 5.0), (1.2, 0.1), (1.0, 0.0)])
def test_renorm_follows_the_paper(r_max, d_max):
    layer = BatchRenorm1d(3, r_max=r_max, d_max=d_max).double()
    with torch.no_grad():  # running statistics away from the batch's: r and d get clipped
        layer.running_mean.copy_(torch.tensor([0.0, 5.0, 2.1]))
        layer.running_var.copy_(torch.tensor([0.2, 30.0, 0.25]))
        layer.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
    x = batch(10).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    ref, mean, var = renorm_reference(x2, layer)
    y = layer(x)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.running_mean, mean.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.running_var, var.detach(), rtol=0, atol=1e-12)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-12)


def test_renorm_gradient_passes_gradcheck():
    """r and d are constants of the backward pass. Where both are clipped (running statistics
    far from the batch's), they are constants of x as well, so the finite differences of
    gradcheck see the same function the backward pass differentiates."""
    layer = BatchRenorm1d(3, r_max=1.5, d_max=0.5).double()
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([10.0, 20.0, -10.0]))
        layer.running_var.copy_(torch.tensor([0.01, 0.01, 0.01]))
    buffers = {k: v.clone() for k, v in layer.named_buffers()}

    def f(x):
        with torch.no_grad():  # every evaluation from the same running statistics
            for k, v in layer.named_buffers():
                v.copy_(buffers[k])
        return layer(x)

    assert torch.autograd.gradcheck(f, (batch(8).requires_grad_(),))


def test_renorm_without_room_to_correct_is_batchnorm_in_training():
    x = batch(10).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    renorm, bn = BatchRenorm1d(3, r_max=1.0, d_max=0.0).double(), nn.BatchNorm1d(3).double()
    torch.testing.assert_close(renorm(x), bn(x2), rtol=0, atol=1e-12)
    renorm(x).sum().backward()
    bn(x2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(renorm.running_mean, bn.running_mean, rtol=0, atol=1e-12)


def test_renorm_in_eval_mode_is_batchnorm():
    renorm = BatchRenorm1d(3).double()
    for seed in range(3):
        renorm(batch(10, seed=seed))
    bn = nn.BatchNorm1d(3).double()
    bn.load_state_dict(renorm.state_dict())
    x = batch(4, seed=9)
    torch.testing.assert_close(renorm.eval()(x), bn.eval()(x), rtol=0, atol=1e-15)


def test_renorm_leaves_its_buffers_alone_when_a_batch_fails():
    layer = BatchRenorm1d(3).double()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    bad = batch(6)
    bad[2, 1] = math.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(bad)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(batch(1))
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())


@pytest.mark.parametrize(
    "kwargs, error, phrase",
    [
        ({"r_max": 0.5}, ValueError, "r_max must be a finite number >= 1"),
        ({"r_max": math.nan}, ValueError, "r_max"),
        ({"r_max": "3"}, TypeError, "r_max"),
        ({"d_max": -1.0}, ValueError, "d_max must be a finite number >= 0"),
        ({"d_max": math.inf}, ValueError, "d_max"),
        ({"momentum": None}, ValueError, "float momentum"),
        ({"momentum": 0.9 + 1}, ValueError, "momentum"),
    ],
)
def test_renorm_rejects_bad_settings(kwargs, error, phrase):
    with pytest.raises(error, match=phrase):
        BatchRenorm1d(3, **kwargs)


def unchanged(layer, before):
    """Every entry of layer.state_dict() as in before (NaN where it was NaN)."""
    return all(
        torch.allclose(before[k], v, rtol=0, atol=0, equal_nan=True)
        if v.is_floating_point()
        else torch.equal(before[k], v)
        for k, v in layer.state_dict().items()
    )


@pytest.mark.parametrize(
    "attribute, value, error, phrase",
    [
        ("eps", 0.0, ValueError, "eps must be positive"),
        ("eps", -1.0, ValueError, "eps must be positive"),
        ("momentum", 5.0, ValueError, "momentum"),
        ("momentum", None, ValueError, "float momentum"),
        ("r_max", 0.5, ValueError, "r_max"),
        ("d_max", math.nan, ValueError, "d_max"),
        ("training", "yes", TypeError, "training"),
    ],
)
def test_renorm_checks_settings_changed_after_it_was_built(attribute, value, error, phrase):
    layer = BatchRenorm1d(3).double()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    setattr(layer, attribute, value)
    with pytest.raises(error, match=phrase):
        layer(batch(6))
    assert unchanged(layer, before)


@pytest.mark.parametrize("key", ["running_var", "running_mean", "weight"])
@pytest.mark.parametrize("value", [math.nan, -4.0])
def test_renorm_refuses_a_broken_state_in_training_as_in_eval(key, value):
    layer = BatchRenorm1d(3).double()
    with torch.no_grad():
        getattr(layer, key)[1] = value
    if value < 0 and key != "running_var":
        layer(batch(6))  # a negative mean or weight is a state like any other
        return
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(ValueError, match=key):
        layer(batch(6))
    with pytest.raises(ValueError, match=key):
        layer.eval()(batch(6))
    assert unchanged(layer, before)


def test_renorm_on_an_empty_batch_returns_it_and_counts_nothing():
    layer = BatchRenorm1d(3).double()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    out = layer(batch(6)[:0])
    assert out.shape == (0, 3) and unchanged(layer, before)


def test_renorm_limit_too_large_for_a_float_is_a_teaching_error():
    with pytest.raises(ValueError, match="r_max"):
        BatchRenorm1d(3, r_max=10**400)


def test_ghost_names_its_chunks_when_the_last_holds_one_row():
    with pytest.raises(ValueError, match="virtual_batch_size=4.*last chunk holds 1 row"):
        GhostBatchNorm1d(3, 4).double()(batch(5))


def test_ghost_names_itself_for_a_wrong_channel_count_or_rank():
    ghost = GhostBatchNorm1d(3, 4).double()
    with pytest.raises(ValueError, match=r"GhostBatchNorm1d\(4\)"):
        ghost(torch.randn(8, 4, dtype=f64))
    with pytest.raises(ValueError, match="GhostBatchNorm1d expects"):
        ghost(torch.randn(8, 3, 2, 2, dtype=f64))
    ghost.virtual_batch_size = 0
    with pytest.raises(ValueError, match="virtual_batch_size"):
        ghost(batch(8))


@pytest.mark.parametrize(
    "layer", [GhostBatchNorm1d(3, 4).double(), BatchRenorm1d(3).double()], ids=["ghost", "renorm"]
)
def test_recalibrate_gives_variants_batchnorms_statistics_of_the_whole_batch(layer):
    from bnteach.batchnorm import recalibrate

    model = nn.Sequential(nn.Linear(3, 3).double(), layer)
    x = batch(16, seed=5)
    recalibrate(model, [(x,)])
    h = model[0](x).detach()
    torch.testing.assert_close(layer.running_mean, h.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.running_var, h.var(0), rtol=0, atol=1e-12)
    assert layer.momentum is not None and "forward" not in vars(layer)
    layer.train()(batch(8))  # its own forward again
