"""bnteach.exercises: every check accepts the reference solution, rejects each usual mistake
with its own message, says "not attempted" for placeholders, and never raises.

Runs are short (few epochs): the checks judge claims against the learner's own numbers, so
the reference answers below are computed from the runs, as a learner would."""

import copy
import functools
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnteach import exercises, sweep
from bnteach.batchnorm import freeze
from bnteach.data import load_data, make_loaders
from bnteach.exercises import (
    check_activation,
    check_batch_norm,
    check_batch_size,
    check_bias,
    check_depth,
    check_fold,
    check_freeze,
    check_layer_norm,
    check_learning_rate,
    check_norm_variants,
    check_placement,
    check_scale_invariance,
    forward_pass,
)
from bnteach.exercises.kit import Wrong, check_verdict
from bnteach.models import MLP, count_parameters
from bnteach.stats import paired, seeds
from bnteach.training import train_model

SEEDS = seeds(3)  # what the exercises tell the learner; shifted by BNTEACH_SEED_OFFSET
MARGIN = 0.02  # the margin the exercises state
VERDICTS = ("better", "worse", "equivalent", "unresolved")


@pytest.fixture(scope="module", autouse=True)
def one_thread_for_module_fixtures():
    """Module-scoped runs start before conftest's per-test fixture: one thread for them too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def correct(fb):
    assert fb.status == "correct", fb.message
    return fb


def wrong(fb, *phrases):
    assert fb.status == "wrong", fb
    for phrase in phrases:
        assert phrase in fb.message, fb.message
    return fb


def not_attempted(fb):
    assert fb.status == "not attempted", fb
    assert "not attempted yet" in str(fb).lower()
    return fb


def mean_acc(result, model, lr=None, metric="val_acc"):
    return statistics.mean(getattr(h, metric)[-1] for h in result.histories(model=model, lr=lr))


def verdict_of(result, a, b, lr=None):
    """What a learner computes: paired(a's final accuracies, b's).verdict(MARGIN)."""
    finals = [[h.val_acc[-1] for h in result.histories(model=m, lr=lr)] for m in (a, b)]
    return paired(*finals, names=(a, b)).verdict(MARGIN)


def test_verdict_feedback_explains_the_interval():
    ahead = paired([0.90, 0.92, 0.91, 0.93], [0.80, 0.81, 0.79, 0.80], names=("BN", "plain"))
    assert "BN better than plain" in check_verdict("better", ahead, "v")

    def message(verdict, p):
        with pytest.raises(Wrong) as err:
            check_verdict(verdict, p, "v")
        return str(err.value)

    assert "from BN's side" in message("worse", ahead)
    assert "excludes 0" in message("equivalent", ahead)
    noisy = paired([0.90, 0.80, 0.95, 0.70], [0.85, 0.86, 0.84, 0.83], names=("BN", "plain"))
    assert noisy.verdict(MARGIN) == "unresolved"
    assert "includes 0" in message("better", noisy)
    assert "more seeds" in message("equivalent", noisy)
    same = paired([0.90, 0.91, 0.90, 0.91], [0.905, 0.905, 0.905, 0.905], names=("a", "b"))
    assert same.verdict(MARGIN) == "equivalent"
    assert "inside +/-0.02" in message("unresolved", same)
    assert "should be one of" in message("no clear winner", same)


def other(value, options):
    return next(o for o in options if o != value)


# ------------------------------------------------------------------------------ feedback


def test_feedback_object_reads_well_and_checks_print(capsys):
    fb = check_learning_rate(None, None, None)
    out = capsys.readouterr().out
    assert "Exercise 1" in out and "Not attempted yet" in out
    assert "`lr_result`, `final_acc`, `lr1_verdict` are still None" in fb.message
    assert not fb.correct and not fb.attempted
    assert "<div" in fb._repr_html_() and "<code>lr_result</code>" in fb._repr_html_()
    assert repr(fb) == str(fb)
    check_learning_rate(None, None, None, show=False)
    assert capsys.readouterr().out == ""


def test_progress_records_the_latest_feedback():
    exercises.reset()
    assert "0 of 12" in repr(exercises.progress())
    check_fold(None, show=False)
    p = exercises.progress()
    assert p.status("10a") == "not attempted" and p.status("1") == "not checked"
    assert not p.all_correct and "<table" in p._repr_html_()


def test_a_check_never_raises_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fb = check_depth({"plain": {}, "BN": {}}, object(), "x", 3, show=False)
    assert fb.status == "wrong"
    check_fold(lambda m: 1 / 0, show=False)
    check_scale_invariance(lambda m, a: m, None, None, None, None, show=False)
    assert torch.equal(torch.rand(3), expected)


def test_an_error_of_the_check_itself_is_reported_as_such(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(forward_pass, "_bn_inputs", broken)
    fb = check_batch_norm(bn_solution, show=False)
    assert fb.status == "wrong" and not fb.correct
    assert "Internal error of the check" in fb.message, fb.message
    assert "RuntimeError: boom" in fb.message and "report" in fb.message
    assert "not a verdict on your answer" in fb.message
    assert exercises.progress().status("7a") == "wrong"
    # an error raised by the learner's own function is still the learner's
    fb = check_fold(lambda m: 1 / 0, show=False)
    assert "ZeroDivisionError" in fb.message and "Internal error" not in fb.message


# ------------------------------------------------------------------------------ 1


@pytest.fixture(scope="module")
def lr_result():
    return sweep.run(seeds=SEEDS, lrs=[0.01, 0.1, 1.0], epochs=3)


def lr_answer(result):
    acc = {(m, lr): mean_acc(result, m, lr) for m in ("plain", "BN") for lr in result.lrs}
    return acc, verdict_of(result, "BN", "plain", lr=1.0)


def test_learning_rate(lr_result):
    acc, copes = lr_answer(lr_result)
    fb = correct(check_learning_rate(lr_result, acc, copes, show=False))
    assert "95% interval" in fb.message
    not_attempted(check_learning_rate(lr_result, None, None, show=False))
    for bad in set(VERDICTS) - {copes}:
        wrong(check_learning_rate(lr_result, acc, bad, show=False), "your own runs give")
    wrong(check_learning_rate(lr_result, acc, "BN", show=False), "should be one of")
    for metric, phrase in (("val_loss", "validation losses"), ("train_loss", "training losses")):
        table = {k: mean_acc(lr_result, k[0], k[1], metric) for k in acc}
        wrong(check_learning_rate(lr_result, table, copes, show=False), phrase)
    best = {
        (m, lr): statistics.mean(max(h.val_acc) for h in lr_result.histories(model=m, lr=lr))
        for m, lr in acc
    }
    wrong(check_learning_rate(lr_result, best, copes, show=False), "best accuracies")
    first = {(m, lr): lr_result.histories(model=m, lr=lr)[0].val_acc[-1] for m, lr in acc}
    wrong(check_learning_rate(lr_result, first, copes, show=False), "first seed only")
    wrong(check_learning_rate(lr_result, {"BN": 0.9}, copes, show=False), "right keys")
    one_seed = sweep.run(seeds=[0], lrs=[0.01, 0.1, 1.0], epochs=1)
    wrong(check_learning_rate(one_seed, acc, copes, show=False), "prove nothing")
    no_big = sweep.run(seeds=SEEDS, lrs=[0.01, 0.1], epochs=1)
    wrong(check_learning_rate(no_big, acc, copes, show=False), "lacks the learning rate")


# ------------------------------------------------------------------------------ 2

DEEP = {"plain": {"hidden_sizes": (16,) * 6}, "BN": {"hidden_sizes": (16,) * 6, "norm": "batch"}}


@pytest.fixture(scope="module")
def deep_result():
    return sweep.run(seeds=SEEDS, lrs=[0.1], epochs=2, models=DEEP)


def test_depth(deep_result):
    gap = mean_acc(deep_result, "BN") - mean_acc(deep_result, "plain")
    shallow = sweep.run(seeds=SEEDS, lrs=[0.1], epochs=2)
    grows = gap > mean_acc(shallow, "BN") - mean_acc(shallow, "plain")
    correct(check_depth(DEEP, deep_result, gap, grows, show=False))
    not_attempted(check_depth(DEEP, None, None, None, show=False))
    wrong(check_depth(DEEP, deep_result, gap, not grows, show=False), "2-layer nets give")
    if abs(gap) > 0.01:
        wrong(check_depth(DEEP, deep_result, -gap, grows, show=False), "wrong sign")
    wrong(check_depth(DEEP, deep_result, gap + 0.05, grows, show=False), "`deep_gap` is")
    two = {k: {**v, "hidden_sizes": (16, 16)} for k, v in DEEP.items()}
    wrong(check_depth(two, deep_result, gap, grows, show=False), "has 2 hidden layer")
    six = {k: {**v, "hidden_sizes": 6} for k, v in DEEP.items()}
    wrong(check_depth(six, deep_result, gap, grows, show=False), "has 1 hidden layer")
    both = {"plain": DEEP["BN"], "BN": DEEP["BN"]}
    wrong(check_depth(both, deep_result, gap, grows, show=False), "norm='none'")
    wider = {"plain": {"hidden_sizes": (32,) * 6}, "BN": DEEP["BN"]}
    wrong(check_depth(wider, deep_result, gap, grows, show=False), "differ only in `norm`")
    deep64 = {k: {**v, "hidden_sizes": (64,) * 6} for k, v in DEEP.items()}
    wrong(check_depth(deep64, deep_result, gap, grows, show=False), "was trained as")


# ------------------------------------------------------------------------------ 3

ACT = {
    f"{a}-{k}": {"activation": a, "norm": n, "hidden_sizes": (16, 8)}
    for a in ("relu", "tanh", "sigmoid")
    for k, n in (("plain", "none"), ("BN", "batch"))
}


def test_activation():
    result = sweep.run(seeds=SEEDS, lrs=[0.01], epochs=2, models=ACT)
    gaps = {
        a: mean_acc(result, f"{a}-BN") - mean_acc(result, f"{a}-plain")
        for a in ("relu", "tanh", "sigmoid")
    }
    best = max(gaps, key=gaps.get)
    correct(check_activation(result, gaps, best, show=False))
    not_attempted(check_activation(result, gaps, None, show=False))
    wrong(check_activation(result, gaps, other(best, list(gaps)), show=False), "the largest is")
    wrong(
        check_activation(result, {a: -g for a, g in gaps.items()}, best, show=False), "wrong sign"
    )
    mixed = {**ACT, "sigmoid-BN": {**ACT["sigmoid-BN"], "activation": "relu"}}
    bad = sweep.run(seeds=SEEDS, lrs=[0.01], epochs=1, models=mixed)
    wrong(check_activation(bad, gaps, best, show=False), "'sigmoid-BN' was trained with")
    renamed = {k.replace("-", "_"): v for k, v in ACT.items()}
    bad = sweep.run(seeds=SEEDS, lrs=[0.01], epochs=1, models=renamed)
    wrong(check_activation(bad, gaps, best, show=False), "should hold the models")


# ------------------------------------------------------------------------------ 4


@pytest.fixture(scope="module")
def batch_results():
    return {
        bs: sweep.run(seeds=SEEDS, lrs=[0.01], epochs=1, batch_size=bs) for bs in (2, 4, 64, 256)
    }


def batch_verdicts(results):
    return {bs: verdict_of(r, "BN", "plain") for bs, r in results.items()}


def test_batch_size(batch_results):
    diff = {bs: mean_acc(r, "BN") - mean_acc(r, "plain") for bs, r in batch_results.items()}
    worst = min(diff, key=diff.get)
    verdicts = batch_verdicts(batch_results)
    correct(check_batch_size(batch_results, diff, worst, verdicts, show=False))
    not_attempted(check_batch_size(batch_results, None, None, None, show=False))
    not_attempted(check_batch_size(batch_results, diff, worst, None, show=False))
    wrong(
        check_batch_size(batch_results, diff, other(worst, list(diff)), verdicts, show=False),
        "the lowest is at",
    )
    wrong(check_batch_size(batch_results, diff, 3, verdicts, show=False), "should be one of your")
    wrong(
        check_batch_size(
            batch_results, {b: -d for b, d in diff.items()}, worst, verdicts, show=False
        ),
        "wrong sign",
    )
    bad = {**verdicts, 2: other(verdicts[2], list(VERDICTS))}
    wrong(
        check_batch_size(batch_results, diff, worst, bad, show=False),
        "`batch_verdicts[2]`",
        "your own runs give",
    )
    wrong(
        check_batch_size(batch_results, diff, worst, {2: verdicts[2]}, show=False),
        "one verdict per batch size",
    )
    swapped = {**batch_results, 4: batch_results[64], 64: batch_results[4]}
    wrong(
        check_batch_size(swapped, diff, worst, verdicts, show=False),
        "`batch_results[4]` was trained with batch_size=64",
        "filed under 4",
    )
    fewer = {b: r for b, r in batch_results.items() if b != 2}
    wrong(check_batch_size(fewer, diff, worst, verdicts, show=False), "lacks the batch size(s) [2]")
    longer = {**batch_results, 256: sweep.run(seeds=SEEDS, lrs=[0.01], epochs=2, batch_size=256)}
    wrong(check_batch_size(longer, diff, worst, verdicts, show=False), "compare like with like")


def test_batch_size_reads_the_recorded_batch_size_without_retraining(batch_results, monkeypatch):
    """The check reads the batch size each SweepResult records: it never retrains (so no
    device-dependent tolerance), and a run stopped early by a callback is named as such."""
    diff = {bs: mean_acc(r, "BN") - mean_acc(r, "plain") for bs, r in batch_results.items()}
    worst = min(diff, key=diff.get)
    verdicts = batch_verdicts(batch_results)

    def no_training(*args, **kwargs):
        raise AssertionError("the check retrained")

    monkeypatch.setattr(sweep, "run", no_training)
    correct(check_batch_size(batch_results, diff, worst, verdicts, show=False))
    for r in batch_results.values():  # a GPU run: the device plays no part (nothing is re-run)
        monkeypatch.setattr(r, "device", torch.device("cuda"), raising=False)
    correct(check_batch_size(batch_results, diff, worst, verdicts, show=False))
    stopped = copy.copy(batch_results[4])
    stopped.epochs_run = stopped.epochs - 1
    wrong(
        check_batch_size({**batch_results, 4: stopped}, diff, worst, verdicts, show=False),
        "`batch_results[4]` stopped after",
    )


# ------------------------------------------------------------------------------ 5

PLACEMENT = {"before": {"norm": "batch"}, "after": {"norm": "batch", "placement": "after"}}


def test_placement():
    result = sweep.run(seeds=SEEDS, lrs=[0.01], epochs=2, models=PLACEMENT)
    verdict = verdict_of(result, "before", "after")
    fb = correct(check_placement(PLACEMENT, result, verdict, show=False))
    assert "95% interval" in fb.message
    not_attempted(check_placement(None, None, None, show=False))
    for wrong_verdict in set(VERDICTS) - {verdict}:
        wrong(check_placement(PLACEMENT, result, wrong_verdict, show=False), "your own runs give")
    wrong(check_placement(PLACEMENT, result, "no clear winner", show=False), "should be one of")
    two_lrs = sweep.run(seeds=SEEDS, lrs=[0.01, 0.1], epochs=1, models=PLACEMENT)
    wrong(check_placement(PLACEMENT, two_lrs, verdict, show=False), "one learning rate")
    no_norm = {"before": {}, "after": {"placement": "after"}}
    wrong(check_placement(no_norm, result, verdict, show=False), "changes nothing")
    deeper = {**PLACEMENT, "after": {**PLACEMENT["after"], "hidden_sizes": (64,)}}
    wrong(check_placement(deeper, result, verdict, show=False), "only `placement`")


# ------------------------------------------------------------------------------ 6

BIAS = {"bias": {"norm": "batch"}, "no_bias": {"norm": "batch", "bias": False}}


def bias_model(training):
    X, _, y, _ = load_data()
    torch.manual_seed(seeds(1)[0])
    model = MLP(20, (128, 64), norm="batch").train(training)
    F.binary_cross_entropy_with_logits(model(X[:64]), y[:64]).backward()
    return model


def test_bias():
    result = sweep.run(seeds=SEEDS, lrs=[0.01], epochs=2, models=BIAS)
    verdict = verdict_of(result, "bias", "no_bias")
    grad = bias_model(True).network[0].bias.grad
    saved = count_parameters(MLP(norm="batch")) - count_parameters(MLP(norm="batch", bias=False))
    fb = correct(check_bias(grad, saved, result, verdict, show=False))
    assert "192" in fb.message
    not_attempted(check_bias(grad, saved, None, None, show=False))
    wrong(
        check_bias(bias_model(True).network[-1].bias.grad, saved, result, verdict, show=False),
        "output layer's bias",
    )
    wrong(
        check_bias(bias_model(False).network[0].bias.grad, saved, result, verdict, show=False),
        "eval mode",
    )
    wrong(
        check_bias(bias_model(True).network[0].bias, saved, result, verdict, show=False),
        "the bias itself",
    )
    wrong(check_bias(grad, saved + 1, result, verdict, show=False), "output layer's bias too")
    wrong(check_bias(grad, 128, result, verdict, show=False), "count_parameters gives")
    for bad_verdict in set(VERDICTS) - {verdict}:
        wrong(check_bias(grad, saved, result, bad_verdict, show=False), "your own runs give")
    plain = sweep.run(
        seeds=SEEDS,
        lrs=[0.01],
        epochs=1,
        models={"bias": {"norm": "batch"}, "no_bias": {"bias": False}},
    )
    wrong(check_bias(grad, saved, plain, verdict, show=False), "Both models need norm='batch'")


# ------------------------------------------------------------------------------ 7a


def bn_solution(
    x,
    running_mean,
    running_var,
    weight,
    bias,
    training,
    momentum=0.1,
    eps=1e-5,
    *,
    unbiased=False,
    eps_mode="inside",
    dims=None,
    use_running=False,
    affine=True,
    detach=False,
    update="pytorch",
    grad_in_update=False,
    fixed_eps=False,
    eval_batch_stats=False,
    eval_update=False,
    n_factor="all",
):
    """The reference my_batch_norm, with switches that reproduce the usual mistakes."""
    eps = 1e-5 if fixed_eps else eps
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if dims is None:
        dims = (0,) if x.dim() == 2 else (0, 2)
    if training or eval_batch_stats:
        n = x.numel() // x.shape[1] if n_factor == "all" else x.shape[0]
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).sum(dim=dims, keepdim=True) / (
            x.numel() // mean.numel() - (1 if unbiased else 0)
        )
        if detach:
            mean, var = mean.detach(), var.detach()
        m = mean.reshape(-1)
        if m.numel() == x.shape[1] and (training or eval_update):
            bm, bv = m, ((x - mean) ** 2).mean(dim=dims)
            bv = bv * n / (n - 1)
            ctx = torch.enable_grad() if grad_in_update else torch.no_grad()
            with ctx:
                if update == "pytorch":
                    running_mean.mul_(1 - momentum).add_(momentum * bm)
                    running_var.mul_(1 - momentum).add_(momentum * bv)
                elif update == "keras":
                    running_mean.mul_(momentum).add_((1 - momentum) * bm)
                    running_var.mul_(momentum).add_((1 - momentum) * bv)
                elif update == "biased":
                    running_mean.mul_(1 - momentum).add_(momentum * bm)
                    running_var.mul_(1 - momentum).add_(momentum * bv * (n - 1) / n)
                elif update == "rebind":
                    running_mean = (1 - momentum) * running_mean + momentum * bm  # noqa: F841
        if use_running:
            mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    if eps_mode == "inside":
        y = (x - mean) / torch.sqrt(var + eps)
    elif eps_mode == "none":
        y = (x - mean) / torch.sqrt(var)
    else:
        y = (x - mean) / (torch.sqrt(var) + eps)
    return y * weight.reshape(shape) + bias.reshape(shape) if affine else y


def bn_mistake(**switches):
    return functools.partial(bn_solution, **switches)


BN_MISTAKES = [
    ({"unbiased": True}, "unbiased variance"),
    ({"eps_mode": "none"}, "`eps` is missing"),
    ({"eps_mode": "outside"}, "`eps` is outside the square root"),
    ({"dims": (1,)}, "that is LayerNorm"),
    ({"dims": (0, 1)}, "one mean and variance for the whole tensor"),
    ({"use_running": True}, "not with running_mean/running_var"),
    ({"affine": False}, "lacks the learned scale and shift"),
    ({"unbiased": True, "eps_mode": "outside"}, "2 things to fix"),
    ({"detach": True}, "you detached the batch mean and variance"),
    ({"update": "none"}, "did not change"),
    ({"update": "rebind"}, "only rebinds a local name"),
    ({"update": "keras"}, "weight of the NEW batch"),
    ({"update": "biased"}, "updated with the biased variance"),
    ({"grad_in_update": True}, "torch.no_grad()"),
    ({"fixed_eps": True}, "use the `eps` argument"),
    ({"eval_batch_stats": True}, "In eval mode (training=False) you normalized with the batch"),
    ({"eval_batch_stats": True, "eval_update": True}, "the running statistics must not change"),
    ({"dims": (0,)}, "statistics are over N only"),
    ({"n_factor": "batch"}, "n = N * L values"),
]


def test_batch_norm_reference_is_correct():
    fb = correct(check_batch_norm(bn_solution, show=False))
    assert "gradients" in fb.message


@pytest.mark.parametrize("switches, phrase", BN_MISTAKES, ids=[p for _, p in BN_MISTAKES])
def test_batch_norm_mistakes(switches, phrase):
    wrong(check_batch_norm(bn_mistake(**switches), show=False), phrase)


def test_batch_norm_placeholders_and_errors():
    def stub(x, running_mean, running_var, weight, bias, training, momentum=0.1, eps=1e-5):
        raise NotImplementedError

    not_attempted(check_batch_norm(None, show=False))
    not_attempted(check_batch_norm(stub, show=False))
    not_attempted(check_batch_norm(lambda *a, **k: None, show=False))
    wrong(
        check_batch_norm(lambda x, *a, **k: x.sum(0), show=False),
        "the output has the input's shape",
    )
    wrong(check_batch_norm(lambda x, rm, rv, w, b, t: x, show=False), "accept `momentum` and `eps`")
    wrong(
        check_batch_norm(lambda *a, **k: (_ for _ in ()).throw(KeyError("c")), show=False),
        "raised KeyError",
    )
    wrong(
        check_batch_norm(lambda *a, **k: bn_solution(*a, **k).detach(), show=False),
        "not connected to the autograd graph",
    )


# ------------------------------------------------------------------------------ 7b


def mean_only(x, eps=1e-5):
    return x - x.mean(0)


def variance_only(x, eps=1e-5):
    return x / torch.sqrt(x.var(0, unbiased=False) + eps)


def full(x, eps=1e-5):
    """The notebook's full_norm, written the same way: at lr 1.0 even another, equivalent
    formula (x.var(0, unbiased=False)) rounds differently, and on some CPUs that moves the
    run far enough to defeat the check's value matching."""
    mean = x.mean(dim=0)
    var = ((x - mean) ** 2).mean(dim=0)
    return (x - mean) / torch.sqrt(var + eps)


