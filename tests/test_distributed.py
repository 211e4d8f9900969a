"""bnteach.distributed: launch, SyncBatchNorm, convert_sync_batchnorm, ddp_train, the CLI.

The oracle is one process running torch's nn.BatchNorm1d/2d on the concatenation of every
rank's batch, in float64. Processes are expensive (seconds to start on 2 cores), so each world
size is launched once (module-scoped fixtures) and its workers return every measurement at
once. Every launch and subprocess has a timeout, so a hang fails instead of blocking.
"""

import copy
import math
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from bnteach import distributed, sweep
from bnteach.batchnorm import BatchNorm1d as ScratchBatchNorm1d
from bnteach.batchnorm import BatchNorm2d as ScratchBatchNorm2d
from bnteach.distributed import (
    LaunchTimeout,
    SyncBatchNorm,
    WorkerError,
    batch_indices,
    convert_sync_batchnorm,
    ddp_train,
    launch,
    several,
    syncbn_check,
    syncbn_traffic,
    torch_syncbn_on_cpu,
)
from bnteach.models import MLP

ROOT = Path(__file__).resolve().parents[1]
DT = torch.float64
C = 3  # channels in the SyncBatchNorm cases
TIMEOUT = 120  # seconds, for every launch here: a hang fails after it
TOL = 1e-12


def child_pids():
    """PIDs of this process's children, from /proc (an empty set where there is no /proc)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        if int(fields[1]) == os.getpid():
            pids.add(int(stat.parent.name))
    return pids


@pytest.fixture(autouse=True)
def no_process_left():
    """Every test must leave no child process behind."""
    before = child_pids()
    yield
    assert multiprocessing.active_children() == []
    assert child_pids() <= before


# ----------------------------------------------------------------------------- workers
# (module level: the launched processes import them by name)


def case_data(index, step, sizes, tail):
    """The global batch and upstream gradient of one case and step, (sum(sizes), C, *tail)."""
    g = torch.Generator().manual_seed(1000 * index + step)
    shape = (sum(sizes), C, *tail)
    x = torch.randn(shape, generator=g, dtype=DT) * 1.5 + 0.7
    return x, torch.randn(shape, generator=g, dtype=DT)


def layer_params(layer, index):
    if layer.affine:
        g = torch.Generator().manual_seed(index)
        with torch.no_grad():
            layer.weight.copy_(torch.rand(C, generator=g, dtype=DT) + 0.5)
            layer.bias.copy_(torch.randn(C, generator=g, dtype=DT))


@contextmanager
def no_communication():
    """Any collective call inside raises."""
    names = ("all_reduce", "all_gather", "broadcast", "barrier", "all_gather_into_tensor")
    saved = {name: getattr(dist, name) for name in names}

    def refuse(*args, **kwargs):
        raise AssertionError("a collective call where none was expected")

    for name in names:
        setattr(dist, name, refuse)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(dist, name, fn)


def run_case(rank, index, group, sizes, tail=(), momentum=0.1, affine=True, track=True):
    """Two training steps (forward, backward) of a SyncBatchNorm synchronised over group on
    this rank's rows, then an eval forward with collectives forbidden."""
    layer = SyncBatchNorm(
        C, momentum=momentum, affine=affine, track_running_stats=track, process_group=group
    ).double()
    layer_params(layer, index)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    steps = []
    for step in range(2):
        x_all, g_all = case_data(index, step, sizes, tail)
        x = x_all[lo:hi].clone().requires_grad_()
        out = layer(x)
        (out * g_all[lo:hi]).sum().backward()
        grads = {name: p.grad for name, p in layer.named_parameters()}
        layer.zero_grad(set_to_none=True)
        steps.append({"out": out.detach(), "grad": x.grad, **grads})
    layer.eval()
    with no_communication():
        eval_out = layer(x_all[lo:hi]).detach() if hi > lo else None
    return {"steps": steps, "state": copy.deepcopy(layer.state_dict()), "eval_out": eval_out}


def attempt(fn):
    """(exception class name, message), or None if fn() raised nothing."""
    try:
        fn()
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return None


def error_checks(rank, world_size):
    """Bad inputs on some ranks; every rank records what it raised. Afterwards the group must
    still work (no rank left behind in a collective)."""
    g = torch.Generator().manual_seed(rank)
    results = {}

    layer = SyncBatchNorm(C).double()
    before = copy.deepcopy(layer.state_dict())
    one = torch.randn(1 if rank == 0 else 0, C, generator=g, dtype=DT)
    results["one_value"] = attempt(lambda: layer(one))
    results["one_value_kept_state"] = all(
        torch.equal(v, layer.state_dict()[k]) for k, v in before.items()
    )

    layer = SyncBatchNorm(C).double()
    channels = C + 1 if rank == world_size - 1 else C
    results["channels"] = attempt(lambda: layer(torch.randn(2, channels, dtype=DT)))

    layer = SyncBatchNorm(C + rank).double()
    results["num_features"] = attempt(lambda: layer(torch.randn(2, C + rank, dtype=DT)))

    layer = SyncBatchNorm(C).double()
    x = torch.ones(2, C, dtype=torch.long) if rank == 0 else torch.randn(2, C, dtype=DT)
    results["dtype"] = attempt(lambda: layer(x))

    layer = SyncBatchNorm(C).double()
    results["afterwards"] = attempt(lambda: layer(torch.randn(2, C, dtype=DT)))
    return results


