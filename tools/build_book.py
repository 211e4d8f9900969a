"""Build the executed HTML edition of the notebooks (``make book``) into ``_build/html``.

Steps, each small enough to test on its own (``tests/test_book.py``):

0. Take the notebooks (and README.md, the instructor guide) as committed: ``git show HEAD:...``,
   never the working tree, which a learner's JupyterLab may have autosaved with their edits
   and answers. The build says which notebooks differ from their committed version (they are
   not in the book); ``--worktree`` builds from the working tree instead, for an author who
   wants to see uncommitted changes. Outside a git checkout the working tree is all there is.
1. Execute every ``notebooks/NN_*.ipynb`` in a fresh kernel (nbclient, ``--jobs`` at a time),
   keeping the widget state. The kernels load ``tools/book_kernel.py``: explorers compute
   their default view before their cell returns (so the saved state holds the finished
   figure and table), and every figure is measured (width, smallest text, legends over data)
   into the executed notebook's metadata. An executed notebook is cached in
   ``_build/executed/`` under a hash of the notebook, the ``bnteach`` sources and the kernel
   settings, so a rebuild re-executes only what changed; ``manifest.json`` there names the
   executed copies this build used and where their notebooks came from. Cells tagged
   ``raises-exception`` may fail; any other error stops the build.
2. Make each page readable without a kernel: every widget output (an explorer) becomes the
   PNG figures and HTML its widgets hold in the saved state (the default view), plus a note
   that says which settings these are and how to run the live notebook. Outputs meant for a
   live JupyterLab only (marked with the class ``bnteach-live-only``, e.g. the explorers'
   "run this cell again" note) are left out, and so are hidden widgets. The widget state is
   then dropped, so no page loads widget JavaScript. Each page gets launch links (Binder,
   Colab, the ``.ipynb`` to download).
3. Write a landing page generated from README.md (intro, the two commands, the notebook map,
   links rewritten to the pages), copy the instructor guide, and run Sphinx (myst-nb,
   sphinx-book-theme; configuration and CSS in ``docs/book/``) with warnings as errors.

Nothing here needs the network: the theme ships its fonts and icons, the pages have no math
(so no MathJax), and the widget outputs are gone before Sphinx sees them.

Usage: ``python tools/build_book.py [--jobs 2] [--build-dir _build] [--worktree]``
"""

import argparse
import base64
import concurrent.futures
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))
from colab import colab_url  # noqa: E402 (the sibling module, found through TOOLS)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CONF_DIR = ROOT / "docs" / "book"
REPO = "bnteach/bnteach"
BINDER = "https://mybinder.org/v2/gh/{repo}/HEAD?urlpath=lab/tree/notebooks/{name}"
GITHUB_BLOB = "https://github.com/{repo}/blob/HEAD/{path}"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# README sections that make the landing page (title prefixes); the intro before them always.
LANDING_SECTIONS = ("Get started", "The notebooks")
# Kernel settings for the book only: figures at twice the pixels, shown at the usual size,
# tracebacks (cells that raise on purpose) one line a frame instead of pages of torch source,
# and tools/book_kernel.py (explorers finish before their cell returns; figures measured).
KERNEL_CONFIG = (
    "c.InlineBackend.figure_formats = {'retina'}\n"
    "c.InteractiveShell.xmode = 'Plain'\n"
    "c.InteractiveShellApp.extensions = ['book_kernel']\n"
)
LIVE_ONLY = "bnteach-live-only"  # the class of outputs and widgets meant for a live kernel only


def notebook_paths(folder=NOTEBOOKS):
    """The collection's notebooks in their numbered order."""
    return sorted(p for p in Path(folder).glob("*.ipynb") if re.match(r"\d", p.name))


def binder_url(name):
    """Binder deep link that opens notebook ``name`` (e.g. ``"01_data.ipynb"``) in JupyterLab."""
    return BINDER.format(repo=REPO, name=name)


# ----------------------------------------------------------- 0. the committed notebooks


def _git(*args, root=ROOT):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True).stdout


def _committed(relpath, root=ROOT):
    """The bytes of ``relpath`` in the last commit (HEAD)."""
    return _git("show", f"HEAD:{relpath}", root=root)