class FunctionNorm(nn.Module):
    """The notebook's FunctionNorm: fn(x) * weight + bias."""

    def __init__(self, fn, num_features):
        super().__init__()
        self.fn = fn
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x):
        return self.fn(x) * self.weight + self.bias


def train_variant(fn, seed, lr=1.0, epochs=10):
    """The notebook's train_variant, as a learner runs it."""
    X_train, X_val, y_train, y_val = load_data()
    torch.manual_seed(seed)
    model = MLP(norm="batch")
    for i, layer in enumerate(model.network):
        if isinstance(layer, nn.BatchNorm1d):
            model.network[i] = FunctionNorm(fn, layer.num_features)
    loaders = make_loaders(X_train, X_val, y_train, y_val, seed=seed)
    return train_model(model, *loaders, epochs=epochs, lr=lr, verbose=False)


VARIANTS = {"BN": full, "mean-only": mean_only, "variance-only": variance_only}


@pytest.fixture(scope="module")
def variant_runs():
    return {name: [train_variant(fn, seed) for seed in SEEDS] for name, fn in VARIANTS.items()}


def losses_of(runs, metric="val_loss"):
    return {name: [getattr(h, metric)[-1] for h in hs] for name, hs in runs.items()}


def test_norm_variants(variant_runs):
    losses = losses_of(variant_runs)
    assert min(losses["mean-only"]) > 1000 and max(losses["variance-only"]) < 1  # the facts
    stable = ["BN", "variance-only"]
    fb = correct(check_norm_variants(mean_only, variance_only, losses, stable, show=False))
    assert "mean-only's output by" in fb.message and f"re-run of seed {SEEDS[0]}" in fb.message
    assert "agree, to float rounding," in fb.message
    nudged = {**losses, "BN": [losses["BN"][0] * (1 + 1e-3)] + losses["BN"][1:]}
    fb = correct(check_norm_variants(mean_only, variance_only, nudged, stable, show=False))
    assert "not to float rounding" in fb.message and "cannot prove" in fb.message
    nan_losses = {**losses, "variance-only": [losses["variance-only"][0], float("nan"), 0.2]}
    correct(check_norm_variants(mean_only, variance_only, nan_losses, ["BN"], show=False))
    fb = not_attempted(check_norm_variants(mean_only, variance_only, None, None, show=False))
    assert "Both functions are right" in fb.message
    not_attempted(check_norm_variants(None, None, None, None, show=False))
    wrong(
        check_norm_variants(mean_only, variance_only, losses, ["BN"], show=False), "Your own losses"
    )
    wrong(
        check_norm_variants(full, variance_only, losses, ["BN"], show=False),
        "`mean_only_norm` also divides",
    )
    wrong(
        check_norm_variants(mean_only, full, losses, ["BN"], show=False),
        "`variance_only_norm` also subtracts the mean",
    )
    rms = lambda x, eps=1e-5: x / torch.sqrt((x**2).mean(0) + eps)  # noqa: E731
    wrong(check_norm_variants(mean_only, rms, losses, ["BN"], show=False), "root mean square")
    wrong(check_norm_variants(variance_only, mean_only, losses, ["BN"], show=False), "swapped")
    per_sample = lambda x, eps=1e-5: x - x.mean(1, keepdim=True)  # noqa: E731
    wrong(check_norm_variants(per_sample, variance_only, losses, ["BN"], show=False), "dim=1")
    wrong(
        check_norm_variants(mean_only, variance_only, {"BN": [0.3]}, ["BN"], show=False),
        "should be a dict with exactly the keys",
    )


