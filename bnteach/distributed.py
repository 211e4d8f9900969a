"""Batch Normalization across devices, with processes standing in for the devices.

Data-parallel training gives each of W devices (*ranks*) a copy of the model and a shard of
every global batch. Plain BN then normalizes each shard with its own statistics ("per-device"
BN); synchronised BN (SyncBN) normalizes with the statistics of the whole global batch. This
module shows both with the real engine, ``torch.distributed``, on a laptop: W CPU processes on
the ``gloo`` backend stand in for W devices and talk over the loopback network (127.0.0.1).

Why ONE all_reduce per SyncBN layer is enough in the forward pass. For each channel c, the
global mean and biased variance are functions of three sums, and sums simply add up across
ranks (rank r holds n_r values of channel c, the sums run over them):

    n  = sum_r n_r          S1 = sum_r sum_i x_i          S2 = sum_r sum_i x_i ** 2
    mean = S1 / n           var = S2 / n - mean ** 2      (running_var gets var * n / (n - 1))

So each rank packs its local [S1 (C), S2 (C), n] into one tensor of 2C + 1 numbers and one
all_reduce (a sum over ranks) hands every rank the totals. Averaging the ranks' means instead
would be wrong whenever the shards have different sizes; carrying n makes it exact. The sums are
taken in float64 whatever the input's dtype: S2 / n - mean ** 2 loses digits when a channel's
mean is large against its spread (a relative error of about 1e-16 * mean ** 2 / var), far
below float32's resolution. The backward pass needs two more global sums per channel, again
one all_reduce of 2C numbers:

    dx = weight * invstd * (dy - sum(dy) / n - xhat * sum(dy * xhat) / n)

Contents:

- :func:`launch` runs ``fn(rank, world_size, ...)`` in ``world_size`` fresh processes joined in
  a gloo process group, and returns their results in rank order.
- :class:`SyncBatchNorm` and :func:`convert_sync_batchnorm`: SyncBN for the CPU.
- Workers the notebooks launch (spawn imports them by name, so they live here):
  :func:`ddp_train`, :func:`time_all_reduce`, :func:`demo`, :func:`syncbn_check`,
  :func:`syncbn_traffic`, :func:`torch_syncbn_on_cpu`, and :func:`several`, which runs many of
  them in one launch; and :func:`batch_indices`.
- :func:`one_process`: a DDP run replayed in one process by the engine (``bnteach.sweep``):
  per-device BN is ghost BN, SyncBN is BN on the global batch (notebook 10 proves it).
- ``python -m bnteach.distributed``, also under ``torchrun --standalone --nproc-per-node 2``.
"""

import gc
import inspect
import io
import multiprocessing
import os
import pickle
import socket
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from multiprocessing.connection import wait
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from bnteach import checks
from bnteach.batchnorm import BatchNorm1d as _ScratchBatchNorm1d
from bnteach.batchnorm import BatchNorm2d as _ScratchBatchNorm2d
from bnteach.batchnorm import (
    BatchRenorm1d,
    ChannelMismatchError,
    DtypeMismatchError,
    GhostBatchNorm1d,
    bn_layers,
    check_settings,
    layer_forward,
)
from bnteach.models import MLP
from bnteach.stats import seeds

__all__ = [
    "MAX_WORLD_SIZE",
    "LaunchError",
    "WorkerError",
    "LaunchTimeout",
    "launch",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "batch_indices",
    "ddp_train",
    "time_all_reduce",
    "demo",
    "several",
    "syncbn_check",
    "syncbn_traffic",
    "torch_syncbn_on_cpu",
    "TORCH_SYNCBN_ON_CPU",
    "one_process",
    "main",
]

MAX_WORLD_SIZE = 16  # processes on one machine; more only thrash a laptop's cores

# ----------------------------------------------------------------------------- launch


class LaunchError(RuntimeError):
    """:func:`launch` did not get a result from every rank; no process is left running."""


class WorkerError(LaunchError):
    """A rank raised an exception, or its process ended without a result.

    rank: which process; exc_type: the exception's class name (None if the process died);
    message: its message; traceback: the worker's traceback as text ('' if it died).
    """

    def __init__(self, rank, exc_type, message, traceback=""):
        self.rank, self.exc_type, self.message, self.traceback = rank, exc_type, message, traceback
        if exc_type is None:
            text = f"the process of rank {rank} {message}"
        else:
            text = f"rank {rank} raised {exc_type}: {message}"
        if traceback:
            text += f"\n\nThe traceback in the process of rank {rank}:\n{traceback.rstrip()}"
        super().__init__(text)


class LaunchTimeout(LaunchError, TimeoutError):
    """Some ranks did not finish within ``timeout`` seconds. ranks: their numbers."""

    def __init__(self, ranks, timeout):
        self.ranks, self.timeout = list(ranks), timeout
        which = ", ".join(str(r) for r in self.ranks)
        super().__init__(
            f"rank{'s' if len(self.ranks) > 1 else ''} {which} did not finish within "
            f"timeout={timeout:g} s (starting the processes included); every process was "
            f"stopped. A rank waits forever when another rank skips a collective call (an "
            f"all_reduce, a SyncBatchNorm forward, a DDP step) or stops early; if the work is "
            f"only slow, pass a larger timeout."
        )


def _check_world_size(world_size):
    world_size = checks.whole_number(world_size, "world_size", minimum=1, example=2)
    if world_size > MAX_WORLD_SIZE:
        raise ValueError(
            f"world_size={world_size} processes is more than this machine should run at once "
            f"(at most {MAX_WORLD_SIZE}): each process stands in for one device and needs its "
            f"own copy of torch. Use 2 to 4 devices for the lessons."
        )
    return world_size


