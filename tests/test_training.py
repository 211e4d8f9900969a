import math

import pytest
import torch
from torch import nn

from bnteach.data import TensorLoader, load_data, make_loaders
from bnteach.models import MLPWithBN, SimpleMLP
from bnteach.training import History, evaluate, train_model


@pytest.fixture(scope="module")
def small():
    return load_data(n_samples=200)


def run(model_cls, data, seed=0, epochs=3, lr=0.01, **kw):
    torch.manual_seed(seed)
    model = model_cls(data[0].shape[1], 16, 8, 1)
    return model, train_model(
        model, *make_loaders(*data, seed=seed), epochs, lr, verbose=False, **kw
    )


@pytest.mark.parametrize("model_cls", [SimpleMLP, MLPWithBN])
def test_same_seed_same_results_bit_for_bit(small, model_cls):
    a, ha = run(model_cls, small, seed=1)
    b, hb = run(model_cls, small, seed=1)
    assert ha.train_loss == hb.train_loss and ha.val_loss == hb.val_loss
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    _, hc = run(model_cls, small, seed=2)
    assert hc.train_loss != ha.train_loss


def test_history_has_one_entry_per_epoch_and_learns(data):
    torch.manual_seed(0)
    h = train_model(SimpleMLP(20, 128, 64, 1), *make_loaders(*data), epochs=5, verbose=False)
    assert len(h.train_loss) == len(h.val_loss) == len(h.val_acc) == 5
    assert h.train_loss[-1] < h.train_loss[0] and h.val_acc[-1] > 0.85
    assert not h.diverged and "5/5 epochs, finished" in repr(h)


def test_loop_is_the_textbook_loop(small):
    """train_model computes exactly what the loop written out in the notebooks computes."""
    model, h = run(MLPWithBN, small, seed=4, epochs=2)
    torch.manual_seed(4)
    ref = MLPWithBN(20, 16, 8, 1)
    train_loader, val_loader = make_loaders(*small, seed=4)
    opt = torch.optim.Adam(ref.parameters(), lr=0.01, fused=True)
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(2):
        ref.train()
        total = 0.0
        for xb, yb in train_loader:
            opt.zero_grad()
            loss = loss_fn(ref(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        assert total / 160 == h.train_loss[epoch]
        ref.eval()
        with torch.no_grad():
            assert loss_fn(ref(small[1]), small[3]).item() == h.val_loss[epoch]
    assert all(
        torch.equal(p, q) for p, q in zip(ref.state_dict().values(), model.state_dict().values())
    )


def test_evaluate_uses_eval_mode_and_sample_weights(small):
    torch.manual_seed(0)
    model = MLPWithBN(20, 16, 8, 1)
    model.train()
    X_val, y_val = small[1], small[3]
    whole = evaluate(model, TensorLoader(X_val, y_val, None))
    assert not model.training
    running = model.network[1].running_mean.clone()
    in_sevens = evaluate(model, TensorLoader(X_val, y_val, 7))  # 40 = 5 * 7 + 5
    assert torch.equal(running, model.network[1].running_mean)  # no statistics updated
    assert math.isclose(whole[0], in_sevens[0], rel_tol=1e-6) and whole[1] == in_sevens[1]


def test_divergence_stops_cleanly_and_is_recorded(small):
    _, h = run(SimpleMLP, small, epochs=5, lr=1e20)
    assert h.diverged and h.diverged_at == len(h.train_loss) <= 5
    assert not math.isfinite(h.train_loss[-1])
    assert "diverged at epoch" in repr(h)


def test_training_moves_bn_running_statistics(small):
    model, _ = run(MLPWithBN, small, epochs=1)
    bn = model.network[1]
    assert bn.num_batches_tracked.item() == 3  # 160 samples, batch 64: 64 + 64 + 32
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


@pytest.mark.parametrize(
    "lr, error, match",
    [
        (0, ValueError, "positive, finite"),
        (-0.1, ValueError, "positive, finite"),
        (float("nan"), ValueError, "positive, finite"),
        (float("inf"), ValueError, "positive, finite"),
        ("0.1", TypeError, "must be a number"),
        (True, TypeError, "must be a number"),
    ],
)
def test_bad_learning_rates_are_explained(small, lr, error, match):
    with pytest.raises(error, match=match):
        run(SimpleMLP, small, lr=lr)


@pytest.mark.parametrize("epochs, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError)])
def test_bad_epochs_are_explained(small, epochs, error):
    with pytest.raises(error, match="epochs"):
        run(SimpleMLP, small, epochs=epochs)


def test_empty_loader_is_explained(small):
    with pytest.raises(ValueError, match="X holds no samples"):
        TensorLoader(torch.zeros(0, 20), torch.zeros(0, 1))
    with pytest.raises(ValueError, match="train_loader yields no batches"):
        train_model(SimpleMLP(20, 8, 8, 1), [], [], epochs=1, verbose=False)


def test_input_size_mismatch_is_explained(small):
    with pytest.raises(ValueError, match=r"expects 10 input features .* gives 20"):
        train_model(SimpleMLP(10, 8, 8, 1), *make_loaders(*small), epochs=1, verbose=False)


def test_wrong_target_shape_is_explained(small):
    X_train, X_val, y_train, y_val = small
    loaders = make_loaders(X_train, X_val, y_train.flatten(), y_val.flatten())
    with pytest.raises(ValueError, match=r"reshape\(-1, 1\)"):
        train_model(SimpleMLP(20, 8, 8, 1), *loaders, epochs=1, verbose=False)


def test_prints_like_the_tutorial(small, capsys):
    torch.manual_seed(0)
    train_model(SimpleMLP(20, 8, 8, 1), *make_loaders(*small), epochs=10)
    printed = [line.split(":")[0].split()[-1] for line in capsys.readouterr().out.splitlines()]
    assert printed == ["1/10", "5/10", "10/10"]


def test_history_unpacks_like_the_tutorial(small):
    _, h = run(SimpleMLP, small, epochs=2)
    train_losses, val_losses = h
    assert train_losses == h.train_loss and val_losses == h.val_loss and len(train_losses) == 2


def test_history_repr_before_training():
    assert "no epochs run" in repr(History(lr=0.1, epochs=3))
