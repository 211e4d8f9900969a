"""bnteach.exercises.kit: the ground every exercise check stands on. The per-notebook Notebook
(titles, results, progress, reset, the check decorator that never raises), the comparison and
re-run helpers against PyTorch, and the rule that no module reaches into another's private
names."""

import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnteach.exercises import kit
from bnteach.exercises.kit import NotAttempted, Wrong
from bnteach.stats import seeds

PACKAGE = Path(kit.__file__).resolve().parents[1]


def private_imports(path):
    """``(line, what)`` for each private name of another bnteach module that ``path`` uses:
    ``from bnteach.x import _y``, or ``m._y`` where ``m`` is an imported bnteach module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bnteach"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append((node.lineno, f"{node.module}.{alias.name}"))
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name.startswith("bnteach")}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


def test_no_module_uses_another_modules_private_names():
    """Checked for the whole package; the exercise modules are where it used to happen."""
    paths = sorted(PACKAGE.rglob("*.py"))
    assert len([p for p in paths if p.parent.name == "exercises"]) >= 8
    found = {p.name: private_imports(p) for p in paths}
    assert not any(found.values()), found


def test_the_import_rule_sees_both_forms(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "from bnteach.exercises import kit\nfrom bnteach.sweep import _x, run\n"
        "kit._natural('1')\nkit.same(1, 1, 0)\n"
    )
    assert private_imports(path) == [(2, "bnteach.sweep._x"), (3, "kit._natural")]


# ------------------------------------------------------------------------ Notebook


def toy_notebook():
    nb = kit.Notebook("99")

    @nb.check("10", "the last")
    def check_last(answer):
        kit.missing({"answer": answer}, "Give one.")
        if kit.number(answer, "`answer`") != 2:
            raise Wrong("`answer` should be 2.")
        return "2 it is."

    @nb.check("2", "the first")
    def check_first(fn):
        return f"called: {kit.call(fn, 1, name='fn')}"

    return nb, check_first, check_last


def test_a_notebook_records_titles_results_and_progress(capsys):
    nb, check_first, check_last = toy_notebook()
    assert list(nb.titles) == ["2", "10"], "natural order, not registration order"
    assert nb.titles["10"] == "Exercise 10 · the last"
    assert "0 of 2 exercises correct" in repr(nb.progress())
    assert check_last(None).status == kit.NOT_ATTEMPTED
    assert "Not attempted yet" in capsys.readouterr().out
    fb = check_last(3, show=False)
    assert fb.status == kit.WRONG and fb.exercise == "Exercise 10 · the last"
    assert capsys.readouterr().out == ""
    assert check_last(2, show=False).correct
    assert nb.progress().status("10") == kit.CORRECT and nb.progress().status("2") == "not checked"
    assert not nb.progress().all_correct
    check_first(lambda a: a + 1, show=False)
    assert nb.progress().all_correct and "<table" in nb.progress()._repr_html_()
    assert nb.checks == {"2": check_first, "10": check_last}
    nb.reset()
    assert nb.results == {} and "0 of 2" in repr(nb.progress())


def test_a_check_never_raises_and_says_whose_error_it_is():
    nb, check_first, check_last = toy_notebook()

    def mine(a):
        return a / 0

    fb = check_first(mine, show=False)
    assert fb.status == kit.WRONG and "raised ZeroDivisionError" in fb.message
    assert "(in `mine`, line" in fb.message and "Internal error" not in fb.message
    fb = check_first(lambda a, b: a, show=False)
    assert "does not accept that" in fb.message
    fb = check_last(2, colour="red", show=False)
    assert "arguments it does not take" in fb.message and "'colour'" in fb.message

    @nb.check("3", "a broken check")
    def check_broken(answer):
        return {}[answer]

    fb = check_broken("x", show=False)
    assert "Internal error of the check for exercise 3" in fb.message and "KeyError" in fb.message
    assert check_first(None, show=False).status == kit.WRONG  # not callable: said so


def test_notebooks_are_shared_by_number_and_kept_apart():
    assert kit.notebook("05") is kit.notebook("05")
    assert set(kit.notebook("07").titles) == {"07.1", "07.2", "07.3"}
    assert set(kit.notebook("08").titles) == {"08.1", "08.2"}
    assert len(kit.notebook("05").titles) == 12
    assert not set(kit.notebook("05").titles) & set(kit.notebook("07").titles)


# ------------------------------------------------------------------------ readers, comparing


def test_readers_name_what_is_wrong():
    with pytest.raises(NotAttempted, match="`a`, `b` are still None. Go"):
        kit.missing({"a": None, "b": None, "c": 1}, "Go.")
    with pytest.raises(Wrong, match="one number, got a tensor of shape"):
        kit.number(torch.ones(2), "`x`")
    assert kit.number(torch.tensor(0.5), "`x`") == 0.5
    with pytest.raises(Wrong, match="should be a number, got bool"):
        kit.number(True, "`x`")
    with pytest.raises(Wrong, match="should be one of 'a', 'b'"):
        kit.choice("c", ["a", "b"], "pick")
    with pytest.raises(Wrong, match=r"contains NaN at \[1\]"):
        kit.tensor(torch.tensor([1.0, math.nan]), "`y`")
    with pytest.raises(Wrong, match="has shape \\(2,\\), expected \\(3,\\)"):
        kit.tensor(torch.ones(2), "`y`", shape=(3,))
    with pytest.raises(Wrong, match="NumPy"):
        kit.tensor(torch.ones(2).numpy(), "`y`")
    with pytest.raises(Wrong, match="should be a function, got int"):
        kit.function(3, "f")
    with pytest.raises(NotAttempted, match="still raises NotImplementedError"):
        kit.call(lambda: (_ for _ in ()).throw(NotImplementedError), name="f")


def test_name_mistake_is_lazy_and_takes_the_first_match():
    called = []

    def expensive():
        called.append(1)
        return 5.0

    with pytest.raises(Wrong, match="first"):
        kit.name_mistake(1.0, [(1.0, "first"), (expensive, "second")], lambda a, b: a == b)
    assert not called
    with pytest.raises(Wrong, match="second"):
        kit.name_mistake(5.0, [(1.0, "first"), (expensive, "second")], lambda a, b: a == b)
    assert kit.name_mistake(7.0, [(expensive, "second")], lambda a, b: a == b) is None


def test_table_names_the_usual_wrong_computation():
    expected = {"a": 0.5, "b": 0.25}
    assert kit.table({"a": 0.5, "b": 0.25}, expected, "t", "d") == expected
    with pytest.raises(Wrong, match="wrong sign"):
        kit.table(
            {"a": -0.5, "b": -0.25}, expected, "t", "d", [({"a": -0.5, "b": -0.25}, "wrong sign")]
        )
    with pytest.raises(Wrong, match="lacks the keys 'b'"):
        kit.table({"a": 0.5}, expected, "t", "d")
    with pytest.raises(Wrong, match=r"`t\['b'\]` is 0.3, but recomputing"):
        kit.table({"a": 0.5, "b": 0.3}, expected, "t", "d")


def test_moments_and_standardize_are_batch_norms():
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    mean, var = kit.moments(x, (0, 2))
    torch.testing.assert_close(var, x.var(dim=(0, 2), keepdim=True, unbiased=False))
    torch.testing.assert_close(
        kit.moments(x, (0, 2), unbiased=True)[1], x.var((0, 2), keepdim=True)
    )
    torch.testing.assert_close(
        kit.standardize(x, mean, var, 1e-5), F.batch_norm(x, None, None, training=True)
    )
    assert kit.per_channel(torch.ones(3), x).shape == (1, 3, 1)


# ------------------------------------------------------------------------ re-runs


def trained_bn(layer, bn, x):
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.train()(layer(x))
        bn.running_var[0] = 1e-6
    return layer.eval(), bn.eval()


@pytest.mark.parametrize("bias", [True, False])
def test_fold_variant_is_the_eval_mode_pair_and_each_fault_is_not(bias):
    torch.manual_seed(seeds(1)[0])
    pairs = [
        (nn.Linear(5, 4, bias=bias), nn.BatchNorm1d(4), torch.randn(16, 5) * 2 + 1),
        (nn.Conv2d(4, 4, 3, padding=1, bias=bias), nn.BatchNorm2d(4), torch.randn(8, 4, 5, 5)),
    ]
    for layer, bn, x in pairs:
        layer, bn, x = layer.double(), bn.double(), x.double()
        layer, bn = trained_bn(layer, bn, x)
        with torch.no_grad():
            expected = bn(layer(x))
            torch.testing.assert_close(kit.fold_variant(layer, bn)(x), expected)
            for fault in kit.FOLD_FAULTS:
                if fault == "in axis" and isinstance(layer, nn.Linear):
                    continue  # a Linear's input features are not its output channels
                if fault == "no layer bias" and not bias:
                    continue  # nothing to leave out
                assert not torch.allclose(kit.fold_variant(layer, bn, fault)(x), expected), fault
        assert layer.bias is None or layer.bias.shape == (4,), "the layer is left as it was"


def test_rerun_judges_a_reported_number():
    told, other = seeds(3)[0], seeds(3)[1]
    runs = []

    def number(seed):
        runs.append(seed)
        return 0.5 + 0.1 * (seed - told)

    rerun = kit.Rerun(
        number, 3, equal=lambda a, b: abs(a - b) < 1e-9, near=lambda a, b: abs(a - b) < 0.1
    )
    assert rerun() == 0.5 and rerun.said() == f"the check's re-run of seed {told} gives 0.5"
    assert rerun.judge(0.5, "w", "final") is True
    assert runs == [told], "no other seed is run for a right answer"
    assert rerun.judge(0.51, "w", "final") is False  # another device: near, nearest this seed
    with pytest.raises(Wrong, match=f"that is seed {other}'s run, not seed {told}'s"):
        rerun.judge(number(other), "w", "final")
    with pytest.raises(Wrong, match="the loss"):
        rerun.judge(2.0, "w", "final", mistakes=[(2.0, "the loss")])
    with pytest.raises(Wrong, match="roughly the loss"):
        rerun.judge(2.02, "w", "final", loose=[(2.0, "roughly the loss")])
    with pytest.raises(Wrong, match="final"):
        rerun.judge(0.3, "w", "final")
    with pytest.raises(Wrong, match=f"nearer seed {other}'s run"):
        rerun.judge(0.57, "w", "final")


def test_other_seeds_include_the_unshifted_ones(monkeypatch):
    monkeypatch.setenv("BNTEACH_SEED_OFFSET", "100")
    assert kit.other_seeds(100, 3) == [101, 102, 0, 1, 2]
    assert kit.input_seed(2) == 102