def _check_fn(fn):
    """Raise unless fn is a function that a fresh (spawned) process can import by name."""
    if not callable(fn):
        raise TypeError(
            f"fn must be a function fn(rank, world_size, ...) defined in a module, such as "
            f"bnteach.distributed.ddp_train; got {checks.describe(fn)}."
        )
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if module == "__main__":
        where = "in a notebook cell or in the script you run (the module __main__)"
    elif "<lambda>" in qualname:
        where = "as a lambda"
    elif "<locals>" in qualname:
        where = "inside another function"
    else:
        return
    raise ValueError(
        f"launch cannot run {qualname or fn!r}: it is defined {where}. launch starts fresh "
        f"processes (start method 'spawn'), and each one imports fn by its module and name, "
        f"which cannot be done for it. Put the function in a .py file (e.g. my_workers.py next "
        f"to your notebook), import it (from my_workers import my_worker) and pass that."
    )


class _Pickler(pickle.Pickler):
    """A pickler that refuses classes and functions of __main__: a spawned process has none."""

    def reducer_override(self, obj):
        if isinstance(obj, type) or callable(obj):
            if getattr(obj, "__module__", None) == "__main__":
                raise pickle.PicklingError(
                    f"{getattr(obj, '__qualname__', obj)!r} is defined in __main__ (a notebook "
                    f"or the script you run), which the new processes cannot import"
                )
        return NotImplemented


def _pack(fn, args, kwargs):
    """fn and its arguments as bytes, checked here so that bad arguments fail before a start."""
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump((fn, args, kwargs))
    except Exception as exc:  # pickling raises many kinds (TypeError, AttributeError, ...)
        raise TypeError(
            f"launch sends fn and its arguments to the new processes by pickling them, and "
            f"this failed: {type(exc).__name__}: {exc}. Pass plain data (numbers, strings, "
            f"lists, dicts, tensors) and functions or classes defined in a .py module; not "
            f"lambdas, open files, generators, or objects whose class a notebook defines."
        ) from None
    return buffer.getvalue()


def _loopback_interface():
    """The name of the loopback network interface ('lo' on Linux, 'lo0' on macOS), or None."""
    try:
        names = {name for _, name in socket.if_nameindex()}
    except (AttributeError, OSError):
        return None
    return next((name for name in ("lo", "lo0") if name in names), None)


def _use_loopback():
    """Make gloo talk over the loopback interface unless the user chose one (GLOO_SOCKET_IFNAME):
    every rank runs on this machine, and the host name may resolve to an unreachable address."""
    name = _loopback_interface()
    if name is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", name)


def _join_group(rank, world_size, timeout, init_method=None):
    """init_process_group on gloo, with an error that says what to check when it fails."""
    try:
        dist.init_process_group(
            "gloo",
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout),
        )
    except Exception as exc:
        raise RuntimeError(
            f"rank {rank} could not join the gloo process group ({type(exc).__name__}: {exc}). "
            f"The processes talk over the loopback network (127.0.0.1): check that it is up "
            f"(in a fresh network namespace, run `ip link set lo up` first)."
        ) from exc


def _leave_group():
    """destroy_process_group, after collecting the garbage: destroying the group while a
    DistributedDataParallel wrapper is still alive can hang."""
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def _pack_result(result):
    try:
        return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"fn returned something that cannot be sent back ({type(exc).__name__}: {exc}). "
            f"Return plain data: numbers, lists, dicts and tensors (e.g. a copy of "
            f"model.state_dict()), never a DistributedDataParallel wrapper or a process group."
        ) from None


def _worker(rank, world_size, init_method, timeout, payload, conn):
    """The body of every launched process: join the group, run fn, send back bytes."""
    torch.set_num_threads(1)
    _use_loopback()
    try:
        fn, args, kwargs = pickle.loads(payload)
        _join_group(rank, world_size, timeout, init_method)
        message = ("ok", _pack_result(fn(rank, world_size, *args, **kwargs)))
    except BaseException as exc:  # everything goes back to the parent, which decides
        message = ("error", type(exc).__name__, str(exc), traceback.format_exc())
    # Plain bytes through a pipe: tensors sent through a torch queue would point into this
    # process's shared memory, which is gone once it exits.
    conn.send_bytes(pickle.dumps(message))
    if message[0] == "ok":  # after an error the parent stops every process anyway
        _leave_group()
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # End here, skipping the interpreter's teardown of torch's modules (1-2 s on a busy
    # 2-core machine, for nothing: the result is sent and the group is left).
    os._exit(0 if message[0] == "ok" else 1)


def _poll(proc, reader, rank):
    """rank's message if it has sent one, None while it works; WorkerError if it died."""
    alive = proc.is_alive()  # first: a process writes its message before it exits
    if reader.poll():
        try:
            return pickle.loads(reader.recv_bytes())
        except EOFError:
            pass
    elif alive:
        return None
    proc.join()
    raise WorkerError(
        rank,
        None,
        f"ended (exit code {proc.exitcode}) without returning a result. If you call launch "
        f"from a script, put the call under `if __name__ == '__main__':` (spawn imports the "
        f"script again in every process); a crash (out of memory, a segmentation fault) also "
        f"ends a process this way.",
    )


def _receive(procs, readers, deadline, timeout):
    """Each rank's result bytes, in rank order; raise at the first error or at the deadline."""
    results, pending = [None] * len(procs), set(range(len(procs)))
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LaunchTimeout(sorted(pending), timeout)
        wait([readers[r] for r in pending] + [procs[r].sentinel for r in pending], left)
        for rank in sorted(pending):
            message = _poll(procs[rank], readers[rank], rank)
            if message is None:
                continue
            pending.discard(rank)
            if message[0] == "error":
                raise WorkerError(rank, *message[1:])
            results[rank] = message[1]
    return results


def _stop(procs, grace):
    """Wait up to ``grace`` seconds for the processes to exit, then kill the rest by PID."""
    end = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.0, end - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    for proc in procs:
        proc.join()


