"""bnteach.init: the init scales it sets, and train_together against the plain training loop."""

import copy
import math

import pytest
import torch

from bnteach.data import load_data, make_loaders
from bnteach.init import init_std, scale_init_, train_together
from bnteach.models import MLP
from bnteach.training import train_model


def test_init_std_formulas():
    assert init_std(100, 50, "relu") == pytest.approx(math.sqrt(2 / 100))
    assert init_std(100, 50, "tanh") == pytest.approx(math.sqrt(2 / 150))
    with pytest.raises(ValueError, match="activation"):
        init_std(10, 10, "swish")


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_scale_init_sets_the_std(activation):
    torch.manual_seed(0)
    model = MLP(20, (256, 256), activation=activation)
    scale_init_(model, 3.0)
    hidden = model.network[2]  # the second Linear: 256 -> 256
    expected = 3.0 * init_std(256, 256, activation)
    assert hidden.weight.std().item() == pytest.approx(expected, rel=0.02)
    assert torch.all(hidden.bias == 0)
    out = model.network[-1]  # the output layer keeps the standard scale unless asked
    assert out.weight.std().item() == pytest.approx(init_std(256, 1, "tanh"), rel=0.15)
    scale_init_(model, 3.0, scale_output=True)
    assert out.weight.std().item() == pytest.approx(3.0 * init_std(256, 1, "tanh"), rel=0.15)


def test_bn_net_function_does_not_depend_on_the_scale():
    x = torch.randn(64, 20)
    outs = []
    for scale in (0.01, 1.0, 100.0):
        torch.manual_seed(0)
        net = MLP(20, (32, 32, 32), norm="batch", bias=False)
        torch.manual_seed(1)
        outs.append(scale_init_(net, scale)(x))
    torch.testing.assert_close(outs[2], outs[1], rtol=1e-4, atol=1e-4)
    # at 0.01x the pre-BN variances (~1e-4 x) come near eps = 1e-5: a visible difference
    assert not torch.allclose(outs[0], outs[1], atol=1e-4)


def test_scale_init_rejects_bad_input():
    model = MLP()
    before = model.network[0].weight.clone()
    for bad in (0, -1.0, float("nan"), "big", True):
        with pytest.raises(ValueError, match="positive finite"):
            scale_init_(model, bad)
    assert torch.equal(model.network[0].weight, before)
    with pytest.raises(TypeError, match="MLP"):
        scale_init_(torch.nn.Linear(3, 3), 1.0)


def plain_and_together(norm, activation, scales, seeds, epochs=3, lr=0.01):
    data = load_data()
    models = []
    for scale, seed in zip(scales, seeds):
        torch.manual_seed(seed)
        # no bias right before BN: its gradient is rounding noise that Adam turns into
        # implementation-dependent steps (facts item 13), which would move running_mean apart
        net = MLP(20, (32, 32, 32), norm=norm, activation=activation, bias=norm != "batch")
        models.append(scale_init_(net, scale))
    plain = [copy.deepcopy(m) for m in models]
    plain_h = [
        train_model(m, *make_loaders(*data, seed=s), epochs=epochs, lr=lr, verbose=False)
        for m, s in zip(plain, seeds)
    ]
    together_h = train_together(models, seeds, epochs=epochs, lr=lr, data=data)
    return plain, plain_h, models, together_h


@pytest.mark.parametrize(
    "norm,activation", [("none", "relu"), ("batch", "tanh"), ("batch", "relu")]
)
def test_train_together_equals_the_plain_loop(norm, activation):
    plain, plain_h, together, together_h = plain_and_together(
        norm, activation, scales=[0.3, 1.0, 4.0], seeds=[0, 1, 2]
    )
    for hp, ht in zip(plain_h, together_h):
        assert ht.train_loss == pytest.approx(hp.train_loss, rel=1e-4, abs=1e-6)
        assert ht.val_loss == pytest.approx(hp.val_loss, rel=1e-4, abs=1e-6)
        assert ht.val_acc == pytest.approx(hp.val_acc, abs=0.011)  # at most 2 of 200 flip
    for mp, mt in zip(plain, together):  # weights and BN buffers written back
        for (name, a), (_, b) in zip(mp.state_dict().items(), mt.state_dict().items()):
            if a.is_floating_point():
                torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)
            else:
                assert torch.equal(a, b), name


def test_train_together_rejects_mixed_architectures():
    with pytest.raises(ValueError, match="architecture"):
        train_together([MLP(norm="batch"), MLP(norm="none")], [0, 1], epochs=1)
    with pytest.raises(ValueError, match="one seed per model"):
        train_together([MLP()], [0, 1], epochs=1)
    with pytest.raises(ValueError, match="norm='none' or norm='batch'"):
        train_together([MLP(norm="layer")], [0], epochs=1)


def test_a_diverging_replica_leaves_the_others_alone():
    data = load_data()
    torch.manual_seed(0)
    good = scale_init_(MLP(20, (32, 32)), 1.0)
    bad = copy.deepcopy(good)
    with torch.no_grad():
        bad.network[0].weight.fill_(float("nan"))
    alone = train_together([copy.deepcopy(good)], [0], epochs=2, data=data)[0]
    pair = train_together([copy.deepcopy(good), bad], [0, 0], epochs=2, data=data)
    assert pair[0].train_loss == pytest.approx(alone.train_loss, rel=1e-6)
    assert pair[1].diverged_at == 1 and not pair[0].diverged
