"""Self-checks for the exercises of notebook 10 (BatchNorm across devices).

- 10.1 ``sync_backward(dys, xhats, weight, invstd)``: SyncBN's backward pass with the ranks'
  shards as lists (a sum over the list plays the all_reduce); checked against autograd through
  BatchNorm on the concatenated batch, in float64.
- 10.2 ``predict(batch_means, momentum, broadcast)``: each rank's running_mean after the last
  step of per-device BN under DistributedDataParallel, with and without ``broadcast_buffers``.

Each check returns a :class:`~bnteach.exercises.kit.Feedback`: "correct" restating what was
measured, "wrong" naming the mistake found, or "not attempted". A learner's exception or
``None`` is feedback, never an internal error. These exercises have their own
:func:`progress` table.
"""

import torch
import torch.nn.functional as F

from bnteach.exercises import kit
from bnteach.exercises.kit import Wrong

__all__ = ["EXERCISES", "check_sync_backward", "check_broadcast_buffers", "progress", "reset"]

NB = kit.notebook("10")
EPS = 1e-5
TOL = 1e-9  # float64: a right answer agrees to ~1e-15

# ============================================================================ 10.1 backward

SIZES = (5, 1, 3, 2)  # unequal shards, one rank with a single sample
CHANNELS = 3
CASES = ((SIZES, CHANNELS, 10), ((4, 0, 2), 2, 11))  # the second: a rank with no rows


def _case(sizes, channels, seed):
    """The ranks' shards of one global batch: x (sum(sizes), channels) and dy, weight
    (channels,), float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), channels, generator=g, dtype=torch.float64) * 2 + 1
    dy = torch.randn(sum(sizes), channels, generator=g, dtype=torch.float64)
    weight = torch.rand(channels, generator=g, dtype=torch.float64) + 0.5
    return x, dy, weight


def _backward(dys, xhats, weight, invstd, local=False, local_n=False):
    """dx per shard; ``local``: each shard's own sums and size (per-device BN's backward);
    ``local_n``: the global sums divided by the shard's own size."""
    if local:
        sums = [(d.sum(0), (d * xh).sum(0), len(d)) for d, xh in zip(dys, xhats)]
    else:
        s1 = sum(d.sum(0) for d in dys)
        s2 = sum((d * xh).sum(0) for d, xh in zip(dys, xhats))
        n = sum(len(d) for d in dys)
        sums = [(s1, s2, len(d) if local_n else n) for d in dys]
    return [
        weight * invstd * (d - a / n - xh * b / n) for d, xh, (a, b, n) in zip(dys, xhats, sums)
    ]


def _given(sync_backward, dys, xhats, weight, invstd):
    out = kit.call(
        sync_backward,
        [d.clone() for d in dys],
        [xh.clone() for xh in xhats],
        weight.clone(),
        invstd.clone(),
        name="sync_backward",
    )
    if out is None:
        raise kit.NotAttempted("`sync_backward` returns None: return the list of dx, one per rank.")
    if not isinstance(out, (list, tuple)) or len(out) != len(dys):
        raise Wrong(
            f"`sync_backward` should return a list of {len(dys)} tensors (dx of each rank's "
            f"rows), got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, (list, tuple)) else "")
            + "."
        )
    empty = [r for r, d in enumerate(dys) if len(d) == 0]
    nan = [r for r, dx in enumerate(out) if isinstance(dx, torch.Tensor) and dx.is_floating_point()
           and not bool(torch.isfinite(dx).all())]  # fmt: skip
    if empty and nan:
        raise Wrong(
            f"Your dx holds NaN or infinity on rank(s) {nan}, in a layout where rank(s) "
            f"{empty} hold no rows: such a rank's mean is 0 / 0, its sums are 0. Add sums over "
            f"the ranks (d.sum(0)), never means times counts."
        )
    return [
        kit.tensor(dx, f"dx of rank {r}", shape=tuple(d.shape), placeholder=False)
        for r, (dx, d) in enumerate(zip(out, dys))
    ]


def _all_close(given, expected):
    return all(kit.close(a, b, rtol=0, atol=TOL) for a, b in zip(given, expected))


