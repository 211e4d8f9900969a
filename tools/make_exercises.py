"""Generate each student notebook from its solutions notebook, the one source of its exercises.

    python tools/make_exercises.py           # write the student notebook of every source
    python tools/make_exercises.py --check   # exit 1 if a committed one is out of date
    python tools/make_exercises.py notebooks/08_backward_by_hand_solutions.ipynb   # just one

``notebooks/NN_name_solutions.ipynb`` makes ``notebooks/NN_name.ipynb``. The source marks what
students must not see:

- a cell tagged ``solution`` (an assert cell, solution notes, the setup a solutions notebook
  needs to run on its own) is left out;
- in a code cell, the lines from ``# BEGIN SOLUTION`` to ``# END SOLUTION`` are replaced by the
  block's ``# PLACEHOLDER: <code>`` lines, uncommented and at their own indentation, e.g.
  ``# PLACEHOLDER: answer = None  # your code here`` or, inside a function,
  ``# PLACEHOLDER: raise NotImplementedError  # your code here``. A block without placeholder
  lines is simply removed;
- in a markdown cell, the lines from ``<!-- BEGIN SOLUTION -->`` to ``<!-- END SOLUTION -->``
  are removed.

Outputs are stripped; everything else (cell ids, tags, metadata) is kept. The result is checked:
no marker survives, and every code cell is valid Python. Uses the standard library only.

Two kinds of solutions notebook, told apart by cell ids:

- a whole notebook of exercises (05): its student version is the whole student notebook;
- the exercise section of a lesson (07, 08): the lesson keeps its exercises at its end, and
  the student version replaces the lesson's cells from the one whose id is the first generated
  cell's id to the end. The lesson before that cell is edited in the lesson itself, as usual;
  its exercise section is edited in the solutions notebook, which starts with its own title
  and setup cells (tagged ``solution``) so that it runs on its own.

Why 07 and 08 join this way rather than by generating the whole lesson from a solutions copy:
a copy would run each lesson twice for a few lines of answers, at every seed offset CI tries
and in the book (measured under nbval on a 2-core machine: the cells of 07 took 29 s, of 08
8 s; their exercise sections with the answers, imports included, 7 s and 4 s), and every edit
of a lesson would have to be made in its copy. nbval runs the solutions notebooks, whose assert
cells fail unless every check says "correct".
"""

import argparse
import ast
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

SOLUTION_TAG = "solution"
COLAB_CELL_ID = "colab-install"  # tools/colab.py's install cell
BEGIN, END, PLACEHOLDER = "# BEGIN SOLUTION", "# END SOLUTION", "# PLACEHOLDER:"
MD_BEGIN, MD_END = "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
LEFTOVERS = ("BEGIN SOLUTION", "END SOLUTION", "PLACEHOLDER:")


class MarkerError(ValueError):
    """The solutions notebook's markers are malformed."""


def _text(source):
    return "".join(source) if isinstance(source, list) else source


def _lines(text):
    """Split like nbformat stores sources: every line but the last keeps its newline."""
    return text.splitlines(keepends=True)


def _strip_code(text, where):
    """Replace each solution block of a code cell by its placeholder lines."""
    out, block = [], None
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if block is not None:
                raise MarkerError(f"{where}, line {number}: {BEGIN} inside another block")
            block = number
        elif stripped.startswith(END):
            if block is None:
                raise MarkerError(f"{where}, line {number}: {END} without {BEGIN}")
            block = None
        elif stripped.startswith(PLACEHOLDER):
            if block is None:
                raise MarkerError(f"{where}, line {number}: {PLACEHOLDER} outside a block")
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + stripped[len(PLACEHOLDER) :].strip())
        elif block is None:
            out.append(line)
    if block is not None:
        raise MarkerError(f"{where}, line {block}: {BEGIN} without {END}")
    return _tidy("\n".join(out))