def test_norm_variants_ties_the_losses_to_real_runs(variant_runs):
    losses = losses_of(variant_runs)
    everything = list(VARIANTS)
    # made-up numbers that call every variant stable: the re-run of seed 0 diverges
    made_up = {**losses, "mean-only": [0.4, 0.5, 0.45]}
    fb = wrong(
        check_norm_variants(mean_only, variance_only, made_up, everything, show=False),
        "re-ran that run with your function",
        "not 0.4",
    )
    assert f"{losses['mean-only'][0]:.4g}" in fb.message
    # rounding differences (another device) are fine, a stable loss far off is not
    nudged = {**losses, "BN": [losses["BN"][0] * 1.001] + losses["BN"][1:]}
    correct(
        check_norm_variants(mean_only, variance_only, nudged, ["BN", "variance-only"], show=False)
    )
    far = {**losses, "BN": [losses["BN"][0] * 2.5] + losses["BN"][1:]}
    wrong(
        check_norm_variants(mean_only, variance_only, far, ["BN", "variance-only"], show=False),
        "re-ran that run",
    )
    accuracies = losses_of(variant_runs, "val_acc")
    wrong(
        check_norm_variants(mean_only, variance_only, accuracies, everything, show=False),
        "the final validation accuracy",
        "h.val_loss[-1]",
    )
    train_losses = {
        **losses,
        "variance-only": losses_of(variant_runs, "train_loss")["variance-only"],
    }
    wrong(
        check_norm_variants(mean_only, variance_only, train_losses, ["BN"], show=False),
        "the final training loss",
    )
    swapped = {**losses, "variance-only": losses["mean-only"], "mean-only": losses["variance-only"]}
    wrong(
        check_norm_variants(mean_only, variance_only, swapped, ["BN", "mean-only"], show=False),
        "the variance-only net's loss",
    )
    slow = {
        **losses,
        "mean-only": [train_variant(mean_only, SEEDS[0], lr=0.01).val_loss[-1]]
        + losses["mean-only"][1:],
    }
    wrong(
        check_norm_variants(mean_only, variance_only, slow, everything, show=False),
        "learning rate 0.01",
    )


