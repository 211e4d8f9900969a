"""Build the executed HTML edition of the notebooks (``make book``) into ``_build/html``.

Steps, each small enough to test on its own (``tests/test_book.py``):

1. Execute every ``notebooks/NN_*.ipynb`` in a fresh kernel (nbclient, ``--jobs`` at a time),
   keeping the widget state. An executed notebook is cached in ``_build/executed/`` under a
   hash of the notebook, the ``bnteach`` sources and the kernel settings, so a rebuild
   re-executes only what changed. Cells tagged ``raises-exception`` may fail; any other error
   stops the build.
2. Make each page readable without a kernel: every widget output (an explorer) becomes the
   PNG figures and HTML its widgets hold in the saved state (the default view, rendered when
   the explorer was built), plus a note that says which settings these are and how to launch
   the live notebook. The widget state is then dropped, so no page loads widget JavaScript.
   Each page gets launch links (Binder deep link, the ``.ipynb`` to download).
3. Write a landing page generated from README.md (intro, the two commands, the notebook map,
   links rewritten to the pages), copy the instructor guide, and run Sphinx (myst-nb,
   sphinx-book-theme; configuration in ``docs/book/conf.py``) with warnings as errors.

Nothing here needs the network: the theme ships its fonts and icons, the pages have no math
(so no MathJax), and the widget outputs are gone before Sphinx sees them.

Usage: ``python tools/build_book.py [--jobs 2] [--build-dir _build]``
"""

import argparse
import base64
import concurrent.futures
import hashlib
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

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
# Kernel settings for the book only: figures at twice the pixels, shown at the usual size, and
# tracebacks (cells that raise on purpose) one line a frame instead of pages of torch source.
KERNEL_CONFIG = "c.InlineBackend.figure_formats = {'retina'}\nc.InteractiveShell.xmode = 'Plain'\n"


def notebook_paths(folder=NOTEBOOKS):
    """The collection's notebooks in their numbered order."""
    return sorted(p for p in Path(folder).glob("*.ipynb") if re.match(r"\d", p.name))


def binder_url(name):
    """Binder deep link that opens notebook ``name`` (e.g. ``"01_data.ipynb"``) in JupyterLab."""
    return BINDER.format(repo=REPO, name=name)


# ---------------------------------------------------------------------- 1. execution, cached


def cache_key(path):
    """Hash of what an executed notebook depends on: itself, bnteach, the kernel settings."""
    h = hashlib.sha256(KERNEL_CONFIG.encode())
    sources = [Path(path), *sorted((ROOT / "bnteach").rglob("*.py"))]
    for src in sources:
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


def _execute(path, out, ipython_dir):
    """Execute notebook ``path`` in a fresh kernel, write it to ``out``; return seconds taken."""
    from nbclient import NotebookClient

    os.environ["IPYTHONDIR"] = ipython_dir
    os.environ.pop("BNTEACH_SEED_OFFSET", None)  # the book shows the default seeds
    start = time.perf_counter()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        startup_timeout=120,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(Path(path).parent)}},
    )
    client.execute()
    tmp = Path(str(out) + ".tmp")
    nbformat.write(nb, tmp)
    tmp.replace(out)
    return time.perf_counter() - start


