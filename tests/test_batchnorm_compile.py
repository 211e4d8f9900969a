"""The scratch BatchNorm layers under torch.compile (backends "eager" and "aot_eager").

Compiled and eager layers must agree: outputs, input and parameter gradients, running
statistics and num_batches_tracked, in training and eval mode. With momentum=0.1 the whole
forward pass compiles into one graph (fullgraph=True), as torch's own BatchNorm does; with
momentum=None both torch's and ours read num_batches_tracked as a Python number, which breaks
the graph (so fullgraph=False there, also for torch's).

The checks that read tensor values (NaN batches, NaN parameters) are skipped while compiling
(see bnteach/batchnorm.py's docstring): a compiled layer then behaves like torch's.

Compile tests take about a second each: small shapes, dynamo reset between tests.
"""

import copy
import math

import pytest
import torch
from torch import nn

from bnteach.batchnorm import BatchNorm1d, BatchNorm2d, NonFiniteBatchError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo's graph-break notes

BACKENDS = ["eager", "aot_eager"]
LAYERS = [(BatchNorm1d, (6, 3)), (BatchNorm1d, (4, 3, 5)), (BatchNorm2d, (4, 3, 2, 2))]
LAYER_IDS = ["1d", "1d-length", "2d"]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def run_steps(layer, shape, modes, gen, dtype=torch.float64):
    """Forward + backward once per mode ("train"/"eval"); outputs and input gradients."""
    results = []
    for mode in modes:
        layer.train(mode == "train")
        x = (torch.randn(shape, generator=gen, dtype=dtype) * 2 + 1).requires_grad_()
        out = layer(x)
        (out * torch.arange(out.numel(), dtype=dtype).reshape(out.shape).cos()).sum().backward()
        results.append((out.detach(), x.grad))
    return results


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-12, atol=1e-12, msg=k)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,shape", LAYERS, ids=LAYER_IDS)
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
def test_compiled_layer_equals_eager(backend, cls, shape, momentum):
    eager = cls(3, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        eager.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        eager.bias.copy_(torch.tensor([0.0, -1.0, 0.3]))
    compiled_layer = copy.deepcopy(eager)
    compiled = torch.compile(compiled_layer, backend=backend, fullgraph=momentum is not None)
    modes = ["train", "train", "eval", "train", "eval"]
    expected = run_steps(eager, shape, modes, torch.Generator().manual_seed(0))
    got = run_steps(compiled, shape, modes, torch.Generator().manual_seed(0))
    for (out_e, grad_e), (out_c, grad_c) in zip(expected, got, strict=True):
        torch.testing.assert_close(out_c, out_e, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_c, grad_e, rtol=1e-12, atol=1e-12)
    assert_same_state(compiled_layer, eager)
    assert compiled_layer.num_batches_tracked.item() == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_layer_without_running_stats_and_without_affine(backend):
    eager = BatchNorm2d(3, affine=False, track_running_stats=False, dtype=torch.float64)
    compiled = torch.compile(copy.deepcopy(eager), backend=backend, fullgraph=True)
    shape = (4, 3, 2, 2)
    expected = run_steps(eager, shape, ["train", "eval"], torch.Generator().manual_seed(1))
    got = run_steps(compiled, shape, ["train", "eval"], torch.Generator().manual_seed(1))
    for (out_e, grad_e), (out_c, grad_c) in zip(expected, got, strict=True):
        torch.testing.assert_close(out_c, out_e, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_c, grad_e, rtol=1e-12, atol=1e-12)


def test_compiled_model_with_scratch_layers_matches_torch_layers():
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(5, 4), BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).double()
    theirs = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).double()
    theirs.load_state_dict(ours.state_dict())
    compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
    x = torch.randn(8, 5, dtype=torch.float64)
    for mode in (True, False):
        compiled.train(mode)
        theirs.train(mode)
        torch.testing.assert_close(compiled(x), theirs(x), rtol=1e-10, atol=1e-12)
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_value_checks_are_skipped_while_compiling(backend):
    # documented in the module docstring: a compiled layer cannot branch on the data, so a NaN
    # batch is not refused there; it behaves like torch's (NaN in the running statistics)
    x = torch.randn(6, 3)
    x[0, 1] = math.nan
    with pytest.raises(NonFiniteBatchError):
        BatchNorm1d(3)(x)  # eager: refused
    layer, reference = BatchNorm1d(3), nn.BatchNorm1d(3)
    torch.compile(layer, backend=backend, fullgraph=True)(x)
    reference(x)
    assert torch.isnan(layer.running_mean[1]) and torch.isnan(reference.running_mean[1])
    assert torch.isfinite(layer.running_mean[[0, 2]]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_that_need_no_values_still_raise_when_compiled(backend):
    compiled = torch.compile(BatchNorm1d(3), backend=backend)
    with pytest.raises(Exception, match="num_features = 3 but the input has 4"):
        compiled(torch.randn(5, 4))
    with pytest.raises(Exception, match="Expected more than 1 value per channel"):
        compiled(torch.randn(1, 3))