def test_norm_variants_names_another_seeds_numbers(variant_runs):
    """Numbers of the second seed where the first belongs: the check re-runs the first of
    seeds(3) and says whose numbers these are."""
    losses = losses_of(variant_runs)
    stable = ["BN", "variance-only"]
    rotated = {name: values[1:] + values[:1] for name, values in losses.items()}
    wrong(
        check_norm_variants(mean_only, variance_only, rotated, stable, show=False),
        f"that is seed {SEEDS[1]}'s run, not seed {SEEDS[0]}'s",
        "seeds(3)",
    )
    # only the variance-only entry is another seed's: still caught
    one = {**losses, "variance-only": rotated["variance-only"]}
    wrong(
        check_norm_variants(mean_only, variance_only, one, stable, show=False),
        "`variant_loss['variance-only'][0]`",
        f"seed {SEEDS[1]}'s run",
    )


def test_norm_variants_notice_seeds_typed_by_hand(variant_runs, monkeypatch):
    """Under BNTEACH_SEED_OFFSET the exercise's seeds move; numbers from the unshifted seeds
    (typed as 0, 1, 2) are named as such."""
    losses = losses_of(variant_runs)
    monkeypatch.setenv("BNTEACH_SEED_OFFSET", str(SEEDS[0] + 100))
    typed = {name: [train_variant(fn, 0).val_loss[-1]] * 3 for name, fn in VARIANTS.items()}
    fb = wrong(
        check_norm_variants(mean_only, variance_only, typed, ["BN", "variance-only"], show=False),
        f"not seed {SEEDS[0] + 100}'s",
    )
    assert "that is seed 0's run" in fb.message and "seeds(3)" in fb.message
    assert losses  # the fixture's own runs are untouched by the offset