def in_git(root=ROOT):
    """Whether ``root`` is a git checkout with a commit (else the working tree is used)."""
    try:
        _git("rev-parse", "--verify", "HEAD", root=root)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def sources(worktree=False, root=ROOT, log=print):
    """The notebooks the book is built from, ``{name: bytes}`` in numbered order, and where
    they come from: ``"HEAD"`` (the last commit; the default in a git checkout) or
    ``"working tree"``. Logs which notebooks differ from their committed version."""
    local = {p.name: p.read_bytes() for p in notebook_paths(Path(root) / "notebooks")}
    if worktree or not in_git(root):
        return local, "working tree"
    listed = _git("ls-tree", "--name-only", "HEAD", "notebooks/", root=root).decode().split("\n")
    names = sorted(Path(p).name for p in listed if p.endswith(".ipynb"))
    committed = {n: _committed(f"notebooks/{n}", root) for n in names if re.match(r"\d", n)}
    differ = sorted(n for n in committed.keys() | local.keys() if committed.get(n) != local.get(n))
    if differ:
        log(
            "  building from the committed notebooks (git HEAD); these differ in the working "
            f"tree and their changes are NOT in the book: {', '.join(differ)}. Commit them, "
            "or pass --worktree to build from the working tree."
        )
    return committed, "HEAD"


def text_source(relpath, origin):
    """README.md or a doc as of ``origin`` (``"HEAD"`` or ``"working tree"``)."""
    if origin == "HEAD":
        return _committed(relpath).decode("utf-8")
    return (ROOT / relpath).read_text(encoding="utf-8")


# ---------------------------------------------------------------------- 1. execution, cached


def cache_key(name, data):
    """Hash of what an executed notebook depends on: its bytes, bnteach, the kernel settings."""
    h = hashlib.sha256(KERNEL_CONFIG.encode())
    h.update(name.encode())
    h.update(data)
    for src in [TOOLS / "book_kernel.py", *sorted((ROOT / "bnteach").rglob("*.py"))]:
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


def _execute(name, data, out, ipython_dir):
    """Execute notebook ``data`` (its bytes) in a fresh kernel, with the figure reports in its
    metadata (``bnteach_book.figures``), and write it to ``out``; return seconds taken."""
    from nbclient import NotebookClient

    os.environ["IPYTHONDIR"] = ipython_dir
    os.environ.pop("BNTEACH_SEED_OFFSET", None)  # the book shows the default seeds
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TOOLS), path) if p)
    reports = Path(str(out) + ".figures.jsonl")
    reports.unlink(missing_ok=True)
    os.environ["BNTEACH_BOOK_FIGURES"] = str(reports)
    start = time.perf_counter()
    nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        startup_timeout=120,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    figures = []
    if reports.exists():
        figures = [json.loads(line) for line in reports.read_text().splitlines() if line]
        reports.unlink()
    nb.metadata["bnteach_book"] = {"figures": figures}
    tmp = Path(str(out) + ".tmp")
    nbformat.write(nb, tmp)
    tmp.replace(out)
    return time.perf_counter() - start


