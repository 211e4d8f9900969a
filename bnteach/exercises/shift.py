"""Self-checks for the exercises of notebook 11 (BatchNorm under distribution shift).

- 11.1 ``adabn_by_hand(net, X)``: AdaBN written out: a net whose BN layers' running
  statistics are those of their input on the unlabelled X.
- 11.2 ``predict_own(net, X, batch_size)``: predictions with each test batch's own
  statistics, leaving ``net`` as it was.
- 11.3 ``freeze_statistics(net)``: BN's statistics frozen for fine-tuning, gamma and beta
  trainable, even after a later ``net.train()``.

Each check returns a :class:`~bnteach.exercises.kit.Feedback`: "correct" restating what was
verified, "wrong" naming the mistake found, or "not attempted". The checks build their own
small nets (a ``SmallCNN("batch")`` with running statistics set away from 0 and 1) and
shifted digits; a learner's exception or ``None`` is feedback, never an internal error.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bnteach.adapt import adabn, predict_mixed
from bnteach.batchnorm import bn_layers
from bnteach.cnn import SmallCNN
from bnteach.data import load_digits, shifted
from bnteach.exercises import kit
from bnteach.exercises.kit import Wrong

__all__ = [
    "EXERCISES",
    "check_adabn_by_hand",
    "check_own_statistics",
    "check_finetune_freeze",
    "progress",
    "reset",
]

NB = kit.notebook("11")


def _net(seed=11):
    """A SmallCNN("batch") in eval mode whose running statistics are not PyTorch's defaults
    (as after training), so that using them or not shows in the outputs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallCNN("batch")
        with torch.no_grad():
            for m in bn_layers(net):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


def _target(n):
    """n blurred validation digits (n, 1, 8, 8): unlabelled target data."""
    X_val = load_digits()[1]
    return shifted(X_val[:n], "blur", 1.0)


def _stats(net):
    return [(m.running_mean.clone(), m.running_var.clone()) for m in bn_layers(net)]


def _buffers(net):
    return [b.clone() for b in net.buffers()]