# ------------------------------------------------------------------------------ 8


def scale_hidden(model, a, *, last=False, bias=True):
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin in linears if last else linears[:-1]:
            lin.weight.mul_(a)
            if bias and lin.bias is not None:
                lin.bias.mul_(a)
    return model


def ratio(a, training=True, norm="batch", layer=0):
    X, _, y, _ = load_data()
    norms = []
    for factor in (1.0, a):
        torch.manual_seed(seeds(1)[0])
        model = scale_hidden(MLP(20, (128, 64), norm=norm), factor).train(training)
        F.binary_cross_entropy_with_logits(model(X[:64]), y[:64]).backward()
        norms.append(model.network[layer].weight.grad.norm().item())
    return norms[1] / norms[0]


def init_run(norm, a, seed, epochs=10):
    """One run of exercise 8, as a learner runs it: ``(history, change)``, ``change`` the
    relative change of the second hidden Linear's weight (None without BN)."""
    X_train, X_val, y_train, y_val = load_data()
    torch.manual_seed(seed)
    model = scale_hidden(MLP(norm=norm), a)
    start = model.network[3].weight.detach().clone() if norm == "batch" else None
    loaders = make_loaders(X_train, X_val, y_train, y_val, seed=seed)
    history = train_model(model, *loaders, epochs=epochs, lr=0.01, verbose=False)
    if start is None:
        return history, None
    return history, ((model.network[3].weight.detach() - start).norm() / start.norm()).item()