def execute_all(notebooks, cache_dir, jobs=2, log=print):
    """Executed copies of ``notebooks`` (``{name: bytes}``, cached by ``cache_key``):
    ``{name: executed_path}``."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    ipython_dir = cache_dir / "ipython"
    (ipython_dir / "profile_default").mkdir(parents=True, exist_ok=True)
    (ipython_dir / "profile_default" / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
    done, todo = {}, {}
    for name, data in notebooks.items():
        stem = Path(name).stem
        out = cache_dir / f"{stem}-{cache_key(name, data)}.ipynb"
        for stale in cache_dir.glob(f"{stem}-*.ipynb"):
            if stale != out and re.fullmatch(rf"{re.escape(stem)}-[0-9a-f]{{16}}", stale.stem):
                stale.unlink()
        done[name] = out
        if out.exists():
            log(f"  cached    {name}")
        else:
            todo[name] = out
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {
            pool.submit(_execute, n, notebooks[n], o, str(ipython_dir)): n for n, o in todo.items()
        }
        for future in concurrent.futures.as_completed(futures):
            name = futures[future]
            try:
                seconds = future.result()
            except Exception as err:  # the cell's error, with its traceback, from nbclient
                raise SystemExit(f"executing {name} failed:\n{err}") from None
            log(f"  executed  {name} in {seconds:.1f} s")
    return done


# ---------------------------------------------------------- 2. pages without a kernel


def _widget_models(nb):
    """``{model_id: {"name": model_name, "state": state with buffers decoded}}``."""
    saved = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    models = {}
    for model_id, entry in saved.items():
        state = dict(entry.get("state", {}))
        for buf in entry.get("buffers", []):
            data = buf["data"]
            if buf.get("encoding", "base64") == "base64":
                data = base64.b64decode(data)
            target = state
            for key in buf["path"][:-1]:
                target = target[key]
            target[buf["path"][-1]] = data
        models[model_id] = {"name": entry.get("model_name", ""), "state": state}
    return models


def _ref(value):
    return str(value).removeprefix("IPY_MODEL_")


def _walk(models, model_id, seen=None):
    """Visible models under ``model_id`` in display order (children before later siblings).

    A model whose layout says ``display: none`` (an explorer hides its figure after an error,
    and its note for a stopped kernel until then) or whose classes include ``LIVE_ONLY`` is
    skipped with everything under it.
    """
    seen = set() if seen is None else seen
    if model_id in seen or model_id not in models:
        return
    seen.add(model_id)
    layout = models.get(_ref(models[model_id]["state"].get("layout", "")), {})
    if layout.get("state", {}).get("display") == "none":
        return
    if LIVE_ONLY in models[model_id]["state"].get("_dom_classes", []):
        return
    yield models[model_id]
    for child in models[model_id]["state"].get("children", []):
        yield from _walk(models, _ref(child), seen)


def _setting(model):
    """``"description = value"`` for a control, or None for anything else."""
    state = model["state"]
    label = state.get("description", "")
    if not label or model["name"] in ("ButtonModel", "HTMLModel", "LabelModel"):
        return None
    if "_options_labels" in state and isinstance(state.get("index"), int):
        value = state["_options_labels"][state["index"]]
    elif "value" in state:
        value = state["value"]
        if isinstance(value, float):
            value = f"{value:.3g}"
    else:
        return None
    return f"{label} = {value}"


def static_widget_outputs(view, models, notebook_name):
    """Outputs that stand in for one widget view: a note, then its figures and HTML.

    Returns a list of nbformat outputs: an HTML note naming the settings shown and linking to
    the live notebook, then, in display order, each ``Image`` widget's PNG, each visible,
    non-empty ``HTML`` widget's markup and what was displayed into each ``Output`` widget.
    An ``Image`` in another format raises ``ValueError``.
    """
    model_id = view["model_id"]
    parts, settings = [], []
    for model in _walk(models, model_id):
        state = model["state"]
        if model["name"] == "ImageModel" and state.get("value"):
            if state.get("format", "png") != "png":
                raise ValueError(f"widget image format {state.get('format')!r} is not png")
            parts.append(("png", state["value"]))
        elif model["name"] == "HTMLModel" and state.get("value", "").strip():
            parts.append(("html", state["value"]))
        elif model["name"] == "OutputModel":  # what was displayed into an Output widget
            parts.extend(("output", out) for out in state.get("outputs", []))
        elif (s := _setting(model)) is not None:
            settings.append(s)
    shown = ", ".join(html.escape(s) for s in settings)
    has_figure = any(
        kind == "png" or (kind == "output" and "image/png" in value.get("data", {}))
        for kind, value in parts
    )
    what = "the picture of its default view" if has_figure else "what its default view shows"
    note = (
        '<div class="bnteach-static-explorer admonition note">'
        '<p class="admonition-title">A live widget, shown here as a still</p>'
        f"<p>In Jupyter this is interactive. This page shows {what}"
        f"{' (' + shown + ')' if shown else ''}, as it looks once it has finished. To move "
        f'its controls, open this notebook <a href="{binder_url(notebook_name)}">on Binder</a>'
        f' or <a href="{colab_url(notebook_name)}">on Colab</a>, or run it locally '
        "(<code>make lab</code>).</p></div>"
    )
    outputs = [nbformat.v4.new_output("display_data", data={"text/html": note})]
    for kind, value in parts:
        if kind == "output":
            outputs.append(nbformat.from_dict(value))
            continue
        if kind == "png":
            data = {"image/png": base64.b64encode(value).decode("ascii")}
        else:
            data = {"text/html": f'<div class="bnteach-explorer-html">{value}</div>'}
        outputs.append(nbformat.v4.new_output("display_data", data=data))
    return outputs


def launch_cell(name):
    """A markdown cell with the page's launch links (raw HTML, kept as is by MyST)."""
    return nbformat.v4.new_markdown_cell(
        '<div class="bnteach-launch">'
        "<strong>Run it yourself:</strong> "
        f'<a class="bnteach-binder" href="{binder_url(name)}">open this notebook on Binder</a>'
        " &middot; "
        f'<a class="bnteach-colab" href="{colab_url(name)}">open in Colab</a>'
        " &middot; "
        f'<a class="bnteach-download" href="notebooks/{name}" download>'
        "download the notebook (.ipynb)</a>"
        " &middot; or locally: <code>make lab</code>. "
        "This page shows it as executed, with its outputs."
        "</div>"
    )


