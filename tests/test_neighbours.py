"""bnteach.neighbours against the formulas and plain PyTorch: which weights BN makes
scale-invariant (and that they are), their norms and effective steps, weight decay's bound
(against torch.optim.SGD), the chunked trajectory (against sweep.run), the variance shift
(against a recalibrated layer's exact statistics) and the train/eval accuracy gap (against
a hand-written loop)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnteach import neighbours, sweep
from bnteach.batchnorm import recalibrate
from bnteach.data import load_digits
from bnteach.models import MLP, ResidualMLP

f64 = torch.float64


@pytest.fixture(scope="module")
def digits():
    X_train, X_val, y_train, y_val = load_digits(flat=True)
    return X_train[:200], X_val[:80], y_train[:200], y_val[:80]


def bn_mlp(seed=0, **kw):
    torch.manual_seed(seed)
    return MLP(64, (16, 12), 10, norm="batch", bias=False, **kw)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before, training):
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training == training


# ----------------------------------------------------------------------------- which weights


def test_linears_feeding_bn_are_found_in_order():
    found = neighbours.scale_invariant_linears(bn_mlp())
    assert [name for name, _ in found] == ["network.0", "network.3"]
    res = ResidualMLP(64, 8, 3, 10, norm="batch")
    names = [name for name, _ in neighbours.scale_invariant_linears(res)]
    assert names[0] == "network.0" and len(names) == 1 + 2 * 3
    assert names[1:3] == ["network.3.branch.0", "network.3.branch.3"]
    assert all(isinstance(m, nn.Linear) for _, m in neighbours.scale_invariant_linears(res))


@pytest.mark.parametrize("model_kind", ["mlp", "residual"])
def test_found_weights_are_scale_invariant_and_others_are_not(model_kind, digits):
    """BN(a W x) = BN(W x): scaling a found weight by 10 leaves the train-mode output alone
    (up to eps), the gradient shrinks by exactly 10 and is orthogonal to W; scaling the
    output layer changes the output."""
    torch.manual_seed(1)
    if model_kind == "mlp":
        model = MLP(64, (16, 12), 10, norm="batch", bias=False).double()
    else:
        model = ResidualMLP(64, 8, 2, 10, norm="batch").double()
    x, y = digits[0][:64].double(), digits[2][:64]
    found = neighbours.scale_invariant_linears(model)

    def loss_and_grads(m):
        m.zero_grad()
        out = m(x)
        F.cross_entropy(out, y).backward()
        return out.detach(), {n: lin.weight.grad.clone() for n, lin in m.named_modules()
                              if isinstance(lin, nn.Linear)}  # fmt: skip

    model.train()
    out, grads = loss_and_grads(model)
    for name, lin in found:
        w, g = lin.weight.detach(), grads[name]
        cosine = (w * g).sum() / (w.norm() * g.norm())
        assert abs(float(cosine)) < 1e-4  # the gradient is orthogonal to W
        scaled = copy.deepcopy(model)
        with torch.no_grad():
            scaled.get_submodule(name).weight.mul_(10)
        out10, grads10 = loss_and_grads(scaled)
        assert (out10 - out).abs().max() < 1e-3
        assert (grads10[name] * 10 - g).norm() < 1e-3 * g.norm()  # 1/10 the gradient
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert all(m is not last for _, m in found)
    with torch.no_grad():
        last.weight.mul_(10)
    assert (model(x) - out).abs().max() > 1.0


def test_weight_norms_and_effective_steps_are_the_formulas():
    model = bn_mlp()
    norms = neighbours.weight_norms(model)
    for name, lin in neighbours.scale_invariant_linears(model):
        assert norms[name] == pytest.approx(float(torch.linalg.norm(lin.weight.detach().double())))
    steps = neighbours.effective_steps(model, 0.1)
    assert steps == pytest.approx({k: 0.1 / v**2 for k, v in norms.items()})
    torch.manual_seed(0)
    with_bias = MLP(64, (16,), 10, norm="batch", bias=True)
    lin = with_bias.network[0]
    expected = float(torch.cat([lin.weight.flatten(), lin.bias]).detach().double().norm())
    assert neighbours.weight_norms(with_bias)["network.0"] == pytest.approx(expected)


def test_probes_of_weights_leave_the_model_alone():
    model = bn_mlp().train()
    before = state(model)
    neighbours.weight_norms(model), neighbours.effective_steps(model, 0.1)
    assert_unchanged(model, before, True)


# ----------------------------------------------------------------------------- weight decay


def test_decay_bound_is_sgd_weight_decay_with_a_zero_gradient():
    w = nn.Parameter(torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=f64))
    start = float(w.detach().norm())
    opt = torch.optim.SGD([w], lr=0.1, weight_decay=1e-2)
    for _ in range(50):
        opt.zero_grad()
        (w * 0).sum().backward()
        opt.step()
    end = float(w.detach().norm())
    assert neighbours.decay_bound(start, 0.1, 1e-2, 50) == pytest.approx(end, 1e-12)
    assert neighbours.decay_bound(start, 0.1, 0.0, 50) == start
    norms = torch.tensor([[1.0, 2.0]], dtype=f64)
    torch.testing.assert_close(neighbours.decay_bound(norms, 0.1, 1e-2, 3), norms * (1 - 1e-3) ** 3)


def test_weights_in_front_of_bn_stay_above_the_bound_under_sgd(digits):
    """With torch.optim.SGD and weight decay on a BN net: the gradient is orthogonal to W,
    so ||W|| never falls below the decay-only bound; the output layer's can."""
    model = bn_mlp(seed=3).double().train()
    start = neighbours.weight_norms(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=5e-2)
    x, y = digits[0].double(), digits[2]
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randperm(len(x), generator=g)[:32]
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    end = neighbours.weight_norms(model)
    for name in start:
        bound = neighbours.decay_bound(start[name], 0.1, 5e-2, 60)
        assert bound < end[name] < start[name]


