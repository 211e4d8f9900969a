"""Self-checks for the exercises of notebook 08 (BN's backward pass by hand).

``check_mean_only_backward``: the learner's backward of mean-only BN,
``y = gamma * (x - mean(x)) + beta`` for ``x`` of shape ``(N, C)``, returning
``(dx, dgamma, dbeta)``. ``check_variance_term``: the one missing term of the variance-only
variant's backward, ``y = gamma * x / sqrt(var(x) + eps) + beta``: the part of ``dx`` that
flows through ``var``. Both run the learner's function on float64 test inputs, compare with
autograd, and name the usual mistakes (the detached mean, a sum instead of a mean, a lost
factor, a wrong sign, a missing reduction). See :mod:`bnteach.exercises.kit` for how a check
reports; notebook 08 has its own :func:`progress` table.
"""

import torch

from bnteach.exercises import kit
from bnteach.exercises.kit import NotAttempted, Wrong

__all__ = ["EXERCISES", "check_mean_only_backward", "check_variance_term", "progress"]

NB = kit.notebook("08")


# ============================================================================ inputs, answers


def _inputs(n, c, seed):
    """float64 test inputs: x (n, c) with per-feature shifts and scales, gamma and dy."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    x = torch.randn(n, c, generator=g, dtype=f64) * torch.linspace(0.5, 3.0, c, dtype=f64)
    x = x + torch.linspace(-2.0, 4.0, c, dtype=f64)
    gamma = torch.rand(c, generator=g, dtype=f64) + 0.5
    dy = torch.randn(n, c, generator=g, dtype=f64)
    return x, gamma, dy


_SHAPE_HINTS = {
    (1, 2): "It has one number per sample and feature: sum it over the batch (dim=0) to get one "
    "per feature, since every sample contributes to a per-feature parameter.",
    (2, 1): "A per-feature tensor (C,) broadcasts against (N, C): combine it with a tensor of "
    "shape (N, C) so that every sample gets its own share.",
}


def _tensor(value, name, shape):
    """The learner's value as a float64 tensor of ``shape``; feedback that names the problem."""
    dims = (len(shape), value.dim() if isinstance(value, torch.Tensor) else None)
    hint = "A gradient has the shape of what it is the gradient of. " + _SHAPE_HINTS.get(dims, "")
    value = kit.tensor(
        value, f"`{name}`", shape, none="is None: compute it and return it", hint=hint
    )
    return value.detach().to(torch.float64)


def _close(value, wrong):
    return wrong.shape == value.shape and torch.allclose(value, wrong, rtol=1e-7, atol=1e-9)


def _rel_error(a, b):
    """CS231n's relative error: max |a - b| / max(1e-8, |a| + |b|), elementwise."""
    return ((a - b).abs() / (a.abs() + b.abs()).clamp(min=1e-8)).max().item()


def _compare(value, expected, name, candidates, what):
    kit.name_mistake(value, candidates, _close)
    err = _rel_error(value, expected)
    if err > 1e-7:
        raise Wrong(
            f"`{name}` differs from autograd's gradient: relative error {err:.1e} (float64 "
            f"should give below 1e-7). {what}"
        )
    return err


# ============================================================================ 08.1 mean-only


def _mean_only_autograd(x, gamma, dy):
    x = x.clone().requires_grad_()
    gamma = gamma.clone().requires_grad_()
    beta = torch.zeros_like(gamma, requires_grad=True)
    y = gamma * (x - x.mean(dim=0)) + beta
    y.backward(dy)
    return x.grad, gamma.grad, beta.grad


