"""``bnteach.sweep.run`` must train each replica exactly as ``train_model`` trains one model.

Reference for every replica: ``torch.manual_seed(seed); model = MLP(...)`` trained by
``train_model(model, *make_loaders(*data, batch_size=..., seed=seed), epochs, lr)``.
"""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from bnteach import sweep
from bnteach.data import load_data, load_digits, make_loaders
from bnteach.models import MLP, MLPWithBN, SimpleMLP, build
from bnteach.training import History, train_model

FIELDS = ("train_loss", "val_loss", "val_acc")


def reference(data, spec, seed, lr, epochs, batch_size=64):
    """``train_model`` on ``MLP(**spec)``, or on ``spec()`` if ``spec`` is a model factory."""
    torch.manual_seed(seed)
    model = spec() if callable(spec) else MLP(data[0].shape[1], **spec)
    loaders = make_loaders(*data, batch_size=batch_size, seed=seed)
    return train_model(model, *loaders, epochs, lr, verbose=False)


def max_diff(history, ref, field):
    a, b = getattr(history, field), getattr(ref, field)
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


def assert_matches(result, data, specs, atol, batch_size=64, fields=FIELDS):
    for r in result.replicas:
        ref = reference(data, specs[r.model], r.seed, r.lr, result.epochs, batch_size)
        for field, tol in zip(fields, atol if isinstance(atol, tuple) else (atol,) * 3):
            diff = max_diff(r.history, ref, field)
            assert diff <= tol, f"{r.model} seed {r.seed} lr {r.lr}: {field} differs by {diff}"


# -- the default models are the tutorial's -------------------------------------------------


@pytest.mark.parametrize("name, cls", [("plain", SimpleMLP), ("BN", MLPWithBN)])
def test_default_models_build_the_tutorials_modules(name, cls):
    torch.manual_seed(3)
    tutorial = cls(20, 128, 64, 1)
    torch.manual_seed(3)
    ours = MLP(20, **sweep.DEFAULT_MODELS[name])
    assert str(ours.network) == str(tutorial.network)
    a, b = tutorial.state_dict(), ours.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# -- agreement with train_model ------------------------------------------------------------


def test_plain_model_matches_train_model(data):
    """Same init, shuffles, Adam and losses: equal up to float rounding (measured < 1e-6)."""
    result = sweep.run([0, 1, 2], [0.01, 0.1], epochs=5, models={"plain": {}}, data=data)
    tutorial = {"plain": lambda: SimpleMLP(20, 128, 64, 1)}
    assert_matches(result, data, tutorial, atol=1e-4)


def test_bn_without_bias_matches_train_model_tightly(data):
    """With ``bias=False`` BN has no rounding-noise parameter (docs/references.md): rounding only.

    Measured agreement is below 1e-7 over 5 epochs at lr 0.01 (on an AMD and an Intel CPU);
    this also pins the running statistics (unbiased variance, momentum 0.1) used in eval.
    (At lr 0.1 Adam's first, sign-like steps amplify rounding: 1e-4 after one epoch on one
    CPU. The distribution test covers that regime.)
    """
    specs = {"BN": {"norm": "batch", "bias": False}}
    result = sweep.run([0, 1, 2], [0.01], epochs=5, models=specs, data=data)
    assert_matches(result, data, specs, atol=1e-5)


def test_bn_with_bias_matches_train_model_up_to_the_bias_noise(data):
    """The tutorial's BN model: the Linear bias before BN gets rounding-noise gradients.

    Adam turns that noise into steps of up to a few percent of ``lr`` (docs/references.md),
    which differ between the two implementations, so the two runs' biases drift apart. In
    training mode BN subtracts the batch mean, bias included, so the train loss still agrees
    to rounding (measured < 1e-7). In eval mode the running mean carries the bias with a lag
    of ~1/momentum steps, so validation logits differ by O(lr) times small factors: measured
    up to 5e-4 in val loss and one sample (1/200) in accuracy over 3 epochs at lr 0.01.
    """
    specs = {"BN": {"norm": "batch"}}
    result = sweep.run([0, 1, 2, 3], [0.01], epochs=3, models=specs, data=data)
    n_val = data[1].shape[0]
    assert_matches(result, data, specs, atol=(1e-5, 3e-3, 2 / n_val))