# ----------------------------------------------------------------------------- trajectory

SPEC = {"hidden_sizes": (16,), "norm": "batch", "bias": False, "optimizer": "sgd"}


def test_trajectory_of_one_chunk_is_one_sweep_run(digits):
    models = {"a": {**SPEC, "weight_decay": 1e-2}, "b": SPEC}
    tr = neighbours.norm_trajectory([0, 1], 0.1, models, digits, chunks=1, epochs=2)
    ref = sweep.run([0, 1], [0.1], epochs=2, models=models, data=digits)
    assert tr.steps == [0, 2 * 4]  # 200 rows, batch 64: 4 steps per epoch
    assert tr.layers == {"a": ["network.0"], "b": ["network.0"]}
    for name in models:
        assert tr.norms[name].shape == (2, 2, 1)
        ends = [neighbours.weight_norms(m)["network.0"] for m in ref.to_modules(model=name)]
        torch.testing.assert_close(tr.norms[name][:, 1, 0], torch.tensor(ends, dtype=f64))
        torch.manual_seed(0)
        first = MLP(64, (16,), 10, norm="batch", bias=False)
        assert float(tr.norms[name][0, 0, 0]) == pytest.approx(
            neighbours.weight_norms(first)["network.0"]
        )
        rows = [k for k, r in enumerate(ref.replicas) if r.model == name]
        torch.testing.assert_close(tr.val_acc[name], ref.val_acc[rows])
    torch.testing.assert_close(tr.effective_steps("a"), 0.1 / tr.norms["a"] ** 2)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_each_point_is_the_nets_after_that_many_epochs_of_one_run(digits, optimizer):
    spec = {**SPEC, "optimizer": optimizer}
    tr = neighbours.norm_trajectory([4], 0.1, {"m": spec}, digits, chunks=2, epochs=1)
    expected = []
    for epochs in (1, 2):  # a shorter run's final nets are the longer run's nets at that epoch
        (module,) = sweep.run(
            [4], [0.1], epochs=epochs, models={"m": spec}, data=digits
        ).to_modules()
        expected.append(neighbours.weight_norms(module)["network.0"])
    torch.testing.assert_close(tr.norms["m"][0, 1:, 0], torch.tensor(expected, dtype=f64))
    assert tr.val_acc["m"].shape == (1, 2)
    assert tr.steps == [0, 4, 8]