def _same_buffers(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _eval_pass_stats(net, X):
    """The mistake: statistics collected in eval mode (deeper layers see the input
    normalised with the OLD statistics of the earlier layers)."""
    net = copy.deepcopy(net).eval()
    seen = {}

    def keep(layer, args, out):
        seen[layer] = args[0]

    hooks = [m.register_forward_hook(keep) for m in bn_layers(net)]
    with torch.no_grad():
        net(X)
    for h in hooks:
        h.remove()
    return [(seen[m].mean((0, 2, 3)), seen[m].var((0, 2, 3))) for m in bn_layers(net)]


def _close(got, want, rtol=1e-4):
    return all(
        torch.allclose(gm.to(wm.dtype), wm, rtol=rtol, atol=1e-6)
        and torch.allclose(gv.to(wv.dtype), wv, rtol=rtol)
        for (gm, gv), (wm, wv) in zip(got, want)
    )


def _parameters(net):
    return [p.detach().clone() for p in net.parameters()]


# ============================================================================ 11.1 AdaBN


def _check_left_alone(out, net, X, saved):
    """11.1 returns an adapted COPY: the net passed in and X must be as they were."""
    before, params, settings, X_before = saved
    if not torch.equal(X, X_before):
        raise Wrong("Your function changed X in place: adapting must only read the target data.")
    if out is net:
        raise Wrong(
            "You adapted the net passed in and returned it: return an adapted COPY "
            "(copy.deepcopy(net)) and leave `net` with its training statistics, so that both "
            "can be compared."
        )
    if not _same_buffers(before, _buffers(net)):
        raise Wrong(
            "You returned a copy but changed the net passed in too (its running statistics "
            "moved): a forward in train mode updates the running buffers. Run the pass on the "
            "copy only."
        )
    changed = [a for a, b in zip(params, _parameters(net)) if not torch.equal(a, b)]
    if changed or kit.bn_settings(net) != settings:
        raise Wrong(
            "You returned a copy but changed the net passed in (its parameters or its BN "
            "layers' momentum): AdaBN changes only the copy's running statistics."
        )


@NB.check("11.1", "AdaBN without hooks")
def check_adabn_by_hand(adabn_by_hand):
    """adabn_by_hand(net, X) -> an adapted copy of net (net and X left alone), in eval mode,
    whose BN running statistics are those of their input on X, each layer seeing X
    normalised by the adapted earlier ones, and whose BN settings (momentum) are net's."""
    kit.function(adabn_by_hand, "adabn_by_hand")
    net, X = _net(), _target(6)
    before, params, settings, X_before = (
        _buffers(net),
        _parameters(net),
        kit.bn_settings(net),
        X.clone(),
    )
    want = _stats(adabn(copy.deepcopy(net), X))
    out = kit.call(adabn_by_hand, net, X, name="adabn_by_hand")
    if not isinstance(out, nn.Module):
        raise Wrong(
            f"`adabn_by_hand` should return the adapted net (an nn.Module), got "
            f"{type(out).__name__}. End it with `return net`."
        )
    _check_left_alone(out, net, X, (before, params, settings, X_before))
    layers = bn_layers(out)
    if len(layers) != 2:
        raise Wrong(
            f"The net you returned has {len(layers)} BN layers; the check passed a SmallCNN "
            f"with 2. Return the copy you adapted, not another model."
        )
    got = _stats(out)
    if kit.bn_settings(out) != settings:
        raise Wrong(
            f"The adapted net's BN layers are configured differently from the net's "
            f"(momentum, eps, track_running_stats: {kit.bn_settings(out)} instead of {settings}): "
            f"restore the momentum you changed for the pass, so that later training updates "
            f"the statistics as before."
        )
    if any(m.training for m in out.modules()):
        raise Wrong(
            "The adapted net is still in train mode: its predictions would use each batch's "
            "statistics, not the adapted running ones. End with `return net.eval()`."
        )
    if _close(got, want):
        return (
            "Both BN layers hold the mean and unbiased variance of their input on the 6 "
            "blurred digits, equal to bnteach.adapt.adabn (= recalibrate on [(X,)]): AdaBN."
        )
    if _close(got, _eval_pass_stats(net, X)):
        raise Wrong(
            "Your statistics come from a pass in EVAL mode: BN 1 is right, but BN 2 saw its "
            "input normalised with BN 1's OLD (training) statistics. After adapting, BN 1 "
            "uses the target's statistics, so BN 2 must see that: run the pass in train mode "
            "(each BN normalises with the batch's own statistics)."
        )
    biased = [(m, v * (n - 1) / n) for (m, v), n in zip(want, (6 * 64, 6 * 16))]
    if _close(got, biased, rtol=1e-5):
        raise Wrong(
            "Your running_var is the BIASED variance (divided by n). PyTorch stores the "
            "unbiased one in running_var (divided by n - 1, n = N * H * W values per "
            "channel): use x.var((0, 2, 3)), whose default is unbiased."
        )
    if _close(got, _stats(net)):
        raise Wrong(
            "The running statistics did not change: copy the statistics you measured into "
            "the buffers, e.g. `m.running_mean.copy_(x.mean((0, 2, 3)))` under no_grad."
        )
    raise Wrong(
        "The running statistics differ from those of the layers' inputs on X. Per channel, "
        "over N, H and W: running_mean = x.mean((0, 2, 3)) and running_var = x.var((0, 2, 3)) "
        "of each BN layer's input x, from a train-mode pass over all of X."
    )


# ============================================================================ 11.2 own statistics


def _own_statistics_case(predict_own, n, batch_size):
    """Raise Wrong unless predict_own gives each batch's train-mode logits on n images."""
    net, X = _net(), _target(n)
    before, settings = _buffers(net), kit.bn_settings(net)
    out = kit.call(predict_own, net, X, batch_size, name="predict_own")
    out = kit.tensor(out, "The logits `predict_own` returned", (n, 10), none="are None")
    if not _same_buffers(before, _buffers(net)):
        raise Wrong(
            "Your function changed the net's running statistics: a train-mode forward "
            "updates them (momentum 0.1). Predict with a copy (copy.deepcopy(net)), so the "
            "net passed in is left as it was."
        )
    if kit.bn_settings(net) != settings:
        raise Wrong(
            "Your function changed how the net's BN layers are configured (momentum, eps or "
            "track_running_stats): the net must be left exactly as it was. Work on a copy."
        )
    if net.training or any(m.training for m in net.modules()):
        raise Wrong(
            "The net was left in train mode. Use a copy for the train-mode forward, or "
            "put the net back with net.eval()."
        )
    want = predict_mixed(net, X, batch_size, prior=0)
    out = out.detach().to(want.dtype)
    if torch.allclose(out, want, atol=1e-4):
        return
    with torch.no_grad():
        eval_out = net(X)
        whole = copy.deepcopy(net).train()(X)
    if torch.allclose(out, eval_out, atol=1e-4):
        raise Wrong(
            "These are eval-mode predictions: the running (training) statistics. The "
            "exercise asks for each batch's OWN statistics: a train-mode forward per batch."
        )
    if torch.allclose(out, whole, atol=1e-4):
        raise Wrong(
            f"You normalised all {n} images as ONE batch. Cut X into consecutive batches of "
            f"batch_size (X.split(batch_size)) and run each on its own."
        )
    raise Wrong(
        f"With {n} images in batches of {batch_size} (the last one "
        f"{n - (n - 1) // batch_size * batch_size} images), your logits differ from a "
        f"train-mode forward of each batch by up to {(out - want).abs().max():.3g}. Run "
        f"copy.deepcopy(net).train() on each batch of X.split(batch_size) under no_grad and "
        f"concatenate the outputs."
    )


@NB.check("11.2", "predict with the test batch's own statistics")
def check_own_statistics(predict_own):
    """predict_own(net, X, batch_size) -> logits (N, 10): each consecutive batch of
    batch_size images normalised with its own statistics (the last batch may be smaller);
    net unchanged. Checked on 24 images in batches of 4, and 22 in batches of 5."""
    kit.function(predict_own, "predict_own")
    for n, batch_size in ((24, 4), (22, 5)):
        _own_statistics_case(predict_own, n, batch_size)
    return (
        "Each batch was normalised with its own statistics (= a train-mode forward of each "
        "batch; predict_mixed(net, X, batch_size, prior=0)), also with a smaller last batch "
        "(22 images in batches of 5), and the net is unchanged."
    )


# ============================================================================ 11.3 freeze


def _train_step(net, X, y):
    """One Adam step in train mode, as a fine-tuning loop makes it."""
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    if params:
        optimizer = torch.optim.Adam(params, lr=1e-2)
        loss = F.cross_entropy(net(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@NB.check("11.3", "freeze the statistics, not gamma and beta")
def check_finetune_freeze(freeze_statistics):
    """freeze_statistics(net) changes net in place (or returns it) so that fine-tuning in
    train mode leaves every BN layer's running statistics as they are, uses them to
    normalise, and still trains gamma, beta and every other parameter."""
    kit.function(freeze_statistics, "freeze_statistics")
    net = _net()
    out = kit.call(freeze_statistics, net, name="freeze_statistics")
    if out is not None and out is not net:
        raise Wrong(
            f"`freeze_statistics` returned {type(out).__name__} other than the net it was "
            f"given: change `net` itself, in place (and return it, or nothing). A fine-tuning "
            f"loop goes on with the net it has."
        )
    layers = bn_layers(net)
    if not layers:
        raise Wrong("The net has no BN layers left: freeze them, do not remove them.")
    if any(m.weight is None or m.bias is None for m in layers):
        raise Wrong(
            "A BN layer lost its weight or bias (gamma, beta): keep them, and trainable. "
            "Freezing the statistics does not remove BN's affine parameters."
        )
    stats = _stats(net)
    X, y = _target(8), load_digits()[3][:8]
    with torch.random.fork_rng(devices=[]):
        _train_step(net, X, y)
    moved = not _close(_stats(net), stats, rtol=0)
    frozen_affine = [p for m in layers for p in (m.weight, m.bias) if not p.requires_grad]
    if moved:
        raise Wrong(
            "After net.train() and one training step the running statistics moved: "
            "requires_grad_(False) and net.eval() do not protect them, because the training "
            "loop's net.train() switches BN back to batch statistics. Use "
            "bnteach.batchnorm.freeze(net) (it makes BN ignore train()), then make gamma "
            "and beta trainable again."
        )
    if frozen_affine:
        raise Wrong(
            "The statistics stay put, but gamma and beta (BN's weight and bias) no longer "
            "train: that is 'all of BN frozen'. The exercise keeps them trainable: "
            "m.weight.requires_grad_(True) and m.bias.requires_grad_(True) after freezing."
        )
    others = [n for n, p in net.named_parameters() if not p.requires_grad]
    if others:
        raise Wrong(f"These parameters no longer train: {others[:3]}. Freeze only BN.")
    if any(m.training for m in layers):
        raise Wrong(
            "The BN layers are in train mode during fine-tuning: they normalise with each "
            "batch's statistics, not the frozen ones. freeze(net) keeps them in eval mode."
        )
    if not net.training:
        raise Wrong(
            "After net.train() the net as a whole is still in eval mode: you froze more than "
            "BN (did you replace net.train?). Only the BN layers should ignore train(); the "
            "rest of the net (dropout, for one) must follow it."
        )
    return (
        "After net.train() and a training step, the running statistics did not move and BN "
        "stayed in eval mode, while gamma, beta and the other parameters still train: "
        "statistics frozen, affine trainable."
    )


EXERCISES = NB.titles
progress, reset = NB.progress, NB.reset