def test_bn_agrees_with_train_model_in_distribution(data):
    """At lr 0.1 over 25 epochs rounding differences grow into different trajectories; the
    spread over seeds must still be the same: means within 3 standard errors."""
    seeds, lr = list(range(8)), 0.1
    result = sweep.run(seeds, [lr], epochs=25, models={"BN": {"norm": "batch"}}, data=data)
    ours = result.val_loss[:, -1]
    tutorial = functools.partial(MLPWithBN, 20, 128, 64, 1)
    refs = torch.tensor(
        [reference(data, tutorial, s, lr, 25).val_loss[-1] for s in seeds],
        dtype=torch.float64,
    )
    se = math.sqrt(ours.var().item() / len(seeds) + refs.var().item() / len(seeds))
    assert abs(ours.mean().item() - refs.mean().item()) < 3 * se
    assert result.diverged_at == [None] * len(seeds)


VARIANTS = {
    "linear": {"hidden_sizes": ()},
    "deep": {"hidden_sizes": (32, 32, 32)},
    "tanh": {"activation": "tanh"},
    "sigmoid": {"activation": "sigmoid", "hidden_sizes": [16]},
    "gelu": {"activation": "gelu", "bias": False},
    "layer": {"norm": "layer"},
    "layer-after": {"norm": "layer", "placement": "after", "activation": "gelu"},
    "batch-after": {"norm": "batch", "placement": "after"},
    "batch-deep": {"norm": "batch", "bias": False, "hidden_sizes": (32, 16, 8)},
}


def test_architecture_variants_match_train_model(data):
    """Every hand-written forward and backward (norms, activations, placements, no bias, no
    hidden layer) against autograd's, through two epochs with another batch size."""
    result = sweep.run([5], [0.01], epochs=2, batch_size=48, models=VARIANTS, data=data)
    assert_matches(result, data, VARIANTS, atol=1e-4, batch_size=48)


def test_same_architecture_is_one_group(data, monkeypatch):
    sizes = []
    original = sweep._train_group

    def spy(group, orders, *args):
        sizes.append(orders.shape[0])
        return original(group, orders, *args)

    monkeypatch.setattr(sweep, "_train_group", spy)
    models = {"a": {"norm": "batch"}, "b": {"norm": "batch"}, "c": {}}
    result = sweep.run([0, 1], [0.01, 0.1, 0.2], epochs=2, models=models, data=data)
    assert sorted(sizes) == [6, 12]
    a, b = result.histories(model="a"), result.histories(model="b")
    assert [h.val_loss for h in a] == [h.val_loss for h in b]


# -- divergence ----------------------------------------------------------------------------


def test_diverging_replicas_are_marked_and_do_not_disturb_the_others(data):
    huge = 1e20  # overflows float32 in the first epoch, for both models (as in train_model)
    with_huge = sweep.run([0, 1], [0.01, huge, 0.1], epochs=3, data=data)
    without = sweep.run([0, 1], [0.01, 0.1], epochs=3, data=data)

    bad = [k for k, r in enumerate(with_huge.replicas) if r.lr == huge]
    good = [k for k, r in enumerate(with_huge.replicas) if r.lr != huge]
    assert [with_huge.diverged_at[k] for k in bad] == [1] * 4
    assert [with_huge.diverged_at[k] for k in good] == [None] * 8
    for k in bad:
        h = with_huge.replicas[k].history
        assert h.diverged and len(h.train_loss) == 1 and not math.isfinite(h.train_loss[0])
        for t in (with_huge.train_loss, with_huge.val_loss, with_huge.val_acc):
            assert t[k, 1:].isnan().all()
    for name in ("train_loss", "val_loss", "val_acc"):
        kept = getattr(with_huge, name)[good]
        assert kept.isfinite().all()
        assert torch.equal(kept, getattr(without, name))
    assert "4 diverged" in repr(with_huge)

    ref = reference(data, {"norm": "batch"}, 0, huge, 3)
    assert ref.diverged_at == 1