MAX_TIMEOUT = 86400.0  # seconds: longer waits overflow the clocks that time them


def launch(fn, world_size, *args, timeout=60, **kwargs):
    """Run ``fn(rank, world_size, *args, **kwargs)`` in ``world_size`` processes; return the
    list of their return values, in rank order.

    Each process stands in for one device: it is started fresh (start method 'spawn'), uses
    one thread, and has joined a gloo process group (``torch.distributed`` is initialised with
    ``rank`` and ``world_size``; the rendezvous is a private temporary file, the traffic goes
    over 127.0.0.1) before fn runs; the group is destroyed after fn returns.

    fn must live in an importable module (not a notebook cell, not a lambda): each process
    imports it by name. Its arguments and its return value travel pickled, so return plain
    data (numbers, lists, dicts, tensors), never a DistributedDataParallel wrapper. A process
    ends as soon as its result is sent (``os._exit``, without Python's exit handlers): close
    any file fn writes (``with open(...)``) before it returns.

    timeout: seconds for the whole launch, starting the processes included (each one imports
    torch, 1-3 s). A rank that raises makes launch raise :class:`WorkerError` (its rank, the
    exception's type and message, and its traceback text); a rank that has not finished by the
    deadline makes it raise :class:`LaunchTimeout`. Either way, and on a keyboard interrupt,
    every process is stopped before launch returns: none outlives it.
    """
    world_size = _check_world_size(world_size)
    timeout = checks.positive_number(timeout, "timeout", example=60)
    if timeout > MAX_TIMEOUT:
        raise ValueError(
            f"timeout must be at most {MAX_TIMEOUT:g} s (a day), got {timeout:g}: it is how "
            f"long launch waits for the processes before it ends them, e.g. timeout=60."
        )
    _check_fn(fn)
    payload = _pack(fn, args, kwargs)
    context = multiprocessing.get_context("spawn")
    deadline = time.monotonic() + timeout
    procs, readers = [], []
    with tempfile.TemporaryDirectory(prefix="bnteach-launch-") as folder:
        init_method = Path(folder, "rendezvous").as_uri()
        try:
            for rank in range(world_size):
                reader, writer = context.Pipe(duplex=False)
                readers.append(reader)
                proc = context.Process(
                    target=_worker,
                    args=(rank, world_size, init_method, timeout, payload, writer),
                    name=f"bnteach-rank-{rank}",
                )
                try:
                    proc.start()
                    procs.append(proc)
                finally:
                    writer.close()  # the child's end: only then does a dead child read as EOF
            results = _receive(procs, readers, deadline, timeout)
            grace = min(10.0, max(0.0, deadline - time.monotonic()))
        except BaseException:
            grace = 0.0
            raise
        finally:
            _stop(procs, grace)
            for reader in readers:
                reader.close()
    return [pickle.loads(result) for result in results]


# ----------------------------------------------------------------------------- SyncBatchNorm


def _per_channel(v, like):
    """A (C,) tensor shaped to broadcast against ``like`` of shape (N, C, *)."""
    return v.reshape((1, -1) + (1,) * (like.dim() - 2))


def _reduce_dims(x):
    """The dimensions a channel's statistics run over: N and every spatial one."""
    return [0, *range(2, x.dim())]


def _compute_dtype(input):
    """float16/bfloat16 are normalized in float32, as torch does; others in their own dtype."""
    low = (torch.float16, torch.bfloat16)
    return torch.float32 if input.dtype in low else input.dtype