@NB.check("08.1", "backward of mean-only BN")
def check_mean_only_backward(mean_only_backward):
    """Exercise 08.1. ``mean_only_backward(dy, x, gamma)`` for mean-only BN
    ``y = gamma * (x - x.mean(0)) + beta``, x and dy of shape (N, C), gamma (C,): returns
    ``(dx, dgamma, dbeta)`` with shapes (N, C), (C,), (C,)."""
    kit.function(mean_only_backward, "mean_only_backward", "Define the function.")
    errors = []
    for n, c, seed in ((16, 5, 0), (7, 3, 1)):  # two batch sizes: N must not be hard-coded
        x, gamma, dy = _inputs(n, c, seed)
        out = kit.call(
            mean_only_backward,
            dy.clone(),
            x.clone(),
            gamma.clone(),
            name="mean_only_backward",
        )
        if out is None:
            raise NotAttempted("`mean_only_backward` returns None: return (dx, dgamma, dbeta).")
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            what = f"{type(out).__name__}" + (
                f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""
            )
            raise Wrong(
                f"`mean_only_backward` should return three tensors (dx, dgamma, dbeta), got a "
                f"{what}."
            )
        dx = _tensor(out[0], "dx", (n, c))
        dgamma = _tensor(out[1], "dgamma", (c,))
        dbeta = _tensor(out[2], "dbeta", (c,))
        dx_ref, dgamma_ref, dbeta_ref = _mean_only_autograd(x, gamma, dy)
        xc = x - x.mean(0)
        _compare(
            dbeta,
            dbeta_ref,
            "dbeta",
            [
                (
                    dy.mean(0),
                    "`dbeta` is the batch MEAN of dy; beta is added to every sample, "
                    "so its gradient is the SUM over the batch: dy.sum(0).",
                ),
                (-dy.sum(0), "`dbeta` has the wrong sign: y = ... + beta, so dbeta = dy.sum(0)."),
            ],
            "beta is added to every sample: dbeta = dy.sum(0).",
        )
        _compare(
            dgamma,
            dgamma_ref,
            "dgamma",
            [
                (
                    (dy * x).sum(0),
                    "`dgamma` multiplies dy by x; gamma multiplies the CENTRED "
                    "input x - mean, so dgamma = (dy * (x - mean)).sum(0).",
                ),
                (
                    (dy * xc).mean(0),
                    "`dgamma` is a batch mean; gamma scales every sample, so "
                    "the contributions add up: (dy * (x - mean)).sum(0).",
                ),
                (
                    (dy * xc * gamma).sum(0),
                    "`dgamma` has an extra factor gamma: y = gamma * xc, "
                    "so dy/dgamma = xc, and dgamma = (dy * xc).sum(0).",
                ),
            ],
            "y = gamma * (x - mean) + beta, so dgamma = (dy * (x - mean)).sum(0).",
        )
        candidates = [
            (
                gamma * dy,
                "`dx` is gamma * dy: that treats the batch mean as a constant (the "
                "detach mistake of this notebook). The mean depends on every x[i], so each sample "
                "also gets -gamma * dy.mean(0): dx = gamma * (dy - dy.mean(0)).",
            ),
            (
                gamma * (dy - dy.sum(0)),
                "`dx` subtracts dy.sum(0); mean = x.sum(0) / N, so each "
                "x[i] moves the mean by 1/N: subtract dy.mean(0), not the sum.",
            ),
            (dy - dy.mean(0), "`dx` lacks the factor gamma: y = gamma * (x - mean) + beta."),
            (
                gamma * (dy + dy.mean(0)),
                "`dx` adds dy.mean(0); the mean is SUBTRACTED in the "
                "forward pass, so its share of the gradient is subtracted too.",
            ),
            (
                gamma * (dy - dy.mean(1, keepdim=True)),
                "`dx` subtracts the mean over the "
                "features (dim=1); BN's mean is over the batch, dim=0.",
            ),
            (
                gamma * dy - dy.mean(0),
                "`dx` subtracts dy.mean(0) without the factor gamma: "
                "the mean's path goes through gamma too: gamma * (dy - dy.mean(0)).",
            ),
        ]
        errors.append(
            _compare(dx, dx_ref, "dx", candidates, "Derive it on the graph x -> mean -> x - mean.")
        )
    return (
        "dx = gamma * (dy - dy.mean(0)), dgamma = (dy * (x - mean)).sum(0) and dbeta = dy.sum(0) "
        f"agree with autograd (largest relative error {max(errors):.1e}, batches of 16 and 7). "
        "The -dy.mean(0) term is the gradient through the batch mean: drop it and you have the "
        "detach mistake."
    )


