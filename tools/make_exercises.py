"""Generate the student notebook of exercises from the solutions notebook (its one source).

    python tools/make_exercises.py           # write notebooks/05_exercises.ipynb
    python tools/make_exercises.py --check   # exit 1 if the committed file is out of date

The source, ``notebooks/05_exercises_solutions.ipynb``, marks what students must not see:

- a cell tagged ``solution`` (an assert cell, solution notes) is left out;
- in a code cell, the lines from ``# BEGIN SOLUTION`` to ``# END SOLUTION`` are replaced by the
  block's ``# PLACEHOLDER: <code>`` lines, uncommented and at their own indentation, e.g.
  ``# PLACEHOLDER: answer = None  # your code here`` or, inside a function,
  ``# PLACEHOLDER: raise NotImplementedError  # your code here``. A block without placeholder
  lines is simply removed;
- in a markdown cell, the lines from ``<!-- BEGIN SOLUTION -->`` to ``<!-- END SOLUTION -->``
  are removed.

Outputs are stripped; everything else (cell ids, tags, notebook metadata) is kept. The result is
checked: no marker survives, and every code cell is valid Python. Uses the standard library only.
"""

import argparse
import ast
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "notebooks" / "05_exercises_solutions.ipynb"
TARGET = ROOT / "notebooks" / "05_exercises.ipynb"

SOLUTION_TAG = "solution"
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


def make_student(solutions):
    """The student notebook (a dict) for the solutions notebook ``solutions`` (a dict)."""
    nb = copy.deepcopy(solutions)
    cells = []
    for index, cell in enumerate(nb["cells"]):
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
    nb["cells"] = cells
    return nb


def render(nb):
    """The notebook as the text written to disk (nbformat's layout: indent 1, sorted keys)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def generate(source=SOURCE):
    """The student notebook's text for the solutions notebook at ``source``."""
    return render(make_student(json.loads(Path(source).read_text(encoding="utf-8"))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the target is stale")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run python tools/make_exercises.py")
            return 1
        print(f"{TARGET.relative_to(ROOT)} is up to date")
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
