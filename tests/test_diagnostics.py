"""Tests for bnteach.diagnostics: each instrument against a direct computation or a known answer."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
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

DT = torch.float64


def small_net(activation=nn.Sigmoid, bn=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 7)]
    if bn:
        layers.append(nn.BatchNorm1d(7))
    layers += [activation(), nn.Linear(7, 6)]
    if bn:
        layers.append(nn.BatchNorm1d(6))
    layers += [activation(), nn.Linear(6, 3)]
    return nn.Sequential(*layers).to(DT)


def batch(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=DT) * 2, torch.randint(0, 3, (n,), generator=g)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# -------------------------------------------------------------------------------- recorder


def test_recorder_statistics_equal_direct_computation():
    model = small_net(nn.Sigmoid)
    x, y = batch()
    outs = {}
    handles = [
        model[i].register_forward_hook(lambda m, inp, out, i=i: outs.__setitem__(i, out))
        for i in (0, 1)
    ]
    with LayerRecorder(model) as rec:
        loss = F.cross_entropy(model(x), y)
        outs[0].retain_grad()
        loss.backward()
    for h in handles:
        h.remove()
    row = rec.table()[0]
    pre, act = outs[0], outs[1].detach()
    assert row["layer"] == 1
    assert row["pre_mean"] == pytest.approx(pre.mean().item(), rel=1e-12)
    assert row["pre_std"] == pytest.approx(pre.std().item(), rel=1e-12)
    assert row["act_mean"] == pytest.approx(act.mean().item(), rel=1e-12)
    assert row["act_std"] == pytest.approx(act.std().item(), rel=1e-12)
    slope = act * (1 - act)
    assert row["saturated"] == pytest.approx((slope < 0.025).double().mean().item())
    assert row["grad_std"] == pytest.approx(pre.grad.std().item(), rel=1e-12)
    assert row["weight_grad_norm"] == pytest.approx(model[0].weight.grad.norm().item(), rel=1e-9)
    assert row["weight_norm"] == pytest.approx(model[0].weight.norm().item())
    assert rec.column("layer") == [1, 2, 3]
    assert rec.column("act_mean")[2] is None, "the output layer has no activation"


def identity_then(activation):
    net = nn.Sequential(nn.Linear(1, 1), activation())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(0.0)
    return net


@pytest.mark.parametrize(
    "activation, inputs, expected",
    [
        # sigmoid slope s(1 - s) < 0.025 (10% of 1/4) beyond |x| = 3.64
        (nn.Sigmoid, [-3.8, -3.5, 0.0, 3.5, 3.8], 0.4),
        # tanh slope 1 - t**2 < 0.1 beyond |x| = 1.82
        (nn.Tanh, [-1.95, -1.7, 0.0, 1.7, 1.95, 3.0], 0.5),
    ],
)
def test_recorder_saturation_threshold(activation, inputs, expected):
    net = identity_then(activation)
    with LayerRecorder(net) as rec:
        net(torch.tensor(inputs).unsqueeze(1))
    assert rec.table()[0]["saturated"] == pytest.approx(expected)


def test_recorder_counts_dead_relu_units():
    relu = nn.Sequential(nn.Linear(1, 2), nn.ReLU())
    with torch.no_grad():
        relu[0].weight.fill_(1.0)
        relu[0].bias.copy_(torch.tensor([-10.0, 0.0]))  # unit 0 is 0 for all x in [-1, 1]
    with LayerRecorder(relu) as rec:
        relu(torch.linspace(-1, 1, 8).unsqueeze(1))
    assert rec.table()[0]["dead"] == 0.5
    assert "saturated" not in rec.table()[0]


def test_recorder_hooks_are_removed_after_close():
    model = small_net()
    x, y = batch()
    rec = LayerRecorder(model)
    assert "recording" in repr(rec) and not rec.closed
    model(x)
    before = rec.table()
    rec.close()
    assert rec.closed and "closed" in repr(rec)
    assert all(not m._forward_hooks for m in model.modules())
    F.cross_entropy(model(3 * x), y).backward()
    assert rec.table() == before, "a closed recorder records nothing"


def test_recorder_teaching_errors():
    with pytest.raises(TypeError, match="nn.Module"):
        LayerRecorder("not a model")
    with pytest.raises(ValueError, match="no nn.Linear"):
        LayerRecorder(nn.Sequential(nn.ReLU()))
    with LayerRecorder(small_net()) as rec, pytest.raises(RuntimeError, match="forward pass"):
        rec.table()


def test_update_to_data_is_lr_times_grad_over_weight():
    model = small_net()
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    before = weight_snapshot(model)
    expected = [0.1 * m.weight.grad.norm() / m.weight.norm() for m in linear_layers(model)]
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    ratios = update_to_data(before, model)
    assert ratios == pytest.approx([e.item() for e in expected], rel=1e-9)
    assert all(r > 0 for r in ratios)
    with pytest.raises(ValueError, match="weight_snapshot"):
        update_to_data(before[:1], model)


# ------------------------------------------------------------------------------- noisy BN


def test_noise_is_identity_in_eval_mode():
    noise = NoiseInjection(4).eval()
    x = torch.randn(10, 4)
    assert noise(x) is x


def test_noise_in_train_mode_is_scale_and_shift_with_configured_moments():
    torch.manual_seed(0)
    noise = NoiseInjection(500, shift=0.5, scale=0.3, jitter=0.1)
    x = torch.randn(4000, 500, dtype=DT)
    y = noise(x)
    torch.testing.assert_close(y, noise.last_scale * x + noise.last_shift)
    m, s = noise.last_shift, noise.last_scale
    # within one step: per-unit shift mean mu_j in [-0.5, 0.5], scale mean in [0.7, 1.3]
    assert m.mean(0).abs().max() < 0.5 + 0.01
    assert ((s.mean(0) - 1).abs().max()) < 0.3 + 0.01
    assert m.std(0).mean().item() == pytest.approx(0.1, rel=0.02)
    assert s.std(0).mean().item() == pytest.approx(0.1, rel=0.02)
    # across units: Uniform(-a, a) has mean 0 and variance a**2 / 3
    assert m.mean(0).mean().item() == pytest.approx(0.0, abs=0.04)
    assert m.mean(0).var().item() == pytest.approx(0.5**2 / 3, rel=0.15)
    assert s.mean(0).mean().item() == pytest.approx(1.0, abs=0.03)
    assert s.mean(0).var().item() == pytest.approx(0.3**2 / 3, rel=0.15)
    # resampled every step
    noise(x)
    assert not torch.equal(noise.last_shift, m)


def test_noise_teaching_errors_and_repr():
    assert repr(NoiseInjection(3, shift=1, scale=0.5, jitter=0.2)) == (
        "NoiseInjection(3, shift=±1, scale=1±0.5, jitter=0.2)"
    )
    with pytest.raises(ValueError, match="scale must be in"):
        NoiseInjection(3, scale=1.5)
    with pytest.raises(ValueError, match="shift"):
        NoiseInjection(3, shift=-1)
    with pytest.raises(ValueError, match="num_features"):
        NoiseInjection(0)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        NoiseInjection(3)(torch.randn(2, 4))


# --------------------------------------------------------------------- covariate-shift probe


def test_covariate_shift_is_zero_when_lower_layers_do_not_move():
    for bn in (False, True):
        model = small_net(bn=bn)
        x, y = batch()
        rows = covariate_shift(model, F.cross_entropy, x, y, lr=0.0)
        assert [r["layer"] for r in rows] == [2, 3]
        assert all(r["l2"] == 0 and r["cos"] == pytest.approx(1.0) for r in rows)
        moved = covariate_shift(model, F.cross_entropy, x, y, lr=0.5)
        assert all(r["l2"] > 1e-6 and r["relative"] > 1e-6 for r in moved)


def test_covariate_shift_matches_a_hand_computation_and_leaves_the_model_alone():
    model = small_net(bn=True)
    model.eval()  # the probe must switch its copy to training mode, not the model itself
    x, y = batch()
    state = snapshot(model)
    rows = covariate_shift(model, F.cross_entropy, x, y, lr=0.3)
    assert not model.training and all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k

    ref = copy.deepcopy(model).train()
    W2 = ref[3].weight  # second Linear; below it: Linear 1 and BN 1
    lower = [ref[0].weight, ref[0].bias, ref[1].weight, ref[1].bias]
    grads = torch.autograd.grad(F.cross_entropy(ref(x), y), lower + [W2])
    with torch.no_grad():
        for p, g in zip(lower, grads):
            p -= 0.3 * g
    (g_after,) = torch.autograd.grad(F.cross_entropy(ref(x), y), [W2])
    diff = (grads[-1] - g_after).norm().item()
    assert rows[0]["l2"] == pytest.approx(diff, rel=1e-9)
    assert rows[0]["relative"] == pytest.approx(diff / grads[-1].norm().item(), rel=1e-9)
    cos = F.cosine_similarity(grads[-1].flatten(), g_after.flatten(), dim=0).item()
    assert rows[0]["cos"] == pytest.approx(cos, rel=1e-9)


def test_covariate_shift_teaching_errors():
    x, y = batch()
    with pytest.raises(ValueError, match="at least two"):
        covariate_shift(nn.Linear(5, 3).to(DT), F.cross_entropy, x, y, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        covariate_shift(small_net(), F.cross_entropy, x, y, lr=-1)
    with pytest.raises(ValueError, match="samples"):
        covariate_shift(small_net(), F.cross_entropy, x, y[:3], lr=0.1)


# ------------------------------------------------------------------------ smoothness probe


def quadratic(lams, w):
    """A linear 'model' whose loss 0.5 * mean((X w)**2) equals 0.5 * sum(lam_i * w_i**2)."""
    lams = torch.tensor(lams, dtype=DT)
    model = nn.Linear(len(lams), 1, bias=False).to(DT)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([w], dtype=DT))
    X = torch.diag((len(lams) * lams).sqrt())
    return model, X, torch.zeros(len(lams), 1, dtype=DT), lambda out, y: 0.5 * (out**2).mean()


def test_smoothness_probe_on_a_quadratic_gives_the_known_beta():
    model, X, y, loss = quadratic([0.5, 3.0, 1.0], [0.0, 2.0, 0.0])  # on the lam=3 axis
    etas = [0.01, 0.1, 0.2]
    out = gradient_step_probe(model, loss, X, y, etas)
    assert out["beta"] == pytest.approx(3.0, rel=1e-12)
    assert out["loss0"] == pytest.approx(6.0, rel=1e-12)
    assert out["grad_norm"] == pytest.approx(6.0, rel=1e-12)
    # along the axis: w = 2 (1 - 3 eta), loss = 1.5 w**2, gradient change = 18 eta
    expected = [1.5 * (2 * (1 - 3 * e)) ** 2 for e in etas]
    assert out["losses"] == pytest.approx(expected, rel=1e-12)
    assert out["loss_range"] == pytest.approx(6.0 - min(expected), rel=1e-12)
    assert out["grad_change"] == pytest.approx(18 * 0.2, rel=1e-12)


def test_smoothness_probe_beta_is_bounded_by_the_largest_curvature():
    model, X, y, loss = quadratic([0.5, 3.0, 1.0], [1.0, 1.0, -1.0])
    out = gradient_step_probe(model, loss, X, y, [0.05, 0.1])
    assert 0.5 < out["beta"] <= 3.0 + 1e-12


def test_smoothness_probe_leaves_the_model_alone_and_checks_step_sizes():
    model = small_net(bn=True)
    x, y = batch()
    state = snapshot(model)
    out = gradient_step_probe(model, F.cross_entropy, x, y, 0.5)
    assert len(out["losses"]) == 1 and out["beta"] > 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())
    for bad in ([], [0.0], [-1.0], [math.inf]):
        with pytest.raises(ValueError, match="step_sizes"):
            gradient_step_probe(model, F.cross_entropy, x, y, bad)


# ------------------------------------------------------------------------ scale invariance


def test_bn_scale_invariance_is_exact_without_eps():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 6, generator=g, dtype=DT)
    x = torch.randn(20, 6, generator=g, dtype=DT)
    scales = [1e-3, 0.5, 3.0, 1e3]
    for row in bn_scale_response(W, x, scales, eps=0.0):
        assert row["output_change"] < 1e-12
        assert row["grad_ratio"] == pytest.approx(1 / row["a"], rel=1e-10)
        assert abs(row["grad_cos_weight"]) < 1e-10
    with_eps = {r["a"]: r for r in bn_scale_response(W, x, scales, eps=1e-5)}
    assert with_eps[1e-3]["output_change"] > 0.1, "eps breaks the invariance for tiny weights"
    assert with_eps[1e3]["output_change"] < 1e-4


def test_bn_scale_response_teaching_errors():
    W, x = torch.randn(4, 6, dtype=DT), torch.randn(20, 6, dtype=DT)
    with pytest.raises(ValueError, match="same D"):
        bn_scale_response(W, x[:, :5], [1.0])
    with pytest.raises(ValueError, match="at least 2"):
        bn_scale_response(W, x[:1], [1.0])
    with pytest.raises(ValueError, match="positive"):
        bn_scale_response(W, x, [0.0])