# -- input checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"lrs": [-0.1]}, ValueError, "positive"),
        ({"lrs": [float("nan")]}, ValueError, "finite"),
        ({"lrs": ["0.1"]}, TypeError, "number"),
        ({"lrs": 0.01}, TypeError, r"list such as \[0.01\]"),
        ({"lrs": []}, ValueError, "empty"),
        ({"seeds": []}, ValueError, "seeds is empty"),
        ({"seeds": 3}, TypeError, "list"),
        ({"seeds": [0, 1.5]}, TypeError, "whole numbers"),
        ({"seeds": [1, 1]}, ValueError, "duplicates"),
        ({"epochs": 0}, ValueError, "at least 1"),
        ({"batch_size": 1}, ValueError, "at least 2"),
        ({"batch_size": 17}, ValueError, "single sample.*batch_size=16"),
        ({"models": {"m": {"dropout_rate": 0.5}}}, ValueError, "valid ones are .*hidden_sizes"),
        ({"models": {"m": {"input_size": 20}}}, ValueError, "taken from the data"),
        ({"models": {"m": {"norm": "bn"}}}, ValueError, r"models\['m'\]: norm must be"),
        ({"models": {}}, TypeError, "non-empty dict"),
        ({"data": (1, 2)}, TypeError, "X_train, X_val, y_train, y_val"),
    ],
)
def test_teaching_errors(data, kwargs, error, match):
    args = {"seeds": [0], "lrs": [0.01], "epochs": 1, "data": data, **kwargs}
    with pytest.raises(error, match=match):
        sweep.run(**args)


def test_last_batch_of_one_is_fine_without_batchnorm(data):
    result = sweep.run([0], [0.01], epochs=1, batch_size=17, models={"p": {}}, data=data)
    assert result.diverged_at == [None]


# -- the result object ---------------------------------------------------------------------


def test_sweep_result_api(data):
    seeds, lrs = [0, 1, 2], [0.01, 0.05]
    result = sweep.run(seeds, lrs, epochs=2, data=data)
    assert repr(result) == (
        "SweepResult(2 models x 3 seeds x 2 lrs = 12 replicas, 2 epochs, 0 diverged)"
    )
    assert len(result) == len(result.replicas) == 12
    assert list(result.models) == ["plain", "BN"] and result.models["BN"]["norm"] == "batch"
    assert result.seeds == seeds and result.lrs == lrs and result.epochs == 2
    assert result.device == torch.device("cpu")
    for t in (result.train_loss, result.val_loss, result.val_acc):
        assert isinstance(t, torch.Tensor) and t.shape == (12, 2) and t.isfinite().all()
    assert result.diverged_at == [None] * 12
    # models x seeds x lrs, in that nesting order
    keys = [(r.model, r.seed, r.lr) for r in result.replicas]
    assert keys == [(m, s, lr) for m in ("plain", "BN") for s in seeds for lr in lrs]
    for k, r in enumerate(result.replicas):
        h = r.history
        assert isinstance(h, History) and h.lr == r.lr and h.epochs == 2 and not h.diverged
        assert all(type(x) is float for x in h.train_loss + h.val_loss + h.val_acc)
        assert h.val_loss == result.val_loss[k].tolist()
        assert "2/2 epochs, finished" in repr(h)

    assert len(result.histories()) == 12
    assert len(result.histories(model="BN")) == 6
    assert len(result.histories(model="BN", lr=0.05)) == 3
    assert len(result.histories(seed=[0, 2], lr=0.01)) == 4
    only = result.histories(model="plain", seed=1, lr=0.05)
    assert only == [result.replicas[3].history]
    with pytest.raises(ValueError, match="not in this sweep"):
        result.histories(model="LN")


def test_global_random_state_is_untouched_and_irrelevant(data):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = sweep.run([0], [0.01], epochs=1, data=data)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)
    b = sweep.run([0], [0.01], epochs=1, data=data)
    assert torch.equal(a.val_loss, b.val_loss)


