"""The self-checks of notebook 08: a correct answer passes, the usual mistakes get feedback that
names them, and a placeholder, an exception, a NaN, a wrong shape or None never crash."""

import torch

from bnteach.exercises.backward import check_mean_only_backward, check_variance_term
from bnteach.exercises.kit import CORRECT, NOT_ATTEMPTED, WRONG


def quiet(check, fn):
    return check(fn, show=False)


# ------------------------------------------------------------------------ 08.1 mean-only


def solution_mean_only(dy, x, gamma):
    xc = x - x.mean(0)
    return gamma * (dy - dy.mean(0)), (dy * xc).sum(0), dy.sum(0)


def test_mean_only_correct():
    fb = quiet(check_mean_only_backward, solution_mean_only)
    assert fb.status == CORRECT, fb.message
    assert "dy.mean(0)" in fb.message


def test_mean_only_solution_matches_autograd_independently():
    x = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(4, dtype=torch.float64, requires_grad=True)
    beta = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(9, 4, dtype=torch.float64)
    (gamma * (x - x.mean(0)) + beta).backward(dy)
    dx, dg, db = solution_mean_only(dy, x.detach(), gamma.detach())
    for mine, ref in ((dx, x.grad), (dg, gamma.grad), (db, beta.grad)):
        torch.testing.assert_close(mine, ref)


def test_mean_only_placeholders_are_not_attempted():
    def placeholder(dy, x, gamma):
        raise NotImplementedError

    assert quiet(check_mean_only_backward, placeholder).status == NOT_ATTEMPTED
    assert quiet(check_mean_only_backward, None).status == NOT_ATTEMPTED
    assert quiet(check_mean_only_backward, lambda dy, x, g: None).status == NOT_ATTEMPTED
    half = quiet(check_mean_only_backward, lambda dy, x, g: (None, None, None))
    assert half.status == NOT_ATTEMPTED and "`dx`" in half.message


def wrong(fn):
    fb = quiet(check_mean_only_backward, fn)
    assert fb.status == WRONG, fb.message
    assert "Internal error" not in fb.message, fb.message
    return fb.message


def test_mean_only_detach_mistake_named():
    msg = wrong(lambda dy, x, g: (g * dy, (dy * (x - x.mean(0))).sum(0), dy.sum(0)))
    assert "detach" in msg and "constant" in msg


def test_mean_only_sum_instead_of_mean_named():
    msg = wrong(lambda dy, x, g: (g * (dy - dy.sum(0)), (dy * (x - x.mean(0))).sum(0), dy.sum(0)))
    assert "1/N" in msg


def test_mean_only_missing_gamma_and_sign_named():
    xc_sum = lambda dy, x: (dy * (x - x.mean(0))).sum(0)  # noqa: E731
    assert "gamma" in wrong(lambda dy, x, g: (dy - dy.mean(0), xc_sum(dy, x), dy.sum(0)))
    assert "SUBTRACTED" in wrong(lambda dy, x, g: (g * (dy + dy.mean(0)), xc_sum(dy, x), dy.sum(0)))


def test_mean_only_dgamma_and_dbeta_mistakes_named():
    def dgamma_uncentred(dy, x, g):
        return g * (dy - dy.mean(0)), (dy * x).sum(0), dy.sum(0)

    def dbeta_mean(dy, x, g):
        return g * (dy - dy.mean(0)), (dy * (x - x.mean(0))).sum(0), dy.mean(0)

    assert "CENTRED" in wrong(dgamma_uncentred)
    assert "SUM" in wrong(dbeta_mean)


def test_mean_only_bad_returns_named():
    def unreduced(dy, x, g):
        return g * (dy - dy.mean(0)), dy * (x - x.mean(0)), dy.sum(0)

    assert "shape" in wrong(unreduced) and "sum it over the batch" in wrong(unreduced)

    def nan(dy, x, g):
        dx = g * (dy - dy.mean(0))
        dx[0, 0] = float("nan")
        return dx, (dy * (x - x.mean(0))).sum(0), dy.sum(0)

    assert "NaN" in wrong(nan)

    def crashes(dy, x, g):
        return dy @ x  # (N, C) @ (N, C): a shape error inside the learner's code

    msg = wrong(crashes)
    assert "raised RuntimeError" in msg
    assert "three tensors" in wrong(lambda dy, x, g: g * dy)
    assert "tensor" in wrong(lambda dy, x, g: (1.0, 2.0, 3.0))
    assert "function" in quiet(check_mean_only_backward, 3).message


def test_mean_only_hard_coded_batch_size_caught():
    def n16(dy, x, g):  # right for N = 16 only
        return g * (dy - dy.sum(0) / 16), (dy * (x - x.sum(0) / 16)).sum(0), dy.sum(0)

    assert quiet(check_mean_only_backward, n16).status == WRONG


# ------------------------------------------------------------------------ 08.2 variance term


def solution_term(dvar, xc):
    return dvar * 2 * xc / xc.shape[0]


def test_variance_term_correct():
    fb = quiet(check_variance_term, solution_term)
    assert fb.status == CORRECT, fb.message


def test_variance_term_solution_matches_autograd_independently():
    eps = 1e-5
    x = torch.randn(11, 3, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(3, dtype=torch.float64) + 0.5
    dy = torch.randn(11, 3, dtype=torch.float64)
    (gamma * x / torch.sqrt(((x - x.mean(0)) ** 2).mean(0) + eps)).backward(dy)
    xd = x.detach()
    xc = xd - xd.mean(0)
    rstd = ((xc**2).mean(0) + eps) ** -0.5
    dvar = (dy * gamma * xd).sum(0) * -0.5 * rstd**3
    torch.testing.assert_close(dy * gamma * rstd + solution_term(dvar, xc), x.grad)


def variance_wrong(fn):
    fb = quiet(check_variance_term, fn)
    assert fb.status == WRONG, fb.message
    assert "Internal error" not in fb.message, fb.message
    return fb.message


def test_variance_term_mistakes_named():
    assert "1/N" in variance_wrong(lambda dvar, xc: dvar * 2 * xc)
    assert "factor 2" in variance_wrong(lambda dvar, xc: dvar * xc / xc.shape[0])
    assert "sign" in variance_wrong(lambda dvar, xc: -dvar * 2 * xc / xc.shape[0])
    assert "lacks xc" in variance_wrong(lambda dvar, xc: dvar.expand_as(xc) * 2 / xc.shape[0])
    msg = variance_wrong(lambda dvar, xc: dvar * 2 / xc.shape[0])  # (C,): not broadcast
    assert "shape" in msg and "broadcasts" in msg
    msg = variance_wrong(lambda dvar, xc: dvar * 0.5 * xc)  # no named mistake
    assert "relative error" in msg


def test_variance_term_placeholders_and_errors():
    def placeholder(dvar, xc):
        raise NotImplementedError

    assert quiet(check_variance_term, placeholder).status == NOT_ATTEMPTED
    assert quiet(check_variance_term, None).status == NOT_ATTEMPTED
    assert quiet(check_variance_term, lambda dvar, xc: None).status == NOT_ATTEMPTED
    assert "raised" in variance_wrong(lambda dvar, xc: dvar @ xc)
    assert "NaN" in variance_wrong(lambda dvar, xc: dvar * 2 * xc / 0.0 * 0.0)


def test_checks_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    quiet(check_mean_only_backward, solution_mean_only)
    quiet(check_variance_term, solution_term)
    assert torch.equal(torch.rand(3), expected)