def communication_checks(rank, world_size):
    """How many all_reduce calls a SyncBatchNorm makes; none in eval mode; torch's own
    nn.SyncBatchNorm on the CPU inside the group."""
    calls, real = [], dist.all_reduce

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    layer = SyncBatchNorm(C).double()
    weights = torch.arange(2 * C, dtype=DT).view(2, C)

    def count(step):
        start = len(calls)
        step()
        return len(calls) - start

    dist.all_reduce = counting
    try:
        out = None

        def forward():
            nonlocal out
            out = layer(torch.randn(2, C, dtype=DT, requires_grad=True))

        counts = {"first_forward": count(forward)}
        counts["backward"] = count(lambda: (out * weights).sum().backward())
        counts["second_forward"] = count(forward)
    finally:
        dist.all_reduce = real
    layer.eval()
    with no_communication():
        layer(torch.randn(1, C, dtype=DT))
        unsynced = SyncBatchNorm(C, track_running_stats=False).double().eval()
        unsynced(torch.randn(2, C, dtype=DT))
    theirs = nn.SyncBatchNorm(C)
    torch_train = attempt(lambda: theirs(torch.randn(2, C)))
    theirs.eval()
    with no_communication():
        torch_eval = attempt(lambda: theirs(torch.randn(2, C)))
    return {"counts": counts, "torch_train": torch_train, "torch_eval": torch_eval}


def syncbn_worker(rank, world_size, cases):
    """The cases of each group size: size 4 on the whole world, 2 and 3 on the subgroups of
    the first ranks (which also tests process_group=); then the error and communication
    checks on the whole world."""
    results = {}
    for size, size_cases in cases.items():
        # every rank takes part in creating every group, members or not
        group = None if size == world_size else dist.new_group(list(range(size)))
        if rank < size:
            results[size] = [run_case(rank, i, group, **case) for i, case in enumerate(size_cases)]
    results["errors"] = error_checks(rank, world_size)
    results["communication"] = communication_checks(rank, world_size)
    return results


def write_pid(folder, rank):
    Path(folder, f"{rank}.pid").write_text(str(os.getpid()))


def fail_on_rank(rank, world_size, folder, bad_rank):
    write_pid(folder, rank)
    dist.barrier()  # every rank has written its PID
    if rank == bad_rank:
        raise ValueError(f"deliberate failure on rank {rank}")
    dist.barrier()  # waits for the failed rank: launch must stop this process
    return rank


def hang_on_rank(rank, world_size, folder, stuck_rank):
    write_pid(folder, rank)
    if rank == stuck_rank:
        time.sleep(3600)
    return rank


def exit_early(rank, world_size, folder):
    write_pid(folder, rank)
    os._exit(3)


def pids_gone(folder, at_least=1):
    """The number of workers that wrote their PID; each of them must have ended."""
    pids = [int(p.read_text()) for p in Path(folder).glob("*.pid")]
    assert len(pids) >= at_least, "the workers never started"
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    return len(pids)


# ----------------------------------------------------------------------------- the oracle


def reference(case, index):
    """One process: nn.BatchNorm on the concatenated batch, the same two steps and eval."""
    sizes, tail = case["sizes"], case.get("tail", ())
    kind = nn.BatchNorm2d if len(tail) == 2 else nn.BatchNorm1d
    bn = kind(
        C,
        momentum=case.get("momentum", 0.1),
        affine=case.get("affine", True),
        track_running_stats=case.get("track", True),
    ).double()
    layer_params(bn, index)
    steps = []
    for step in range(2):
        x_all, g_all = case_data(index, step, sizes, tail)
        x = x_all.clone().requires_grad_()
        out = bn(x)
        (out * g_all).sum().backward()
        grads = {name: p.grad for name, p in bn.named_parameters()}
        bn.zero_grad(set_to_none=True)
        steps.append({"out": out.detach(), "grad": x.grad, **grads})
    return bn, steps, x_all


def biggest_difference(a, b):
    # a gradient autograd left out (None, or 0 for a sum of them) is a gradient of zeros
    a, b = (torch.zeros_like(b) if not torch.is_tensor(a) else a), b
    b = torch.zeros_like(a) if not torch.is_tensor(b) else b
    assert a.shape == b.shape
    return float((a - b).detach().abs().max()) if a.numel() else 0.0


def rounding_bound(case, index):
    """How far SyncBatchNorm may be from BatchNorm by rounding alone. Its variance is
    S2 / n - mean ** 2, which loses digits when a channel's mean is large against its spread:
    an error of about eps * mean ** 2 / var (eps = 2.2e-16 in float64). The bound is TOL, or
    64 times that error where it is larger (the global batches here have mean ** 2 / var up to
    about 1e3)."""
    conditions = [1.0]
    for step in range(2):
        x, _ = case_data(index, step, case["sizes"], case.get("tail", ()))
        values = x.transpose(0, 1).reshape(C, -1)
        if values.shape[1] > 1:
            mean, var = values.mean(1), values.var(1, unbiased=False)
            conditions.append(float((mean**2 / var).max()))
    return max(TOL, 64 * torch.finfo(DT).eps * max(conditions))


