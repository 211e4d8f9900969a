"""The ways into the collection agree: Colab (install cell, links), minutes, core widgets only.

Every test iterates over the notebooks that exist, so a new notebook is held to the same rules:
it starts with the one canonical install cell (``python tools/colab.py`` puts it there), the
README table and 00's map link it to Colab, and its header's minutes are the ones the README,
00's map and the instructor guide give. The last test installs bnteach with that cell into a
fresh virtual environment that has only what Colab brings (about a minute).
"""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import bnteach

ROOT = Path(__file__).resolve().parents[1]


def tool(name):
    """A module of tools/ (a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


colab, make_exercises = tool("colab"), tool("make_exercises")

NOTEBOOKS = colab.notebook_paths()
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "docs" / "instructor-guide.md").read_text(encoding="utf-8")


def load(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def source(cell):
    return "".join(cell["source"])


def exercise_section(solutions):
    """Whether this solutions notebook writes only the exercise section of a lesson."""
    lesson = load(make_exercises.target_of(solutions))
    first = make_exercises.section_cells(load(solutions))[0]["id"]
    return [c.get("id") for c in lesson["cells"]].index(first) > 0


def start_here_map():
    nb = load(ROOT / "notebooks" / "00_start_here.ipynb")
    return next(source(c) for c in nb["cells"] if source(c).startswith("## The map"))


# ------------------------------------------------------------------------------- Colab


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_starts_with_the_install_cell(path):
    nb = load(path)
    assert colab.has_install_cell(nb), (
        f"{path.name}: its first code cell is not the canonical Colab install cell; run "
        "`python tools/colab.py`"
    )


def test_the_install_cell_and_the_links_follow_the_package_version():
    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert colab.release_tag() == f"v{version}" == f"v{bnteach.__version__}"
    assert f"@v{version}" in colab.install_cell_source()
    assert f"/blob/v{version}/notebooks/" in colab.colab_url("01_data.ipynb")


def test_the_install_cell_goes_in_first_and_replaces_an_old_one():
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": ["# 99 · title"]},
            {"cell_type": "code", "source": ["import torch"], "metadata": {}, "outputs": []},
        ]
    }
    nb = colab.with_install_cell(nb)
    assert colab.has_install_cell(nb) and len(nb["cells"]) == 3
    assert source(nb["cells"][2]) == "import torch"  # the setup cell is left as it was
    old = colab.install_cell_source("v0.0.1")
    nb["cells"][1]["source"] = old.splitlines(keepends=True)
    assert not colab.has_install_cell(nb)
    nb = colab.with_install_cell(nb)
    assert colab.has_install_cell(nb) and len(nb["cells"]) == 3


def test_the_install_cell_is_valid_formatted_python():
    text = colab.install_cell_source()
    compile(text, "install cell", "exec")
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff not installed")
    result = subprocess.run(
        [ruff, "format", "--diff", "--line-length", "100", "-"],
        input=text + "\n",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_readme_and_the_map_link_every_notebook_to_colab(path):
    url = colab.colab_url(path.name)
    assert url in README, f"README's notebook table has no Colab link for {path.name}"
    assert f"({url})" in start_here_map(), f"00's map has no Colab link for {path.name}"


# ------------------------------------------------------------------------------ minutes


def header_minutes(path):
    intro = source(load(path)["cells"][0])
    m = re.search(r"\*\*Time:\*\*\s*about\s*(\d+)\s*min", intro)
    assert m, f"{path.name}: the first cell says no '**Time:** about N min'"
    return int(m.group(1))


def table_minutes(text, name, column):
    """The number in ``column`` of the markdown table row that starts with notebook ``name``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > column and re.match(rf"\[?`{re.escape(name)}(\.ipynb)?`", cells[0]):
            return int(re.match(r"\d+", cells[column]).group())
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_minutes_come_from_the_notebook_header(path):
    """The header is the one source; the README, 00's map and the instructor guide agree."""
    minutes = header_minutes(path)
    if path.stem.endswith("_solutions") and exercise_section(path):
        return  # the answers to a lesson's exercise section: a short read, in the lesson's row
    row = path.stem.removesuffix("_solutions")  # the solutions share the exercises' row
    readme = table_minutes(README, f"{row}.ipynb", 2)
    assert readme == minutes, f"README says {readme} min for {path.name}, its header {minutes}"
    shown = table_minutes(start_here_map(), row, 2)
    assert shown == minutes, f"00's map says {shown} min for {path.name}, its header {minutes}"
    guide = table_minutes(GUIDE, row, 2)
    assert guide in (None, minutes), f"the guide says {guide} min for {path.name}"