def _strip_markdown(text, where):
    out, inside = [], False
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip() == MD_BEGIN:
            if inside:
                raise MarkerError(f"{where}, line {number}: {MD_BEGIN} inside another block")
            inside = True
        elif line.strip() == MD_END:
            if not inside:
                raise MarkerError(f"{where}, line {number}: {MD_END} without {MD_BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"{where}: {MD_BEGIN} without {MD_END}")
    return _tidy("\n".join(out))


def _tidy(text):
    """Without the blank lines a removed block may leave at the end."""
    return text.rstrip() if text.strip() else ""


def _check_python(text, where):
    code = "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in text.split("\n")
    )
    try:
        ast.parse(code)
    except SyntaxError as err:
        raise MarkerError(f"{where}: the student version is not valid Python ({err})") from None


def student_cells(solutions):
    """The student version of the solutions notebook's cells (a list of cells)."""
    cells = []
    for index, cell in enumerate(copy.deepcopy(solutions["cells"])):
        tags = cell.get("metadata", {}).get("tags", [])
        if SOLUTION_TAG in tags:
            continue
        where = f"cell {index} ({cell.get('id', '?')})"
        text = _text(cell["source"])
        if cell["cell_type"] == "code":
            text = _strip_code(text, where)
            _check_python(text, where)
            cell["outputs"] = []
            cell["execution_count"] = None
        elif cell["cell_type"] == "markdown":
            text = _strip_markdown(text, where)
        if not text.strip():
            continue  # a cell that held only the solution
        for marker in LEFTOVERS:
            if marker in text:
                raise MarkerError(f"{where}: a stray {marker!r} is left in the student version")
        cell["source"] = _lines(text)
        cells.append(cell)
    if not cells:
        raise MarkerError("the student version has no cells")
    return cells


def section_cells(solutions):
    """The student cells that make a lesson's exercise section: all but Colab's install cell,
    which a solutions notebook starts with like every notebook (the lesson has its own)."""
    return [cell for cell in student_cells(solutions) if cell.get("id") != COLAB_CELL_ID]


def make_student(solutions, lesson=None):
    """The student notebook (a dict) for the solutions notebook ``solutions`` (a dict).

    ``lesson``: the committed student notebook, or None. Its cells before the one whose id is
    the first generated cell's id are kept, with its metadata (a lesson with its exercises at
    its end); where there are none (or no lesson yet), the whole notebook is generated."""
    cells = student_cells(solutions)
    section = section_cells(solutions)
    keep = _cells_before(lesson, section[0].get("id")) if lesson is not None else []
    nb = copy.deepcopy(lesson if keep else solutions)
    nb["cells"] = copy.deepcopy(keep) + section if keep else cells
    return nb


def _cells_before(lesson, first):
    ids = [cell.get("id") for cell in lesson["cells"]]
    if first is None or first not in ids:
        raise MarkerError(
            f"the student notebook has no cell with id {first!r}, the first cell its solutions "
            f"notebook generates: give the cell where its exercises start that id (or delete "
            f"the student notebook to generate all of it)"
        )
    return lesson["cells"][: ids.index(first)]


def render(nb):
    """The notebook as the text written to disk (nbformat's layout: indent 1, sorted keys)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def target_of(source):
    """The student notebook that the solutions notebook ``source`` makes."""
    source = Path(source)
    if not source.name.endswith("_solutions.ipynb"):
        raise ValueError(f"{source.name} is not a solutions notebook (*_solutions.ipynb)")
    return source.with_name(source.name.replace("_solutions.ipynb", ".ipynb"))


def sources(folder=NOTEBOOKS):
    """Every solutions notebook in ``folder``."""
    return sorted(Path(folder).glob("*_solutions.ipynb"))


def _read(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def generate(source):
    """The text of the student notebook for the solutions notebook at ``source``."""
    target = target_of(source)
    return render(make_student(_read(source), _read(target) if target.exists() else None))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a target is stale")
    parser.add_argument("notebooks", nargs="*", help="solutions notebooks (default: all)")
    args = parser.parse_args(argv)
    stale = 0
    for source in args.notebooks or sources():
        target, text = target_of(source), generate(source)
        shown = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target
        if not args.check:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {shown}")
        elif target.exists() and target.read_text(encoding="utf-8") == text:
            print(f"{shown} is up to date")
        else:
            print(f"{shown} is out of date: run python tools/make_exercises.py")
            stale += 1
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
