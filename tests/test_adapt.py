"""bnteach.adapt against PyTorch and the formulas (float64): AdaBN is recalibrate on the target
set and equals PyTorch's train-mode statistics; predict_mixed at prior 0 is a train-mode
forward of each batch, at prior inf eval mode, in between the mixed formula; TENT moves only
gamma and beta, lowers the entropy and matches a plain autograd + Adam loop."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnteach.adapt import adabn, bn_input_stats, predict_mixed, tent
from bnteach.batchnorm import bn_layers, recalibrate
from bnteach.cnn import SmallCNN
from bnteach.data import load_digits, shifted


def trained_like(seed=0):
    """A float64 SmallCNN('batch') with running statistics and affine parameters away from
    PyTorch's defaults, in eval mode."""
    torch.manual_seed(seed)
    net = SmallCNN("batch").double()
    with torch.no_grad():
        for m in bn_layers(net):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.3, 0.3)
    return net.eval()


@pytest.fixture(scope="module")
def target():
    return shifted(load_digits()[1][:40].double(), "blur", 1.0)


def test_adabn_is_recalibrate_on_the_target_set(target):
    net = trained_like()
    ours = adabn(copy.deepcopy(net), target)
    ref = recalibrate(copy.deepcopy(net), [(target,)])
    for a, b in zip(bn_layers(ours), bn_layers(ref)):
        assert torch.equal(a.running_mean, b.running_mean)
        assert torch.equal(a.running_var, b.running_var)
    assert not ours.training
    # parameters untouched
    for (n, p), q in zip(net.named_parameters(), ours.parameters()):
        assert torch.equal(p, q), n


def test_adabn_statistics_are_those_of_the_train_mode_inputs(target):
    """Each BN layer's running stats = mean and unbiased var of its input in a train-mode
    forward (PyTorch as the oracle), and eval mode then predicts as train mode on X (up to
    the n / (n - 1) of the unbiased variance)."""
    net = trained_like()
    inputs = {}
    scratch = copy.deepcopy(net)
    hooks = [
        m.register_forward_hook(lambda mod, a, o: inputs.__setitem__(mod, a[0]) or None)
        for m in bn_layers(scratch)
    ]
    with torch.no_grad():
        train_out = scratch.train()(target)
    for h in hooks:
        h.remove()
    ours = adabn(copy.deepcopy(net), target)
    for m, a in zip(bn_layers(scratch), bn_layers(ours)):
        x = inputs[m]
        torch.testing.assert_close(a.running_mean, x.mean((0, 2, 3)))
        torch.testing.assert_close(a.running_var, x.var((0, 2, 3)))
    with torch.no_grad():
        torch.testing.assert_close(ours(target), train_out, atol=5e-3, rtol=0)


def test_bn_input_stats_formulas(target):
    net = trained_like()
    stats = bn_input_stats(net, target)
    f = net.features
    with torch.no_grad():
        x1 = f[0](target)
        x2 = f[4](f[3](f[2](f[1](x1))))
    for s, x, m in zip(stats, (x1, x2), (f[1], f[5])):
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
        torch.testing.assert_close(s["mean"], mean)
        torch.testing.assert_close(s["var"], var)
        torch.testing.assert_close(s["mean_shift"], (mean - m.running_mean) / m.running_var.sqrt())
        torch.testing.assert_close(s["var_ratio"], var / m.running_var)
    assert not net.training


@pytest.mark.parametrize("batch_size", [1, 2, 4, 7, 40])
def test_predict_mixed_prior_zero_is_train_mode_per_batch(target, batch_size):
    net = trained_like()
    before = copy.deepcopy(net.state_dict())
    with torch.no_grad():
        ref = torch.cat([copy.deepcopy(net).train()(b) for b in target.split(batch_size)])
    out = predict_mixed(net, target, batch_size, prior=0)
    torch.testing.assert_close(out, ref)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m.training for m in net.modules())


def test_predict_mixed_prior_inf_is_eval_mode(target):
    net = trained_like()
    with torch.no_grad():
        torch.testing.assert_close(predict_mixed(net, target, 4, prior=math.inf), net(target))


def mixed_by_hand(net, X, prior):
    """Schneider et al.'s mix on one batch X, layer by layer: a copy whose running stats are
    w * training + (1 - w) * the batch's (biased) stats, w = prior / (prior + n), each layer's
    batch stats measured with the earlier layers already mixed; then eval mode."""
    net = copy.deepcopy(net).eval()
    w = prior / (prior + X.shape[0])
    seen = {}

    def keep(mod, args, out):
        seen["x"] = args[0]

    for m in bn_layers(net):
        h = m.register_forward_hook(keep)
        with torch.no_grad():
            net(X)
        h.remove()
        x = seen["x"]
        with torch.no_grad():
            m.running_mean.copy_(w * m.running_mean + (1 - w) * x.mean((0, 2, 3)))
            m.running_var.copy_(w * m.running_var + (1 - w) * x.var((0, 2, 3), unbiased=False))
    with torch.no_grad():
        return net(X)


