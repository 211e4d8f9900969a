"""The checks of notebook 11's exercises: right answers pass, each usual mistake gets its own
message, and a learner's exception, wrong kind of answer or None is feedback, never an
internal error."""

import copy

import pytest
import torch
from torch import nn

from bnteach.batchnorm import bn_layers, freeze
from bnteach.exercises import shift as ex


def bn2d(net):
    return [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]


def collect(net, X, train=True, unbiased=True, copy_net=True):
    net = copy.deepcopy(net) if copy_net else net
    inputs = {}

    def keep(layer, args, out):
        inputs[layer] = args[0]

    hooks = [m.register_forward_hook(keep) for m in bn2d(net)]
    with torch.no_grad():
        (net.train() if train else net.eval())(X)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for m in bn2d(net):
            m.running_mean.copy_(inputs[m].mean((0, 2, 3)))
            m.running_var.copy_(inputs[m].var((0, 2, 3), unbiased=unbiased))
    return net.eval()


def good_adabn(net, X):
    return collect(net, X)


def in_place_adabn(net, X):
    return collect(net, X, copy_net=False)


def copy_but_touch_original(net, X):
    with torch.no_grad():
        net.train()(X)  # moves the original's running statistics
    net.eval()
    return collect(net, X)


def noop(net, X):
    return copy.deepcopy(net)


def weird(net, X):
    out = copy.deepcopy(net)
    with torch.no_grad():
        for m in bn2d(out):
            m.running_mean.add_(1.0)
    return out


@pytest.mark.parametrize(
    "answer, status, phrase",
    [
        (good_adabn, "correct", "AdaBN"),
        (in_place_adabn, "wrong", "adapted COPY"),
        (lambda n, X: collect(n, X, train=False), "wrong", "EVAL mode"),
        (lambda n, X: collect(n, X, unbiased=False), "wrong", "BIASED"),
        (copy_but_touch_original, "wrong", "changed the net passed in"),
        (noop, "wrong", "did not change"),
        (weird, "wrong", "differ from"),
        (lambda n, X: None, "wrong", "return the adapted net"),
        (lambda n, X: nn.Linear(2, 2), "wrong", "BN layers"),
        (lambda n, X: 1 / 0, "wrong", "ZeroDivisionError"),
        (None, "not attempted", "still None"),
    ],
)
def test_adabn_by_hand(answer, status, phrase):
    fb = ex.check_adabn_by_hand(answer, show=False)
    assert fb.status == status and phrase in fb.message, fb.message


def placeholder(*args):
    raise NotImplementedError


def own(net, X, b):
    with torch.no_grad():
        return torch.cat([copy.deepcopy(net).train()(c) for c in X.split(b)])


def own_in_place(net, X, b):
    with torch.no_grad():
        out = torch.cat([net.train()(c) for c in X.split(b)])
    net.eval()
    return out


def own_left_in_train_mode(net, X, b):
    out = own(net, X, b)
    for m in bn_layers(net):
        m.train()
    return out


def own_eval(net, X, b):
    with torch.no_grad():
        return net(X)


def own_whole(net, X, b):
    with torch.no_grad():
        return copy.deepcopy(net).train()(X)


@pytest.mark.parametrize(
    "answer, status, phrase",
    [
        (own, "correct", "own statistics"),
        (own_in_place, "wrong", "changed the net's running statistics"),
        (own_left_in_train_mode, "wrong", "train mode"),
        (own_eval, "wrong", "eval-mode predictions"),
        (own_whole, "wrong", "ONE batch"),
        (lambda n, X, b: own(n, X, b) + 1, "wrong", "differ from"),
        (lambda n, X, b: own(n, X, b)[:5], "wrong", "shape"),
        (lambda n, X, b: None, "not attempted", "None"),
        (lambda n, X: None, "wrong", "does not accept"),
        (placeholder, "not attempted", "NotImplementedError"),
    ],
)
def test_own_statistics(answer, status, phrase):
    fb = ex.check_own_statistics(answer, show=False)
    assert fb.status == status and phrase in fb.message, fb.message


def freeze_stats(net):
    freeze(net)
    for m in bn_layers(net):
        m.weight.requires_grad_(True)
        m.bias.requires_grad_(True)


def naive(net):
    for m in bn_layers(net):
        m.weight.requires_grad_(False)
        m.bias.requires_grad_(False)
    net.eval()


