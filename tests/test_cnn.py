"""bnteach.cnn: shapes, the stacked trainer against the plain loop, errors."""

import pytest
import torch
from torch import nn

from bnteach.cnn import NORMS, SmallCNN, _build, evaluate_cnn, make_norm, train_cnn, train_cnns
from bnteach.data import load_digits


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.mark.parametrize("norm", NORMS)
def test_small_cnn_shapes_and_layers(norm):
    model = SmallCNN(norm=norm)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2
    assert (convs[0].bias is None) == (norm in ("batch", "instance"))
    assert SmallCNN(norm=norm, bias=True).features[0].bias is not None


def test_make_norm_axes_are_what_the_notebook_says():
    x = torch.randn(4, 8, 3, 3, dtype=torch.float64)
    for norm, dims in [("layer", (1, 2, 3)), ("instance", (2, 3)), ("batch", (0, 2, 3))]:
        layer = make_norm(norm, 8).double()
        m = x.mean(dims, keepdim=True)
        v = x.var(dims, keepdim=True, unbiased=False)
        torch.testing.assert_close(layer(x), (x - m) / torch.sqrt(v + 1e-5))
    inst = nn.InstanceNorm2d(8, affine=True).double()
    torch.testing.assert_close(make_norm("instance", 8).double()(x), inst(x))
    with pytest.raises(ValueError, match="multiple of groups"):
        make_norm("group", 6, groups=4)
    with pytest.raises(ValueError, match="norm must be one of"):
        make_norm("weight", 4)


