"""Notebook 05 comes from one source: the student notebook is generated from the solutions
notebook by tools/make_exercises.py, is up to date, runs clean, and every check in it says
"not attempted yet"; the solutions notebook asserts every check passes (nbval runs it)."""

import contextlib
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bnteach import exercises

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "notebooks" / "05_exercises_solutions.ipynb"
STUDENT = ROOT / "notebooks" / "05_exercises.ipynb"


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "make_exercises", ROOT / "tools/make_exercises.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = load_generator()


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell):
    return "".join(cell["source"])


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


# ------------------------------------------------------------------------ up to date


def test_student_notebook_is_up_to_date():
    expected = gen.make_student(read(SOLUTIONS))
    committed = read(STUDENT)
    stale = "notebooks/05_exercises.ipynb is out of date: run python tools/make_exercises.py"
    assert len(committed["cells"]) == len(expected["cells"]), stale
    for mine, theirs in zip(committed["cells"], expected["cells"]):
        assert mine == theirs, f"{stale} (first difference in cell {theirs.get('id')})"
    assert committed == expected, stale
    assert gen.main(["--check"]) == 0


def test_check_mode_fails_on_a_stale_file(tmp_path, monkeypatch, capsys):
    stale = read(STUDENT)
    stale["cells"][0]["source"] = ["# an old version\n"]
    target = tmp_path / "05_exercises.ipynb"
    target.write_text(json.dumps(stale), encoding="utf-8")
    monkeypatch.setattr(gen, "TARGET", target)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().out


# ------------------------------------------------------------------------ what it removes


def test_student_notebook_has_no_solutions_and_keeps_every_check():
    solutions, student = read(SOLUTIONS), read(STUDENT)
    text = json.dumps(student)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "PLACEHOLDER", "Solution notes"):
        assert marker not in text
    assert not any("solution" in tags(c) for c in student["cells"])
    assert all(not c["outputs"] and c["execution_count"] is None for c in code_cells(student))
    checks = [source(c) for c in code_cells(solutions) if "= check_" in source(c)]
    student_sources = [source(c) for c in code_cells(student)]
    assert checks and all(c in student_sources for c in checks), "check cells are shared"
    n_placeholders = sum(source(c).count("# PLACEHOLDER:") for c in solutions["cells"])
    assert sum(s.count("# your code here") for s in student_sources) == n_placeholders
    assert source(student["cells"][0]).startswith("# 05 · ")


def test_every_check_is_asserted_in_the_solutions_notebook():
    nb = read(SOLUTIONS)
    shared = "\n".join(source(c) for c in code_cells(nb) if "solution" not in tags(c))
    asserted = "\n".join(source(c) for c in code_cells(nb) if "solution" in tags(c))
    used = re.findall(r"^(feedback_\w+) = (check_\w+)\(", shared, re.M)
    assert sorted(name for _, name in used) == sorted(
        n for n in exercises.__all__ if n.startswith("check_")
    ), "every check of bnteach.exercises is used once"
    for feedback, _ in used:
        assert f"assert {feedback}.correct" in asserted
    assert "exercises.progress().all_correct" in asserted
    assert "assert" not in shared, "asserts in shared cells would fail in the student notebook"


# ------------------------------------------------------------------------ it runs


def test_student_notebook_runs_and_every_check_says_not_attempted():
    namespace = {"__name__": "__main__"}
    exercises.reset()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in code_cells(read(STUDENT)):
            code = "\n".join(
                "" if line.startswith("%") else line for line in source(cell).split("\n")
            )
            exec(compile(code, "<student notebook>", "exec"), namespace)
    feedback = {k: v for k, v in namespace.items() if k.startswith("feedback_")}
    assert len(feedback) == len(exercises.EXERCISES)
    assert all(fb.status == "not attempted" for fb in feedback.values()), feedback
    progress = exercises.progress()
    assert all(progress.status(k) == "not attempted" for k in exercises.EXERCISES)
    assert out.getvalue().count("Not attempted yet") == len(exercises.EXERCISES)


# ------------------------------------------------------------------------ the generator


def notebook(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def code(text, *cell_tags):
    cell = {"cell_type": "code", "execution_count": 3, "id": "x", "outputs": [{"a": 1}]}
    cell["metadata"] = {"tags": list(cell_tags)} if cell_tags else {}
    cell["source"] = text
    return cell


def markdown(text, *cell_tags):
    cell = {"cell_type": "markdown", "id": "m", "source": text}
    cell["metadata"] = {"tags": list(cell_tags)} if cell_tags else {}
    return cell


def test_generator_replaces_blocks_and_drops_solution_cells():
    nb = notebook(
        markdown("# Title\n<!-- BEGIN SOLUTION -->\nsecret\n<!-- END SOLUTION -->\nshared"),
        code(
            "x = 1\n# BEGIN SOLUTION\n# PLACEHOLDER: y = None  # your code here\ny = 2\n"
            "# END SOLUTION\nprint(x)"
        ),
        code(
            "def f(a):\n    # BEGIN SOLUTION\n    # PLACEHOLDER: raise NotImplementedError\n"
            "    return a\n    # END SOLUTION\n\n\n# BEGIN SOLUTION\nf(1)\n# END SOLUTION"
        ),
        code("assert y == 2", "solution"),
        markdown("notes", "solution"),
        code("# BEGIN SOLUTION\nz = 3\n# END SOLUTION"),
    )
    out = gen.make_student(nb)
    assert [source(c) for c in out["cells"]] == [
        "# Title\nshared",
        "x = 1\ny = None  # your code here\nprint(x)",
        "def f(a):\n    raise NotImplementedError",
    ]
    assert out["cells"][1]["outputs"] == [] and out["cells"][1]["execution_count"] is None
    assert nb["cells"][1]["outputs"] == [{"a": 1}], "the source is not modified"


@pytest.mark.parametrize(
    "cell, problem",
    [
        (code("# BEGIN SOLUTION\nx = 1"), "without # END"),
        (code("x = 1\n# END SOLUTION"), "without # BEGIN"),
        (code("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION"), "inside another"),
        (code("# PLACEHOLDER: x = None"), "outside a block"),
        (code("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION"), "valid Python"),
        (markdown("<!-- BEGIN SOLUTION -->\nx"), "without"),
        (code("x = 1  # END SOLUTION is not a marker here"), "stray"),
    ],
)
def test_generator_rejects_malformed_markers(cell, problem):
    with pytest.raises(gen.MarkerError, match=problem):
        gen.make_student(notebook(cell))


# ------------------------------------------------------------------------ ruff


def ruff():
    found = Path(sys.executable).with_name("ruff")
    return str(found) if found.exists() else shutil.which("ruff")


@pytest.mark.skipif(ruff() is None, reason="ruff is not installed")
def test_both_notebooks_are_ruff_clean():
    paths = [str(SOLUTIONS), str(STUDENT)]
    for args in (["check", "--quiet"], ["format", "--check", "--quiet"]):
        run = subprocess.run([ruff(), *args, *paths], cwd=ROOT, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
