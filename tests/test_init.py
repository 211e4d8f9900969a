"""bnteach.init: the init scales it sets (training from them: tests/test_sweep.py, inits)."""

import math

import pytest
import torch

from bnteach.init import init_std, scale_init_
from bnteach.models import MLP


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
