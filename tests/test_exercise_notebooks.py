"""Every notebook with exercises comes from one source: tools/make_exercises.py makes the student
notebook (05) or the exercise section of the lesson (07, 08) from each
``notebooks/*_solutions.ipynb``. For each: the committed student notebook is up to date, has no
answers, runs clean with every check saying "not attempted yet"; the solutions notebook uses
every check of its notebook once and asserts that it passes (nbval runs it)."""

import contextlib
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bnteach.exercises import kit

ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "make_exercises", ROOT / "tools/make_exercises.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = load_generator()
SOURCES = gen.sources()
by_name = pytest.mark.parametrize("solutions", SOURCES, ids=[p.stem for p in SOURCES])


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell):
    return "".join(cell["source"])


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def code_cells(cells):
    return [c for c in cells if c["cell_type"] == "code"]


def notebook_of(solutions):
    """The kit.Notebook of a solutions notebook: "07_x_solutions.ipynb" -> notebook("07")."""
    return kit.notebook(solutions.name[:2])


def generated(solutions):
    """The cells of the committed student notebook that its solutions notebook makes."""
    student = read(gen.target_of(solutions))
    first = gen.section_cells(read(solutions))[0]["id"]
    ids = [c["id"] for c in student["cells"]]
    return student["cells"][ids.index(first) :]


def test_every_notebook_with_checks_has_a_solutions_notebook():
    assert [p.name for p in SOURCES] == [
        "05_exercises_solutions.ipynb",
        "07_batchnorm_in_cnns_solutions.ipynb",
        "08_backward_by_hand_solutions.ipynb",
        "10_batchnorm_across_devices_solutions.ipynb",
        "11_batchnorm_under_shift_solutions.ipynb",
        "12_batchnorm_and_its_neighbours_solutions.ipynb",
    ]
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        text = path.read_text(encoding="utf-8")
        if "= check_" in text and not path.stem.endswith("_solutions"):
            assert path in {gen.target_of(s) for s in SOURCES}, path.name


# ------------------------------------------------------------------------ up to date


@by_name
def test_student_notebook_is_up_to_date(solutions):
    target = gen.target_of(solutions)
    expected = gen.make_student(read(solutions), read(target))
    committed = read(target)
    stale = f"{target.name} is out of date: run python tools/make_exercises.py"
    assert len(committed["cells"]) == len(expected["cells"]), stale
    for mine, theirs in zip(committed["cells"], expected["cells"]):
        assert mine == theirs, f"{stale} (first difference in cell {theirs.get('id')})"
    assert committed == expected, stale
    assert target.read_text(encoding="utf-8") == gen.render(expected), stale


def test_check_mode_fails_on_a_stale_file(tmp_path, capsys):
    for path in SOURCES:
        shutil.copy(path, tmp_path / path.name)
        shutil.copy(gen.target_of(path), tmp_path / gen.target_of(path).name)
    copies = gen.sources(tmp_path)
    assert gen.main(["--check", *map(str, copies)]) == 0
    stale = tmp_path / "07_batchnorm_in_cnns.ipynb"
    nb = read(stale)
    nb["cells"][-1]["source"] = ["# an old version\n"]
    stale.write_text(json.dumps(nb), encoding="utf-8")
    assert gen.main(["--check", *map(str, copies)]) == 1
    assert f"{stale} is out of date" in capsys.readouterr().out
    assert gen.main(list(map(str, copies))) == 0  # regenerate: the lesson's own cells stay
    assert gen.main(["--check", *map(str, copies)]) == 0
    assert read(stale) == read(gen.target_of(SOURCES[1]))


def test_a_lesson_keeps_its_cells_and_metadata():
    solutions = SOURCES[1]
    lesson = read(gen.target_of(solutions))
    cells = generated(solutions)
    assert len(cells) < len(lesson["cells"]) // 3, "only the exercise section is generated"
    assert lesson["metadata"]["kernelspec"]
    lesson["cells"][0]["source"] = ["# 07 · edited in the lesson\n"]
    assert gen.make_student(read(solutions), lesson)["cells"][0] == lesson["cells"][0]
    lesson["cells"] = [c for c in lesson["cells"] if c["id"] != cells[0]["id"]]
    with pytest.raises(gen.MarkerError, match="no cell with id"):
        gen.make_student(read(solutions), lesson)
    assert gen.make_student(read(solutions))["cells"] == gen.student_cells(read(solutions))


