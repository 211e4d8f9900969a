"""bnteach.cnn with the inputs a careless learner gives: strings for booleans, empty splits,
NaN, wrong dtypes, seeds and models of the wrong kind, a learning rate of 1e30. A teaching
error before any work (the model as it was), or the documented result."""

import math

import pytest
import torch

from bnteach import checks
from bnteach.cnn import SmallCNN, evaluate_cnn, make_norm, train_cnn, train_cnns

G = torch.Generator().manual_seed(0)
X = torch.randn(40, 1, 8, 8, generator=G)
Y = torch.randint(0, 10, (40,), generator=G)
DATA = (X[:30], X[30:], Y[:30], Y[30:])


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def with_nan(t):
    t = t.clone()
    t[1, 0, 2, 3] = math.nan
    return t


TRAIN_CNN_CASES = {
    # name: (kwargs for train_cnn, error, words)
    "an empty validation split": (
        dict(data=(X[:30], X[:0], Y[:30], Y[:0])),
        ValueError,
        "X_val holds no images",
    ),
    "an empty training split": (
        dict(data=(X[:0], X[30:], Y[:0], Y[30:])),
        ValueError,
        "X_train holds no images",
    ),
    "float64 data for a float32 model": (
        dict(data=(X[:30].double(), X[30:].double(), Y[:30], Y[30:])),
        TypeError,
        "The data is torch.float64 but the model's parameters are torch.float32",
    ),
    "NaN in a training image": (
        dict(data=(with_nan(X[:30]), X[30:], Y[:30], Y[30:])),
        checks.DataError,
        r"NaN at X_train\[1, 0, 2, 3\]",
    ),
    "batch_size a float": (dict(batch_size=10.0), TypeError, "batch_size must be a whole number"),
    "drop_last a string": (dict(drop_last="False"), TypeError, "drop_last must be True or False"),
}


@pytest.mark.parametrize("case", list(TRAIN_CNN_CASES))
def test_bad_train_cnn_call_raises_before_any_step(case):
    kwargs, error, words = TRAIN_CNN_CASES[case]
    torch.manual_seed(0)
    model = SmallCNN("batch")
    before = state(model)
    args = dict(model=model, data=DATA, seed=0, epochs=1, batch_size=10) | kwargs
    with pytest.raises(error, match=words):
        train_cnn(**args)
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k


TRAIN_CNNS_CASES = {
    "seeds a number": (dict(seeds=3), TypeError, "seeds must be a list of whole numbers"),
    "seeds a string": (dict(seeds="01"), TypeError, "seeds must be a list"),
    "no seeds": (dict(seeds=[]), ValueError, "seeds is empty"),
    "bias a string": (dict(bias="False"), TypeError, "bias must be True or False"),
    "models a string": (dict(models="m"), TypeError, "models must be a list of SmallCNN"),
    "models not SmallCNNs": (
        dict(models=[torch.nn.Linear(2, 2)]),
        TypeError,
        "models must hold SmallCNN models",
    ),
    "one model for two seeds": (
        dict(seeds=[0, 1], models=[SmallCNN()]),
        ValueError,
        "Got 1 models for 2 seeds",
    ),
    "norm a list for one model": (dict(norm=[["batch"]]), TypeError, "a string"),
}


@pytest.mark.parametrize("case", list(TRAIN_CNNS_CASES))
def test_bad_train_cnns_call_raises(case):
    kwargs, error, words = TRAIN_CNNS_CASES[case]
    args = dict(seeds=[0], data=DATA, epochs=1, batch_size=10) | kwargs
    with pytest.raises(error, match=words):
        train_cnns(**args)


SMALLCNN_CASES = {
    "bias='False'": (dict(bias="False"), TypeError, "bias must be True or False"),
    "n_classes 0": (dict(n_classes=0), ValueError, "n_classes must be at least 2"),
    "n_classes a string": (dict(n_classes="10"), TypeError, "n_classes must be a whole number"),
    "norm a list": (dict(norm=["batch"]), TypeError, "a string"),
}


@pytest.mark.parametrize("case", list(SMALLCNN_CASES))
def test_bad_smallcnn_arguments(case):
    kwargs, error, words = SMALLCNN_CASES[case]
    with pytest.raises(error, match=words):
        SmallCNN(**kwargs)


def test_smallcnn_forward_refuses_arrays_and_integers():
    model = SmallCNN("batch")
    with pytest.raises(TypeError, match="x must be a torch tensor"):
        model(X.numpy())
    with pytest.raises(TypeError, match="floating-point"):
        model(X.long())


def test_make_norm_refuses_a_name_of_the_wrong_kind():
    with pytest.raises(TypeError, match="a string"):
        make_norm(None, 4)


EVALUATE_CASES = {
    "NaN in an image": (lambda: (with_nan(X), Y), checks.DataError, r"NaN at X\[1, 0, 2, 3\]"),
    "float labels": (lambda: (X, Y.float()), ValueError, "int64 labels"),
    "no images": (lambda: (X[:0], Y[:0]), ValueError, "X holds no images"),
    "a label the model does not have": (lambda: (X, Y + 5), checks.DataError, "0 to 9"),
    "a NumPy array": (lambda: (X.numpy(), Y), TypeError, "torch tensor"),
    "float64 images, float32 model": (lambda: (X.double(), Y), TypeError, "torch.float64"),
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_bad_evaluate_cnn_call_raises(case):
    make, error, words = EVALUATE_CASES[case]
    with pytest.raises(error, match=words):
        evaluate_cnn(SmallCNN("batch"), *make())


def test_evaluate_cnn_counts_nan_logits_as_wrong():
    model = SmallCNN("none")
    with torch.no_grad():
        model.head.weight.fill_(math.nan)
    loss, accuracy = evaluate_cnn(model, X, Y)
    assert math.isnan(loss) and accuracy == 0.0


@pytest.mark.parametrize("which", ["train_cnn", "train_cnns"])
def test_a_huge_learning_rate_is_recorded_as_divergence(which):
    # documented: not an error; diverged_at says when, and NaN outputs count as wrong answers
    if which == "train_cnn":
        torch.manual_seed(0)
        history = train_cnn(SmallCNN("batch"), DATA, 0, epochs=2, lr=1e30, batch_size=10)
    else:
        (history,) = train_cnns([0], DATA, norm="batch", epochs=2, lr=1e30, batch_size=10)
    assert history.diverged_at == 1
    assert history.val_acc == [0.0, 0.0]
