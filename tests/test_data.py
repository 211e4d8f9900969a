import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from bnteach.data import SHIFTS, TensorLoader, load_data, load_digits, make_loaders, shifted


def test_seed_experiment_shapes_and_types(data):
    X_train, X_val, y_train, y_val = data
    assert X_train.shape == (800, 20) and X_val.shape == (200, 20)
    assert y_train.shape == (800, 1) and y_val.shape == (200, 1)
    assert {t.dtype for t in data} == {torch.float32}
    assert set(torch.cat([y_train, y_val]).unique().tolist()) == {0.0, 1.0}


def test_same_samples_as_the_tutorial(data):
    """Same make_classification call and split as the starting tutorial (before scaling)."""
    X, y = make_classification(
        n_samples=1000,
        n_features=20,
        n_informative=10,
        n_redundant=5,
        n_classes=2,
        random_state=42,
    )
    _, _, y_tr, y_va = train_test_split(X, y, test_size=0.2, random_state=42)
    assert torch.equal(data[2].flatten(), torch.tensor(y_tr, dtype=torch.float32))
    assert torch.equal(data[3].flatten(), torch.tensor(y_va, dtype=torch.float32))


def test_scaler_is_fitted_on_the_training_split_only(data):
    X_train, X_val, _, _ = data
    assert torch.allclose(X_train.mean(0), torch.zeros(20), atol=1e-5)
    assert torch.allclose(X_train.std(0, unbiased=False), torch.ones(20), atol=1e-4)
    # validation data was not used by the scaler, so it is not exactly standardized
    assert X_val.mean(0).abs().max() > 0.02


def test_leak_reproduces_the_tutorial_mistake():
    X_train, X_val, _, _ = load_data(leak=True)
    everything = torch.cat([X_train, X_val])
    assert torch.allclose(everything.mean(0), torch.zeros(20), atol=1e-5)
    assert X_train.mean(0).abs().max() > 1e-3  # train alone is no longer centred


def test_options_vary_the_data():
    X_train, X_val, y_train, _ = load_data(n_samples=300, n_features=8, noise=0.2, seed=1)
    assert X_train.shape == (240, 8) and X_val.shape == (60, 8) and y_train.shape == (240, 1)
    assert not torch.equal(load_data(seed=1)[0], load_data(seed=2)[0])
    assert torch.equal(load_data(seed=3)[0], load_data(seed=3)[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_samples": 5}, "n_samples"),
        ({"n_features": 2}, "n_features"),
        ({"noise": 1.5}, "random label"),
        ({"test_size": 1.5}, "test_size"),
    ],
)
def test_bad_arguments_explain_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_data(**kwargs)


@pytest.mark.parametrize("batch_size, drop_last", [(64, False), (64, True), (7, False)])
def test_tensor_loader_batches_like_dataloader(data, batch_size, drop_last):
    X_train, _, y_train, _ = data
    ours = TensorLoader(
        X_train,
        y_train,
        batch_size,
        shuffle=True,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(5),
    )
    theirs = DataLoader(
        TensorDataset(X_train, y_train), batch_size=batch_size, shuffle=True, drop_last=drop_last
    )
    assert len(ours) == len(theirs)
    assert [len(x) for x, _ in ours] == [len(x) for x, _ in theirs]
    epochs = [torch.cat([x for x, _ in ours]) for _ in range(2)]
    for seen in epochs:
        # every sample at most once per epoch, and (x, y) pairs stay together
        assert len(torch.unique(seen, dim=0)) == len(seen)
    assert not torch.equal(epochs[0], epochs[1])  # a new order each epoch
    if not drop_last:
        assert torch.equal(torch.unique(epochs[0], dim=0), torch.unique(X_train, dim=0))
    for xb, yb in ours:
        rows = (X_train[None] == xb[:, None]).all(-1).float().argmax(1)
        assert torch.equal(y_train[rows], yb)