@pytest.fixture(scope="module")
def init_runs():
    return {
        (n, a): [init_run(n, a, seed) for seed in SEEDS]
        for n in ("none", "batch")
        for a in (1, 100)
    }


def final(runs, metric="val_acc"):
    return {k: [getattr(h, metric)[-1] for h, _ in hs] for k, hs in runs.items()}


def changes(runs, index=0):
    """``weight_change`` as the learner reports it: the BN net of one seed, a = 1 and 100."""
    return {a: runs["batch", a][index][1] for a in (1, 100)}


def scale_answers(runs):
    accs = final(runs)
    verdict = paired(accs["batch", 100], accs["none", 100], names=("BN", "plain")).verdict(MARGIN)
    return accs, changes(runs), verdict


def test_scale_invariance(init_runs):
    INIT_ACC, CHANGE, VERDICT = scale_answers(init_runs)
    assert statistics.mean(INIT_ACC["batch", 100]) > statistics.mean(INIT_ACC["none", 100])
    assert CHANGE[1] > 10 * CHANGE[100]  # the fact: Adam's relative step shrinks like 1/a
    ratios = {a: ratio(a) for a in (0.1, 10, 100)}
    assert abs(ratios[100] - 0.01) < 1e-3  # the fact itself: the gradient scales as 1/a

    def check(fn=scale_hidden, grads=ratios, accs=INIT_ACC, change=CHANGE, verdict=VERDICT):
        return check_scale_invariance(fn, grads, accs, change, verdict, show=False)

    fb = correct(check())
    assert "1/a" in fb.message and "times less" in fb.message and "95% interval" in fb.message
    in_place = lambda m, a: scale_hidden(m, a) and None  # noqa: E731
    correct(check(fn=in_place))
    not_attempted(check_scale_invariance(None, None, None, None, None, show=False))
    not_attempted(check_scale_invariance(scale_hidden, None, None, None, None, show=False))
    not_attempted(check(fn=lambda m, a: None))
    not_attempted(check(change=None))
    wrong(check(fn=functools.partial(scale_hidden, last=True)), "also scaled the output Linear")
    wrong(check(fn=functools.partial(scale_hidden, bias=False)), "multiply the bias by a too")
    wrong(check(grads={a: 1 / r for a, r in ratios.items()}), "the inverse")
    output_layer = {a: ratio(a, layer=-1) for a in (10, 100)}
    wrong(check(grads=output_layer), "network[0].weight.grad")
    for bad in (
        {a: ratio(a, training=False) for a in (10, 100)},
        {a: ratio(a, norm="none") for a in (10, 100)},
    ):
        wrong(check(grads=bad), "does not normalize")
    for bad in set(VERDICTS) - {VERDICT}:
        wrong(check(verdict=bad), "`scale_verdict`", "your own runs give")
    wrong(check(accs={("none", 1): [0.9]}), "exactly the keys")
    wrong(check(change={1: CHANGE[1]}), "should be a dict {1: ..., 100: ...}")


