import pytest
import torch
from torch import nn

from bnteach.models import MLP, MLPWithBN, SimpleMLP, count_parameters


def layer_types(model):
    return [type(m).__name__ for m in model.network]


def test_simple_mlp_is_the_tutorial_architecture():
    model = SimpleMLP(20, 128, 64, 1)
    assert layer_types(model) == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    sizes = [(m.in_features, m.out_features) for m in model.network if isinstance(m, nn.Linear)]
    assert sizes == [(20, 128), (128, 64), (64, 1)]
    assert count_parameters(model) == 20 * 128 + 128 + 128 * 64 + 64 + 64 + 1 == 11009


def test_mlp_with_bn_puts_bn_between_linear_and_relu():
    model = MLPWithBN(20, 128, 64, 1)
    assert layer_types(model) == [
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
    ]
    # each BN layer adds a weight (gamma) and a bias (beta) per feature: 2 * (128 + 64)
    assert count_parameters(model) == 11009 + 2 * (128 + 64)
    assert "BatchNorm1d(128" in repr(model)


def test_forward_gives_one_logit_per_sample():
    x = torch.randn(7, 20)
    for model in (SimpleMLP(20, 128, 64, 1), MLPWithBN(20, 128, 64, 1)):
        assert model(x).shape == (7, 1)


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = MLPWithBN(20, 128, 64, 1)
    torch.manual_seed(3)
    b = MLPWithBN(20, 128, 64, 1)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_builder_variants():
    deep = MLP(20, (32,) * 6, 1, norm="batch", activation="tanh", bias=False)
    assert layer_types(deep).count("BatchNorm1d") == 6 and layer_types(deep).count("Tanh") == 6
    hidden = [m for m in deep.network if isinstance(m, nn.Linear)][:-1]
    assert all(m.bias is None for m in hidden)
    after = MLP(20, (16,), 1, norm="batch", placement="after")
    assert layer_types(after) == ["Linear", "ReLU", "BatchNorm1d", "Linear"]
    layer = MLP(20, (16,), 1, norm="layer")
    assert layer_types(layer) == ["Linear", "LayerNorm", "ReLU", "Linear"]
    assert layer(torch.randn(1, 20)).shape == (1, 1)  # LayerNorm works on a batch of one


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"norm": "group"}, "norm must be one of"),
        ({"activation": "swish"}, "activation must be one of"),
        ({"placement": "middle"}, "placement"),
        ({"hidden_sizes": (0,)}, "positive integers"),
    ],
)
def test_builder_rejects_unknown_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLP(**kwargs)