def _sync_backward_case(sync_backward, sizes, channels, seed):
    """Raise Wrong unless sync_backward gives autograd's dx on this layout of shards."""
    x, dy, weight = _case(sizes, channels, seed)
    x_all = x.clone().requires_grad_()
    F.batch_norm(x_all, None, None, weight, None, training=True, eps=EPS).backward(dy)
    expected = list(x_all.grad.split(sizes))
    mean, var = x.mean(0), x.var(0, unbiased=False)
    invstd = (var + EPS).rsqrt()
    xhats, dys = list(((x - mean) * invstd).split(sizes)), list(dy.split(sizes))
    given = _given(sync_backward, dys, xhats, weight, invstd)
    if _all_close(given, expected):
        return
    mistakes = [
        (
            _backward(dys, xhats, weight, invstd, local=True),
            "Your dx uses each rank's OWN sums and size: that is per-device BN's backward. The "
            "forward normalized with the global statistics, so every rank's rows depend on "
            "every other rank's: add the sums over the ranks first (the all_reduce), then "
            "use them on every rank.",
        ),
        (
            _backward(dys, xhats, weight, invstd, local_n=True),
            "You add the sums over the ranks, but divide them by the rank's own row count: "
            "divide by the GLOBAL count n = sum of the ranks' sizes.",
        ),
        (
            _backward(dys, xhats, torch.ones_like(weight), invstd),
            "Your dx lacks the factor weight (gamma): y = gamma * xhat + beta, so every "
            "gradient into xhat is gamma * dy.",
        ),
        (
            [weight * invstd * (d - sum(e.sum(0) for e in dys) / sum(map(len, dys))) for d in dys],
            "Your dx lacks the term through the variance, - xhat * sum(dy * xhat) / n: the "
            "variance depends on x too.",
        ),
    ]
    kit.name_mistake(given, mistakes, _all_close)
    worst = max((float((a - b).abs().max()) for a, b in zip(given, expected) if a.numel()),
                default=0.0)  # fmt: skip
    layout = f"ranks with {', '.join(map(str, sizes))} rows of {channels} channels"
    if worst < 1e-5:
        raise Wrong(
            f"Your dx is close but not float64-exact ({layout}): it differs by up to "
            f"{worst:.3g}, float32 rounding. Keep every sum in the inputs' float64 (e.g. "
            f"torch.zeros(C, dtype=dys[0].dtype), or sum(d.sum(0) for d in dys))."
        )
    raise Wrong(
        f"Your dx differs from autograd's gradient through BatchNorm on the concatenated batch "
        f"by up to {worst:.3g} ({layout}). dx = weight * invstd * (dy - S1 / n - xhat * S2 / "
        f"n), with S1 = sum(dy) and S2 = sum(dy * xhat) over EVERY rank's rows and n the "
        f"global count."
    )


@NB.check("10.1", "SyncBN's backward pass")
def check_sync_backward(sync_backward):
    """Exercise 10.1. ``sync_backward(dys, xhats, weight, invstd)``: dys and xhats are lists
    with one (n_r, C) tensor per rank (upstream gradient and normalized input of that rank's
    rows), weight and invstd (C,) (gamma and 1 / sqrt(var + eps) of the GLOBAL batch).
    Returns the list of dx, one (n_r, C) tensor per rank, as SyncBN computes it. Checked on
    two layouts (4 ranks of 5, 1, 3, 2 rows; 3 ranks of 4, 0, 2 rows)."""
    kit.function(sync_backward, "sync_backward")
    for sizes, channels, seed in CASES:
        _sync_backward_case(sync_backward, sizes, channels, seed)
    return (
        "Right: each rank's dx equals autograd's gradient through BatchNorm on the whole "
        f"global batch (ranks with {', '.join(map(str, SIZES))} rows, and 3 ranks of 4, 0 and "
        "2 rows, float64). Two sums per channel, sum(dy) and sum(dy * xhat), added over the "
        "ranks (one all_reduce of 2C numbers) and divided by the GLOBAL count: that is "
        "SyncBN's backward."
    )


# ============================================================================ 10.2 buffers

STEPS, RANKS, FEATURES = 5, 4, 3
# (steps, ranks, channels, momentum, broadcast): the notebook's layout, then another
BUFFER_CASES = [(STEPS, RANKS, FEATURES, m, b) for m, b in ((0.1, True), (0.1, False), (0.3, True))]
BUFFER_CASES += [(7, 3, 2, 0.2, False), (7, 3, 2, 0.2, True)]