def test_scale_invariance_checks_the_weight_change(init_runs):
    accs, change, verdict = scale_answers(init_runs)

    def check(weight_change):
        return check_scale_invariance(
            scale_hidden, {10: ratio(10), 100: ratio(100)}, accs, weight_change, verdict, show=False
        )

    wrong(check({1: change[1], 100: change[1]}), "what the unscaled net gives")
    wrong(check({1: change[1], 100: change[100] * 3}), "`weight_change[100]`", "re-run of seed")
    # the absolute change ||W - W_0|| instead of the relative one
    torch.manual_seed(SEEDS[0])
    w0 = scale_hidden(MLP(norm="batch"), 1).network[3].weight.norm().item()
    wrong(check({1: change[1] * w0, 100: change[100]}), "absolute change")
    # another seed's BN net
    wrong(check(changes(init_runs, 1)), f"that is seed {SEEDS[1]}'s run, not seed {SEEDS[0]}'s")
    fb = correct(check({1: change[1] * (1 + 1e-3), 100: change[100]}))  # another device
    assert "weight_change[1] not to float rounding" in fb.message
    fb = correct(check(change))
    assert "agree, to float rounding," in fb.message


def test_scale_invariance_ties_the_accuracies_to_real_runs(init_runs):
    accs, change, verdict = scale_answers(init_runs)
    ratios = {a: ratio(a) for a in (10, 100)}

    def check(init_acc):
        v = paired(init_acc["batch", 100], init_acc["none", 100]).verdict(MARGIN)
        return check_scale_invariance(scale_hidden, ratios, init_acc, change, v, show=False)

    made_up = {**accs, ("none", 100): [0.6, 0.62, 0.61]}
    fb = wrong(check(made_up), f"the check's re-run of seed {SEEDS[0]} gives", "0.600")
    assert f"{accs['none', 100][0]:.3f}" in fb.message
    # rounding differences (another device) are fine
    nudged = {**accs, ("none", 100): [accs["none", 100][0] + 0.001] + accs["none", 100][1:]}
    fb = correct(check(nudged))
    assert "init_acc[('none', 100)] not to float rounding" in fb.message  # cannot prove the seed
    unscaled = {**accs, ("none", 100): accs["none", 1]}
    wrong(check(unscaled), "without scaling", "scale_hidden_layers(model, a)")
    losses = final(init_runs, "val_loss")
    wrong(check({**accs, ("batch", 1): losses["batch", 1]}), "the final validation loss")
    longer = [init_run("none", 100, seed, epochs=25)[0].val_acc[-1] for seed in SEEDS]
    if abs(longer[0] - accs["none", 100][0]) > 0.04:
        wrong(check({**accs, ("none", 100): longer}), "25 epochs")
    # the second seed's numbers first: named as such wherever they differ from the first's
    rotated = {k: v[1:] + v[:1] for k, v in accs.items()}
    if any(v[0] != v[1] for v in accs.values()):
        wrong(check(rotated), f"that is seed {SEEDS[1]}'s run, not seed {SEEDS[0]}'s")
    else:
        correct(check(rotated))  # equal numbers: nothing to tell apart


# ------------------------------------------------------------------------------ 9

LN = {"BN": {"norm": "batch"}, "LN": {"norm": "layer"}}


def test_layer_norm():
    results = {
        bs: sweep.run(seeds=SEEDS, lrs=[0.01], epochs=1, batch_size=bs, models=LN) for bs in (2, 64)
    }
    acc = {(m, bs): mean_acc(r, m) for bs, r in results.items() for m in LN}
    better = verdict_of(results[2], "LN", "BN")
    spans = {m: abs(acc[m, 2] - acc[m, 64]) for m in LN}
    sensitive = max(spans, key=spans.get)
    fb = correct(check_layer_norm(results, acc, better, sensitive, show=False))
    assert "At batch size 2: " in fb.message
    not_attempted(check_layer_norm(results, acc, None, None, show=False))
    for bad in set(VERDICTS) - {better}:
        wrong(check_layer_norm(results, acc, bad, sensitive, show=False), "your own runs give")
    wrong(check_layer_norm(results, acc, "LN", sensitive, show=False), "should be one of")
    wrong(
        check_layer_norm(results, acc, better, other(sensitive, LN), show=False), "more sensitive"
    )
    losses = {(m, bs): mean_acc(r, m, metric="val_loss") for bs, r in results.items() for m in LN}
    wrong(check_layer_norm(results, losses, better, sensitive, show=False), "validation losses")
    swapped = {2: results[64], 64: results[2]}
    wrong(
        check_layer_norm(swapped, acc, better, sensitive, show=False),
        "was trained with batch_size=64",
    )


# ------------------------------------------------------------------------------ 10a