def check_case(case, index, ranks):
    """Every rank's results, joined, against the reference on the concatenated batch."""
    bn, steps, x_all = reference(case, index)
    worst = 0.0
    for step, expected in enumerate(steps):
        got = [r[index]["steps"][step] for r in ranks]
        for key in ("out", "grad"):
            worst = max(worst, biggest_difference(torch.cat([g[key] for g in got]), expected[key]))
        for key in ("weight", "bias"):  # each rank holds its share: the shares sum to it
            if key in expected:
                shares = [g[key] if g[key] is not None else 0 for g in got]
                worst = max(worst, biggest_difference(sum(shares), expected[key]))
    expected_state = bn.state_dict()
    for r in ranks:
        state = r[index]["state"]
        assert state.keys() == expected_state.keys()
        for key, value in expected_state.items():
            worst = max(worst, biggest_difference(state[key].double(), value.double()))
    bn.eval()  # eval mode: the running statistics, or each rank's own batch without them
    sizes = case["sizes"]
    for rank, r in enumerate(ranks):
        lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        if hi > lo:
            expected = bn(x_all[lo:hi]).detach()
            worst = max(worst, biggest_difference(r[index]["eval_out"], expected))
    return worst


CASES = {
    2: [
        {"sizes": (3, 5)},
        {"sizes": (1, 4), "momentum": None},
        {"sizes": (1, 1)},
        {"sizes": (2, 3), "tail": (4,)},  # (N, C, L)
        {"sizes": (3, 2), "tail": (2, 3), "affine": False},  # (N, C, H, W)
    ],
    3: [
        {"sizes": (1, 0, 6)},
        {"sizes": (2, 0, 1), "tail": (3, 2)},
        {"sizes": (4, 2, 3), "momentum": None, "track": False},
    ],
    4: [
        {"sizes": (5, 1, 0, 3)},
        {"sizes": (1, 1, 1, 1), "tail": (2, 2), "momentum": 0.3},
        {"sizes": (0, 0, 0, 0)},
        {"sizes": (0, 2, 0, 0), "momentum": None},
    ],
}

DDP = {"seed": 11, "steps": 8, "per_device": 4, "lr": 0.01}
DDP_RUNS = {
    "sync": {"sync_bn": True, "broadcast_buffers": True},
    "per_device": {"sync_bn": False, "broadcast_buffers": True},
    "per_device_no_broadcast": {"sync_bn": False, "broadcast_buffers": False, "bias": False},
    "sync_no_bias": {"sync_bn": True, "bias": False},
}
CHECK_SIZES = {"one sample": [5, 1, 3, 2], "no sample": [4, 0, 2, 1]}
WORLD = 4


@pytest.fixture(scope="module")
def runs(data):
    """Each rank's results of ONE launch of 4 processes (starting processes is what costs):
    the SyncBatchNorm cases, error and communication checks, three DDP runs and the demo."""
    X, _, y, _ = data
    calls = [("syncbn", syncbn_worker, {"cases": CASES})]
    calls += [(name, ddp_train, {"X": X, "y": y, **DDP, **kw}) for name, kw in DDP_RUNS.items()]
    calls += [("demo", distributed.demo, {})]
    calls += [(name, syncbn_check, {"sizes": sizes}) for name, sizes in CHECK_SIZES.items()]
    calls += [("traffic", syncbn_traffic, {}), ("torch", torch_syncbn_on_cpu, {})]
    start = time.perf_counter()
    results = launch(several, WORLD, calls, timeout=TIMEOUT)
    print(f"one launch of {WORLD} processes and their work: {time.perf_counter() - start:.1f} s")
    return results


# ----------------------------------------------------------------------------- SyncBatchNorm


@pytest.mark.parametrize("world_size", sorted(CASES))
def test_syncbn_equals_batchnorm_on_the_concatenated_batch(runs, world_size):
    """Output, input gradient, weight/bias gradients (summed over ranks), running statistics
    and eval output, over two steps, for unequal shards including 1 and 0 samples."""
    ranks = [r["syncbn"][world_size] for r in runs[:world_size]]
    for index, case in enumerate(CASES[world_size]):
        assert check_case(case, index, ranks) <= rounding_bound(case, index), case


def test_syncbn_bad_input_raises_on_every_rank_and_the_group_survives(runs):
    errors = [r["syncbn"]["errors"] for r in runs]
    last = WORLD - 1
    for rank, e in enumerate(errors):
        kind, text = e["one_value"]
        assert kind == "ValueError" and "Expected more than 1 value per channel" in text
        assert e["one_value_kept_state"]

        kind, text = e["channels"]
        if rank == last:
            assert kind == "ChannelMismatchError" and "4 channels" in text
            assert "num_features = 3" in text
        else:
            assert kind == "ValueError" and f"rank {last} does not fit" in text

        kind, text = e["num_features"]
        assert kind == "ChannelMismatchError" and f"from 3 to {3 + last}" in text

        kind, text = e["dtype"]
        expected = ("TypeError", "torch.int64") if rank == 0 else ("ValueError", "rank 0")
        assert kind == expected[0] and expected[1] in text

        assert e["afterwards"] is None


def test_syncbn_communicates_once_per_pass_and_never_in_eval(runs):
    for r in runs:
        c = r["syncbn"]["communication"]
        # the first forward also checks once that every rank's layer has the same size
        assert c["counts"] == {"first_forward": 2, "backward": 1, "second_forward": 1}
        kind, text = c["torch_train"]  # why bnteach has its own: torch's wants a GPU
        assert kind == "ValueError" and "expected input tensor to be on GPU" in text
        assert c["torch_eval"] is None


def test_torch_syncbn_has_no_cpu_kernel():
    with pytest.raises(NotImplementedError, match="batch_norm_stats"):
        torch.batch_norm_stats(torch.randn(4, C), 1e-5)