# ------------------------------------------------------------------------ what it removes


@by_name
def test_student_notebook_has_no_solutions_and_keeps_every_check(solutions):
    sol, student = read(solutions), read(gen.target_of(solutions))
    text = json.dumps(student)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "PLACEHOLDER", "Solution notes"):
        assert marker not in text
    assert not any("solution" in tags(c) for c in student["cells"])
    assert all(
        not c["outputs"] and c["execution_count"] is None for c in code_cells(student["cells"])
    )
    calls = [re.search(r"^feedback_\w+ = check_.*", source(c), re.M | re.S) for c in sol["cells"]]
    student_sources = [source(c) for c in code_cells(generated(solutions))]
    shown = "\n".join(student_sources)
    assert any(calls) and all(m[0] in shown for m in calls if m), "the check calls are shared"
    placeholders = Counter(
        line.split("# PLACEHOLDER:", 1)[1].strip()
        for c in sol["cells"]
        for line in source(c).split("\n")
        if "# PLACEHOLDER:" in line
    )
    lines = Counter(line.strip() for s in student_sources for line in s.split("\n"))
    assert placeholders and all(lines[p] >= n for p, n in placeholders.items())
    assert source(student["cells"][0]).startswith(f"# {solutions.name[:2]} · ")


@by_name
def test_every_check_is_asserted_in_the_solutions_notebook(solutions):
    cells = code_cells(read(solutions)["cells"])
    shared = "\n".join(source(c) for c in cells if "solution" not in tags(c))
    asserted = "\n".join(source(c) for c in cells if "solution" in tags(c))
    used = re.findall(r"^(feedback_\w+) = (check_\w+)\(", shared, re.M)
    checks = notebook_of(solutions).checks.values()
    assert sorted(name for _, name in used) == sorted(c.__name__ for c in checks), (
        "every check of the notebook is used once"
    )
    for feedback, _ in used:
        assert f"assert {feedback}.correct" in asserted
    assert "progress().all_correct" in asserted
    assert "assert" not in shared, "asserts in shared cells would fail in the student notebook"


# ------------------------------------------------------------------------ it runs


def run(cells, namespace):
    for cell in cells:
        code = "\n".join("" if line.startswith("%") else line for line in source(cell).split("\n"))
        exec(compile(code, "<student notebook>", "exec"), namespace)


@by_name
def test_student_exercises_run_and_every_check_says_not_attempted(solutions):
    """The generated cells, after the solutions notebook's own setup (a lesson's exercise
    section needs the lesson's imports): every check says "not attempted yet"."""
    nb = notebook_of(solutions)
    nb.reset()
    setup = []
    for cell in code_cells(read(solutions)["cells"]):
        if cell["id"] == gen.COLAB_CELL_ID:  # Colab's install cell: nothing to set up here
            continue
        if "solution" not in tags(cell):
            break
        setup.append(cell)
    namespace = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run(setup, namespace)
        run(code_cells(generated(solutions)), namespace)
    feedback = {k: v for k, v in namespace.items() if k.startswith("feedback_")}
    assert len(feedback) == len(nb.titles)
    assert all(fb.status == "not attempted" for fb in feedback.values()), feedback
    assert all(nb.progress().status(k) == "not attempted" for k in nb.titles)
    assert out.getvalue().count("Not attempted yet") == len(nb.titles)


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
        (code("x = 1", "solution"), "no cells"),
    ],
)
def test_generator_rejects_malformed_markers(cell, problem):
    with pytest.raises(gen.MarkerError, match=problem):
        gen.make_student(notebook(cell))


def test_only_solutions_notebooks_are_sources():
    with pytest.raises(ValueError, match="not a solutions notebook"):
        gen.target_of(ROOT / "notebooks" / "05_exercises.ipynb")


# ------------------------------------------------------------------------ ruff


def ruff():
    found = Path(sys.executable).with_name("ruff")
    return str(found) if found.exists() else shutil.which("ruff")


@pytest.mark.skipif(ruff() is None, reason="ruff is not installed")
def test_every_exercise_notebook_is_ruff_clean():
    paths = [str(p) for s in SOURCES for p in (s, gen.target_of(s))]
    for args in (["check", "--quiet"], ["format", "--check", "--quiet"]):
        run = subprocess.run([ruff(), *args, *paths], cwd=ROOT, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
