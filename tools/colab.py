"""Colab for every notebook: the install cell each one starts with, and its "Open in Colab" link.

    python tools/colab.py           # put the install cell first in every notebook (or update it)
    python tools/colab.py --check   # exit 1, naming them, if a notebook lacks the exact cell

Colab has torch, scikit-learn, matplotlib and ipywidgets, but not bnteach. So every notebook's
first code cell installs bnteach from GitHub when it is missing, and does nothing where it is
installed (``make lab``, Binder, conda). It installs the release tag ``v`` + pyproject.toml's
version, and the Colab links open the notebooks of that same tag, so a Colab user always gets
a notebook and a bnteach from one release. When you bump the version, tag that commit
(``git tag v0.2.0 && git push --tags``) and run this script: it rewrites the cell in every
notebook (tests/test_colab.py checks that every notebook carries it exactly).

Uses the standard library only.
"""

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
REPO = "bnteach/bnteach"
CELL_ID = "colab-install"


def release_tag(root=ROOT):
    """The release the Colab links and the install cell point at: ``v`` + the package version."""
    with open(Path(root) / "pyproject.toml", "rb") as f:
        return "v" + tomllib.load(f)["project"]["version"]


def install_url(tag=None):
    """What the install cell gives to pip."""
    return f"git+https://github.com/{REPO}@{tag or release_tag()}"


def colab_url(name, tag=None):
    """The "Open in Colab" link of notebook ``name`` (e.g. ``"01_data.ipynb"``)."""
    tag = tag or release_tag()
    return f"https://colab.research.google.com/github/{REPO}/blob/{tag}/notebooks/{name}"


CELL_TEMPLATE = """\
# On Colab: install bnteach (release {tag}) the first time. Where bnteach is installed
# already (make lab, Binder, conda), this cell does nothing.
import importlib.util

if importlib.util.find_spec("bnteach") is None:
    import subprocess
    import sys

    url = "{url}"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", url], capture_output=True, text=True
    )
    if pip.returncode != 0:
        raise RuntimeError(f"pip could not install bnteach from {{url}}:\\n{{pip.stderr[-3000:]}}")
    importlib.invalidate_caches()"""


def install_cell_source(tag=None):
    """The one canonical text of the install cell."""
    tag = tag or release_tag()
    return CELL_TEMPLATE.format(tag=tag, url=install_url(tag))


def notebook_paths(folder=NOTEBOOKS):
    return sorted(p for p in Path(folder).glob("*.ipynb") if re.match(r"\d", p.name))


def first_code_cell(nb):
    return next((c for c in nb["cells"] if c["cell_type"] == "code"), None)


def has_install_cell(nb, source=None):
    cell = first_code_cell(nb)
    return cell is not None and "".join(cell["source"]) == (source or install_cell_source())


def _is_install_cell(cell):
    return cell.get("id") == CELL_ID or 'find_spec("bnteach")' in "".join(cell["source"])


def with_install_cell(nb, source=None):
    """``nb`` (a notebook dict) with the install cell as its first code cell: an old version
    of the cell is replaced, otherwise a new cell goes in before the first code cell."""
    source = source or install_cell_source()
    lines = source.splitlines(keepends=True)
    cells = nb["cells"]
    old = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), len(cells))
    if old < len(cells) and _is_install_cell(cells[old]):
        cells[old]["source"] = lines
        return nb
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "id": CELL_ID,
        "metadata": {},
        "outputs": [],
        "source": lines,
    }
    cells.insert(old, cell)
    return nb


def write(path, nb):
    """Write like Jupyter does (one-space indent, a final newline), keeping diffs small."""
    text = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if outdated")
    args = parser.parse_args(argv)
    outdated = []
    for path in notebook_paths():
        nb = json.loads(path.read_text(encoding="utf-8"))
        if has_install_cell(nb):
            continue
        outdated.append(path.name)
        if not args.check:
            write(path, with_install_cell(nb))
    if args.check and outdated:
        print("no current Colab install cell in: " + ", ".join(outdated))
        print("run: python tools/colab.py")
        return 1
    for name in outdated:
        print(f"install cell written: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