def test_small_cnn_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        SmallCNN()(torch.randn(1, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        SmallCNN(channels=(8,))


def _tiny(digits, n=96):
    X_train, X_val, y_train, y_val = digits
    return (X_train[:n].double(), X_val[:40].double(), y_train[:n], y_val[:40])


@pytest.mark.parametrize("norm", ["none", "batch", "group", "layer", "instance"])
def test_stacked_training_equals_the_plain_loop(digits, norm):
    data = _tiny(digits)
    seeds = [3, 4, 5]
    stacked_models = [_build(s, norm, (4, 8), torch.float64) for s in seeds]
    stacked = train_cnns(
        seeds,
        data,
        norm=norm,
        epochs=2,
        lr=0.01,
        batch_size=32,
        channels=(4, 8),
        models=stacked_models,
    )
    for s, h, m_stacked in zip(seeds, stacked, stacked_models):
        model = _build(s, norm, (4, 8), torch.float64)
        plain = train_cnn(model, data, seed=s, epochs=2, lr=0.01, batch_size=32)
        for a, b in ((h.train_loss, plain.train_loss), (h.val_loss, plain.val_loss)):
            torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-9, atol=1e-10)
        assert h.val_acc == plain.val_acc
        for (k, v), (k2, v2) in zip(
            model.state_dict().items(), m_stacked.state_dict().items(), strict=True
        ):
            assert k == k2
            torch.testing.assert_close(v2, v, rtol=1e-8, atol=1e-10, msg=k)


def test_stacked_training_default_build_matches_given_models(digits):
    data = _tiny(digits, 64)
    a = train_cnns([7, 8], data, norm="batch", epochs=1, batch_size=16, channels=(4, 8))
    b = train_cnns(
        [7, 8],
        data,
        norm="batch",
        epochs=1,
        batch_size=16,
        channels=(4, 8),
        models=[_build(s, "batch", (4, 8), torch.float64) for s in (7, 8)],
    )
    assert [h.val_loss for h in a] == [h.val_loss for h in b]


def test_a_replica_does_not_depend_on_the_others(digits):
    data = _tiny(digits, 64)
    alone = train_cnns([9], data, norm="batch", epochs=1, batch_size=16, channels=(4, 8))
    crowd = train_cnns([1, 9, 2], data, norm="batch", epochs=1, batch_size=16, channels=(4, 8))
    torch.testing.assert_close(
        torch.tensor(alone[0].val_loss), torch.tensor(crowd[1].val_loss), rtol=1e-9, atol=1e-12
    )


def test_training_learns_the_digits(digits):
    torch.manual_seed(0)
    h = train_cnns([0, 1], digits, norm="batch", epochs=3)
    assert all(x.val_acc[-1] > 0.8 for x in h)
    model = SmallCNN("batch")
    loss, acc = evaluate_cnn(model, digits[1], digits[3])
    assert not model.training and 0 <= acc <= 1 and loss > 0


def test_global_rng_untouched_by_building(digits):
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    _build(1, "batch", (8, 16), torch.float32)
    assert torch.equal(torch.rand(2), expected)


@pytest.mark.parametrize(
    "kwargs,err,phrase",
    [
        (dict(batch_size=1), ValueError, "batch_size"),
        (dict(batch_size=4.0), TypeError, "batch_size"),
        (dict(lr=0), ValueError, "lr"),
        (dict(epochs=0), ValueError, "epochs"),
        (dict(seeds=[]), ValueError, "seeds"),
        (dict(seeds=[1.5]), TypeError, "seeds"),
        (dict(norm="weight"), ValueError, "norm must be one of"),
    ],
)
def test_train_cnns_bad_arguments(digits, kwargs, err, phrase):
    args = dict(seeds=[0], data=digits, epochs=1)
    args.update(kwargs)
    with pytest.raises(err, match=phrase):
        train_cnns(**args)


def test_train_cnns_bad_data(digits):
    X_train, X_val, y_train, y_val = digits
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        train_cnns([0], (X_train.flatten(1), X_val, y_train, y_val), epochs=1)
    with pytest.raises(ValueError, match="int64 labels"):
        train_cnns([0], (X_train, X_val, y_train.float(), y_val), epochs=1)
    bad = X_train.clone()
    bad[3, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_cnns([0], (bad, X_val, y_train, y_val), epochs=1)
    with pytest.raises(ValueError, match="4 tensors"):
        train_cnns([0], (X_train, y_train), epochs=1)
    with pytest.raises(ValueError, match="last batch holds one image"):
        train_cnns([0], (X_train[:65], X_val, y_train[:65], y_val), epochs=1)


def test_mixed_norms_in_one_run_equal_the_plain_loop(digits):
    data = _tiny(digits)
    seeds = [1, 2, 3, 4, 5]
    norms = ["batch", "batch", "group", "layer", "instance"]
    hs = train_cnns(seeds, data, norm=norms, epochs=2, batch_size=16, channels=(4, 8), bias=False)
    for s, n, h in zip(seeds, norms, hs):
        model = _build(s, n, (4, 8), torch.float64, bias=False)
        plain = train_cnn(model, data, seed=s, epochs=2, batch_size=16)
        torch.testing.assert_close(
            torch.tensor(h.val_loss), torch.tensor(plain.val_loss), rtol=1e-9, atol=1e-10
        )


def test_mixed_norms_need_one_bias_setting(digits):
    with pytest.raises(ValueError, match="agree on the conv bias"):
        train_cnns([0, 1], digits, norm=["batch", "layer"], epochs=1)
    with pytest.raises(ValueError, match="one per seed"):
        train_cnns([0, 1], digits, norm=["batch"], epochs=1)


def test_drop_last_skips_a_last_batch_of_one_in_both_loops(digits):
    X_train, X_val, y_train, y_val = _tiny(digits, 65)
    data = (X_train, X_val, y_train, y_val)
    h = train_cnns(
        [4], data, norm="batch", epochs=1, batch_size=16, channels=(4, 8), drop_last=True
    )
    model = _build(4, "batch", (4, 8), torch.float64)
    plain = train_cnn(model, data, seed=4, epochs=1, batch_size=16, drop_last=True)
    torch.testing.assert_close(
        torch.tensor(h[0].val_loss), torch.tensor(plain.val_loss), rtol=1e-9, atol=1e-10
    )
    assert model.features[1].num_batches_tracked.item() == 4  # 64 of 65 images, 4 batches
    with pytest.raises(ValueError, match="drop_last=True"):
        train_cnn(model, data, seed=4, epochs=1, batch_size=16)