def _chains(batch_means, momentum, broadcast):
    """Each rank's running_mean after the last step, (ranks, C), from zeros."""
    start = torch.zeros(batch_means.shape[1:], dtype=batch_means.dtype)
    for means in batch_means:
        after = (1 - momentum) * start + momentum * means
        start = after[0].expand_as(after) if broadcast else after
    return after


def _broadcast_mistakes(batch_means, momentum, broadcast):
    rank0 = _chains(batch_means, momentum, True)[0].expand(batch_means.shape[1], -1)
    synced = _chains(batch_means.mean(1, keepdim=True).expand_as(batch_means), momentum, True)
    return [
        (
            rank0,
            "Every rank of yours holds rank 0's value. The broadcast happens at the START of "
            "each forward: every rank then adds its OWN shard's update, "
            "after = (1 - momentum) * rank 0's previous value + momentum * its own batch mean.",
        ),
        (
            _chains(batch_means, momentum, not broadcast),
            "You computed the other setting: with broadcast_buffers=True every rank starts each "
            "step from rank 0's running_mean; with False each rank keeps its own chain.",
        ),
        (
            _chains(batch_means, 1 - momentum, broadcast),
            "momentum weighs the NEW batch statistic: after = (1 - momentum) * before + "
            "momentum * batch_mean (PyTorch's convention, the opposite of optimizers').",
        ),
        (
            synced,
            "You averaged the ranks' batch means: that is SyncBN. Per-device BN updates each "
            "rank with its own shard's mean.",
        ),
        (
            momentum * batch_means[-1],
            "Your values are momentum * the last batch mean: the running mean starts at 0 and "
            "accumulates over every step.",
        ),
    ]


def _predicted(predict, batch_means, momentum, broadcast):
    out = kit.call(predict, batch_means.clone(), momentum, broadcast, name="predict")
    return kit.tensor(
        out,
        f"`predict(batch_means, {momentum}, broadcast={broadcast})`",
        shape=tuple(batch_means.shape[1:]),
        hint="One row per rank: each rank's running_mean after the last step.",
    )


@NB.check("10.2", "predict what broadcast_buffers leaves")
def check_broadcast_buffers(predict):
    """Exercise 10.2. ``predict(batch_means, momentum, broadcast)``: batch_means (steps, ranks,
    C) is the mean of each rank's shard at each step (the input of one per-device BN layer);
    every running_mean starts at 0. Returns (ranks, C): each rank's running_mean after the
    last step, with DDP's ``broadcast_buffers`` True or False."""
    kit.function(predict, "predict")
    g = torch.Generator().manual_seed(102)
    for steps, ranks, channels, momentum, broadcast in BUFFER_CASES:
        batch_means = torch.randn(steps, ranks, channels, generator=g, dtype=torch.float64)
        given = _predicted(predict, batch_means, momentum, broadcast)
        expected = _chains(batch_means, momentum, broadcast)
        if kit.close(given, expected, rtol=0, atol=TOL):
            continue
        kit.name_mistake(given, _broadcast_mistakes(batch_means, momentum, broadcast))
        raise Wrong(
            f"With {steps} steps on {ranks} ranks, momentum {momentum} and "
            f"broadcast={broadcast}, rank 1's running_mean is "
            f"{given[1].tolist()}, but it should be {expected[1].tolist()}. Follow the steps: "
            f"each rank starts the step from rank 0's value after the previous step (broadcast) "
            f"or from its own (no broadcast), then after = (1 - momentum) * start + momentum * "
            f"its own batch mean."
        )
    return (
        "Right, with and without the broadcast, for three momenta and two layouts (5 steps "
        "on 4 ranks, 7 steps on 3). With broadcast_buffers "
        "every rank starts each step from rank 0's running statistics and ends it one update "
        "of its own away: rank 1's running_mean after the last step is (1 - momentum) * rank "
        "0's previous value + momentum * rank 1's own batch mean. Section 1 measured exactly "
        "this on 4 real processes."
    )


EXERCISES = NB.titles
progress, reset = NB.progress, NB.reset
