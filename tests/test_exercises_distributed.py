"""The checks of notebook 10's exercises: right answers pass, each usual mistake gets its own
message, and a learner's exception, wrong kind of answer or None is feedback, never an
internal error."""

import pytest
import torch

from bnteach.exercises import distributed as ex
from bnteach.exercises import kit

# ----------------------------------------------------------------------------- 10.1


def good_backward(dys, xhats, weight, invstd):
    n = sum(len(d) for d in dys)
    s1 = sum(d.sum(0) for d in dys)
    s2 = sum((d * xh).sum(0) for d, xh in zip(dys, xhats))
    return [weight * invstd * (d - s1 / n - xh * s2 / n) for d, xh in zip(dys, xhats)]


def local_sums(dys, xhats, weight, invstd):  # per-device BN's backward
    return [weight * invstd * (d - d.mean(0) - xh * (d * xh).mean(0)) for d, xh in zip(dys, xhats)]


def local_count(dys, xhats, weight, invstd):
    s1 = sum(d.sum(0) for d in dys)
    s2 = sum((d * xh).sum(0) for d, xh in zip(dys, xhats))
    return [weight * invstd * (d - s1 / len(d) - xh * s2 / len(d)) for d, xh in zip(dys, xhats)]


def no_gamma(dys, xhats, weight, invstd):
    return good_backward(dys, xhats, torch.ones_like(weight), invstd)


def no_variance_term(dys, xhats, weight, invstd):
    n = sum(len(d) for d in dys)
    s1 = sum(d.sum(0) for d in dys)
    return [weight * invstd * (d - s1 / n) for d in dys]


def half(dys, xhats, weight, invstd):
    return [0.5 * dx for dx in good_backward(dys, xhats, weight, invstd)]


def test_sync_backward_right_answer():
    fb = ex.check_sync_backward(good_backward, show=False)
    assert fb.correct, fb.message
    assert "all_reduce" in fb.message


@pytest.mark.parametrize(
    "answer, phrase",
    [
        (local_sums, "per-device BN's backward"),
        (local_count, "GLOBAL count"),
        (no_gamma, "factor weight"),
        (no_variance_term, "term through the variance"),
        (half, "differs from autograd"),
    ],
)
def test_sync_backward_mistakes_get_specific_feedback(answer, phrase):
    fb = ex.check_sync_backward(answer, show=False)
    assert fb.status == "wrong" and phrase in fb.message, fb.message


@pytest.mark.parametrize(
    "answer, phrase",
    [
        (lambda dys, xhats, weight, invstd: torch.zeros(3), "list of 4 tensors"),
        (lambda dys, xhats, weight, invstd: dys[:2], "of length 2"),
        (lambda dys, xhats, weight, invstd: [d[:, :2] for d in dys], "shape"),
        (lambda dys, xhats, weight, invstd: [d / 0 for d in dys], "inf"),
        (lambda dys, xhats, weight, invstd: [d.long() for d in dys], "dtype"),
        (lambda dys, xhats: dys, "does not accept"),
        (lambda dys, xhats, weight, invstd: 1 / 0, "ZeroDivisionError"),
        ("not a function", "should be a function"),
    ],
)
def test_sync_backward_bad_answers_are_feedback(answer, phrase):
    fb = ex.check_sync_backward(answer, show=False)
    assert fb.status == "wrong" and phrase in fb.message, fb.message


def test_sync_backward_placeholders_are_not_attempted():
    def todo(dys, xhats, weight, invstd):
        raise NotImplementedError

    assert ex.check_sync_backward(None, show=False).status == "not attempted"
    assert ex.check_sync_backward(todo, show=False).status == "not attempted"
    fb = ex.check_sync_backward(lambda *a: None, show=False)
    assert fb.status == "not attempted"


def test_sync_backward_leaves_the_learners_inputs_alone():
    seen = []

    def spy(dys, xhats, weight, invstd):
        seen.append([d.clone() for d in dys])
        for d in dys:
            d.zero_()  # a learner's in-place change must not change the check's reference
        return good_backward(seen[-1], xhats, weight, invstd)

    assert ex.check_sync_backward(spy, show=False).correct


# ----------------------------------------------------------------------------- 10.2


def good_predict(batch_means, momentum, broadcast):
    start = torch.zeros_like(batch_means[0])
    for means in batch_means:
        after = (1 - momentum) * start + momentum * means
        start = after[0].expand_as(after) if broadcast else after
    return after


def rank0_everywhere(batch_means, momentum, broadcast):
    return good_predict(batch_means, momentum, True)[0].expand(batch_means.shape[1], -1)


def ignores_broadcast(batch_means, momentum, broadcast):
    return good_predict(batch_means, momentum, False)