def execute_all(paths, cache_dir, jobs=2, log=print):
    """Executed copies of ``paths`` (cached by ``cache_key``): ``{path: executed_path}``."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    ipython_dir = cache_dir / "ipython"
    (ipython_dir / "profile_default").mkdir(parents=True, exist_ok=True)
    (ipython_dir / "profile_default" / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
    done, todo = {}, {}
    for path in paths:
        out = cache_dir / f"{path.stem}-{cache_key(path)}.ipynb"
        for stale in cache_dir.glob(f"{path.stem}-*.ipynb"):
            if stale != out and re.fullmatch(rf"{re.escape(path.stem)}-[0-9a-f]{{16}}", stale.stem):
                stale.unlink()
        done[path] = out
        if out.exists():
            log(f"  cached    {path.name}")
        else:
            todo[path] = out
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_execute, p, o, str(ipython_dir)): p for p, o in todo.items()}
        for future in concurrent.futures.as_completed(futures):
            path = futures[future]
            try:
                seconds = future.result()
            except Exception as err:  # the cell's error, with its traceback, from nbclient
                raise SystemExit(f"executing {path.name} failed:\n{err}") from None
            log(f"  executed  {path.name} in {seconds:.1f} s")
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

    A model whose layout says ``display: none`` (an explorer hides its figure after an error)
    is skipped with everything under it.
    """
    seen = set() if seen is None else seen
    if model_id in seen or model_id not in models:
        return
    seen.add(model_id)
    layout = models.get(_ref(models[model_id]["state"].get("layout", "")), {})
    if layout.get("state", {}).get("display") == "none":
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
        f"{' (' + shown + ')' if shown else ''}. To move its controls, "
        f'<a href="{binder_url(notebook_name)}">open this notebook on Binder</a> or run it '
        "locally (<code>make lab</code>).</p></div>"
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
        f'<a class="bnteach-download" href="notebooks/{name}" download>'
        "download the notebook (.ipynb)</a>"
        " &middot; or locally: <code>make lab</code>. "
        "This page shows it as executed, with its outputs."
        "</div>"
    )


def page_notebook(nb, name):
    """The notebook as its page shows it: widgets made static, launch links after the title,
    tracebacks with paths relative to the repository."""
    nb = nbformat.from_dict(nb)
    models = _widget_models(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            if out.output_type == "error":  # paths from the repository, not this machine
                out.traceback = [line.replace(f"{ROOT}/", "") for line in out.traceback]
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(out)
            else:
                outputs.extend(static_widget_outputs(view, models, name))
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
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
        "printed result. Explorers (the interactive widgets) need a running kernel: here each "
        "one shows a picture of its default view with a link to launch the live notebook. "
        "Every page links to Binder and to its `.ipynb`; the search box searches all pages.\n"
    )
    toc = "\n```{toctree}\n:hidden:\n:caption: Notebooks\n\n"
    toc += "".join(f"{Path(n).stem}\n" for n in notebook_names)
    toc += "```\n\n```{toctree}\n:hidden:\n:caption: Teaching\n\ninstructor-guide\n```\n"
    return body.rstrip() + "\n" + edition + toc


def write_sources(executed, src, extra, log=print):
    """Fill the Sphinx source folder ``src`` from the executed notebooks and the docs, and
    ``extra`` (copied as is into the site) with the runnable notebooks to download."""
    for folder in (src, extra):
        if folder.exists():
            shutil.rmtree(folder)
    src.mkdir(parents=True)
    (extra / "notebooks").mkdir(parents=True)
    names = [p.name for p in executed]
    pages = {f"notebooks/{n}": n for n in names}
    pages["docs/instructor-guide.md"] = "instructor-guide.md"
    pages["README.md"] = "index.md"
    for path, out in executed.items():
        nb = page_notebook(nbformat.read(out, as_version=4), path.name)
        nbformat.write(nb, src / path.name)
        shutil.copy(path, extra / "notebooks" / path.name)  # the runnable, stripped one
    readme = (ROOT / "README.md").read_text()
    (src / "index.md").write_text(landing_page(readme, pages, names))
    guide = (ROOT / "docs" / "instructor-guide.md").read_text()
    (src / "instructor-guide.md").write_text(rewrite_links(guide, pages))
    log(f"  wrote {len(names)} notebook pages, index.md, instructor-guide.md")


def build(build_dir, jobs=2, log=print):
    """Execute (cached), write the sources, run Sphinx; return ``build_dir / "html"``."""
    build_dir = Path(build_dir)
    t0 = time.perf_counter()
    log("executing notebooks")
    executed = execute_all(notebook_paths(), build_dir / "executed", jobs=jobs, log=log)
    t1 = time.perf_counter()
    src, extra, out = build_dir / "book-src", build_dir / "book-extra", build_dir / "html"
    write_sources(executed, src, extra, log=log)
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
    args = parser.parse_args(argv)
    try:
        build(args.build_dir, jobs=args.jobs)
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"sphinx failed (exit {err.returncode}); see its messages above") from None


if __name__ == "__main__":
    main()