def freeze_everything(net):
    freeze_stats(net)
    net.head.weight.requires_grad_(False)


def momentum_zero(net):
    for m in bn_layers(net):  # statistics stay, but BN normalises with batch statistics
        m.momentum = 0.0


@pytest.mark.parametrize(
    "answer, status, phrase",
    [
        (freeze_stats, "correct", "statistics frozen, affine trainable"),
        (lambda n: freeze_stats(n) or n, "correct", "statistics frozen"),
        (naive, "wrong", "running statistics moved"),
        (lambda n: n.eval(), "wrong", "running statistics moved"),
        (freeze, "wrong", "'all of BN frozen'"),
        (freeze_everything, "wrong", "no longer train"),
        (momentum_zero, "wrong", "train mode"),
        (lambda n: 3, "wrong", "returned int"),
        (None, "not attempted", "still None"),
    ],
)
def test_finetune_freeze(answer, status, phrase):
    fb = ex.check_finetune_freeze(answer, show=False)
    assert fb.status == status and phrase in fb.message, fb.message


def test_progress_and_reset():
    ex.reset()
    ex.check_adabn_by_hand(good_adabn, show=False)
    assert not ex.progress().all_correct
    ex.check_own_statistics(own, show=False)
    ex.check_finetune_freeze(freeze_stats, show=False)
    assert ex.progress().all_correct
    assert set(ex.EXERCISES) == {"11.1", "11.2", "11.3"}
    ex.reset()


# ----------------------------------------------------------------------------- answers that
# pass only by accident of the check's sizes, or break the net for what comes next


def momentum_left_none(net, X):
    net = copy.deepcopy(net)
    for m in bn2d(net):
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        net.train()(X)
    return net.eval()


def mutates_X(net, X):
    X.mul_(2.0)
    return collect(net, X)


def own_drops_the_last_batch(net, X, b):
    scratch = copy.deepcopy(net).train()
    with torch.no_grad():
        return torch.cat([scratch(X[i * b : (i + 1) * b]) for i in range(len(X) // b)])


def own_turns_off_tracking(net, X, b):
    for m in bn2d(net):
        m.track_running_stats = False
    with torch.no_grad():
        out = torch.cat([net.train()(x) for x in X.split(b)])
    net.eval()
    return out


def own_in_float64(net, X, b):
    return own(net, X, b).double()


def freeze_a_copy(net):
    net = copy.deepcopy(net)
    freeze_stats(net)
    return net


def freeze_the_whole_net(net):
    freeze_stats(net)
    net.train = lambda mode=True: net
    return net


@pytest.mark.parametrize(
    "check, answer, phrase",
    [
        (ex.check_adabn_by_hand, momentum_left_none, "momentum"),
        (ex.check_adabn_by_hand, lambda n, X: collect(n, X).train(), "train mode"),
        (ex.check_adabn_by_hand, mutates_X, "changed X"),
        (ex.check_own_statistics, own_drops_the_last_batch, "(22, 10)"),
        (ex.check_own_statistics, own_turns_off_tracking, "configured"),
        (ex.check_finetune_freeze, freeze_a_copy, "in place"),
        (ex.check_finetune_freeze, freeze_the_whole_net, "net.train"),
    ],
    ids=[
        "momentum None",
        "train mode",
        "X changed",
        "last batch dropped",
        "tracking off",
        "a frozen copy",
        "train replaced",
    ],  # fmt: skip
)
def test_answers_that_break_something_else_are_wrong(check, answer, phrase):
    fb = check(answer, show=False)
    assert fb.status == "wrong" and phrase in fb.message, fb.message


def test_a_float64_answer_is_judged_on_its_values():
    assert ex.check_own_statistics(own_in_float64, show=False).correct


def test_checks_run_with_gradients_whatever_the_notebook_set():
    with torch.no_grad():
        assert ex.check_finetune_freeze(freeze_stats, show=False).correct
    with torch.inference_mode():
        assert ex.check_finetune_freeze(freeze_stats, show=False).correct
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert ex.check_own_statistics(own, show=False).correct
        assert torch.get_default_dtype() == torch.float64  # the notebook's setting comes back
    finally:
        torch.set_default_dtype(default)

    def disables_grad(net):
        torch.set_grad_enabled(False)
        return freeze_stats(net)

    ex.check_finetune_freeze(disables_grad, show=False)
    assert torch.is_grad_enabled()  # the learner's global switch does not leak out