@pytest.mark.parametrize("shape", [(7, C), (5, C, 4), (3, C, 2, 2)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_outside_a_process_group_it_is_plain_batchnorm_like_torchs(shape, momentum):
    """torch's nn.SyncBatchNorm falls back to batch norm when torch.distributed is not
    initialised: so does SyncBatchNorm, with BatchNorm's state_dict keys."""
    assert not dist.is_initialized()
    kind = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    layers = [kind(C, momentum=momentum), nn.SyncBatchNorm(C, momentum=momentum)]
    layers = [m.double() for m in [*layers, SyncBatchNorm(C, momentum=momentum)]]
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        x = torch.randn(shape, generator=g, dtype=DT) * 2 + 1
        outs = [m(x) for m in layers]
        assert all(torch.allclose(o, outs[0], rtol=0, atol=TOL) for o in outs)
    for m in layers:
        m.eval()
    outs = [m(x) for m in layers]
    assert all(torch.allclose(o, outs[0], rtol=0, atol=TOL) for o in outs)
    states = [m.state_dict() for m in layers]
    assert all(s.keys() == states[0].keys() for s in states)
    for key in states[0]:
        assert all(torch.allclose(s[key], states[0][key], rtol=0, atol=TOL) for s in states)


@contextmanager
def group_of_one(folder):
    """A gloo process group of this one process (no other process started)."""
    interface = distributed._loopback_interface()
    saved = os.environ.get("GLOO_SOCKET_IFNAME")
    if interface and saved is None:
        os.environ["GLOO_SOCKET_IFNAME"] = interface
    dist.init_process_group(
        "gloo", init_method=Path(folder, "store").as_uri(), rank=0, world_size=1
    )
    try:
        yield
    finally:
        dist.destroy_process_group()
        if saved is None:
            os.environ.pop("GLOO_SOCKET_IFNAME", None)


def test_in_a_group_of_one_process_it_is_plain_batchnorm(tmp_path):
    """Nothing to synchronise with: no collective call, BatchNorm's result. (torch's own
    raises here on the CPU: its GPU check comes before its world-size check.)"""
    x = torch.randn(6, C, dtype=DT) + 1
    reference = nn.BatchNorm1d(C).double()
    with group_of_one(tmp_path):
        ours = SyncBatchNorm(C).double()
        with no_communication():
            out = ours(x)
        theirs = nn.SyncBatchNorm(C)
        with pytest.raises(ValueError, match="expected input tensor to be on GPU"):
            theirs(x.float())
    assert torch.allclose(out, reference(x), rtol=0, atol=TOL)
    assert torch.allclose(ours.running_var, reference.running_var, rtol=0, atol=TOL)


def test_state_dict_moves_between_batchnorm_and_syncbn():
    bn = nn.BatchNorm1d(C).double()
    bn(torch.randn(5, C, dtype=DT))
    sync = SyncBatchNorm(C).double()
    sync.load_state_dict(bn.state_dict())
    back = nn.BatchNorm1d(C).double()
    back.load_state_dict(sync.state_dict())
    assert int(back.num_batches_tracked) == 1
    assert torch.equal(back.running_mean, bn.running_mean)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"num_features": 0}, ValueError),
        ({"num_features": 2.0}, TypeError),
        ({"num_features": C, "momentum": 0.9 + 0.2}, ValueError),
        ({"num_features": C, "eps": 0}, ValueError),
        ({"num_features": C, "affine": "False"}, TypeError),
        ({"num_features": C, "track_running_stats": "no"}, TypeError),
        ({"num_features": C, "bias": "no"}, TypeError),
        ({"num_features": C, "dtype": torch.long}, TypeError),
        ({"num_features": C, "process_group": 5}, TypeError),
    ],
)
def test_syncbn_rejects_bad_settings(kwargs, error):
    with pytest.raises(error):
        SyncBatchNorm(**kwargs)


@pytest.mark.parametrize("bad", [torch.randn(C), [1.0, 2.0], torch.tensor(1.0)])
def test_syncbn_rejects_bad_input(bad):
    with pytest.raises((TypeError, ValueError), match="SyncBatchNorm expects"):
        SyncBatchNorm(C)(bad)


def test_a_global_batch_of_one_value_in_one_process_is_batchnorms_error():
    layer = SyncBatchNorm(C)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        layer(torch.randn(1, C))
    assert int(layer.num_batches_tracked) == 0  # torch's counts the failed call; ours not


@pytest.mark.parametrize(
    "bad, error, phrase",
    [
        (torch.randn(6, C + 1), ValueError, "channels"),
        (torch.randn(6, C, dtype=torch.float64), TypeError, "dtype"),
        (torch.tensor([[math.nan] * C] * 6), ValueError, "NaN or infinite"),
        (torch.full((6, C), 1e30) * torch.arange(6.0)[:, None], ValueError, "overflows"),
    ],
    ids=["channels", "dtype", "NaN", "overflow"],
)
def test_outside_a_group_a_failing_call_leaves_every_buffer_as_it_was(bad, error, phrase):
    layer = SyncBatchNorm(C)
    layer(torch.randn(6, C))
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(error, match=phrase):
        layer(bad)
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())


def test_settings_changed_after_building_are_checked():
    layer = SyncBatchNorm(C)
    layer.momentum = 5.0
    with pytest.raises(ValueError, match="momentum"):
        layer(torch.randn(6, C))
    layer.momentum, layer.training = 0.1, "yes"
    with pytest.raises(TypeError, match="training"):
        layer(torch.randn(6, C))


# ----------------------------------------------------------------------------- convert