def momentum_flipped(batch_means, momentum, broadcast):
    return good_predict(batch_means, 1 - momentum, broadcast)


def synced(batch_means, momentum, broadcast):
    return good_predict(batch_means.mean(1, keepdim=True).expand_as(batch_means), momentum, True)


def last_only(batch_means, momentum, broadcast):
    return momentum * batch_means[-1]


def test_broadcast_buffers_right_answer():
    fb = ex.check_broadcast_buffers(good_predict, show=False)
    assert fb.correct, fb.message


@pytest.mark.parametrize(
    "answer, phrase",
    [
        (rank0_everywhere, "Every rank of yours holds rank 0's value"),
        (ignores_broadcast, "the other setting"),
        (momentum_flipped, "momentum weighs the NEW"),
        (synced, "that is SyncBN"),
        (last_only, "starts at 0 and accumulates"),
        (lambda b, m, br: good_predict(b, m, br) + 1, "should be"),
    ],
)
def test_broadcast_buffers_mistakes_get_specific_feedback(answer, phrase):
    fb = ex.check_broadcast_buffers(answer, show=False)
    assert fb.status == "wrong" and phrase in fb.message, fb.message


@pytest.mark.parametrize(
    "answer, phrase",
    [
        (lambda b, m, br: b[-1, 0], "shape"),
        (lambda b, m, br: b[-1].tolist(), "torch tensor"),
        (lambda b, m: b[-1], "does not accept"),
        (lambda b, m, br: b[-1] * float("nan"), "NaN"),
        (lambda b, m, br: [][0], "IndexError"),
    ],
)
def test_broadcast_buffers_bad_answers_are_feedback(answer, phrase):
    fb = ex.check_broadcast_buffers(answer, show=False)
    assert fb.status == "wrong" and phrase in fb.message, fb.message


def test_broadcast_buffers_placeholders_are_not_attempted():
    def todo(batch_means, momentum, broadcast):
        raise NotImplementedError

    assert ex.check_broadcast_buffers(None, show=False).status == "not attempted"
    assert ex.check_broadcast_buffers(todo, show=False).status == "not attempted"
    assert ex.check_broadcast_buffers(lambda b, m, br: None, show=False).status == "not attempted"


def test_progress_lists_the_two_exercises():
    ex.reset()
    ex.check_sync_backward(good_backward, show=False)
    table = ex.progress()
    assert list(ex.EXERCISES) == ["10.1", "10.2"]
    assert table.status("10.1") == "correct" and table.status("10.2") == "not checked"
    ex.reset()


# ----------------------------------------------------------------------------- answers that
# fit only the notebook's layout, or lose precision


def hard_coded_split(dys, xhats, weight, invstd):
    dy, xh = torch.cat(dys), torch.cat(xhats)
    dx = weight * invstd * (dy - dy.mean(0) - xh * (dy * xh).mean(0))
    return list(dx.split([5, 1, 3, 2]))


def means_not_sums(dys, xhats, weight, invstd):  # 0 / 0 on a rank with no rows
    n = sum(len(d) for d in dys)
    s1 = sum(d.mean(0) * len(d) for d in dys)
    s2 = sum((d * xh).mean(0) * len(d) for d, xh in zip(dys, xhats))
    return [weight * invstd * (d - s1 / n - xh * s2 / n) for d, xh in zip(dys, xhats)]


def float32_sums(dys, xhats, weight, invstd):
    n = sum(len(d) for d in dys)
    s1, s2 = torch.zeros(len(weight)), torch.zeros(len(weight))  # float32
    for d, xh in zip(dys, xhats):
        s1 += d.sum(0)
        s2 += (d * xh).sum(0)
    return [weight * invstd * (d - s1 / n - xh * s2 / n) for d, xh in zip(dys, xhats)]


@pytest.mark.parametrize(
    "answer, phrase",
    [
        (hard_coded_split, "sync_backward"),
        (means_not_sums, "sums"),
        (float32_sums, "float32"),
    ],
    ids=["hard-coded split", "means on an empty rank", "float32 sums"],
)
def test_sync_backward_answers_that_fit_one_layout_are_wrong(answer, phrase):
    fb = ex.check_sync_backward(answer, show=False)
    assert fb.status == kit.WRONG and phrase in fb.message, fb.message


def test_predict_hard_coded_for_the_notebooks_layout_is_wrong():
    def fixed(batch_means, momentum, broadcast):
        after = torch.zeros(4, 3, dtype=batch_means.dtype)
        for t in range(5):
            start = after[0].expand(4, 3) if broadcast else after
            after = (1 - momentum) * start + momentum * batch_means[t]
        return after

    fb = ex.check_broadcast_buffers(fixed, show=False)
    assert fb.status == kit.WRONG, fb.message
