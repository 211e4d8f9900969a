import pytest
import torch
from torch import nn

from bnteach.models import (
    MLP,
    MLPWithBN,
    ResidualBlock,
    ResidualMLP,
    SimpleMLP,
    build,
    count_parameters,
)


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


# ------------------------------------------------- norm variants, dropout, the residual MLP


def test_norm_variants_and_dropout_placement():
    ghost = MLP(20, (16, 8), norm="ghost", virtual_batch_size=4)
    assert [type(m).__name__ for m in ghost.network][1] == "GhostBatchNorm1d"
    assert ghost.network[1].virtual_batch_size == 4
    renorm = MLP(20, (16,), norm="renorm", r_max=2.0, d_max=1.0)
    assert (renorm.network[1].r_max, renorm.network[1].d_max) == (2.0, 1.0)
    every = MLP(20, (16, 8), norm="batch", dropout=0.5)
    kinds = [type(m).__name__ for m in every.network]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"]
    last = MLP(20, (16, 8), norm="batch", dropout=0.5, dropout_at="last")
    kinds = [type(m).__name__ for m in last.network]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Dropout", "Linear"]
    # no dropout layer at all by default: the tutorial's module names are unchanged
    assert not any(isinstance(m, nn.Dropout) for m in MLP(norm="batch").modules())


@pytest.mark.parametrize(
    "norm, init",
    [("batch", "default"), ("batch", "zero_gamma"), ("none", "skipinit"), ("none", "fixup")]
    + [("none", "he")],
)
def test_residual_mlp_variants(norm, init):
    torch.manual_seed(0)
    model = ResidualMLP(64, 16, 5, 10, norm=norm, init=init)
    blocks = [m for m in model.network if isinstance(m, ResidualBlock)]
    assert len(blocks) == 5 and model(torch.randn(7, 64)).shape == (7, 10)
    has_bn = any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert has_bn == (norm == "batch")
    if init == "zero_gamma":
        assert all(torch.equal(b.branch[-1].weight, torch.zeros(16)) for b in blocks)
    if init in ("zero_gamma", "skipinit", "fixup"):
        # every block starts as the identity on its (non-negative) input
        h = torch.relu(torch.randn(9, 16))
        for b in blocks:
            b.train(False)
            torch.testing.assert_close(b(h), h)
    if init == "skipinit":
        assert all(b.alpha is not None and b.alpha.item() == 0.0 for b in blocks)
    if init == "fixup":
        first = blocks[0].branch[0].weight
        assert abs(first.std().item() - (2 / 16) ** 0.5 * 5**-0.5) < 0.05


def test_residual_signal_at_initialisation():
    """Without normalization and with He init the signal grows block by block; zero-gamma,
    SkipInit and Fixup start every block as the identity."""
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(1))

    def logit_std(norm, init):
        torch.manual_seed(0)
        with torch.no_grad():
            return ResidualMLP(64, 32, 20, 10, norm=norm, init=init).train()(x).std().item()

    assert logit_std("none", "he") > 100 * logit_std("none", "skipinit")
    assert logit_std("batch", "zero_gamma") < logit_std("batch", "default")


def test_build_reads_a_spec():
    assert isinstance(build(20, 1, hidden_sizes=(8,)), MLP)
    assert isinstance(build(64, 10, blocks=2, width=8), ResidualMLP)