def _live_only(out):
    """An output meant for a live JupyterLab only (its HTML carries ``LIVE_ONLY``)."""
    return LIVE_ONLY in str(out.get("data", {}).get("text/html", ""))


def _short_path(line):
    """A traceback line with paths from the repository or the package, not this machine."""
    line = line.replace(f"{ROOT}/", "")
    return re.sub(r"[^\s\"']*/site-packages/", "", line)


def page_notebook(nb, name):
    """The notebook as its page shows it: widgets made static, live-only outputs left out,
    launch links after the title, tracebacks with short paths."""
    nb = nbformat.from_dict(nb)
    models = _widget_models(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                out.traceback = [_short_path(line) for line in out.traceback]
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is not None:
                outputs.extend(static_widget_outputs(view, models, name))
            elif not _live_only(out):
                outputs.append(out)
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("bnteach_book", None)
    title = nb.cells[0]
    if name.endswith("_solutions.ipynb") and "solution" not in title.source.split("\n")[0].lower():
        # the page title (and its sidebar entry) must tell it from the exercises' page
        title.source = re.sub(r"^(# .+)$", r"\1 · solutions", title.source, count=1, flags=re.M)
    cell = launch_cell(name)
    cell.id = "bnteach-launch-links"
    nb.cells.insert(1, cell)
    return nb


# --------------------------------------------------------------------- 3. the other pages


def _sections(markdown):
    """Split markdown on level-2 headings (outside code fences): ``[(title, text)]``."""
    sections, title, lines, fence = [], None, [], False
    for line in markdown.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"## (.+)", line)
        if m:
            sections.append((title, "".join(lines)))
            title, lines = m.group(1).strip(), []
        lines.append(line)
    sections.append((title, "".join(lines)))
    return sections


def rewrite_links(markdown, pages):
    """Point repository links at the book: notebooks and docs to pages, other files to GitHub.

    ``pages`` maps a repository path (``notebooks/01_data.ipynb``) to the page's source name
    (``01_data.ipynb``). Images with absolute URLs (badges) become plain links, so no page
    loads anything from the network.
    """
    badge = r"\[!\[([^\]]*)\]\((https?://[^)]+)\)\]\(([^)]+)\)"
    markdown = re.sub(badge, r"[Open on \1](\3)", markdown)

    def link(m):
        text, target = m.group(1), m.group(2)
        if re.match(r"[a-z]+:|#", target):
            return m.group(0)
        path, _, anchor = target.partition("#")
        path = path.removeprefix("./").removeprefix("../")
        if path in pages:
            new = pages[path] + (f"#{anchor}" if anchor else "")
        else:
            new = GITHUB_BLOB.format(repo=REPO, path=target.removeprefix("../"))
        return f"[{text}]({new})"

    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", link, markdown)