# ------------------------------------------------------------------------- core widgets


def test_the_explorers_use_only_core_ipywidgets():
    """Colab (and any Jupyter with ipywidgets 8) renders them without extra extensions."""
    from bnteach import widgets

    core = {"@jupyter-widgets/controls", "@jupyter-widgets/base", "@jupyter-widgets/output"}
    explorers = [
        widgets.layer_explorer(),
        widgets.compare_explorer(epochs=1, n_seeds=1),
        widgets.lrsweep_explorer(points=2, epochs=1, n_seeds=1),
    ]
    seen, todo = set(), list(explorers)
    while todo:
        w = todo.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        assert w._model_module in core, f"{type(w).__name__} comes from {w._model_module}"
        todo.extend(getattr(w, "children", ()))
        todo.extend(x for x in (getattr(w, "layout", None), getattr(w, "style", None)) if x)


# --------------------------------------------------------------------- a fresh venv


def pins(*names):
    """``name==version`` from requirements.txt (the tested versions)."""
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            found[name.lower()] = f"{name}=={version}"
    return [found[n] for n in names]


def test_the_install_cell_in_a_fresh_venv(tmp_path, monkeypatch):
    """What Colab does, short of Colab: a new virtual environment with only torch,
    scikit-learn, matplotlib, ipywidgets and a kernel (no --system-site-packages, so nothing
    else is there); 00_start_here runs top to bottom, its first cell installing bnteach from a
    local copy in place of the GitHub URL, quietly; run again, the cell does nothing."""
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    monkeypatch.delenv("PYTHONPATH", raising=False)  # the venv finds only what is installed
    work = tmp_path / "notebooks"  # and no bnteach/ folder beside the notebook either
    work.mkdir()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    packages = pins("torch", "scikit-learn", "matplotlib", "ipywidgets", "ipykernel")
    pip = [python, "-m", "pip", "install", "--quiet", *packages]
    installed = subprocess.run(pip, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-3000:]
    gone = subprocess.run([python, "-c", "import bnteach"], capture_output=True, cwd=work)
    assert gone.returncode != 0, "bnteach must not be in the fresh venv yet"

    src = tmp_path / "src"  # a clean copy, so that no build/ lands in the repository
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "bnteach", src / "bnteach", ignore=shutil.ignore_patterns("__pycache__"))
    kernels = tmp_path / "jupyter" / "kernels" / "fresh"
    kernels.mkdir(parents=True)
    spec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh venv",
        "language": "python",
    }
    (kernels / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))

    def run(nb):
        client = nbclient.NotebookClient(
            nb,
            kernel_name="fresh",
            timeout=300,
            startup_timeout=120,
            resources={"metadata": {"path": str(work)}},
        )
        client.execute()
        return nb

    nb = nbformat.read(ROOT / "notebooks" / "00_start_here.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    assert cell.source == colab.install_cell_source()
    cell.source = cell.source.replace(colab.install_url(), str(src))
    assert str(src) in cell.source
    run(nb)
    assert cell.outputs == [], f"the install cell printed {cell.outputs}"
    where = subprocess.run(
        [python, "-c", "import bnteach; print(bnteach.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
    ).stdout
    assert str(venv) in where, f"bnteach was not installed into the venv: {where}"

    # Installed now: the same cell must not call pip (a URL that cannot work proves it).
    again = nbformat.v4.new_notebook()
    again.cells = [nbformat.v4.new_code_cell(cell.source.replace(str(src), str(tmp_path / "x")))]
    again.cells.append(
        nbformat.v4.new_code_cell("from bnteach.widgets import layer_explorer\nlayer_explorer()")
    )
    run(again)
    assert again.cells[0].outputs == []
    assert all(o.output_type != "error" for o in again.cells[1].outputs)


def test_make_lab_opens_the_repository_root_with_00_open():
    """README and docs/ in JupyterLab's file browser, and the first notebook open."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nlab:", 1)[1].split("\n\n", 1)[0]
    assert '--ServerApp.root_dir="$(CURDIR)"' in recipe
    assert recipe.rstrip().endswith("notebooks/00_start_here.ipynb")