@pytest.mark.parametrize("prior, batch_size", [(1.0, 1), (4.0, 4), (16.0, 8), (2.5, 40)])
def test_predict_mixed_is_the_formula(target, prior, batch_size):
    net = trained_like()
    ref = torch.cat([mixed_by_hand(net, b, prior) for b in target.split(batch_size)])
    torch.testing.assert_close(predict_mixed(net, target, batch_size, prior=prior), ref)


def test_predict_mixed_on_an_mlp_with_prior():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        mlp[1].running_mean.uniform_(-1, 1)
    mlp.eval()
    X = torch.randn(6, 5, dtype=torch.float64)
    out = predict_mixed(mlp, X, 1, prior=3.0)  # one sample per batch is fine with a prior
    w = 3.0 / 4.0
    with torch.no_grad():
        h = mlp[0](X)
        mean = w * mlp[1].running_mean + (1 - w) * h
        var = w * mlp[1].running_var  # a single sample's own variance is 0
        y = (h - mean) / (var + mlp[1].eps).sqrt() * mlp[1].weight + mlp[1].bias
        ref = mlp[3](torch.relu(y))
    torch.testing.assert_close(out, ref)


def tent_by_hand(net, X, steps, lr):
    """TENT with plain autograd and torch.optim.Adam: BN in train mode with X's statistics,
    only the BN weights and biases in the optimizer; then the running stats from X."""
    net = copy.deepcopy(net)
    params = [p for m in bn_layers(net) for p in (m.weight, m.bias)]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        out = F.batch_norm  # noqa: F841 (the net's own BN layers do the work)
        scratch_stats = [(m.running_mean.clone(), m.running_var.clone()) for m in bn_layers(net)]
        net.train()
        logp = F.log_softmax(net(X), 1)
        loss = -(logp.exp() * logp).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for m, (rm, rv) in zip(bn_layers(net), scratch_stats):
                m.running_mean.copy_(rm)
                m.running_var.copy_(rv)
    return recalibrate(net, [(X,)]).eval()


def test_tent_matches_autograd_and_adam(target):
    net = trained_like()
    ours = copy.deepcopy(net)
    entropies = tent(ours, target, steps=5, lr=1e-2)
    ref = tent_by_hand(net, target, 5, 1e-2)
    for (n, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, msg=n)
    for a, b in zip(bn_layers(ours), bn_layers(ref)):
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)
    assert len(entropies) == 5 and entropies[-1] < entropies[0]


def test_tent_moves_only_gamma_and_beta_and_keeps_flags(target):
    net = trained_like()
    net.features[0].weight.requires_grad_(False)  # a flag of the caller's, to be kept
    before = {n: p.clone() for n, p in net.named_parameters()}
    tent(net, target, steps=3, lr=1e-2)
    bn_names = {n for n, _ in net.named_parameters() if n.startswith(("features.1", "features.5"))}
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n]) != (n in bn_names), n
        assert p.grad is None
    assert not net.features[0].weight.requires_grad
    assert all(p.requires_grad for n, p in net.named_parameters() if n != "features.0.weight")
    assert not net.training


def test_predict_mixed_with_a_batch_larger_than_X(target):
    net = trained_like()
    with torch.no_grad():
        ref = copy.deepcopy(net).train()(target)
    torch.testing.assert_close(predict_mixed(net, target, 100, prior=0), ref)


def test_tent_on_a_frozen_net_still_normalises_with_the_target_statistics(target):
    from bnteach.batchnorm import freeze

    net = trained_like()
    frozen = freeze(copy.deepcopy(net))
    tent(frozen, target, steps=3, lr=1e-2)
    plain = copy.deepcopy(net)
    tent(plain, target, steps=3, lr=1e-2)
    for a, b in zip(bn_layers(frozen), bn_layers(plain)):
        torch.testing.assert_close(a.weight, b.weight)
        assert not a.weight.requires_grad  # the freeze's flags are kept
    assert not any(m.training for m in bn_layers(frozen))


def test_predict_mixed_with_a_bn_without_shift_is_its_train_mode_forward():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5, bias=False), nn.ReLU(), nn.Linear(5, 3))
    net = net.double().eval()
    X = torch.randn(12, 6, dtype=torch.float64)
    with torch.no_grad():
        oracle = torch.cat([copy.deepcopy(net).train()(b) for b in X.split(4)])
    torch.testing.assert_close(predict_mixed(net, X, 4, prior=0), oracle, rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm", ["ghost", "renorm"])
def test_adabn_on_ghost_or_renorm_layers_gives_the_statistics_of_all_of_X(norm):
    from bnteach.models import MLP

    torch.manual_seed(0)
    extra = {"virtual_batch_size": 4} if norm == "ghost" else {}
    net = MLP(6, (5,), norm=norm, output_size=3, **extra).double()
    X = torch.randn(20, 6, dtype=torch.float64) * 2 + 1
    adabn(net, X)
    bn, h = net.network[1], net.network[0](X).detach()
    torch.testing.assert_close(bn.running_mean, h.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(bn.running_var, h.var(0), rtol=0, atol=1e-12)