def test_default_data_is_load_data_and_cached():
    assert sweep._default_data() is sweep._default_data()
    a = sweep.run([0], [0.01], epochs=1, models={"p": {}})
    b = sweep.run([0], [0.01], epochs=1, models={"p": {}}, data=load_data())
    assert torch.equal(a.val_loss, b.val_loss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(data):
    models = {"plain": {}, "BN": {"norm": "batch", "bias": False}}
    cpu = sweep.run([0, 1], [0.01, 1e20], epochs=3, models=models, data=data)
    gpu = sweep.run([0, 1], [0.01, 1e20], epochs=3, models=models, data=data, device="cuda")
    assert gpu.diverged_at == cpu.diverged_at
    ok = [d is None for d in cpu.diverged_at]
    for name in FIELDS:
        torch.testing.assert_close(
            getattr(gpu, name)[ok], getattr(cpu, name)[ok], atol=1e-4, rtol=0
        )


# -- streaming, early stop, the facts of what was run ------------------------------------


def test_streamed_partial_results_equal_the_finished_runs_first_epochs(data):
    seen = []
    final = sweep.run(
        [0, 1], [0.01, 1e20], epochs=4, data=data, on_epoch=lambda e, r: seen.append((e, r))
    )
    assert [e for e, _ in seen] == [1, 2, 3, 4] == [r.epochs_run for _, r in seen]
    for e, partial in seen:
        assert partial.epochs == 4 and partial.finished == (e == 4)
        for name in FIELDS:
            got, want = getattr(partial, name), getattr(final, name)[:, :e]
            assert got.shape == want.shape and torch.equal(got.nan_to_num(-1), want.nan_to_num(-1))
        assert partial.diverged_at == [
            d if d is not None and d <= e else None for d in final.diverged_at
        ]
        for r, f in zip(partial.replicas, final.replicas):
            n = len(r.history.train_loss)
            assert str(r.history.train_loss) == str(f.history.train_loss[:n])  # NaN too
    streamed = list(sweep.stream([0, 1], [0.01, 1e20], epochs=4, data=data))
    for s, (_, p) in zip(streamed, seen, strict=True):
        assert torch.equal(s.val_loss.nan_to_num(-1), p.val_loss.nan_to_num(-1))


def test_on_epoch_returning_false_stops_the_run(data):
    result = sweep.run([0], [0.01], epochs=10, data=data, on_epoch=lambda epoch, r: epoch < 3)
    assert result.epochs == 10 and result.epochs_run == 3 and not result.finished
    assert result.val_loss.shape == (2, 3)
    assert all(len(h.val_loss) == 3 and not h.diverged for h in result.histories())
    assert "10 epochs (3 run)" in repr(result)
    full = sweep.run([0], [0.01], epochs=3, data=data)
    assert torch.equal(full.val_loss, result.val_loss)


def test_stream_checks_its_arguments_at_the_call(data):
    with pytest.raises(ValueError, match="at least 2"):
        sweep.stream([0], [0.01], batch_size=1, data=data)  # before any next()
    with pytest.raises(TypeError, match="on_epoch must be a function"):
        sweep.run([0], [0.01], epochs=1, data=data, on_epoch=3)


def test_result_records_what_was_run(data):
    result = sweep.run([4, 2], [0.01], epochs=2, batch_size=50, data=data)
    assert result.seeds == [4, 2] and result.batch_size == 50
    assert result.epochs == result.epochs_run == 2 and result.finished
    assert result.device == torch.device("cpu")


REPLICA_MODELS = {
    "plain": {},
    "BN": {"norm": "batch"},
    "deep-tanh-BN": {"norm": "batch", "activation": "tanh", "hidden_sizes": (32,) * 4},
    # Widths that are no multiple of a vector register: replicas' features share registers.
    "odd-BN": {"norm": "batch", "hidden_sizes": (10, 7)},
    "ghost": {"norm": "ghost", "virtual_batch_size": 12, "hidden_sizes": (16,)},
    "renorm-dropout": {"norm": "renorm", "dropout": 0.3, "hidden_sizes": (16, 16)},
    "residual-sgd": {"blocks": 2, "width": 8, "optimizer": "sgd", "weight_decay": 1e-3},
}


@pytest.mark.parametrize("name", list(REPLICA_MODELS))
def test_a_replica_does_not_depend_on_the_other_replicas(data, name):
    """Bitwise: alone, with one other seed, among nine seeds, and next to other lrs
    (single-replica runs used to differ: torch.bmm takes a matrix-vector kernel for R=1)."""
    models = {name: REPLICA_MODELS[name]}

    def replica(seeds, lrs):
        result = sweep.run(seeds, lrs, epochs=3, models=models, data=data)
        (h,) = result.histories(seed=3, lr=0.05)
        return h.train_loss + h.val_loss + h.val_acc

    alone = replica([3], [0.05])
    assert replica([3, 1], [0.05]) == alone
    assert replica([5, 3, 1, 2, 4, 6, 7, 8, 0], [0.05]) == alone
    assert replica([0, 3], [0.01, 0.05, 1e20]) == alone


def test_adam_updates_each_lrs_rows_as_runs_of_consecutive_rows():
    """Rows of one lr are updated as slices; a frozen row in the middle splits its run."""
    assert sweep._runs([0, 1, 2, 5, 6]) == [(0, 3), (5, 7)]
    assert sweep._runs([4]) == [(4, 5)] and sweep._runs([]) == []


# -- what the engine gained: other norms, dropout, residual nets, SGD, weight decay, class
# labels, starting weights, more splits, modules back. The reference is plain PyTorch:
# autograd and torch.optim on one module, with the engine's shuffle order and dropout masks.


class SeededDropout(torch.nn.Module):
    """nn.Dropout drawing its masks as the engine does, from ``sweep.dropout_generator``."""

    def __init__(self, p, generator):
        super().__init__()
        self.keep, self.generator = 1 - p, generator

    def forward(self, x):
        if not self.training:
            return x
        mask = torch.empty(x.shape, dtype=x.dtype).bernoulli_(self.keep, generator=self.generator)
        return x * mask.div_(self.keep)


def plain_loop(model, data, seed, epochs, lr, batch_size=64, eval_sets=(), **options):
    """One module trained by autograd and torch.optim; per epoch: the sample-weighted train
    loss, then (loss, accuracy) of the validation split and each eval set in eval mode."""
    X_train, X_val, y_train, y_val = data
    classes = y_train.dtype == torch.long
    loss_fn = F.cross_entropy if classes else F.binary_cross_entropy_with_logits
    g = sweep.dropout_generator(seed)
    for name, m in list(model.named_modules()):
        if isinstance(m, torch.nn.Dropout):
            model.set_submodule(name, SeededDropout(m.p, g))
    wd = options.get("weight_decay", 0.0)
    norm_types = (torch.nn.LayerNorm, *sweep._BN_TYPES)
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters()
    }
    decay = options.get("decay_norm", True)
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in norm_params], "weight_decay": wd},
        {
            "params": [p for p in model.parameters() if id(p) in norm_params],
            "weight_decay": wd if decay else 0.0,
        },
    ]
    if options.get("optimizer", "adam") == "sgd":
        opt = torch.optim.SGD(groups, lr=lr)
    else:
        opt = torch.optim.Adam(groups, lr=lr, fused=True)
    shuffle = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        order = torch.randperm(X_train.shape[0], generator=shuffle)
        model.train()
        total = 0.0
        for idx in order.split(batch_size):
            loss = loss_fn(model(X_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        row = [total / X_train.shape[0]]
        model.eval()
        with torch.no_grad():
            for X, y in [(X_val, y_val), *eval_sets]:
                logits = model(X)
                hit = logits.argmax(1) == y if classes else (logits > 0).to(y.dtype) == y
                row += [loss_fn(logits, y).item(), hit.double().mean().item()]
        out.append(row)
    return out


def engine_rows(result, k):
    """The same per-epoch rows for replica k of a SweepResult."""
    cols = [result.train_loss[k]]
    for split in result.splits:
        cols += list(result.evals[split])
        cols[-2:] = [cols[-2][k], cols[-1][k]]
    return torch.stack(cols, 1).tolist()


def assert_agrees(result, data, start, atol, eval_sets=(), batch_size=64):
    """Every replica of ``result`` against plain_loop on ``start(name, seed)``."""
    for k, r in enumerate(result.replicas):
        options = {o: result.models[r.model][o] for o in sweep.TRAINING_DEFAULTS}
        ref = plain_loop(start(r.model, r.seed), data, r.seed, result.epochs, r.lr,
                         batch_size, eval_sets, **options)  # fmt: skip
        got = engine_rows(result, k)
        for e, (a, b) in enumerate(zip(got, ref)):
            for i, (x, y) in enumerate(zip(a, b)):
                tol = atol if i == 0 or i % 2 else 2.5 / data[1].shape[0]  # accuracy: 2 flips
                assert abs(x - y) <= tol, (
                    f"{r.model} seed {r.seed}: epoch {e + 1} column {i}: {x} vs {y}"
                )


def built(result, data):
    """start(name, seed): the module the engine builds for that replica."""

    def start(name, seed):
        spec = {k: v for k, v in result.models[name].items() if k not in sweep.TRAINING_DEFAULTS}
        torch.manual_seed(seed)
        n_out = 1 if data[2].dtype != torch.long else int(data[2].max()) + 1
        return build(data[0].shape[1], n_out, **spec).to(data[0].dtype)

    return start


@pytest.fixture(scope="module")
def digits_flat():
    return load_digits(flat=True)


@pytest.fixture(scope="module")
def data64():
    """The tutorial's data in float64: the engine trains in float64 and agrees to ~1e-12."""
    return tuple(t.double() for t in load_data(n_samples=400))


NEW_VARIANTS = {
    "ghost": {"norm": "ghost", "virtual_batch_size": 16, "hidden_sizes": (16, 8)},
    "ghost-ragged": {"norm": "ghost", "virtual_batch_size": 24, "hidden_sizes": (16,)},
    "renorm": {"norm": "renorm", "hidden_sizes": (16, 8), "bias": False},
    "renorm-tight": {"norm": "renorm", "r_max": 1.5, "d_max": 0.5, "hidden_sizes": (16,)},
    "dropout-every": {"norm": "batch", "dropout": 0.4, "hidden_sizes": (16, 8)},
    "dropout-last": {"norm": "batch", "dropout": 0.4, "dropout_at": "last", "hidden_sizes": (8,)},
    "residual-bn": {"blocks": 3, "width": 12},
    "residual-zero-gamma": {"blocks": 3, "width": 12, "init": "zero_gamma"},
    "skipinit": {"blocks": 3, "width": 12, "norm": "none", "init": "skipinit"},
    "fixup-sgd": {"blocks": 3, "width": 12, "norm": "none", "init": "fixup", "optimizer": "sgd"},
    "sgd-wd": {"norm": "batch", "hidden_sizes": (16,), "optimizer": "sgd", "weight_decay": 1e-2},
    "adam-wd-no-norm-decay": {"norm": "batch", "hidden_sizes": (16,), "weight_decay": 1e-2,
                              "decay_norm": False},
}  # fmt: skip


def test_new_variants_agree_with_plain_pytorch_in_float64(data64):
    """Every new layer's hand-written forward and backward, both optimizers and weight decay,
    against autograd and torch.optim, in float64 (batch 48: a ragged last batch of 16)."""
    result = sweep.run([3], [0.05], epochs=3, batch_size=48, models=NEW_VARIANTS, data=data64)
    assert_agrees(result, data64, built(result, data64), atol=1e-9, batch_size=48)


def test_class_labels_train_with_cross_entropy(digits_flat):
    """Digits (10 classes, int64 labels): cross-entropy and argmax accuracy, in float64 (in
    float32 Adam's first, sign-like steps amplify rounding to ~1e-3 in the loss)."""
    models = {
        "BN": {"norm": "batch", "hidden_sizes": (32,), "bias": False},
        "res": {"blocks": 2, "width": 16, "init": "zero_gamma"},
    }
    data = tuple(t.double() if t.is_floating_point() else t for t in digits_flat)
    result = sweep.run([0, 1], [0.01], epochs=2, models=models, data=data)
    assert_agrees(result, data, built(result, data), atol=1e-9)
    assert result.val_acc[:, -1].min() > 0.8


def test_inits_start_replicas_from_given_modules(data64):
    """Weights and BN buffers (running statistics, num_batches_tracked) come from the given
    modules; the seed still sets the shuffle order."""
    spec = {"norm": "batch", "hidden_sizes": (16, 8)}

    def start(name, seed):
        torch.manual_seed(100 + seed)
        m = MLP(20, (16, 8), norm="batch").double()
        with torch.no_grad():
            m.network[0].weight.mul_(3.0)
            m.network[1].running_mean.fill_(0.5)
        m.network[1].num_batches_tracked.fill_(7)
        return m

    result = sweep.run([0, 1], [0.01], epochs=2, models={"m": spec}, data=data64, inits=start)
    assert_agrees(result, data64, start, atol=1e-9)
    as_dict = {"m": {0: start("m", 0), 1: start("m", 1)}}
    again = sweep.run([0, 1], [0.01], epochs=2, models={"m": spec}, data=data64, inits=as_dict)
    assert torch.equal(again.val_loss, result.val_loss)
    (m0, _) = result.to_modules()
    steps = 2 * math.ceil(data64[0].shape[0] / 64)
    assert int(m0.network[1].num_batches_tracked) == 7 + steps


def test_eval_sets_are_evaluated_every_epoch(data64):
    X_val, y_val = data64[1], data64[3]
    eval_sets = {"shifted": (X_val + 1.0, y_val), "half": (X_val[:40], y_val[:40])}
    models = {"BN": {"norm": "batch", "hidden_sizes": (16,)}}
    result = sweep.run([2], [0.01], epochs=2, models=models, data=data64, eval_sets=eval_sets)
    assert result.splits == ["val", "shifted", "half"]
    assert_agrees(result, data64, built(result, data64), atol=1e-9,
                  eval_sets=list(eval_sets.values()))  # fmt: skip
    (h,) = result.histories(split="shifted")
    assert h.val_loss == result.evals["shifted"][0][0].tolist()
    assert h.train_loss == result.histories()[0].train_loss
    with pytest.raises(ValueError, match="split='test' is not in this sweep"):
        result.histories(split="test")


def test_to_modules_give_the_engines_outputs(digits_flat):
    models = {
        "BN": {"norm": "batch", "hidden_sizes": (32,)},
        "ghost": {"norm": "ghost", "virtual_batch_size": 8, "hidden_sizes": (32,)},
        "renorm": {"norm": "renorm", "hidden_sizes": (32,), "dropout": 0.2},
        "res": {"blocks": 2, "width": 16, "init": "zero_gamma"},
        "skip": {"blocks": 2, "width": 16, "norm": "none", "init": "skipinit"},
    }
    result = sweep.run([0, 1], [0.01, 1e20], epochs=2, models=models, data=digits_flat)
    modules = result.to_modules()
    assert len(modules) == len(result.replicas)
    X_val, y_val = digits_flat[1], digits_flat[3]
    for r, m, k in zip(result.replicas, modules, range(len(modules))):
        if r.lr == 1e20:
            assert m is None and r.diverged_at is not None
            continue
        assert not m.training and type(m).__name__ in ("MLP", "ResidualMLP")
        with torch.no_grad():
            logits = m(X_val)
        loss = F.cross_entropy(logits, y_val).item()
        acc = (logits.argmax(1) == y_val).double().mean().item()
        assert abs(loss - result.val_loss[k, -1].item()) < 1e-5
        assert abs(acc - result.val_acc[k, -1].item()) < 1e-9
    assert len(result.to_modules(model="BN", lr=0.01)) == 2
    stream = sweep.stream([0], [0.01], epochs=2, models={"BN": models["BN"]}, data=digits_flat)
    partial = next(stream)
    (first,) = partial.to_modules()  # the run waits: epoch 1's weights
    last = next(stream)
    with pytest.raises(ValueError, match="trained on since it was made"):
        partial.to_modules()
    (final,) = last.to_modules()
    assert not torch.equal(first.network[0].weight, final.network[0].weight)


def test_on_epoch_sees_each_epochs_modules(data):
    """Inside the callback a partial result's modules are the replicas as they are then: the
    same numbers as a shorter run's final modules."""
    spec = {"m": {"norm": "batch", "hidden_sizes": (16,)}}
    seen = {}
    sweep.run([0], [0.01], epochs=3, models=spec, data=data,
              on_epoch=lambda e, r: seen.update({e: r.to_modules()[0]}))  # fmt: skip
    (two,) = sweep.run([0], [0.01], epochs=2, models=spec, data=data).to_modules()
    for (name, a), b in zip(seen[2].state_dict().items(), two.state_dict().values()):
        assert torch.equal(a, b), name


def test_ghost_bn_is_per_device_bn_on_its_chunks(data64):
    """With virtual_batch_size = batch_size the ghost chunks are the batches: plain BN."""
    ghost = {"g": {"norm": "ghost", "virtual_batch_size": 50, "hidden_sizes": (16,)}}
    plain = {"g": {"norm": "batch", "hidden_sizes": (16,)}}
    a = sweep.run([0], [0.01], epochs=2, batch_size=50, models=ghost, data=data64)
    b = sweep.run([0], [0.01], epochs=2, batch_size=50, models=plain, data=data64)
    torch.testing.assert_close(a.val_loss, b.val_loss, rtol=0, atol=1e-12)


def test_renorm_with_no_room_to_correct_trains_like_bn(data64):
    """r_max = 1, d_max = 0: the outputs (so the weights) are BatchNorm's; only the running
    statistics differ (a running standard deviation, as in the paper)."""
    renorm = {"r": {"norm": "renorm", "r_max": 1.0, "d_max": 0.0, "hidden_sizes": (16,)}}
    plain = {"r": {"norm": "batch", "hidden_sizes": (16,)}}
    a = sweep.run([0], [0.01], epochs=2, models=renorm, data=data64)
    b = sweep.run([0], [0.01], epochs=2, models=plain, data=data64)
    torch.testing.assert_close(a.train_loss, b.train_loss, rtol=0, atol=1e-12)
    (ma,), (mb,) = a.to_modules(), b.to_modules()
    for name in ("network.0.weight", "network.1.weight"):
        torch.testing.assert_close(ma.state_dict()[name], mb.state_dict()[name], rtol=0, atol=1e-12)
    assert not torch.allclose(ma.network[1].running_var, mb.network[1].running_var)


def test_private_kernels_exist_and_their_public_fallbacks_agree(data, monkeypatch):
    """The engine calls torch._fused_adam_ (private) and torch.ops.aten's activation
    backward kernels. If a future torch drops them, this test says so; the public routes the
    engine then takes give the same numbers (Adam: bitwise; activations: to rounding)."""
    assert hasattr(torch, "_fused_adam_"), (
        f"torch {torch.__version__} has no torch._fused_adam_: the engine falls back to "
        f"torch.optim.adam.adam(fused=True) (tested below); update sweep._adam_step's note."
    )
    for name in ("threshold_backward", "tanh_backward", "sigmoid_backward", "gelu_backward"):
        assert sweep._aten(name) is not None, f"torch.ops.aten.{name} is gone: see sweep._aten"
    models = {
        a: {"activation": a, "hidden_sizes": (16,)} for a in ("relu", "tanh", "sigmoid", "gelu")
    }
    before = sweep.run([0, 1], [0.01, 0.03], epochs=2, models=models, data=data)
    monkeypatch.setattr(sweep, "_fused_kernel", lambda: None)
    monkeypatch.setattr(sweep, "_aten", lambda name: None)
    sweep._backward_op.cache_clear()
    try:
        after = sweep.run([0, 1], [0.01, 0.03], epochs=2, models=models, data=data)
    finally:
        sweep._backward_op.cache_clear()
    torch.testing.assert_close(after.val_loss, before.val_loss, rtol=0, atol=1e-5)
    plain = {"relu": models["relu"]}
    monkeypatch.undo()
    sweep._backward_op.cache_clear()
    kernel = sweep.run([0, 1], [0.01, 0.03], epochs=2, models=plain, data=data)
    monkeypatch.setattr(sweep, "_fused_kernel", lambda: None)
    public = sweep.run([0, 1], [0.01, 0.03], epochs=2, models=plain, data=data)
    assert torch.equal(kernel.val_loss, public.val_loss)