def landing_page(readme, pages, notebook_names):
    """The landing page's MyST source, generated from README.md's text."""
    kept = []
    for title, text in _sections(readme):
        if title is None or title.startswith(LANDING_SECTIONS):
            kept.append(text)
    missing = [
        t for t in LANDING_SECTIONS if not any(s.lstrip().startswith(f"## {t}") for s in kept)
    ]
    if missing:
        raise ValueError(
            f"README.md has no section starting with {missing}; update LANDING_SECTIONS"
        )
    body = rewrite_links("".join(kept), pages)
    edition = (
        "\n## This edition\n\n"
        "These pages are the notebooks as executed by `make book`, with every figure and "
        "printed result, built from the notebooks as committed to the repository. Explorers "
        "(the interactive widgets) need a running kernel: here each one shows a picture of "
        "its default view once finished, with links to launch the live notebook. Every page "
        "links to Binder, to Colab and to its `.ipynb`; the search box searches all pages.\n"
    )
    toc = "\n```{toctree}\n:hidden:\n:caption: Notebooks\n\n"
    toc += "".join(f"{Path(n).stem}\n" for n in notebook_names)
    toc += "```\n\n```{toctree}\n:hidden:\n:caption: Teaching\n\ninstructor-guide\n```\n"
    return body.rstrip() + "\n" + edition + toc


def write_sources(executed, notebooks, origin, src, extra, log=print):
    """Fill the Sphinx source folder ``src`` from the executed notebooks and the docs (as of
    ``origin``), and ``extra`` (copied as is into the site) with the runnable notebooks
    (``notebooks``: ``{name: bytes}``, stripped, as committed) to download."""
    for folder in (src, extra):
        if folder.exists():
            shutil.rmtree(folder)
    src.mkdir(parents=True)
    (extra / "notebooks").mkdir(parents=True)
    names = list(executed)
    pages = {f"notebooks/{n}": n for n in names}
    pages["docs/instructor-guide.md"] = "instructor-guide.md"
    pages["README.md"] = "index.md"
    for name, out in executed.items():
        nb = page_notebook(nbformat.read(out, as_version=4), name)
        nbformat.write(nb, src / name)
        (extra / "notebooks" / name).write_bytes(notebooks[name])
    readme = text_source("README.md", origin)
    (src / "index.md").write_text(landing_page(readme, pages, names))
    guide = text_source("docs/instructor-guide.md", origin)
    (src / "instructor-guide.md").write_text(rewrite_links(guide, pages))
    log(f"  wrote {len(names)} notebook pages, index.md, instructor-guide.md (from {origin})")


def build(build_dir, jobs=2, worktree=False, log=print):
    """Execute (cached), write the sources, run Sphinx; return ``build_dir / "html"``."""
    build_dir = Path(build_dir)
    t0 = time.perf_counter()
    notebooks, origin = sources(worktree, log=log)
    log(f"executing notebooks (from {origin})")
    executed = execute_all(notebooks, build_dir / "executed", jobs=jobs, log=log)
    manifest = {"origin": origin, "notebooks": {n: out.name for n, out in executed.items()}}
    (build_dir / "executed" / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    t1 = time.perf_counter()
    src, extra, out = build_dir / "book-src", build_dir / "book-extra", build_dir / "html"
    write_sources(executed, notebooks, origin, src, extra, log=log)
    if out.exists():
        shutil.rmtree(out)
    env = dict(os.environ, BNTEACH_BOOK_EXTRA=str(extra))
    with tempfile.TemporaryDirectory() as doctrees:
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q"]
        cmd += ["-c", str(CONF_DIR), "-d", doctrees, str(src), str(out)]
        subprocess.run(cmd, check=True, env=env)
    t2 = time.perf_counter()
    log(f"book: {out / 'index.html'}  (execute {t1 - t0:.1f} s, pages {t2 - t1:.1f} s)")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="notebooks executed at once")
    parser.add_argument("--build-dir", default=str(ROOT / "_build"))
    parser.add_argument(
        "--worktree",
        action="store_true",
        help="build from the working tree's notebooks, not the committed ones (to preview "
        "uncommitted changes; never for the published book)",
    )
    args = parser.parse_args(argv)
    try:
        build(args.build_dir, jobs=args.jobs, worktree=args.worktree)
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"sphinx failed (exit {err.returncode}); see its messages above") from None


if __name__ == "__main__":
    main()