def fold(
    model,
    *,
    eps=True,
    sqrt=True,
    beta=True,
    lin_bias=True,
    mean=True,
    bias_none_ok=True,
    train_first=False,
    in_place=False,
):
    """The reference fold_bn, with switches that reproduce the usual mistakes."""
    if train_first:
        model.train()
        model(load_data()[0])
        model.eval()
    layers, net = [], list(model.network)
    i = 0
    while i < len(net):
        layer = net[i]
        if isinstance(layer, nn.Linear) and isinstance(
            net[min(i + 1, len(net) - 1)], nn.BatchNorm1d
        ):
            bn = net[i + 1]
            var = bn.running_var + (bn.eps if eps else 0)
            s = bn.weight / (torch.sqrt(var) if sqrt else var)
            if layer.bias is None and not bias_none_ok:
                b = layer.bias * 1.0  # TypeError, as in a fold that assumes a bias
            else:
                b = layer.bias if (layer.bias is not None and lin_bias) else 0
            target = layer if in_place else nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():
                new_w = s[:, None] * layer.weight
                if in_place and target.bias is None:
                    target.bias = nn.Parameter(torch.zeros(layer.out_features))
                target.weight.copy_(new_w)
                target.bias.copy_(
                    (b - (bn.running_mean if mean else 0)) * s + (bn.bias if beta else 0)
                )
            layers.append(target)
            i += 2
        else:
            layers.append(layer)
            i += 1
    return nn.Sequential(*layers)


FOLD_MISTAKES = [
    ({"eps": False}, "leaves out `eps`"),
    ({"sqrt": False}, "instead of its square root"),
    ({"beta": False}, "drops BN's shift"),
    ({"lin_bias": False}, "drops the Linear's own bias"),
    ({"mean": False}, "forgets to subtract running_mean"),
    ({"bias_none_ok": False}, "no bias (bias=False"),
    ({"train_first": True}, "ran the model in training mode"),
    ({"in_place": True}, "changed the original model's weights"),
]


def test_fold_reference_is_correct():
    correct(check_fold(fold, show=False))
    correct(check_fold(lambda m: fold(copy.deepcopy(m), in_place=True), show=False))


@pytest.mark.parametrize("switches, phrase", FOLD_MISTAKES, ids=[p for _, p in FOLD_MISTAKES])
def test_fold_mistakes(switches, phrase):
    wrong(check_fold(functools.partial(fold, **switches), show=False), phrase)


def test_fold_other_answers():
    def stub(model):
        raise NotImplementedError

    not_attempted(check_fold(None, show=False))
    not_attempted(check_fold(stub, show=False))
    not_attempted(check_fold(lambda m: None, show=False))
    wrong(check_fold(lambda m: copy.deepcopy(m), show=False), "still contains BatchNorm")
    wrong(check_fold(lambda m: "folded", show=False), "should return an nn.Module")

    def data_stats(model):
        X = load_data()[0]
        folded, h = [], X
        net = list(model.network)
        for i, layer in enumerate(net):
            if isinstance(layer, nn.BatchNorm1d):
                lin = net[i - 1]
                s = layer.weight / torch.sqrt(h.var(0, unbiased=False) + layer.eps)
                b = lin.bias if lin.bias is not None else 0
                new = nn.Linear(lin.in_features, lin.out_features)
                with torch.no_grad():
                    new.weight.copy_(s[:, None] * lin.weight)
                    new.bias.copy_((b - h.mean(0)) * s + layer.bias)
                folded[-1] = new
            else:
                folded.append(layer)
            with torch.no_grad():
                h = (
                    layer(h)
                    if not isinstance(layer, nn.BatchNorm1d)
                    else copy.deepcopy(layer).train()(h)
                )
        return nn.Sequential(*folded)

    wrong(check_fold(data_stats, show=False), "statistics of a batch of data")


# ------------------------------------------------------------------------------ 10b


def _stay_in_eval(module, mode=True):
    return nn.Module.train(module, False)


def freeze_bn(
    model,
    *,
    grads=True,
    evaluate=True,
    sticky=True,
    momentum_zero=False,
    everything=False,
    break_train=False,
):
    """The reference freeze_bn, with switches that reproduce the usual mistakes."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            if grads:
                m.requires_grad_(False)
            if sticky:
                m.train = functools.partial(_stay_in_eval, m)
            if evaluate:
                m.eval()
            if momentum_zero:
                m.momentum = 0.0
    if everything:
        model.requires_grad_(False)
    if break_train:
        model.train = lambda mode=True: model
    return model


FREEZE_MISTAKES = [
    ({"evaluate": False, "sticky": False}, "requires_grad_(False) stops the optimizer"),
    ({"sticky": False}, "model.train() switched them back"),
    ({"grads": False}, "also call requires_grad_(False)"),
    ({"evaluate": False, "sticky": False, "momentum_zero": True}, "momentum=0 only stops"),
    ({"everything": True}, "froze the whole network"),
    ({"break_train": True}, "broke model.train()"),
]


def test_freeze_reference_is_correct():
    correct(check_freeze(freeze_bn, show=False))
    correct(check_freeze(freeze, show=False))  # bnteach's own
    correct(check_freeze(lambda m: freeze_bn(m) and None, show=False))  # in place, no return


@pytest.mark.parametrize("switches, phrase", FREEZE_MISTAKES, ids=[p for _, p in FREEZE_MISTAKES])
def test_freeze_mistakes(switches, phrase):
    wrong(check_freeze(functools.partial(freeze_bn, **switches), show=False), phrase)


def test_freeze_placeholders():
    def stub(model):
        raise NotImplementedError

    not_attempted(check_freeze(None, show=False))
    not_attempted(check_freeze(stub, show=False))
    not_attempted(check_freeze(lambda m: None, show=False))
    wrong(check_freeze(lambda m: m, show=False), "running statistics moved")