# ============================================================================ 08.2 variance term


def _variance_only_parts(x, gamma, dy, eps):
    """The variance-only variant's forward values and every backward term but the missing one."""
    n = x.shape[0]
    mu = x.mean(0)
    xc = x - mu
    var = (xc**2).mean(0)
    rstd = (var + eps) ** -0.5
    dxhat = dy * gamma
    drstd = (dxhat * x).sum(0)  # xhat = x * rstd: x itself, not centred
    dvar = -0.5 * drstd * rstd**3
    return {"n": n, "xc": xc, "rstd": rstd, "dxhat": dxhat, "dvar": dvar}


def _variance_only_autograd(x, gamma, dy, eps):
    x = x.clone().requires_grad_()
    var = ((x - x.mean(0)) ** 2).mean(0)
    y = gamma * x / torch.sqrt(var + eps)
    y.backward(dy)
    return x.grad


@NB.check("08.2", "the variance term")
def check_variance_term(dx_through_var, eps=1e-5):
    """Exercise 08.2. ``dx_through_var(dvar, xc)``: the part of dx that flows through
    ``var = (xc ** 2).mean(0)`` (xc = x - mean, shape (N, C); dvar (C,)), shape (N, C). The
    check adds it to the other terms of the variance-only backward and compares with
    autograd."""
    kit.function(dx_through_var, "dx_through_var", "Define the function.")
    errors = []
    for n, c, seed in ((16, 5, 2), (7, 3, 3)):
        x, gamma, dy = _inputs(n, c, seed)
        p = _variance_only_parts(x, gamma, dy, eps)
        dvar, xc = p["dvar"], p["xc"]
        term = kit.call(dx_through_var, dvar.clone(), xc.clone(), name="dx_through_var")
        term = _tensor(term, "dx_through_var(dvar, xc)", (n, c))
        expected = dvar * 2 * xc / n
        candidates = [
            (
                dvar * 2 * xc,
                "Your term lacks the 1/N: var is a MEAN over the batch, "
                "(xc ** 2).sum(0) / N, so d var / d xc[i] = 2 * xc[i] / N.",
            ),
            (
                dvar * xc / n,
                "Your term lacks the factor 2 of the square: d (xc ** 2) / d xc = 2 * xc.",
            ),
            (
                -dvar * 2 * xc / n,
                "Your term has the wrong sign: d var / d xc[i] = +2 * xc[i] / N; "
                "the minus sign is already inside dvar.",
            ),
            (dvar.expand(n, c) * 2 / n, "Your term lacks xc: d var / d xc[i] = 2 * xc[i] / N."),
            (
                dvar.expand(n, c) / n,
                "Your term is dvar / N: the mean's rule, but var averages "
                "xc ** 2, whose derivative is 2 * xc: dvar * 2 * xc / N.",
            ),
        ]
        x_uncentred = xc + x.mean(0)
        candidates.append(
            (
                dvar * 2 * x_uncentred / n,
                "Your term uses x instead of xc: var averages the "
                "CENTRED values. (The mean inside var adds a path 2 * mean(xc) / N that is zero, "
                "because xc sums to zero; x itself does not.)",
            )
        )
        kit.name_mistake(term, candidates, _close)
        dx = p["dxhat"] * p["rstd"] + term  # the direct path x -> xhat, plus the learner's term
        err = _rel_error(dx, _variance_only_autograd(x, gamma, dy, eps))
        if err > 1e-7 or _rel_error(term, expected) > 1e-7:
            raise Wrong(
                f"With your term, dx differs from autograd's: relative error {err:.1e}. The path "
                f"is xc -> xc ** 2 -> mean over the batch -> var: chain the three derivatives."
            )
        errors.append(err)
    return (
        "dx_through_var = dvar * 2 * xc / N: with it the variance-only backward agrees with "
        f"autograd (largest relative error {max(errors):.1e}). The path from the mean into var "
        "adds nothing, since d var / d mean = -2 * xc.mean(0) = 0."
    )


EXERCISES = NB.titles
progress, reset = NB.progress, NB.reset