def test_convert_sync_batchnorm_replaces_every_bn_and_keeps_their_state():
    model = nn.Sequential(
        nn.Conv2d(2, C, 3),
        nn.BatchNorm2d(C),
        ScratchBatchNorm2d(C),
        nn.Sequential(nn.Flatten(), nn.Linear(C * 4, 5), nn.BatchNorm1d(5, momentum=None)),
        ScratchBatchNorm1d(5, affine=False),
        nn.Linear(5, 4, bias=False),
    ).double()
    x = torch.randn(6, 2, 4, 4, dtype=DT)
    model(x)
    model[3][2].weight.requires_grad_(False)
    model[3][2].eval()
    reference = copy.deepcopy(model)
    old = [m for m in model.modules() if "BatchNorm" in type(m).__name__]
    converted = convert_sync_batchnorm(model)
    assert converted is model
    new = [m for m in converted.modules() if "BatchNorm" in type(m).__name__]
    assert len(new) == len(old) == 4 and all(type(m) is SyncBatchNorm for m in new)
    assert [type(m) for m in old] == [
        nn.BatchNorm2d,
        ScratchBatchNorm2d,
        nn.BatchNorm1d,
        ScratchBatchNorm1d,
    ]
    for a, b in zip(old, new):
        assert (b.weight is a.weight) and (b.bias is a.bias)  # the same Parameters
        assert b.running_mean is a.running_mean and b.running_var is a.running_var
        assert b.num_batches_tracked is a.num_batches_tracked
        assert (b.momentum, b.eps, b.affine, b.training) == (
            a.momentum,
            a.eps,
            a.affine,
            a.training,
        )
    assert not new[2].weight.requires_grad and not new[2].training
    assert converted.state_dict().keys() == reference.state_dict().keys()
    assert torch.allclose(converted(x), reference(x), rtol=0, atol=TOL)  # no group: plain BN
    converted.eval(), reference.eval()
    assert torch.allclose(converted(x), reference(x), rtol=0, atol=TOL)


def test_convert_a_single_layer_returns_a_new_one():
    bn = nn.BatchNorm1d(C, track_running_stats=False, bias=False)
    sync = convert_sync_batchnorm(bn, process_group=None)
    assert isinstance(sync, SyncBatchNorm) and sync is not bn
    assert sync.running_mean is None and sync.bias is None and sync.weight is bn.weight


@pytest.mark.parametrize("norm", ["ghost", "renorm"])
def test_convert_refuses_ghost_and_renorm_and_changes_nothing(norm):
    extra = {"virtual_batch_size": 4} if norm == "ghost" else {}
    model = MLP(5, (8, 8), norm=norm, **extra)
    before = [type(m) for m in model.modules()]
    with pytest.raises(TypeError, match="no synchronised version"):
        convert_sync_batchnorm(model)
    assert [type(m) for m in model.modules()] == before


def test_convert_rejects_a_non_module():
    with pytest.raises(TypeError, match="nn.Module"):
        convert_sync_batchnorm(torch.randn(3))


# ----------------------------------------------------------------------------- DDP


def one_process(X, y, world_size, ghost, bias=True):
    """Train the same net in one process on the global batches: BatchNorm over the whole batch
    (ghost=False), or "ghost" BN: each chunk of per_device rows normalized by its own statistics,
    with one set of running statistics per chunk (chunk k's chain is what rank k would keep
    without DDP's buffer broadcast)."""
    per_device = DDP["per_device"]
    torch.manual_seed(DDP["seed"])
    model = MLP(X.shape[1], (128, 64), norm="batch", bias=bias).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=DDP["lr"])
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    chains = {
        bn: [(bn.running_mean.clone(), bn.running_var.clone()) for _ in range(world_size)]
        for bn in bns
    }
    losses = []
    for rows in batch_indices(len(X), per_device * world_size, DDP["steps"], DDP["seed"]):
        h = X[rows].double()
        for layer in model.network:
            if ghost and isinstance(layer, nn.BatchNorm1d):
                chunks = h.split(per_device)
                h = torch.cat(
                    [
                        F.batch_norm(
                            c, *chains[layer][k], layer.weight, layer.bias, True, 0.1, 1e-5
                        )
                        for k, c in enumerate(chunks)
                    ]
                )
            else:
                h = layer(h)
        loss = F.binary_cross_entropy_with_logits(h, y[rows].double())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, chains, losses


def ddp_results(runs, name):
    return [r[name] for r in runs]


# The Linear biases right before a BN layer do not change the function (BN subtracts the
# mean); their gradient is rounding noise (~1e-17), which Adam divides by its eps (1e-8) and
# which differs between two correct implementations: they move by ~1e-11 per step, differently,
# and so does running_mean, which includes them. Everything else agrees to TOL (the run
# without these biases, "per_device_no_broadcast", checks every number to TOL).
NOISY = ("network.0.bias", "network.3.bias", "network.1.running_mean", "network.4.running_mean")


def check_state(state, model, keys=None):
    """The parameters (and the state_dict entries in keys) to TOL; NOISY ones to 1e-9."""
    expected = model.state_dict()
    for key in [name for name, _ in model.named_parameters()] + list(keys or []):
        tolerance = 1e-9 if key in NOISY else TOL
        difference = float((state[key].double() - expected[key].double()).abs().max())
        assert difference <= tolerance, (key, difference)


def test_ddp_with_syncbn_equals_one_process_on_the_global_batch(runs, data):
    X, _, y, _ = data
    model, _, losses = one_process(X, y, WORLD, ghost=False)
    ranks = ddp_results(runs, "sync")
    for r in ranks:
        check_state(r["state"], model, keys=model.state_dict())  # the BN buffers too
    # each rank's loss is its shard's; their mean is the global batch's loss
    mean_loss = [sum(step) / WORLD for step in zip(*(r["losses"] for r in ranks))]
    assert max(abs(a - b) for a, b in zip(mean_loss, losses)) <= TOL


