"""bnteach.training with the inputs a careless learner gives: empty batches, NaN, a loss class
instead of a loss, devices that do not exist, huge learning rates. Either a teaching error
(and the model as it was) or the documented result."""

import math

import pytest
import torch
from torch import nn

from bnteach import training
from bnteach.models import MLPWithBN, SimpleMLP
from bnteach.training import evaluate, train_model

G = torch.Generator().manual_seed(0)
X = torch.randn(64, 20, generator=G)
Y = (torch.rand(64, 1, generator=G) > 0.5).float()
BATCHES = [(X[:32], Y[:32]), (X[32:], Y[32:])]


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model, before):
    for k, v in before.items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0, msg=k)


class OnceEmpty:
    """A loader that cannot be read up front and yields an empty batch in its second epoch."""

    def __init__(self):
        self.epoch = 0

    def __iter__(self):
        self.epoch += 1
        yield X[:32], Y[:32]
        if self.epoch == 2:
            yield X[:0], Y[:0]


TRAIN_CASES = {
    # name: (kwargs for train_model, error, words)
    "an empty batch in a list": (
        dict(train_loader=[(X[:0], Y[:0]), BATCHES[0]]),
        ValueError,
        "Batch 0 of train_loader holds no samples",
    ),
    "an empty batch found while training": (
        dict(train_loader=OnceEmpty(), epochs=3),
        ValueError,
        "Batch 1 of train_loader holds no samples",
    ),
    "an empty validation batch": (
        dict(val_loader=[BATCHES[0], (X[:0], Y[:0])]),
        ValueError,
        "Batch 1 of val_loader holds no samples",
    ),
    "verbose a string": (dict(verbose="no"), TypeError, "verbose must be True or False"),
    "lr a string": (dict(lr="0.1"), TypeError, "lr must be a number"),
    "lr infinite": (dict(lr=math.inf), ValueError, "positive, finite"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_bad_training_call_raises_and_leaves_the_model(case):
    kwargs, error, words = TRAIN_CASES[case]
    torch.manual_seed(0)
    model = MLPWithBN(20, 8, 4, 1)
    before = state(model)
    args = dict(train_loader=BATCHES, val_loader=BATCHES, epochs=2, verbose=False) | kwargs
    with pytest.raises(error, match=words):
        train_model(model, **args)
    assert_same_state(model, before)


@pytest.mark.parametrize("model_cls", [MLPWithBN, SimpleMLP])
def test_a_huge_learning_rate_is_recorded_as_divergence(model_cls, capsys):
    # documented: not an error; training stops, diverged_at says when, verbose prints it
    torch.manual_seed(0)
    history = train_model(model_cls(20, 8, 4, 1), BATCHES, BATCHES, epochs=3, lr=1e30)
    assert history.diverged and history.diverged_at == 1
    assert math.isnan(history.val_loss[-1])
    assert history.val_acc[-1] == 0.0  # NaN outputs count as wrong, not as class 0
    assert "training diverged" in capsys.readouterr().out


EVALUATE_CASES = {
    "an empty batch": (dict(loader=[(X[:0], Y[:0])]), ValueError, "holds no samples"),
    "a loss class, not a loss": (
        dict(loss_fn=nn.BCEWithLogitsLoss),
        TypeError,
        "an instance: note the parentheses",
    ),
    "a device that does not exist": (dict(device="gpu"), ValueError, "not a device torch knows"),
    "a device given as a number": (dict(device=3.5), TypeError, "device must be a device"),
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_bad_evaluate_call_raises(case):
    kwargs, error, words = EVALUATE_CASES[case]
    args = dict(model=SimpleMLP(20, 8, 4, 1), loader=BATCHES) | kwargs
    with pytest.raises(error, match=words):
        evaluate(**args)


def test_evaluate_counts_nan_outputs_as_wrong():
    model = nn.Sequential(nn.Linear(20, 1))
    with torch.no_grad():
        model[0].weight.fill_(math.nan)
    loss, accuracy = evaluate(model, BATCHES)
    assert math.isnan(loss) and accuracy == 0.0


def test_evaluate_accuracy_unchanged_for_finite_outputs():
    torch.manual_seed(0)
    model = SimpleMLP(20, 8, 4, 1)
    loss, accuracy = evaluate(model, BATCHES)
    with torch.no_grad():
        logits = model(X)
    assert accuracy == ((logits > 0).float() == Y).float().mean().item()


def test_check_lr_refuses_what_train_model_refuses():
    for bad, error in ((0, ValueError), (-1, ValueError), (math.nan, ValueError), ("1", TypeError)):
        with pytest.raises(error):
            training.check_lr(bad)
    assert training.check_lr(1e30) == 1e30  # valid; training records the divergence