def _input_problem(input, layer):
    """What is wrong with input for this layer, as (exception class, text); None if nothing."""
    if not input.is_floating_point():
        return TypeError, f"has dtype {input.dtype}; convert it with x.float()"
    if input.shape[1] != layer.num_features:
        return ChannelMismatchError, (
            f"has {input.shape[1]} channels (input.shape[1]), but the layer has "
            f"num_features = {layer.num_features}"
        )
    if layer.weight is not None and layer.weight.dtype != _compute_dtype(input):
        return DtypeMismatchError, (
            f"has dtype {input.dtype}, but the layer holds {layer.weight.dtype}; convert one "
            f"of them (model.double(), or x.to(model_dtype))"
        )
    return None


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch norm over the union of every rank's batch, given its statistics.

    The forward receives the global mean and biased variance (C,) and count n, already
    reduced by the module (the layer's first all_reduce), which checks them on every rank
    before anything changes. The backward does the layer's second all_reduce.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, mean, var, eps, n, group):
        dtype = _compute_dtype(input)
        invstd = torch.rsqrt(var + eps).to(dtype)
        xhat = (input.to(dtype) - _per_channel(mean.to(dtype), input)) * _per_channel(invstd, input)
        out = xhat
        if weight is not None:
            out = out * _per_channel(weight, input)
        if bias is not None:
            out = out + _per_channel(bias, input)
        ctx.save_for_backward(xhat, weight, invstd)
        ctx.n, ctx.group = n, group
        return out.to(input.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        xhat, weight, invstd = ctx.saved_tensors
        dy = grad_output.to(xhat.dtype)
        dims = _reduce_dims(xhat)
        sum_dy, sum_dy_xhat = dy.sum(dims), (dy * xhat).sum(dims)
        # the second all_reduce of the layer: global sum(dy) and sum(dy * xhat) per channel
        totals = torch.cat([sum_dy, sum_dy_xhat]).to(torch.float64)
        dist.all_reduce(totals, group=ctx.group)
        total_dy, total_dy_xhat = totals.to(xhat.dtype).chunk(2)
        scale = invstd if weight is None else invstd * weight.to(xhat.dtype)
        grad_input = (
            dy
            - _per_channel(total_dy / ctx.n, xhat)
            - xhat * _per_channel(total_dy_xhat / ctx.n, xhat)
        ) * _per_channel(scale, xhat)
        # this rank's share of the weight and bias gradients; DDP sums (averages) the ranks'
        need_weight, need_bias = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_weight = sum_dy_xhat.to(weight.dtype) if need_weight else None
        grad_bias = sum_dy.to(weight.dtype) if need_bias else None
        return (
            grad_input.to(grad_output.dtype),
            grad_weight,
            grad_bias,
            None,
            None,
            None,
            None,
            None,
        )


class SyncBatchNorm(_BatchNorm):
    """Batch Normalization with the statistics of the GLOBAL batch: every rank's samples.

    Input (N, C) or (N, C, *) (e.g. (N, C, H, W)); output the same shape. N may differ between
    ranks, and a rank may have N = 0 while others have samples, as in torch's SyncBatchNorm.
    Parameters weight, bias (C,) and buffers running_mean, running_var (C,),
    num_batches_tracked (): the state_dict keys of nn.BatchNorm1d/2d. momentum is the weight
    of the NEW statistic (None: a cumulative average), as in PyTorch.

    A training forward inside an initialised process group of more than one rank equals
    nn.BatchNorm on the concatenation of every rank's batch: one all_reduce of the per-channel
    [sum x, sum x^2, count] (see the module docstring), normalization with the global biased
    variance, running_var updated with the global unbiased one; its backward does one
    all_reduce of [sum dy, sum dy * xhat]. The weight and bias gradients are this rank's share
    (DistributedDataParallel combines the ranks', as for any parameter). The first training
    forward of a layer also checks, with one 2-number all_reduce, that every rank's layer has
    the same num_features. An input that does not fit (channel count, dtype) on any rank makes
    EVERY rank raise, and a global batch of one value per channel too: no rank is left waiting.

    Like torch's nn.SyncBatchNorm (torch 2.13, torch/nn/modules/batchnorm.py), it communicates
    only in training mode, and falls back to plain batch norm on the local batch (what
    nn.BatchNorm does) in eval mode and outside an initialised process group
    (``torch.distributed.is_initialized()`` False). In a group of one process it falls back
    too, as torch's does on a GPU (on the CPU torch's raises there: its device check comes
    first). That fallback is bnteach.batchnorm's BatchNorm (:func:`~bnteach.batchnorm.
    layer_forward`), equal to torch's up to rounding, with its teaching errors: a call that
    fails, or whose batch statistics are NaN or infinite, leaves running_mean, running_var and
    num_batches_tracked as they were (torch counts the failed call and writes the NaN).

    Why not torch's own nn.SyncBatchNorm: it needs a GPU. Inside a process group on the CPU it
    raises "ValueError: SyncBatchNorm expected input tensor to be on GPU or XPU or
    privateuseone", and the kernel it relies on has none for the CPU ("NotImplementedError:
    Could not run 'aten::batch_norm_stats' with arguments from the 'CPU' backend").
    """

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        process_group=None,
        device=None,
        dtype=None,
        *,
        bias=True,
    ):
        num_features = checks.whole_number(num_features, "num_features", minimum=1, example=64)
        check_settings(eps, momentum, affine, track_running_stats, bias, dtype)
        if device is not None:
            checks.device(device)
        if process_group is not None and not isinstance(process_group, dist.ProcessGroup):
            raise TypeError(
                f"process_group must be None (every rank) or a group made by "
                f"torch.distributed.new_group(ranks), got {checks.describe(process_group)}."
            )
        extra = {} if bias else {"bias": False}  # torch >= 2.13 only knows bias=
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, **extra
        )
        self.process_group = process_group
        self._agreed = None  # the group whose ranks were found to agree on num_features

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(
                f"SyncBatchNorm expects input of shape (N, C) or (N, C, *), got "
                f"{input.dim()}-D input of shape {tuple(input.shape)}. For one sample of "
                f"shape (C,), add a batch dimension with x.unsqueeze(0)."
            )

    def _group(self):
        """The process group to synchronise over, or None when there is no other rank."""
        if not (dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None

    def forward(self, input):
        """input (N, C) or (N, C, *) -> output of the same shape (see the class docstring)."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"SyncBatchNorm expects a torch.Tensor, got {checks.describe(input)}.")
        self._check_input_dim(input)
        checks.flag(self.training, "SyncBatchNorm.training (set it with .train() or .eval())")
        checks.momentum(self.momentum)
        checks.positive_number(self.eps, "eps", example=1e-5)
        group = self._group() if self.training else None
        if group is None:  # plain batch norm, as torch's SyncBatchNorm does (see the docstring)
            return layer_forward(self, input)
        self._check_layers_agree(group)
        n, mean, var = self._global_statistics(input, group)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if n > 0:
                self._update_running_stats(mean, var, n)
        if n == 0:  # every rank is empty: an empty output, as nn.BatchNorm gives
            return input * 0
        return _SyncBatchNormFunction.apply(
            input, self.weight, self.bias, mean, var, self.eps, n, group
        )

    def _check_layers_agree(self, group):
        """Once per group: every rank's layer must have the same num_features, or the sums
        below would not line up (every rank raises, none waits)."""
        key = (id(group), dist.get_world_size(group))
        if self._agreed == key:
            return
        sizes = torch.tensor([self.num_features, -self.num_features], dtype=torch.float64)
        dist.all_reduce(sizes, op=dist.ReduceOp.MAX, group=group)
        largest, smallest = int(sizes[0]), -int(sizes[1])
        if largest != smallest:
            raise ChannelMismatchError(
                f"SyncBatchNorm layers differ across ranks: num_features goes from {smallest} "
                f"to {largest} (this rank, {dist.get_rank(group)}, has {self.num_features}). "
                f"Build the same model on every rank. Every rank raises this error."
            )
        self._agreed = key

    def _global_statistics(self, input, group):
        """(n, mean (C,), biased var (C,)) of the global batch, float64: ONE all_reduce of
        [S1 (C), S2 (C), n, one flag per rank] (a flag marks a rank whose input is unfit)."""
        rank, size, C = dist.get_rank(group), dist.get_world_size(group), self.num_features
        packed = torch.zeros(2 * C + 1 + size, dtype=torch.float64)
        problem = _input_problem(input, self)
        if problem is None:
            x = input.detach().transpose(0, 1).reshape(C, -1).to(torch.float64)
            packed[:C], packed[C : 2 * C] = x.sum(1), (x * x).sum(1)
            packed[2 * C] = x.shape[1]
        else:
            packed[2 * C + 1 + rank] = 1
        dist.all_reduce(packed, group=group)
        _raise_if_rejected(packed[2 * C + 1 :], problem, rank, input)
        n = int(packed[2 * C])
        if n == 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got 1 value per "
                f"channel in the global batch (this rank's input has size "
                f"{tuple(input.shape)}). Every rank raises this error; give the ranks more "
                f"samples, or call model.eval() to use the running statistics."
            )
        mean = packed[:C] / max(n, 1)
        var = (packed[C : 2 * C] / max(n, 1) - mean * mean).clamp_min(0)
        return n, mean, var

    def _update_running_stats(self, mean, var, n):
        if self.momentum is None:  # cumulative average: weight 1 / (batches so far)
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        with torch.no_grad():
            unbiased = var * n / (n - 1)
            self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype) * factor)
            self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype) * factor)

    def extra_repr(self):
        return super().extra_repr() + ", synchronised across ranks"


def _raise_if_rejected(flags, problem, rank, input):
    """Every rank raises when any rank's input was unfit: the local reason, or whose it was."""
    bad = [r for r, flag in enumerate(flags.tolist()) if flag > 0]
    if not bad:
        return
    if problem is not None:
        kind, text = problem
        raise kind(
            f"SyncBatchNorm on rank {rank}: the input of shape {tuple(input.shape)} {text}. "
            f"Every rank stops at this layer, so that none waits for the others."
        )
    ranks = ", ".join(str(r) for r in bad)
    raise ValueError(
        f"SyncBatchNorm: the input on rank {ranks} does not fit the layer (that rank's error "
        f"says why); this rank ({rank}) stops too, so that none waits for the others."
    )


_CONVERTIBLE = (_BatchNorm, _ScratchBatchNorm1d, _ScratchBatchNorm2d)


def convert_sync_batchnorm(module, process_group=None):
    """``module`` with every batch-norm layer replaced by a :class:`SyncBatchNorm`.

    Like torch's ``nn.SyncBatchNorm.convert_sync_batchnorm``: recursive; the new layer shares
    the old one's weight and bias (the same Parameters, so requires_grad and any optimizer
    keep working) and its running statistics, and keeps its training flag. Returns the
    converted module: the same object unless ``module`` is itself a batch-norm layer. Converts
    torch's layers (every subclass of nn.modules.batchnorm._BatchNorm: BatchNorm1d/2d/3d,
    nn.SyncBatchNorm, SyncBatchNorm) and bnteach.batchnorm's BatchNorm1d and BatchNorm2d.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"convert_sync_batchnorm needs an nn.Module (a model or a layer), got "
            f"{checks.describe(module)}."
        )
    for name, m in module.named_modules():  # before anything changes
        if isinstance(m, (GhostBatchNorm1d, BatchRenorm1d)):
            raise TypeError(
                f"convert_sync_batchnorm: {name or 'the module'} is a {type(m).__name__}, "
                f"which has no synchronised version here (ghost BN stands in for per-device BN "
                f"in one process; renorm corrects BN's statistics). Build the model with "
                f"norm='batch' and convert that; nothing was changed."
            )
    return _convert(module, process_group)


def _convert(module, process_group):
    converted = module
    if isinstance(module, _CONVERTIBLE):
        like = module.running_mean if module.running_mean is not None else module.weight
        factory = {} if like is None else {"device": like.device, "dtype": like.dtype}
        converted = SyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            process_group,
            bias=module.bias is not None,
            **factory,
        )
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
    for name, child in module.named_children():
        converted.add_module(name, _convert(child, process_group))
    return converted


# ----------------------------------------------------------------------------- workers


def batch_indices(n_samples, global_batch, steps, seed):
    """Row indices of ``steps`` global batches, a LongTensor of shape (steps, global_batch).

    Each epoch is a fresh random permutation of range(n_samples) (a generator seeded with
    ``seed``) cut into batches of ``global_batch``; the last partial batch is dropped. Rank r
    of W takes columns [r * global_batch // W, (r + 1) * global_batch // W) of each row.
    """
    n_samples = checks.whole_number(n_samples, "n_samples", minimum=1, example=800)
    global_batch = checks.whole_number(global_batch, "global_batch", minimum=1, example=16)
    steps = checks.whole_number(steps, "steps", minimum=1, example=10)
    seed = checks.seed(seed)
    if global_batch > n_samples:
        raise ValueError(
            f"a global batch of {global_batch} samples needs at least as many samples, got "
            f"n_samples={n_samples}."
        )
    generator = torch.Generator().manual_seed(seed)
    per_epoch, rows = n_samples // global_batch, []
    while len(rows) < steps:
        order = torch.randperm(n_samples, generator=generator)
        rows += list(order[: per_epoch * global_batch].view(per_epoch, global_batch))
    return torch.stack(rows[:steps])


def _dtype(dtype):
    names = {"float32": torch.float32, "float64": torch.float64}
    if isinstance(dtype, torch.dtype) and dtype in names.values():
        return dtype
    if isinstance(dtype, str) and dtype in names:
        return names[dtype]
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")


def _ddp(model, broadcast_buffers):
    """model wrapped in DistributedDataParallel. torch 2.13 renamed ``broadcast_buffers``
    (copy rank 0's buffers to every rank at the start of each forward) to
    ``forward_sync_buffers`` and deprecated the old name: pass whichever this torch knows."""
    known = inspect.signature(DistributedDataParallel).parameters
    name = "forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers"
    return DistributedDataParallel(model, **{name: broadcast_buffers})


class _Trace:
    """Records, at every forward of one BN layer: its running_mean as the layer starts (after
    DDP's broadcast, if any) and the mean of its input; and the running_mean after the step."""

    def __init__(self, layer):
        self.layer, self.seen, self.batch_mean, self.after = layer, [], [], []
        self.handle = layer.register_forward_pre_hook(self._hook)

    def _hook(self, layer, inputs):
        self.seen.append(layer.running_mean.detach().clone())
        self.batch_mean.append(inputs[0].detach().mean(_reduce_dims(inputs[0])))

    def step_done(self):
        self.after.append(self.layer.running_mean.detach().clone())

    def result(self):
        self.handle.remove()
        return {k: torch.stack(getattr(self, k)) for k in ("seen", "batch_mean", "after")}


def ddp_train(
    rank,
    world_size,
    X,
    y,
    *,
    seed,
    steps,
    per_device,
    lr=0.01,
    sync_bn=False,
    broadcast_buffers=True,
    dtype="float64",
    bias=True,
):
    """A launch worker: train the tutorial's BN net with DistributedDataParallel on gloo.

    X (n, features), y (n, 1) with 0/1 labels: the training set, the same on every rank.
    Model ``bnteach.models.MLP(features, (128, 64), norm="batch")`` initialised from ``seed``,
    in ``dtype``; SyncBN layers if ``sync_bn`` (converted), else per-device BN. Each of
    ``steps`` steps takes a global batch of per_device * world_size rows
    (:func:`batch_indices` with ``seed``); this rank trains on its contiguous shard, rows
    [rank * per_device, (rank + 1) * per_device), with Adam(lr) and BCEWithLogitsLoss (mean
    over the shard; DDP averages the ranks' gradients). ``broadcast_buffers``: DDP copies rank
    0's buffers to every rank at the start of each forward. ``bias``: whether the hidden Linear
    layers have a bias. It is redundant right before BN, and its gradient is rounding noise
    that Adam scales up by lr / eps: two correct runs then differ in it (and in running_mean,
    which includes it) by ~1e-10 in float64, while every other number agrees to ~1e-15.

    Returns this rank's dict: "state" (a copy of the model's state_dict: parameters and BN
    buffers), "losses" (its shard's loss per step), "trace" (the first BN layer's
    running_mean as its forward starts, its input's mean, and its running_mean after the step,
    each (steps, 128)), "seconds_per_step" (wall time per step after the first, on this rank).

    With ``broadcast_buffers`` the ranks' running statistics are equal at the START of each
    forward (the trace's "seen"), not after it: each rank then adds its own shard's update.
    """
    dtype = _dtype(dtype)
    torch.manual_seed(seed)
    model = MLP(X.shape[1], (128, 64), norm="batch", bias=bias).to(dtype)
    if sync_bn:
        model = convert_sync_batchnorm(model)
    ddp = _ddp(model, broadcast_buffers)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    trace, losses = _Trace(bn_layers(model)[0]), []
    start = time.perf_counter()
    for step, rows in enumerate(batch_indices(len(X), per_device * world_size, steps, seed)):
        if step == 1:  # time the steps after the first, which also sets DDP's buckets up
            start = time.perf_counter()
        shard = rows[rank * per_device : (rank + 1) * per_device]
        optimizer.zero_grad()
        loss = loss_fn(ddp(X[shard].to(dtype)), y[shard].to(dtype))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        trace.step_done()
    seconds = (time.perf_counter() - start) / max(steps - 1, 1)
    del ddp, optimizer  # no DDP wrapper may outlive the process group (launch destroys it)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"state": state, "losses": losses, "trace": trace.result(), "seconds_per_step": seconds}


def time_all_reduce(rank, world_size, numel=257, repeats=200):
    """A launch worker: the median seconds of one all_reduce of ``numel`` float64 numbers
    (257 = 2C + 1 for a 128-channel SyncBN layer), over ``repeats`` calls after a warm-up."""
    tensor, times = torch.zeros(numel, dtype=torch.float64), []
    for _ in range(10):
        dist.all_reduce(tensor)
    for _ in range(repeats):
        start = time.perf_counter()
        dist.all_reduce(tensor)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def demo(rank, world_size, per_device=3, channels=3, seed=None):
    """A launch (or torchrun) worker: per-device BN against SyncBN on one small global batch.

    The global batch (world_size * per_device, channels), float64, drawn from ``seed``
    (default ``bnteach.stats.seeds(1)[0]``), is the same on every rank; this rank takes its
    rows. Returns {"lines": text lines to print, "max_diff": the largest difference between
    SyncBN and nn.BatchNorm1d on the whole batch (:func:`syncbn_check`: output, gradients,
    running statistics)}.
    """
    seed = seeds(1)[0] if seed is None else seed
    generator = torch.Generator().manual_seed(seed)
    rows = world_size * per_device
    x = torch.randn(rows, channels, generator=generator, dtype=torch.float64) * 2 + 1
    mine = slice(rank * per_device, (rank + 1) * per_device)

    per_device_bn = nn.BatchNorm1d(channels).double()
    per_device_bn(x[mine])
    sync = SyncBatchNorm(channels).double()
    with torch.no_grad():
        sync(x[mine])  # its running statistics, for the lines below
    # SyncBN against BN on the whole batch: output, gradients and running statistics
    diffs = syncbn_check(rank, world_size, [per_device] * world_size, channels, seed)
    max_diff = max(diffs.values())

    def show(t):
        return "[" + ", ".join(f"{v:+.3f}" for v in t.tolist()) + "]"

    lines = [
        f"rank {rank}: {label:<32}{show(value)}"
        for label, value in [
            (f"the mean of its {per_device} samples", x[mine].mean(0)),
            ("per-device BN running_mean", per_device_bn.running_mean),
            ("SyncBN running_mean", sync.running_mean),
        ]
    ]
    return {"lines": lines, "max_diff": max_diff, "global_mean": show(x.mean(0))}


# ----------------------------------------------------------------------------- notebook 10


def several(rank, world_size, calls):
    """A launch worker that runs other workers in turn, so that one launch (one start of the
    processes, 2-5 s) serves many measurements: ``calls`` is a list of (name, fn, kwargs),
    each fn a worker ``fn(rank, world_size, **kwargs)`` defined in a module. Returns
    {name: fn's result}. Every rank must get the same calls, in the same order: each
    collective call must be made by every rank."""
    if not isinstance(calls, (list, tuple)) or not all(
        isinstance(c, (list, tuple)) and len(c) == 3 and callable(c[1]) for c in calls
    ):
        raise TypeError(
            "several expects calls = [(name, worker, kwargs), ...], e.g. "
            "[('demo', bnteach.distributed.demo, {'per_device': 3})]."
        )
    return {name: fn(rank, world_size, **kwargs) for name, fn, kwargs in calls}


def syncbn_check(rank, world_size, sizes, channels=4, seed=None):
    """A launch worker: :class:`SyncBatchNorm` on this rank's rows against nn.BatchNorm1d on
    the whole global batch in one process, float64, one training step.

    sizes: one per-rank batch size per rank (unequal sizes allowed, 0 for a rank allowed if
    the total is at least 2). The global batch (sum(sizes), channels), its upstream gradient
    and the layers' weight and bias are drawn from ``seed`` (default seeds(1)[0]), the same on
    every rank. Returns {what: the largest absolute difference} for "output" and "input
    gradient" (this rank's rows), "weight gradient" and "bias gradient" (the ranks' shares
    summed with an all_reduce, as DDP sums them) and "running_mean", "running_var".
    """
    if not isinstance(sizes, (list, tuple)) or len(sizes) != world_size:
        raise ValueError(f"sizes needs one batch size per rank ({world_size}), got {sizes!r}.")
    seed = seeds(1)[0] if seed is None else seed
    generator = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    x = torch.randn(total, channels, generator=generator, dtype=torch.float64) * 2 + 1
    upstream = torch.randn(total, channels, generator=generator, dtype=torch.float64)
    weight = torch.rand(channels, generator=generator, dtype=torch.float64) + 0.5
    bias = torch.randn(channels, generator=generator, dtype=torch.float64)
    mine = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
    layers = []
    for layer in (SyncBatchNorm(channels).double(), nn.BatchNorm1d(channels).double()):
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        layers.append(layer)
    sync, whole = layers
    x_mine = x[mine].clone().requires_grad_()
    out_mine = sync(x_mine)
    (out_mine * upstream[mine]).sum().backward()
    grads = torch.cat([sync.weight.grad, sync.bias.grad])
    dist.all_reduce(grads)  # DDP sums (averages) the ranks' parameter gradients
    x_all = x.clone().requires_grad_()
    out_all = whole(x_all)
    (out_all * upstream).sum().backward()
    pairs = {
        "output": (out_mine, out_all[mine]),
        "input gradient": (x_mine.grad, x_all.grad[mine]),
        "weight gradient": (grads[:channels], whole.weight.grad),
        "bias gradient": (grads[channels:], whole.bias.grad),
        "running_mean": (sync.running_mean, whole.running_mean),
        "running_var": (sync.running_var, whole.running_var),
    }
    return {
        k: float((a - b).detach().abs().max()) if a.numel() else 0.0 for k, (a, b) in pairs.items()
    }


def syncbn_traffic(rank, world_size, features=20, per_device=4, steps=3):
    """A launch worker: how many all_reduce calls the SyncBN layers of the tutorial's BN net
    (``MLP(features, (128, 64), norm="batch")``, converted) make. Returns {"layers": the
    number of SyncBN layers, "per_step": calls in each of ``steps`` training steps (forward
    and backward), "eval": calls in one eval-mode forward}. Counts the calls of
    ``torch.distributed.all_reduce`` (SyncBN's), not DDP's own gradient traffic."""
    torch.manual_seed(0)
    model = convert_sync_batchnorm(MLP(features, (128, 64), norm="batch")).double()
    x = torch.randn(per_device, features, dtype=torch.float64)
    calls, real = [], dist.all_reduce

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    per_step = []
    dist.all_reduce = counting
    try:
        for _ in range(steps):
            before = len(calls)
            model.train()(x).sum().backward()
            per_step.append(len(calls) - before)
        before = len(calls)
        with torch.no_grad():
            model.eval()(x)
        in_eval = len(calls) - before
    finally:
        dist.all_reduce = real
    return {"layers": len(bn_layers(model)), "per_step": per_step, "eval": in_eval}


TORCH_SYNCBN_ON_CPU = (
    "torch's nn.SyncBatchNorm needs a GPU. Inside an initialised process group, in training "
    "mode, it refuses CPU tensors (the ValueError above): the kernels it gathers the "
    "statistics with (batch_norm_stats, batch_norm_gather_stats_with_counts) exist only for "
    "CUDA and other accelerators. Outside a process group it does not raise: it quietly "
    "computes plain BatchNorm on the local batch. On the CPU use "
    "bnteach.distributed.SyncBatchNorm (or bnteach.distributed.convert_sync_batchnorm), which "
    "computes the same with gloo's all_reduce; on GPUs use torch's own, with NCCL."
)


def torch_syncbn_on_cpu(rank, world_size, channels=3):
    """A launch worker: try torch's ``nn.SyncBatchNorm`` in training mode on CPU tensors
    inside this process group. Returns {"error": None if it ran, else "ValueError: <torch's
    message>", "explanation": :data:`TORCH_SYNCBN_ON_CPU`}."""
    layer = nn.SyncBatchNorm(channels)
    try:
        layer.train()(torch.randn(4, channels))
    except (ValueError, NotImplementedError, RuntimeError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "explanation": TORCH_SYNCBN_ON_CPU}
    return {"error": None, "explanation": TORCH_SYNCBN_ON_CPU}


def one_process(X, y, X_val, y_val, *, seed, steps, per_device, world_size, sync_bn, lr=0.01):
    """What :func:`ddp_train` (``bias=False``, float64) trains in ``world_size`` processes,
    trained in ONE process by the collection's engine, ``bnteach.sweep.run``.

    SyncBN across the ranks is plain BN on the global batch (``norm="batch"``); per-device BN
    is ghost BN with chunks of ``per_device`` rows (``norm="ghost"``), whose running
    statistics are chunk 0's: rank 0's, which DDP's broadcast_buffers gives every rank. The
    start weights are ddp_train's (``inits=``), and the training set is arranged so that the
    engine's own shuffle of it visits ddp_train's global batches (:func:`batch_indices`) in
    order. X (n, F), y (n, 1): the training set; X_val, y_val: the validation split. Returns
    the engine's :class:`~bnteach.sweep.SweepResult` (one replica); ``.to_modules()[0]`` is
    the trained model, comparable with rank 0's ``ddp_train(...)["state"]``.
    """
    from bnteach import sweep  # here: launched processes need not import the engine

    world_size = _check_world_size(world_size)
    sync_bn = checks.flag(sync_bn, "sync_bn")
    per_device = checks.whole_number(per_device, "per_device", minimum=1, example=4)
    if per_device == 1 and not sync_bn:
        raise ValueError(
            "per_device=1 with per-device BN: each device would normalise ONE sample, which BN "
            "cannot do in training (its variance is 0). Use at least 2 samples per device, or "
            "sync_bn=True (SyncBN normalises over every device's samples)."
        )
    if sweep.check_data((X, X_val, y, y_val)) != "binary":  # the engine's data contract
        raise ValueError(
            "one_process trains ddp_train's net, one logit per sample: y and y_val must be "
            "0/1 targets of shape (n, 1), as load_data() gives them."
        )
    global_batch = per_device * world_size
    rows = batch_indices(len(X), global_batch, steps, seed).flatten()
    if len(set(rows.tolist())) != len(rows):
        raise ValueError(
            f"one_process replays the DDP run as ONE epoch of the engine, so the {steps} steps "
            f"of {global_batch} rows must fit in one pass over the {len(X)} training samples "
            f"(at most {len(X) // global_batch} steps)."
        )
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    arranged = torch.empty_like(rows)
    arranged[order] = rows  # the engine's epoch visits arranged[order] == rows, in turn
    X, X_val, y, y_val = (t.to(torch.float64) for t in (X, X_val, y, y_val))

    def start(name, replica_seed):
        torch.manual_seed(seed)
        return MLP(X.shape[1], (128, 64), norm="batch", bias=False).double()

    spec = {"norm": "batch", "bias": False}
    if not sync_bn:
        spec = {"norm": "ghost", "virtual_batch_size": per_device, "bias": False}
    return sweep.run(
        [seed], [lr], epochs=1, batch_size=global_batch, models={"m": spec},
        data=(X[arranged], X_val, y[arranged], y_val), inits=start,
    )  # fmt: skip


# ----------------------------------------------------------------------------- command line

TORCHRUN = "torchrun --standalone --nproc-per-node 2 -m bnteach.distributed"


def _report(results):
    """The printed account of :func:`demo`'s results (one per rank), and whether SyncBN
    equalled BatchNorm on the concatenated batch."""
    world_size = len(results)
    worst = max(result["max_diff"] for result in results)
    equal = worst <= 1e-12
    lines = [
        f"{world_size} processes (gloo on the CPU) stand in for {world_size} devices; each holds "
        f"its own rows of one global batch.",
        *(line for result in results for line in result["lines"]),
        f"{'the mean of the whole global batch':<40}{results[0]['global_mean']}",
        "After one step, running_mean = 0.1 x a batch mean: per-device BN used its own rows,",
        "SyncBN the whole global batch, the same on every rank.",
        "SyncBN against nn.BatchNorm1d on the concatenated batch in one process (output, input and",
        f"weight gradients, running statistics): largest difference {worst:.1e}"
        + (" (equal up to rounding)" if equal else " (NOT EQUAL)"),
    ]
    return "\n".join(lines), equal


def _main_torchrun():
    """This process is one of torchrun's: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT are set."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    if os.environ.get("MASTER_ADDR", "") in ("localhost", "127.0.0.1", "::1"):
        _use_loopback()
    try:
        _join_group(rank, world_size, timeout=60)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        gathered = [None] * world_size
        dist.all_gather_object(gathered, demo(rank, world_size))
    finally:
        _leave_group()
    text, equal = _report(gathered)
    if rank == 0:
        print(text, flush=True)
    return 0 if equal else 1


def main():
    """``python -m bnteach.distributed``: under torchrun, every process runs :func:`demo` and
    rank 0 prints what all saw; run directly, it says how to use torchrun and shows the same
    with 2 processes from :func:`launch`. Returns the exit status (0: SyncBN was exact)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return _main_torchrun()
    print(
        f"Not started by torchrun. To watch the processes yourself, run\n    {TORCHRUN}\n"
        f"Here is the same demonstration in 2 processes started by bnteach.distributed.launch:",
        flush=True,
    )
    from bnteach import distributed  # the importable module (this file may run as __main__)

    text, equal = _report(launch(distributed.demo, 2, timeout=120))
    print(text, flush=True)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