@pytest.mark.parametrize("name", ["per_device", "per_device_no_broadcast"])
def test_ddp_with_per_device_bn_equals_one_process_with_ghost_bn(runs, data, name):
    X, _, y, _ = data
    bias = DDP_RUNS[name].get("bias", True)
    model, chains, losses = one_process(X, y, WORLD, ghost=True, bias=bias)
    ranks = ddp_results(runs, name)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    for rank, r in enumerate(ranks):
        check_state(r["state"], model)
        if name == "per_device" and rank > 0:
            continue  # its own last step on top of rank 0's chain: see the trace test
        # with DDP's broadcast, rank 0 keeps chunk 0's chain; without it, rank r chunk r's
        for prefix, bn in zip(("network.1.", "network.4."), bns):
            for key, value in zip(("running_mean", "running_var"), chains[bn][rank]):
                tolerance = 1e-9 if prefix + key in NOISY and bias else TOL
                difference = float((r["state"][prefix + key] - value).abs().max())
                assert difference <= tolerance, (prefix + key, difference)
    mean_loss = [sum(step) / WORLD for step in zip(*(r["losses"] for r in ranks))]
    assert max(abs(a - b) for a, b in zip(mean_loss, losses)) <= TOL


def test_broadcast_buffers_gives_every_rank_rank_0s_running_statistics(runs):
    """At the start of each forward, DDP copies rank 0's buffers to every rank: the first BN
    layer then starts from rank 0's running_mean of the previous step. Without the broadcast
    each rank starts from its own; the ranks' statistics drift apart."""
    for name in ("per_device", "per_device_no_broadcast", "sync"):
        traces = [r["trace"] for r in ddp_results(runs, name)]
        whole = torch.stack([t["batch_mean"] for t in traces]).mean(0)  # equal shards
        for t in traces:
            assert torch.equal(t["seen"][0], torch.zeros_like(t["seen"][0]))
            source = traces[0] if name != "per_device_no_broadcast" else t
            assert torch.equal(t["seen"][1:], source["after"][:-1])
            expected = 0.9 * t["seen"] + 0.1 * (whole if name == "sync" else t["batch_mean"])
            assert torch.allclose(t["after"], expected, rtol=0, atol=TOL)
    apart = [r["trace"]["after"][-1] for r in ddp_results(runs, "per_device_no_broadcast")]
    assert not torch.allclose(apart[0], apart[1])


def test_ddp_reports_its_time_per_step(runs):
    for name in DDP_RUNS:
        seconds = [r[name]["seconds_per_step"] for r in runs]
        assert all(math.isfinite(s) and s > 0 for s in seconds)
        print(f"DDP step, {WORLD} ranks, {name}: {max(seconds) * 1e3:.1f} ms")


def test_batch_indices():
    rows = batch_indices(10, 4, 5, seed=3)
    assert rows.shape == (5, 4) and rows.dtype == torch.long
    first_epoch = rows[:2].flatten()
    assert len(set(first_epoch.tolist())) == 8  # without replacement within an epoch
    assert torch.equal(rows, batch_indices(10, 4, 5, seed=3))
    with pytest.raises(ValueError, match="global batch"):
        batch_indices(3, 4, 1, seed=0)


# ----------------------------------------------------------------------------- launch


def test_a_rank_that_raises_names_the_rank_and_leaves_no_process(tmp_path):
    with pytest.raises(WorkerError) as caught:
        launch(fail_on_rank, 2, str(tmp_path), bad_rank=1, timeout=TIMEOUT)
    err = caught.value
    assert (err.rank, err.exc_type) == (1, "ValueError")
    assert err.message == "deliberate failure on rank 1"
    assert "fail_on_rank" in err.traceback and "rank 1 raised ValueError" in str(err)
    assert pids_gone(tmp_path) == 2


def test_a_hang_becomes_a_timeout_naming_the_ranks_and_leaves_no_process(tmp_path):
    start = time.perf_counter()
    with pytest.raises(LaunchTimeout) as caught:
        launch(hang_on_rank, 2, str(tmp_path), stuck_rank=1, timeout=6)
    assert time.perf_counter() - start < 6 + 30
    assert 1 in caught.value.ranks and "did not finish within timeout=6 s" in str(caught.value)
    assert isinstance(caught.value, TimeoutError)
    pids_gone(tmp_path, at_least=0)  # on a busy machine the processes may not have started


def test_a_process_that_dies_is_reported(tmp_path):
    with pytest.raises(WorkerError, match="exit code 3") as caught:
        launch(exit_early, 1, str(tmp_path), timeout=TIMEOUT)
    assert caught.value.exc_type is None
    assert pids_gone(tmp_path) == 1


def notebook_function(rank, world_size):
    return rank


notebook_function.__module__ = "__main__"  # as if defined in a notebook cell


class NotebookClass:
    pass


NotebookClass.__module__ = "__main__"