def test_make_loaders_shuffle_is_seeded_and_independent_of_global_rng(data):
    torch.manual_seed(0)
    first = [x for x, _ in make_loaders(*data, seed=3)[0]]
    torch.manual_seed(123)
    second = [x for x, _ in make_loaders(*data, seed=3)[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    other = next(iter(make_loaders(*data, seed=4)[0]))[0]
    assert not torch.equal(first[0], other)


def test_validation_loader_is_unshuffled_whole_set_by_default(data):
    train, val = make_loaders(*data)
    assert len(train) == 13 and len(val) == 1
    ((xb, yb),) = list(val)
    assert torch.equal(xb, data[1]) and torch.equal(yb, data[3])
    assert "13 batches" in repr(train)


def test_tensor_loader_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="must match"):
        TensorLoader(torch.zeros(5, 2), torch.zeros(4, 1))


# ------------------------------------------------------------------------------ the digits


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_digits_shapes_split_and_scaling(digits):
    X_train, X_val, y_train, y_val = digits
    assert X_train.shape == (1437, 1, 8, 8) and X_val.shape == (360, 1, 8, 8)
    assert X_train.dtype == torch.float32 and y_train.dtype == torch.long
    assert y_train.shape == (1437,) and set(y_val.tolist()) == set(range(10))
    # stratified: every class keeps its share in both splits
    counts = torch.bincount(y_train, minlength=10) / 1437 - torch.bincount(y_val) / 360
    assert counts.abs().max() < 0.01
    # standardised with the training split's numbers only
    assert abs(X_train.mean().item()) < 1e-5 and abs(X_train.std().item() - 1) < 1e-3
    assert abs(X_val.mean().item()) > 1e-4  # the validation split was not fitted
    # an image stays an image: ONE affine map for every pixel, so the 17 raw grey levels
    # (0..16) stay 17 values (a per-pixel scaler would give hundreds)
    assert torch.unique(X_train).numel() == 17
    assert torch.unique(X_val).numel() <= 17


def test_flat_digits_are_the_images_flattened(digits):
    flat = load_digits(flat=True)
    assert flat[0].shape == (1437, 64)
    for a, b in zip(flat, digits):
        assert torch.equal(a, b.reshape(a.shape))


def test_digits_are_deterministic_and_the_seed_moves_the_split(digits):
    assert all(torch.equal(a, b) for a, b in zip(digits, load_digits()))
    assert not torch.equal(load_digits(seed=1)[0], digits[0])
    assert load_digits(test_size=0.25)[1].shape[0] == 450


@pytest.mark.parametrize("kind", list(SHIFTS))
def test_shifts_are_pure_deterministic_shape_preserving_and_identity_at_zero(digits, kind):
    X = digits[1]
    before = X.clone()
    a, b = shifted(X, kind, 1.0, seed=3), shifted(X, kind, 1.0, seed=3)
    assert torch.equal(X, before)  # pure
    assert torch.equal(a, b) and a.shape == X.shape and a.dtype == X.dtype
    assert not torch.equal(a, X)
    assert torch.equal(shifted(X, kind, 0.0, seed=3), X)
    # stronger shifts move the pixels further
    far = shifted(X, kind, 2.0, seed=3)
    assert (far - X).abs().mean() > (a - X).abs().mean()
    if kind not in ("blur", "rotation"):  # pixel-wise shifts work on flat rows too
        flat = shifted(X.reshape(-1, 64), kind, 1.0, seed=3)
        assert torch.equal(flat, a.reshape(-1, 64))


def test_shifts_do_what_they_say(digits):
    X = digits[1]
    assert torch.allclose(shifted(X, "offset", 2.0), X + 1.5)
    assert torch.allclose(shifted(X, "contrast", 1.0), X * 0.5)
    noise = shifted(X, "noise", 1.0, seed=0) - X
    assert abs(noise.std().item() - 0.5) < 0.02 and abs(noise.mean().item()) < 0.02
    # blur keeps the mean brightness of an image (edges extended, weights summing to 1)
    # up to the border, and lowers the contrast between neighbouring pixels
    blur = shifted(X, "blur", 1.0)
    assert (blur.diff(dim=3).abs().mean() < X.diff(dim=3).abs().mean()).item()
    # a quarter turn (severity 4.5: 90 degrees) of a horizontal bar is a vertical bar
    bar = torch.zeros(1, 1, 8, 8)
    bar[0, 0, 3:5, :] = 1.0
    turned = shifted(bar, "rotation", 4.5)  # 90 degrees
    assert torch.allclose(turned[0, 0], bar[0, 0].T, atol=1e-6)