def test_a_diverged_replica_reads_nan_from_then_on(digits):
    tr = neighbours.norm_trajectory([0, 1], 1e4, {"m": SPEC}, digits, chunks=3, epochs=1)
    norms, acc = tr.norms["m"][:, :, 0], tr.val_acc["m"]
    assert torch.isfinite(norms[:, 0]).all() and torch.isnan(norms[:, -1]).all()
    for row, acc_row in zip(norms, acc):
        first = int(torch.isnan(row).nonzero()[0])  # the point after the chunk it diverged in
        assert torch.isnan(row[first:]).all() and torch.isnan(acc_row[first:]).all()
        assert acc_row[first - 1] == 0.0  # the epoch it diverged in: NaN logits answer nothing


# ----------------------------------------------------------------------------- variance shift


def test_variance_shift_after_recalibrating_on_the_whole_set_is_n_minus_1_over_n(digits):
    """One batch holding X: the first BN's running_var is the unbiased variance of its input,
    the probe divides the biased one by it: (n - 1) / n. Recalibrating normalizes with the
    biased variance, eval mode with running_var: the first BN's eval output is sqrt((n - 1)
    / n) times smaller, which ReLU and the bias-free Linear pass on to the second BN's input,
    whose ratio is then ((n - 1) / n) ** 2 (dropout is off in both)."""
    model = bn_mlp(seed=2, dropout=0.5)
    X = digits[0]
    recalibrate(model, [(X,)])
    n = X.shape[0]
    got = neighbours.variance_shift(model, X)
    assert got == pytest.approx([(n - 1) / n, ((n - 1) / n) ** 2], abs=1e-5)


def test_variance_shift_is_the_eval_input_variance_over_running_var(digits):
    model = bn_mlp(seed=5, dropout=0.5).train()
    X = digits[0]
    with torch.no_grad():
        for i in range(0, 200, 20):
            model(X[i : i + 20])
    model.eval()
    before = state(model)
    got = neighbours.variance_shift(model, X)
    with torch.no_grad():
        h1 = model.network[0](X)
        h2 = model.network[4](model.network[3](model.network[2](model.network[1](h1))))
    bn1, bn2 = model.network[1], model.network[5]
    expected = [float((h.var(0, unbiased=False) / bn.running_var).mean())
                for h, bn in ((h1, bn1), (h2, bn2))]  # fmt: skip
    assert got == pytest.approx(expected, rel=1e-5)
    assert got[1] < 0.95 * got[0]  # dropout (p 0.5) feeds the second BN: its variance shifts
    assert_unchanged(model, before, False)


# ----------------------------------------------------------------------------- mode gap


def test_mode_gap_is_train_mode_accuracy_over_shuffled_batches(digits):
    model = bn_mlp(seed=6).train()
    X, y = digits[0], digits[2]
    with torch.no_grad():
        for i in range(0, 200, 4):
            model(X[i : i + 4])
    model.eval()
    before = state(model)
    got = neighbours.mode_gap(model, X, y, batch_size=8, seed=3)
    probe = copy.deepcopy(model).train()
    order = torch.randperm(200, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        hits = sum(int((probe(X[b]).argmax(1) == y[b]).sum()) for b in order.split(8))
        eval_acc = float((model(X).argmax(1) == y).float().mean())
    assert got.train_mode == pytest.approx(hits / 200)
    assert got.eval_mode == pytest.approx(eval_acc)
    assert got.gap == pytest.approx(got.eval_mode - got.train_mode)
    assert_unchanged(model, before, False)


def test_mode_gap_drops_a_last_short_batch_and_takes_binary_targets():
    torch.manual_seed(0)
    model = MLP(3, (4,), 1, norm="none").eval()
    X = torch.randn(10, 3)
    y = (X[:, :1] > 0).float()
    gap = neighbours.mode_gap(model, X, y, batch_size=4)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))[:8]
    with torch.no_grad():
        expected = float(((model(X[order]) > 0).float() == y[order]).float().mean())
    assert gap.train_mode == pytest.approx(expected)
    assert gap.eval_mode == pytest.approx(float(((model(X) > 0).float() == y).float().mean()))