def test_bad_input_is_refused_before_any_process_starts():
    def nested(rank, world_size):
        return rank

    cases = [
        (dict(fn=several, world_size=0), ValueError, "at least 1"),
        (dict(fn=several, world_size=17), ValueError, "at most 16"),
        (dict(fn=several, world_size=2.0), TypeError, "whole number"),
        (dict(fn=several, world_size="2"), TypeError, "whole number"),
        (dict(fn=several, world_size=True), TypeError, "whole number"),
        (dict(fn=several, world_size=2, timeout=0), ValueError, "timeout"),
        (dict(fn=several, world_size=2, timeout=-1), ValueError, "timeout"),
        (dict(fn=several, world_size=2, timeout=float("nan")), ValueError, "timeout"),
        (dict(fn=several, world_size=2, timeout="60"), TypeError, "timeout"),
        (dict(fn=several, world_size=2, timeout=1e15), ValueError, "at most 86400"),
        (dict(fn="several", world_size=2), TypeError, "fn must be a function"),
        (dict(fn=lambda r, w: r, world_size=2), ValueError, "lambda"),
        (dict(fn=nested, world_size=2), ValueError, "inside another function"),
        (dict(fn=notebook_function, world_size=2), ValueError, "notebook cell"),
    ]
    for kwargs, error, words in cases:
        fn, world_size = kwargs.pop("fn"), kwargs.pop("world_size")
        with pytest.raises(error, match=words):
            launch(fn, world_size, **kwargs)
    for arg in [threading.Lock(), (i for i in range(3)), NotebookClass(), lambda: 0]:
        with pytest.raises(TypeError, match="pickling"):
            launch(several, 2, arg)
    assert multiprocessing.active_children() == []
    assert "spawn" in str(pytest.raises(ValueError, launch, nested, 2).value)


def test_a_failed_rendezvous_says_what_to_check(monkeypatch):
    """(Seen for real in a network namespace whose loopback is down: gloo's "Unable to find
    address for: lo".)"""

    def refuse(*args, **kwargs):
        raise RuntimeError("Unable to find address for: lo")

    monkeypatch.setattr(dist, "init_process_group", refuse)
    with pytest.raises(RuntimeError, match="rank 1 could not join") as caught:
        distributed._join_group(1, 2, timeout=5, init_method="file:///nowhere")
    assert "Unable to find address for: lo" in str(caught.value)
    assert "ip link set lo up" in str(caught.value)


def test_an_unpicklable_result_gets_a_teaching_error():
    with pytest.raises(TypeError, match="never a DistributedDataParallel wrapper"):
        distributed._pack_result(threading.Lock())


# ----------------------------------------------------------------------------- command line


def test_torchrun_runs_the_module(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "bnteach.distributed"]
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rank 1: SyncBN running_mean" in done.stdout
    assert "(equal up to rounding)" in done.stdout


def test_the_demo_matches_batchnorm_on_every_rank(runs):
    assert all(r["demo"]["max_diff"] <= TOL for r in runs)
    text, equal = distributed._report([r["demo"] for r in runs])
    assert equal and "rank 3: SyncBN running_mean" in text


def test_without_torchrun_it_says_how_and_launches_the_demo(runs, monkeypatch, capsys):
    """(launch itself is replaced by the demo results of the shared launch: starting
    processes again would only repeat what the launch tests check.)"""
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    calls = []

    def fake_launch(fn, world_size, timeout):
        calls.append((fn, world_size))
        return [r["demo"] for r in runs]

    monkeypatch.setattr(distributed, "launch", fake_launch)
    assert distributed.main() == 0
    assert calls == [(distributed.demo, 2)]
    out = capsys.readouterr().out
    assert distributed.TORCHRUN in out and "(equal up to rounding)" in out


# ------------------------------------------------------- the engine's one-process equivalents


def engine_run(data, spec):
    """The collection's engine, sweep.run, on the rows the DDP run saw, in its order: a data
    set arranged so that the engine's own shuffle of it yields DDP's 8 global batches, and
    the start weights of ddp_train's model (inits=)."""
    X, X_val, y, y_val = (t.double() for t in data)
    rows = batch_indices(len(X), DDP["per_device"] * WORLD, DDP["steps"], DDP["seed"]).flatten()
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(DDP["seed"]))
    arranged = torch.empty_like(rows)
    arranged[order] = rows  # the engine's epoch visits arranged[order] == rows, in turn

    def start(name, seed):
        torch.manual_seed(DDP["seed"])
        return MLP(X.shape[1], (128, 64), norm="batch").double()

    result = sweep.run(
        [DDP["seed"]], [DDP["lr"]], epochs=1, batch_size=DDP["per_device"] * WORLD,
        models={"m": spec}, data=(X[arranged], X_val, y[arranged], y_val), inits=start,
    )  # fmt: skip
    (module,) = result.to_modules()
    return module.state_dict()


@pytest.mark.parametrize("name", ["sync", "per_device"])
def test_the_engine_trains_what_ddp_trains(runs, data, name):
    """SyncBN across 4 processes = the engine's plain BN on the global batch; per-device BN
    = the engine's ghost BN with virtual_batch_size = the per-device batch, with rank 0's
    running statistics (what broadcast_buffers leaves). So the seed comparisons of notebook
    10 can run in one process."""
    spec = {"norm": "batch"} if name == "sync" else {"norm": "ghost", "virtual_batch_size": 4}
    state = engine_run(data, spec)
    rank0 = ddp_results(runs, name)[0]["state"]
    for key, value in state.items():
        # the redundant biases' rounding noise, scaled by Adam: the engine's fused Adam and
        # DDP's torch.optim.Adam round it differently (measured 1.5e-9)
        tolerance = 1e-8 if key in NOISY else TOL
        difference = float((value.double() - rank0[key].double()).abs().max())
        assert difference <= tolerance, (key, difference)


# ------------------------------------------------------------------- notebook 10's workers


