"""The exercise checks' feedback core under bad answers: a learner's exception, NaN, a wrong
shape or dtype, a wrong keyword or a missing argument, and None become feedback that names the
problem; "Internal error of the check" is kept for bugs of the check itself.

A table: (case, a zero-argument call returning the Feedback, expected status, a phrase the
message must contain)."""

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from bnteach import sweep
from bnteach.exercises import (
    check_batch_norm,
    check_bias,
    check_fold,
    check_freeze,
    check_learning_rate,
    check_norm_variants,
    check_scale_invariance,
    kit,
)

CORRECT, WRONG, NOT_ATTEMPTED = "correct", "wrong", "not attempted"


def bn(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    """A correct my_batch_norm for (N, C) and (N, C, L)."""
    dims = (0,) if x.dim() == 2 else (0, 2)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if training:
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        n = x.numel() // x.shape[1]
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * mean.reshape(-1))
            running_var.mul_(1 - momentum).add_(momentum * var.reshape(-1) * n / (n - 1))
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    return (x - mean) / torch.sqrt(var + eps) * weight.reshape(shape) + bias.reshape(shape)


def bn_nan_output(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    return bn(x, running_mean, running_var, weight, bias, training, momentum, eps) * math.nan


def bn_nan_stats(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    y = bn(x, running_mean, running_var, weight, bias, training, momentum, eps)
    running_mean.fill_(math.nan)
    return y


def bn_no_training(x, running_mean, running_var, weight, bias, momentum=0.1, eps=1e-5):
    return x


def bn_type_error_inside(
    x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5
):
    return x + "1"  # a TypeError raised by the learner's own line


def bn_numpy(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    return bn(x, running_mean, running_var, weight, bias, training, momentum, eps).detach().numpy()


def bn_int(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
    return bn(x, running_mean, running_var, weight, bias, training, momentum, eps).long()


def fold(model, out=None, forward=None):
    """A correct fold_bn, or one whose folded net returns another output."""
    layers, net = [], list(model.network)
    i = 0
    while i < len(net):
        if (
            isinstance(net[i], nn.Linear)
            and i + 1 < len(net)
            and isinstance(net[i + 1], nn.BatchNorm1d)
        ):
            lin, b = net[i], net[i + 1]
            s = b.weight.detach() / torch.sqrt(b.running_var + b.eps)
            new = nn.Linear(lin.in_features, lin.out_features)
            bias = lin.bias.detach() if lin.bias is not None else 0
            with torch.no_grad():
                new.weight.copy_(s[:, None] * lin.weight)
                new.bias.copy_((bias - b.running_mean) * s + b.bias)
            layers.append(new)
            i += 2
        else:
            layers.append(net[i])
            i += 1
    folded = nn.Sequential(*layers)
    if forward is not None:
        folded.forward = functools.partial(forward, folded)
    return folded


def fold_two_outputs(model):
    folded = fold(model)
    last = folded[-1]
    wide = nn.Linear(last.in_features, 2)
    with torch.no_grad():
        wide.weight.copy_(last.weight.repeat(2, 1))
        wide.bias.copy_(last.bias.repeat(2))
    folded[-1] = wide
    return folded


def freeze(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.requires_grad_(False)
            m.train = functools.partial(lambda module, mode=True: nn.Module.train(module, False), m)
            m.eval()
    return model


def freeze_nan_weights(model):
    freeze(model)
    with torch.no_grad():
        model.network[1].weight.fill_(math.nan)
    return model


def freeze_train_without_mode(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.requires_grad_(False)
            m.train = lambda: None  # nn.Module.train calls train(mode): a TypeError outside here
    return model


def freeze_with_failing_hook(model):
    freeze(model)

    def hook(module, inputs, output):
        raise RuntimeError("my hook failed")

    model.network[0].register_forward_hook(hook)
    return model


def scale(model, a):
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]
    with torch.no_grad():
        for lin in linears:
            lin.weight.mul_(a)
            lin.bias.mul_(a)
    return model


NAN_GRAD = torch.full((128,), math.nan)


@functools.lru_cache(maxsize=1)
def lr_result():
    return sweep.run(seeds=[0, 1, 2], lrs=[0.01, 0.1, 1.0], epochs=1)


_KEEP = object()


def lr_table(change=_KEEP):
    r = lr_result()
    table = {
        (m, lr): sum(h.val_acc[-1] for h in r.histories(model=m, lr=lr)) / 3
        for m in ("plain", "BN")
        for lr in r.lrs
    }
    if change is not _KEEP:
        table[("BN", 0.1)] = change
    return table


CASES = [
    # 7a: what my_batch_norm returns
    ("7a NaN output", lambda: check_batch_norm(bn_nan_output), WRONG, "contains NaN at [0, 0]"),
    (
        "7a NaN output is not 'differs by nan'",
        lambda: check_batch_norm(bn_nan_output),
        WRONG,
        "The output of `my_batch_norm`",
    ),
    (
        "7a NaN running_mean",
        lambda: check_batch_norm(bn_nan_stats),
        WRONG,
        "running_mean after the call contains NaN",
    ),
    (
        "7a numpy output",
        lambda: check_batch_norm(bn_numpy),
        WRONG,
        "should be a torch tensor, got a NumPy ndarray",
    ),
    ("7a integer output", lambda: check_batch_norm(bn_int), WRONG, "has dtype torch.int64"),
    ("7a None output", lambda: check_batch_norm(lambda *a, **k: None), NOT_ATTEMPTED, "is None"),
    (
        "7a missing parameter",
        lambda: check_batch_norm(bn_no_training),
        WRONG,
        "def my_batch_norm(x, running_mean, running_var, weight, bias, training",
    ),
    (
        "7a TypeError of the learner's body",
        lambda: check_batch_norm(bn_type_error_inside),
        WRONG,
        "Calling `my_batch_norm` raised TypeError",
    ),
    ("7a not a function", lambda: check_batch_norm(3), WRONG, "should be a function"),
    # 7b: the learner's functions
    (
        "7b NaN",
        lambda: check_norm_variants(
            lambda x, eps=1e-5: x * math.nan, lambda x, eps=1e-5: x, None, None
        ),
        WRONG,
        "The output of `mean_only_norm` contains NaN",
    ),
    (
        "7b no parameter",
        lambda: check_norm_variants(lambda: 0, lambda x: x, None, None),
        WRONG,
        "does not accept that",
    ),
    (
        "7b None",
        lambda: check_norm_variants(lambda x, eps=1e-5: None, lambda x, eps=1e-5: x, None, None),
        NOT_ATTEMPTED,
        "is None",
    ),
    (
        "7b int",
        lambda: check_norm_variants(
            lambda x, eps=1e-5: x.long(), lambda x, eps=1e-5: x, None, None
        ),
        WRONG,
        "dtype torch.int64",
    ),
    (
        "7b wrong shape",
        lambda: check_norm_variants(
            lambda x, eps=1e-5: x.mean(0), lambda x, eps=1e-5: x, None, None
        ),
        WRONG,
        "returned shape (5,)",
    ),
    # 6: a NaN gradient is not "zero"
    (
        "6 NaN bias gradient",
        lambda: check_bias(NAN_GRAD, 192, object(), "bias"),
        WRONG,
        "`bias_grad` contains NaN at [0]",
    ),
    # 8: the learner's function called with the documented signature
    (
        "8 one parameter too few",
        lambda: check_scale_invariance(lambda model: model, None, None, None, None),
        WRONG,
        "scale_hidden_layers(<MLP>, 3.0)",
    ),
    (
        "8 raises",
        lambda: check_scale_invariance(lambda m, a: m.nothing, None, None, None, None),
        WRONG,
        "Calling `scale_hidden_layers` raised AttributeError",
    ),
    (
        "8 raises, says the line",
        lambda: check_scale_invariance(lambda m, a: m.nothing, None, None, None, None),
        WRONG,
        "(in a lambda, line",
    ),
    (
        "8 grad_ratio entry None",
        lambda: check_scale_invariance(scale, {10: None, 100: 0.01}, {}, {}, "better"),
        WRONG,
        "is still None",
    ),
    # 10a: the folded network's output
    (
        "10a wrong output shape",
        lambda: check_fold(fold_two_outputs),
        WRONG,
        "has shape (64, 2), expected (64, 1)",
    ),
    (
        "10a tuple output",
        lambda: check_fold(
            lambda m: fold(m, forward=lambda net, x: (nn.Sequential.forward(net, x),))
        ),
        WRONG,
        "should be a torch tensor, got tuple",
    ),
    (
        "10a NaN output",
        lambda: check_fold(
            lambda m: fold(m, forward=lambda net, x: nn.Sequential.forward(net, x) * math.nan)
        ),
        WRONG,
        "The folded network's output contains NaN",
    ),
    (
        "10a None output",
        lambda: check_fold(lambda m: fold(m, forward=lambda net, x: None)),
        WRONG,
        "is None: its forward must return the logits",
    ),
    ("10a no parameter", lambda: check_fold(lambda: None), WRONG, "fold_bn(<MLP>)"),
    (
        "10a raises",
        lambda: check_fold(lambda m: {}["x"]),
        WRONG,
        "Calling `fold_bn` raised KeyError",
    ),
    # 10b: the learner's code runs inside the fine-tuning loop
    (
        "10b NaN BN weights",
        lambda: check_freeze(freeze_nan_weights),
        WRONG,
        "After `freeze_bn`, `network.1.weight` contains NaN",
    ),
    (
        "10b train without mode",
        lambda: check_freeze(freeze_train_without_mode),
        WRONG,
        "was called with arguments it does not take",
    ),
    (
        "10b a hook that fails",
        lambda: check_freeze(freeze_with_failing_hook),
        WRONG,
        "Your code raised RuntimeError: my hook failed (in `hook`, line",
    ),
    # the check itself called wrongly by the learner
    (
        "wrong keyword to a check",
        lambda: check_fold(fold=fold),
        WRONG,
        "unexpected keyword argument 'fold'): call it as check_fold(fold_bn)",
    ),
    (
        "missing argument to a check",
        lambda: check_bias(NAN_GRAD),
        WRONG,
        "missing a required argument: 'params_saved'",
    ),
    (
        "too many arguments to a check",
        lambda: check_fold(fold, fold),
        WRONG,
        "too many positional arguments",
    ),
    # numbers in the learner's tables
    (
        "1 a None entry",
        lambda: check_learning_rate(lr_result(), lr_table(None), "BN"),
        WRONG,
        "`final_acc[('BN', 0.1)]` is still None",
    ),
    (
        "1 a tensor of three",
        lambda: check_learning_rate(lr_result(), lr_table(torch.zeros(3)), "BN"),
        WRONG,
        "should be one number, got a tensor of shape (3,)",
    ),
    (
        "1 a numpy number is a number",
        lambda: check_learning_rate(
            lr_result(), {k: np.float64(v) for k, v in lr_table().items()}, "BN"
        ),
        None,
        "",
    ),
]


@pytest.mark.parametrize("call, status, phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_answer_gets_feedback_that_names_it(call, status, phrase):
    fb = call()
    if status is None:  # a valid answer: judged on its merits, never an error
        assert "Internal error" not in fb.message and "raised" not in fb.message, fb.message
        return
    assert fb.status == status, fb
    assert phrase in fb.message, fb.message
    assert "Internal error" not in fb.message, fb.message


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setattr(kit, "show_feedback", lambda fb: None)


def test_the_references_here_are_correct():
    assert check_batch_norm(bn).correct
    assert check_fold(fold).correct, check_fold(fold).message
    assert check_freeze(freeze).correct, check_freeze(freeze).message


def test_a_bug_of_the_check_is_still_reported_as_such(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    from bnteach.exercises import inference

    monkeypatch.setattr(inference, "_trained_bn_model", broken)
    fb = check_fold(fold)
    assert "Internal error of the check" in fb.message and "RuntimeError: boom" in fb.message


class MyFold(nn.Module):
    def __init__(self, folded):
        super().__init__()
        self.folded = folded

    def forward(self, x):
        return self.folded(x)[:, 0]  # a wrong shape, from the learner's own class


def test_a_learners_class_is_the_learners():
    codes = kit.learner_code([lambda m: MyFold(fold(m))])
    assert "forward" in {c.co_name for c in codes}
    fb = check_fold(lambda m: MyFold(fold(m)))
    assert fb.status == WRONG and "has shape (64,), expected (64, 1)" in fb.message, fb.message


def test_learner_code_is_found_through_helpers():
    """A learner's function that calls a helper of theirs: the helper's frame is theirs too."""
    codes = kit.learner_code([freeze_with_failing_hook])
    names = {c.co_name for c in codes}
    assert {"freeze_with_failing_hook", "hook", "freeze", "<lambda>"} <= names
    assert not any("bnteach" in c.co_filename for c in codes)


def test_code_from_a_notebook_cell_is_the_learners():
    """Cells run as code compiled from files like /tmp/ipykernel_<pid>/<hash>.py in __main__."""
    cell = (
        "import torch\n"
        "class Frozen(torch.nn.Module):\n"
        "    def __init__(self, net):\n"
        "        super().__init__()\n"
        "        self.net = net\n"
        "    def forward(self, x):\n"
        "        raise ValueError('oops in my cell')\n"
        "def freeze_bn(model):\n"
        "    model.network[0] = Frozen(model.network[0])\n"
        "    return model\n"
    )
    namespace = {"__name__": "__main__"}
    exec(compile(cell, "/tmp/ipykernel_123/456.py", "exec"), namespace)
    fb = check_freeze(namespace["freeze_bn"])
    assert fb.status == WRONG, fb
    assert "Your code raised ValueError: oops in my cell (in `forward`, line 7)" in fb.message, fb
