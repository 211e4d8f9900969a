"""A frozen model must still save with ``torch.save(model)`` (whole-model pickling), and load
back still frozen. Checked for ``bnteach.batchnorm.freeze`` and for the freezing idiom of
exercise 10b's worked solution (its ``freeze_bn``, read from the solutions notebook)."""

import ast
import io
import json
import sys
import types
from pathlib import Path

import torch
from torch import nn

from bnteach.batchnorm import bn_layers, freeze
from bnteach.models import MLP

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "notebooks" / "05_exercises_solutions.ipynb"


def solution_freeze_bn():
    """The ``freeze_bn`` function of exercise 10b's solution, defined from the notebook's text.

    Every top-level function of its cell is defined in one module registered in
    ``sys.modules``, as a notebook's cells live in ``__main__``: pickle can then find a helper
    such as ``stay_in_eval`` by name, exactly as it can in the learner's kernel.
    """
    nb = json.loads(SOLUTIONS.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] != "code" or "def freeze_bn" not in text:
            continue
        functions = [node for node in ast.parse(text).body if isinstance(node, ast.FunctionDef)]
        module = types.ModuleType("exercise_10b_solution")
        module.torch, module.nn = torch, nn
        sys.modules[module.__name__] = module
        exec(compile(ast.Module(functions, []), str(SOLUTIONS), "exec"), module.__dict__)
        return module.freeze_bn
    raise AssertionError("no `def freeze_bn` in the solutions notebook")


def round_trip(model):
    """torch.save(model) to memory and load it back (the whole module, not a state_dict)."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def frozen_model(freeze_fn):
    torch.manual_seed(0)
    model = MLP(norm="batch")
    model.train()
    with torch.no_grad():  # move the running statistics away from 0 and 1
        model(torch.randn(64, 20) * 2 + 1)
    return freeze_fn(model)


def assert_still_frozen(model):
    """After model.train() and a training-mode pass, every BN layer is in eval mode and its
    state is unchanged."""
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in bn_layers(model)]
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 20))
    for m, state in zip(bn_layers(model), before):
        assert not m.training
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items())
        assert not any(p.requires_grad for p in m.parameters())


def test_bnteach_freeze_pickles_and_stays_frozen():
    model = frozen_model(freeze)
    loaded = round_trip(model)
    x = torch.randn(16, 20)
    model.eval()
    loaded.eval()
    assert torch.equal(model(x), loaded(x))
    assert_still_frozen(loaded)


def test_solution_freeze_bn_works_before_pickling():
    """The idiom itself is right (check_freeze says so too); only pickling is in question."""
    assert_still_frozen(frozen_model(solution_freeze_bn()))


def test_solution_freeze_bn_pickles():
    model = frozen_model(solution_freeze_bn())
    assert_still_frozen(round_trip(model))


def test_module_level_function_is_the_fix():
    """The same idiom with the wrapped function at module level pickles: the fix named above."""
    import functools

    def freeze_bn(model):
        for m in bn_layers(model):
            m.requires_grad_(False)
            m.train = functools.partial(_stay_in_eval, m)
            m.eval()
        return model

    assert_still_frozen(round_trip(frozen_model(freeze_bn)))


def _stay_in_eval(module, mode=True):
    return nn.Module.train(module, False)