@pytest.mark.parametrize("name", sorted(CHECK_SIZES))
def test_syncbn_check_finds_syncbn_equal_to_batchnorm(runs, name):
    for r in runs:
        result = r[name]
        assert set(result) == {
            "output", "input gradient", "weight gradient", "bias gradient",
            "running_mean", "running_var",
        }  # fmt: skip
        assert max(result.values()) < TOL, result


def test_syncbn_traffic_counts_two_all_reduces_per_layer_and_step(runs):
    for r in runs:
        assert r["traffic"] == {"layers": 2, "per_step": [6, 4, 4], "eval": 0}


def test_torch_syncbn_on_cpu_reports_torchs_error_and_explains_it(runs):
    result = runs[0]["torch"]
    assert "expected input tensor to be on GPU" in result["error"]
    assert result["explanation"] == distributed.TORCH_SYNCBN_ON_CPU
    assert "bnteach.distributed.SyncBatchNorm" in result["explanation"]


def test_outside_a_group_torch_syncbn_on_cpu_runs_as_plain_batchnorm():
    assert torch_syncbn_on_cpu(0, 1) == {
        "error": None,
        "explanation": distributed.TORCH_SYNCBN_ON_CPU,
    }


@pytest.mark.parametrize(
    "name, sync_bn", [("per_device_no_broadcast", False), ("sync_no_bias", True)]
)
def test_one_process_replays_the_ddp_run_to_rounding(runs, data, name, sync_bn):
    """Without the biases in front of BN every weight and buffer agrees to TOL (the engine's
    fused Adam against torch.optim.Adam): ghost BN = per-device BN (rank 0's statistics),
    plain BN = SyncBN."""
    X, X_val, y, y_val = data
    result = distributed.one_process(
        X, y, X_val, y_val, seed=DDP["seed"], steps=DDP["steps"],
        per_device=DDP["per_device"], world_size=WORLD, sync_bn=sync_bn, lr=DDP["lr"],
    )  # fmt: skip
    state = result.to_modules()[0].state_dict()
    rank0 = ddp_results(runs, name)[0]["state"]
    assert set(state) == set(rank0)
    for key, value in state.items():
        difference = float((value.double() - rank0[key].double()).abs().max())
        assert difference <= TOL, (key, difference)


@pytest.mark.parametrize(
    "kwargs, error, phrase",
    [
        ({"per_device": 1, "sync_bn": False}, ValueError, "ONE sample"),
        ({"per_device": 0}, ValueError, "per_device must be at least 1"),
        ({"per_device": 2.5}, TypeError, "whole number"),
        ({"sync_bn": "yes"}, TypeError, "sync_bn must be True or False"),
        ({"X": None}, TypeError, "X_train must be a torch tensor"),
        ({"y": "labels"}, TypeError, "y_train must be a torch tensor"),
        ({"seed": -1}, ValueError, "seed must be at least 0"),
        ({"steps": 0}, ValueError, "steps must be at least 1"),
        ({"world_size": 0}, ValueError, "at least 1"),
        ({"world_size": 17}, ValueError, "at most 16"),
        ({"seed": 2**64}, ValueError, "2\\*\\*64 - 1"),
        ({"y": torch.zeros(10, 1)}, ValueError, "one target per row"),
        ({"X_val": torch.zeros(200, 3)}, ValueError, "features"),
        ({"X_val": np.zeros((5, 20))}, TypeError, "X_val must be a torch tensor"),
        ({"y": torch.full((800, 1), 2.0)}, ValueError, "labels 0 and 1"),
    ],
)
def test_one_process_refuses_bad_input_with_a_teaching_error(data, kwargs, error, phrase):
    X, X_val, y, y_val = data
    arguments = {"X": X, "y": y, "X_val": X_val, "y_val": y_val, "seed": 0, "steps": 2,
                 "per_device": 4, "world_size": 4, "sync_bn": True, **kwargs}  # fmt: skip
    with pytest.raises(error, match=phrase):
        distributed.one_process(**arguments)


def test_one_process_refuses_more_steps_than_one_epoch_holds(data):
    X, X_val, y, y_val = data
    with pytest.raises(ValueError, match="at most 50 steps"):
        distributed.one_process(X, y, X_val, y_val, seed=0, steps=51, per_device=4, world_size=4,
                    sync_bn=True)  # fmt: skip
    with pytest.raises(ValueError, match="needs at least as many samples"):  # 1600 > 800
        distributed.one_process(X, y, X_val, y_val, seed=0, steps=1, per_device=100,
                                world_size=16, sync_bn=True)  # fmt: skip


@pytest.mark.parametrize(
    "calls", [None, "demo", [("demo", "not a function", {})], [("demo", distributed.demo)]]
)
def test_several_refuses_calls_of_the_wrong_shape(calls):
    with pytest.raises(TypeError, match=r"calls = \[\(name, worker, kwargs\)"):
        several(0, 1, calls)


def test_several_runs_each_worker_in_turn():
    assert several(0, 1, []) == {}
    result = several(
        0, 1, [("a", batch_indices_worker, {"n": 6}), ("b", batch_indices_worker, {"n": 8})]
    )
    assert list(result) == ["a", "b"] and result["a"] == (0, 1, 6) and result["b"] == (0, 1, 8)


def batch_indices_worker(rank, world_size, n):
    return rank, world_size, n


def test_syncbn_check_needs_one_size_per_rank():
    with pytest.raises(ValueError, match="one batch size per rank"):
        syncbn_check(0, 2, [3])
