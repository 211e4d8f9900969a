"""The executed HTML edition (``make book``, tools/build_book.py).

Two kinds of tests:
- the build's pieces on small inputs (widgets made static, live-only outputs left out, the
  committed notebooks chosen over the working tree, the landing page from README.md, launch
  links); these run everywhere, in a few seconds;
- the built site (marked ``book``): every notebook has a page with all its figures and printed
  results, every explorer's still decodes to its finished figure, the pages are the committed
  notebooks, every figure was drawn for the page (width, text size, no legend over data),
  links resolve, nothing is loaded from the network, tracebacks only where a cell is tagged
  ``raises-exception``, and a look in headless chromium at 1366 and 1920 px (figures at their
  drawn size, nothing wider than its box; screenshots in ``test-artifacts/``). They need a
  build: ``make book`` builds one and runs them on it; by hand,
  ``BNTEACH_BOOK_BUILD=_build pytest -m book tests/test_book.py``. Without it they skip.

Everything iterates over the notebooks that exist: a new notebook is checked like the others.
"""

import base64
import functools
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
from conftest import CHROMIUM_FLAGS

from bnteach.plots import FIG_DPI, FIG_WIDTH
from bnteach.widgets import RERUN_NOTE

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("build_book", ROOT / "tools" / "build_book.py")
build_book = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(build_book)

NOTEBOOKS = build_book.notebook_paths()
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


# ------------------------------------------------------------------- the build's pieces


def widget_notebook():
    """A notebook whose one output is an explorer, saved the way nbclient saves widget state."""

    def model(name, **state):
        return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}

    state = {
        "box": model("VBoxModel", children=["IPY_MODEL_row", "IPY_MODEL_msg", "IPY_MODEL_out"]),
        "row": model("HBoxModel", children=["IPY_MODEL_lr", "IPY_MODEL_bs", "IPY_MODEL_go"]),
        "lr": model("FloatLogSliderModel", description="learning rate", value=0.01),
        "bs": model(
            "SelectionSliderModel", description="batch size", index=1, _options_labels=["32", "64"]
        ),
        "go": model("ButtonModel", description="+1 step"),
        "msg": model("HTMLModel", value="<b>16 models trained</b>"),
        "out": model("VBoxModel", children=["IPY_MODEL_img", "IPY_MODEL_table"]),
        "img": model("ImageModel", format="png", value=None),
        "table": model("HTMLModel", value="<table><tr><td>0.93</td></tr></table>"),
    }
    state["img"]["buffers"] = [
        {"path": ["value"], "encoding": "base64", "data": base64.b64encode(PNG_1PX).decode()}
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 99 · A title"),
        nbformat.v4.new_code_cell("explorer()"),
        nbformat.v4.new_code_cell("print(1)"),
    ]
    view = {"version_major": 2, "version_minor": 0, "model_id": "box"}
    nb.cells[1].outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={build_book.WIDGET_VIEW: view, "text/plain": "CompareExplorer(...)"},
        )
    ]
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.metadata["widgets"] = {build_book.WIDGET_STATE: {"state": state}}
    return nb


def test_an_explorer_becomes_its_figure_html_and_a_launch_note():
    page = build_book.page_notebook(widget_notebook(), "99_x.ipynb")
    assert "widgets" not in page.metadata  # no widget JavaScript on the page
    assert page.cells[0].source == "# 99 · A title"
    launch = page.cells[1].source
    assert build_book.binder_url("99_x.ipynb") in launch
    assert 'href="notebooks/99_x.ipynb" download' in launch
    outputs = page.cells[2].outputs
    kinds = [next(iter(o.data)) for o in outputs]
    assert kinds == ["text/html", "text/html", "image/png", "text/html"]
    note = outputs[0].data["text/html"]
    assert build_book.binder_url("99_x.ipynb") in note
    assert (
        build_book.colab_url("99_x.ipynb") in note and build_book.colab_url("99_x.ipynb") in launch
    )
    assert "learning rate = 0.01" in note and "batch size = 64" in note
    assert "+1 step" not in note  # buttons are not settings
    assert "16 models trained" in outputs[1].data["text/html"]
    assert base64.b64decode(outputs[2].data["image/png"]) == PNG_1PX
    assert "0.93" in outputs[3].data["text/html"]
    assert page.cells[3].outputs[0].text == "1\n"  # other outputs untouched


def test_live_only_outputs_and_widgets_stay_out_of_the_book():
    """The explorers' "run this cell again" note (an output of its own), their hidden note for
    a stopped kernel and their style (hidden widgets) are for a live JupyterLab only."""
    nb = widget_notebook()
    state = nb.metadata["widgets"][build_book.WIDGET_STATE]["state"]
    gone = {"value": "kernel stopped", "layout": "IPY_MODEL_hid"}
    state["gone"] = {"model_name": "HTMLModel", "state": gone}
    state["hid"] = {"model_name": "LayoutModel", "state": {"display": "none"}}
    state["live"] = {
        "model_name": "HTMLModel",
        "state": {"value": "live only", "_dom_classes": [build_book.LIVE_ONLY]},
    }
    state["box"]["state"]["children"] += ["IPY_MODEL_gone", "IPY_MODEL_live"]
    note = nbformat.v4.new_output("display_data", data={"text/html": RERUN_NOTE})
    nb.cells[1].outputs.insert(0, note)
    page = build_book.page_notebook(nb, "99_x.ipynb")
    html = str(page.cells[2].outputs)
    assert "run this cell again" not in html and "bnteach-rerun" not in html
    assert "kernel stopped" not in html and "live only" not in html
    assert "16 models trained" in html  # the rest is still there


def test_the_book_is_built_from_the_committed_notebooks(tmp_path):
    """A learner's autosaved edits and new notebooks stay out; the build names them."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    (tmp_path / "notebooks").mkdir()
    committed = b'{"cells": [], "note": "as committed"}'
    (tmp_path / "notebooks" / "01_a.ipynb").write_bytes(committed)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    (tmp_path / "notebooks" / "01_a.ipynb").write_text('{"cells": [], "note": "my answer"}')
    (tmp_path / "notebooks" / "02_b.ipynb").write_text("{}")
    logged = []
    notebooks, origin = build_book.sources(root=tmp_path, log=logged.append)
    assert (notebooks, origin) == ({"01_a.ipynb": committed}, "HEAD")
    assert "01_a.ipynb, 02_b.ipynb" in logged[0] and "NOT in the book" in logged[0]
    notebooks, origin = build_book.sources(worktree=True, root=tmp_path, log=logged.append)
    assert origin == "working tree" and set(notebooks) == {"01_a.ipynb", "02_b.ipynb"}
    shutil.rmtree(tmp_path / ".git")  # e.g. a downloaded archive: the working tree is all there is
    assert build_book.sources(root=tmp_path, log=logged.append)[1] == "working tree"


def test_a_solutions_page_says_so_in_its_title():
    title = build_book.page_notebook(widget_notebook(), "99_x_solutions.ipynb").cells[0].source
    assert title == "# 99 · A title · solutions"


def test_a_widget_without_a_figure_shows_its_text_and_settings():
    nb = widget_notebook()
    del nb.metadata["widgets"][build_book.WIDGET_STATE]["state"]["img"]["buffers"]
    outputs = build_book.page_notebook(nb, "99_x.ipynb").cells[2].outputs
    assert [next(iter(o.data)) for o in outputs] == ["text/html"] * 3
    assert "learning rate = 0.01" in outputs[0].data["text/html"]


def test_an_output_widget_shows_what_was_displayed_into_it():
    nb = widget_notebook()
    state = nb.metadata["widgets"][build_book.WIDGET_STATE]["state"]
    state["img"] = {
        "model_name": "OutputModel",
        "state": {
            "outputs": [
                {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBO"}},
                {"output_type": "stream", "name": "stdout", "text": "done\n"},
            ]
        },
    }
    outputs = build_book.page_notebook(nb, "99_x.ipynb").cells[2].outputs
    assert [o.output_type for o in outputs[2:4]] == ["display_data", "stream"]
    assert outputs[2].data["image/png"] == "iVBO" and outputs[3].text == "done\n"
    assert "picture of its default view" in outputs[0].data["text/html"]


def test_a_widget_image_that_is_not_png_stops_the_build():
    nb = widget_notebook()
    nb.metadata["widgets"][build_book.WIDGET_STATE]["state"]["img"]["state"]["format"] = "jpeg"
    with pytest.raises(ValueError, match="not png"):
        build_book.page_notebook(nb, "99_x.ipynb")


def test_the_binder_link_is_the_readme_badge_one():
    readme = (ROOT / "README.md").read_text()
    assert build_book.binder_url("00_start_here.ipynb") in readme


def test_the_landing_page_is_made_from_readme():
    readme = (ROOT / "README.md").read_text()
    names = [p.name for p in NOTEBOOKS]
    pages = {f"notebooks/{n}": n for n in names}
    pages["docs/instructor-guide.md"] = "instructor-guide.md"
    landing = build_book.landing_page(readme, pages, names)
    assert "make lab" in landing and "make test" in landing
    assert "badge_logo.svg" not in landing  # no image from the network
    for name in names:
        if name in readme:
            assert f"]({name})" in landing, f"landing page does not link to {name}'s page"
    toc = landing.split("```{toctree}")[1]
    assert [ln for ln in toc.splitlines() if re.match(r"\d", ln)] == [p.stem for p in NOTEBOOKS]
    first_line = readme.splitlines()[0]
    assert landing.startswith(first_line)


def test_links_to_repository_files_point_at_pages_or_the_repository():
    pages = {"notebooks/01_data.ipynb": "01_data.ipynb"}
    text = "[a](notebooks/01_data.ipynb) [b](LICENSE) [c](https://x.org) ![i](fig.png) [d](#top)"
    out = build_book.rewrite_links(text, pages)
    assert "[a](01_data.ipynb)" in out
    assert "[b](https://github.com/bnteach/bnteach/blob/HEAD/LICENSE)" in out
    assert "[c](https://x.org)" in out and "![i](fig.png)" in out and "[d](#top)" in out
    badge = "[![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/x)"
    assert build_book.rewrite_links(badge, {}) == "[Open on Binder](https://mybinder.org/v2/x)"


def test_the_cache_key_follows_the_notebook():
    key = build_book.cache_key("01_a.ipynb", b"{}")
    assert build_book.cache_key("01_a.ipynb", b"{}") == key
    assert build_book.cache_key("01_a.ipynb", b'{"x": 1}') != key
    assert build_book.cache_key("02_a.ipynb", b"{}") != key


# ----------------------------------------------------------------------- the built site

BUILD = os.environ.get("BNTEACH_BOOK_BUILD")
book = pytest.mark.skipif(
    not BUILD, reason="needs a built book: `make book` (or BNTEACH_BOOK_BUILD=_build)"
)


@pytest.fixture(scope="module")
def site():
    bs4 = pytest.importorskip("bs4")
    build = Path(BUILD)
    html_dir = build / "html"
    assert (html_dir / "index.html").exists(), f"no book in {html_dir}: run `make book`"

    @functools.cache
    def soup(path):
        return bs4.BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")

    manifest = json.loads((build / "executed" / "manifest.json").read_text())
    executed = {
        name: nbformat.read(build / "executed" / out, as_version=4)
        for name, out in manifest["notebooks"].items()
    }
    pages = sorted(p for p in html_dir.rglob("*.html") if "_static" not in p.parts)
    return {
        "dir": html_dir,
        "soup": soup,
        "executed": executed,
        "origin": manifest["origin"],
        "pages": pages,
        "notebooks": [Path(name) for name in executed],  # .name and .stem of each, in order
    }


def expected_images(nb):
    """Image outputs of an executed notebook, counting an explorer's figures (its Image models)."""
    models = build_book._widget_models(nb)
    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data or "image/svg+xml" in data:
                count += 1
            elif build_book.WIDGET_VIEW in data:
                tree = build_book._walk(models, data[build_book.WIDGET_VIEW]["model_id"])
                count += sum(
                    m["name"] == "ImageModel" and bool(m["state"].get("value")) for m in tree
                )
    return count


def page_text(soup):
    return " ".join(soup.get_text(" ").split())


@book
@pytest.mark.book
def test_every_notebook_has_a_page_in_order(site):
    index = site["soup"](site["dir"] / "index.html")
    nav = [a["href"] for a in index.select("nav.bd-links a.reference.internal")]
    pages = [h.split("#")[0] for h in nav if re.match(r"\d", h)]
    assert pages == [f"{p.stem}.html" for p in site["notebooks"]]
    assert "instructor-guide.html" in nav
    for path in site["notebooks"]:
        assert (site["dir"] / f"{path.stem}.html").exists()


@book
@pytest.mark.book
def test_every_page_has_its_figures_and_printed_results(site):
    for path in site["notebooks"]:
        nb = site["executed"][path.name]
        soup = site["soup"](site["dir"] / f"{path.stem}.html")
        outputs = soup.select("div.cell_output")
        shown = sum(len(o.select("img")) + len(o.select("svg")) for o in outputs)
        assert shown == expected_images(nb), f"{path.name}: {shown} figures on the page"
        text = page_text(soup)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                printed = out.get("text", "") if out.output_type == "stream" else ""
                printed = printed or out.get("data", {}).get("text/plain", "")
                if out.output_type == "error" or not printed.strip():
                    continue
                if set(out.get("data", {})) & {"image/png", "text/html", build_book.WIDGET_VIEW}:
                    continue  # shown as the richer form
                line = " ".join(printed.strip().splitlines()[0].split())
                line = re.sub(r"\x1b\[[0-9;]*m", "", line)
                assert line in text, f"{path.name}: printed {line!r} is not on the page"


@book
@pytest.mark.book
def test_explorers_are_pictures_with_a_launch_note(site):
    for path in site["notebooks"]:
        nb = site["executed"][path.name]
        views = sum(
            build_book.WIDGET_VIEW in out.get("data", {})
            for cell in nb.cells
            for out in cell.get("outputs", [])
        )
        soup = site["soup"](site["dir"] / f"{path.stem}.html")
        notes = soup.select("div.bnteach-static-explorer")
        assert len(notes) == views, f"{path.name}: {views} explorers, {len(notes)} notes"
        for note in notes:
            assert note.find("a", href=build_book.binder_url(path.name))
        assert "widget-view" not in str(soup) and "@jupyter-widgets" not in str(soup)


@book
@pytest.mark.book
def test_every_page_has_launch_links(site):
    for path in site["notebooks"]:
        soup = site["soup"](site["dir"] / f"{path.stem}.html")
        assert soup.select_one("a.bnteach-binder")["href"] == build_book.binder_url(path.name)
        assert soup.select_one("a.bnteach-colab")["href"] == build_book.colab_url(path.name)
        download = soup.select_one("a.bnteach-download")["href"]
        assert (site["dir"] / download).exists(), f"{path.name}: no .ipynb to download"


@book
@pytest.mark.book
def test_the_pages_show_the_committed_notebooks(site):
    """Not a working tree that JupyterLab autosaved with a learner's edits and answers: the
    download is the committed file, and each page's code is the committed code."""
    if site["origin"] != "HEAD":
        pytest.skip(f"this book was built from the {site['origin']}")
    committed, _ = build_book.sources(log=lambda _: None)
    assert list(committed) == [p.name for p in site["notebooks"]]
    for path in site["notebooks"]:
        download = site["soup"](site["dir"] / f"{path.stem}.html").select_one("a.bnteach-download")
        assert (site["dir"] / download["href"]).read_bytes() == committed[path.name], path.name
        ours = nbformat.reads(committed[path.name].decode(), as_version=4)
        code = [c.source for c in ours.cells if c.cell_type == "code"]
        shown = [c.source for c in site["executed"][path.name].cells if c.cell_type == "code"]
        assert shown == code, f"{path.name}: executed code differs from the committed code"


@book
@pytest.mark.book
def test_tracebacks_only_where_a_cell_raises_on_purpose(site):
    for path in site["notebooks"]:
        nb = site["executed"][path.name]
        expected = sum(
            out.output_type == "error"
            for cell in nb.cells
            if "raises-exception" in cell.metadata.get("tags", [])
            for out in cell.get("outputs", [])
        )
        soup = site["soup"](site["dir"] / f"{path.stem}.html")
        tracebacks = soup.select("div.output.traceback")
        assert len(tracebacks) == expected, f"{path.name}: {len(tracebacks)} tracebacks"
        for tb in tracebacks:
            cell = tb.find_parent("div", class_="cell")
            assert "tag_raises-exception" in cell["class"], f"{path.name}: an unexpected error"
        assert page_text(soup).count("Traceback (most recent call last)") <= expected


@book
@pytest.mark.book
def test_the_exercises_pages_have_no_answers(site):
    """Each student page (05, and the lessons whose exercise sections 07 and 08 are made from
    their solutions notebooks) shows none of its solutions notebook's own code."""
    pairs = [
        (name.replace("_solutions.ipynb", ".ipynb"), name)
        for name in site["executed"]
        if name.endswith("_solutions.ipynb")
    ]
    if not pairs:
        pytest.skip("no exercise notebooks")
    for exercises, solutions in pairs:
        own = {c.source.strip() for c in site["executed"][exercises].cells if c.cell_type == "code"}
        answers = [
            c.source.strip()
            for c in site["executed"][solutions].cells
            if c.cell_type == "code" and c.source.strip() not in own and len(c.source.strip()) > 40
        ]
        assert answers, f"{solutions} has no code of its own"
        page = site["dir"] / exercises.replace(".ipynb", ".html")
        soup = site["soup"](page)
        code = "\n".join(
            " ".join(pre.get_text().split()) for pre in soup.select("div.cell_input pre")
        )
        for answer in answers:
            assert " ".join(answer.split()) not in code, f"an answer on {page.name}: {answer}"
        assert (site["dir"] / solutions.replace(".ipynb", ".html")).exists()


def _local_targets(site):
    """``(page, attribute value)`` for every link or resource a page loads or points to."""
    for page in site["pages"]:
        soup = site["soup"](page)
        for tag in soup.find_all(["a", "link", "script", "img", "iframe", "source"]):
            for attr in ("href", "src"):
                if tag.get(attr):
                    yield page, tag, tag[attr]


@book
@pytest.mark.book
def test_internal_links_resolve(site):
    broken = []
    for page, _tag, target in _local_targets(site):
        parts = urlsplit(target)
        if parts.scheme or target.startswith("//"):
            continue
        path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if path.is_dir():
            path = path / "index.html"
        if not path.exists():
            broken.append(f"{page.name}: {target}")
        elif parts.fragment and path.suffix == ".html":
            if not site["soup"](path).find(id=unquote(parts.fragment)):
                broken.append(f"{page.name}: {target} (no such anchor)")
    assert not broken, "\n".join(broken[:30])


@book
@pytest.mark.book
def test_nothing_is_loaded_from_the_network(site):
    remote = []
    for page, tag, target in _local_targets(site):
        loads = tag.name != "a" and not (tag.name == "link" and "canonical" in tag.get("rel", []))
        if loads and (urlsplit(target).scheme in ("http", "https") or target.startswith("//")):
            remote.append(f"{page.name}: <{tag.name}> {target}")
    for css in site["dir"].rglob("*.css"):
        for m in re.finditer(r"url\(\s*['\"]?(https?:)?//[^)]+\)", css.read_text(errors="replace")):
            remote.append(f"{css.name}: {m.group(0)}")
        if "@import" in css.read_text(errors="replace") and "googleapis" in css.read_text():
            remote.append(f"{css.name}: imports a web font")
    for page in site["pages"]:
        text = page.read_text(encoding="utf-8")
        for host in ("fonts.googleapis", "cdn.jsdelivr", "unpkg.com", "cdnjs", "require.js"):
            if host in text:
                remote.append(f"{page.name}: mentions {host}")
    assert not remote, "\n".join(remote[:30])


@book
@pytest.mark.book
def test_the_search_index_covers_the_notebooks(site):
    index = (site["dir"] / "searchindex.js").read_text()
    assert (site["dir"] / "search.html").exists()
    for path in site["notebooks"]:
        assert f'"{path.stem}"' in index, f"{path.name} is not in the search index"
    assert "running_mean" in index or "running" in index


EXPLORER_WIDTH = round(FIG_WIDTH * FIG_DPI)  # the explorers draw their PNGs at this width


def _explorer_stills(site, path):
    """For each explorer on ``path``'s page: (the still's note, its <img> tags, its text)."""
    soup = site["soup"](site["dir"] / f"{path.stem}.html")
    for note in soup.select("div.bnteach-static-explorer"):
        output = note.find_parent("div", class_="cell_output")
        yield note, output.select("img"), page_text(output)


def _decode(site, page, img):
    """The PIL image an <img> of ``page`` shows (a file of the site, or a data: URI)."""
    from PIL import Image

    src = img["src"]
    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:
        data = (page.parent / unquote(src)).read_bytes()
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def explorer_views(nb):
    """How many of the notebook's widget outputs are explorers (a ``bnteach.widgets.Explorer``
    carries the class ``bnteach-explorer``)."""
    models = build_book._widget_models(nb)
    return sum(
        "bnteach-explorer"
        in models.get(out["data"][build_book.WIDGET_VIEW]["model_id"], {})
        .get("state", {})
        .get("_dom_classes", [])
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if build_book.WIDGET_VIEW in out.get("data", {})
    )


@book
@pytest.mark.book
def test_every_explorer_still_is_its_finished_figure(site):
    """Each explorer's still decodes to a real picture of the figure's size, not blank, and
    shows the finished view: no progress line, no partial caption, its table when it has one."""
    from PIL import ImageStat

    total = 0
    for path in site["notebooks"]:
        page = site["dir"] / f"{path.stem}.html"
        stills = [(images, text) for _, images, text in _explorer_stills(site, path)]
        stills = [(images, text) for images, text in stills if "Shown:" in text]
        views = explorer_views(site["executed"][path.name])
        assert len(stills) == views, f"{path.name}: {views} explorers, {len(stills)} stills"
        total += views
        for images, text in stills:
            assert images, f"{path.name}: an explorer's still has no picture"
            for img in images:
                image = _decode(site, page, img).convert("L")
                assert image.width == EXPLORER_WIDTH and image.height > 200, (path.name, image.size)
                # a drawn figure has ink: many grey levels, not one flat colour
                assert ImageStat.Stat(image).stddev[0] > 10, f"{path.name}: a blank still"
                assert len(image.getcolors(maxcolors=256 * 256) or ()) > 20, path.name
            for partial in ("so far", "epoch 0/", "computing", "follows when the last epoch"):
                assert partial not in text, f"{path.name}: the still is unfinished ({partial!r})"
            if "final val accuracy" in text:  # the comparison explorer's summary table
                assert "With BN" in text and "Without BN" in text, f"{path.name}: no table"
    assert total > 0, "no explorer in the book"


@book
@pytest.mark.book
def test_no_note_meant_for_jupyterlab_on_the_pages(site):
    for path in site["notebooks"]:
        soup = site["soup"](site["dir"] / f"{path.stem}.html")
        assert not soup.select(f".{build_book.LIVE_ONLY}, .bnteach-rerun, .bnteach-gone"), path.name
        outputs = " ".join(page_text(o) for o in soup.select("div.cell_output"))
        assert "run this cell again" not in outputs, f"{path.name}: a JupyterLab-only note"


# Figures the book's check finds at fault in cells outside this check's remit, by notebook and
# cell id; each must be fixed in its notebook and then removed from here. A new notebook gets
# no entry: its figures must pass.
KNOWN_FIGURE_FAULTS = {
    ("06_why_batchnorm_helps.ipynb", "c08"): "legends over data (accuracy, percentile panels)",
    ("06_why_batchnorm_helps.ipynb", "c15"): "legends over data (accuracy, percentile panels)",
    ("08_backward_by_hand.ipynb", "c03"): "bnteach.graphs.bn_graph_figure is 1100 px wide",
}
MIN_TEXT_PX = 12.5  # 9 pt at 100 dpi; 78% of the book's 16 px body text (checked in chromium)


def _shows_figure(cell):
    """Whether a code cell's outputs show a PNG figure (matplotlib's inline output)."""
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


@book
@pytest.mark.book
def test_every_figure_is_drawn_for_the_page(site):
    """Measured in the book's kernels (tools/book_kernel.py) on every figure a notebook draws,
    explorers included: at most the cell width (960 px), text of at least 9 pt, no legend
    over data."""
    faults = []
    for path in site["notebooks"]:
        nb = site["executed"][path.name]
        reports = nb.metadata.get("bnteach_book", {}).get("figures")
        assert reports is not None, f"{path.name}: executed without tools/book_kernel.py"
        cells = {c.get("execution_count"): c for c in nb.cells if c.cell_type == "code"}
        # Every inline figure the page shows was measured (widgets' pictures are measured too,
        # but a widget need not draw one). A cell may also render a figure it does not show,
        # e.g. an assert that moves a slider whose picture is redrawn: its report is checked
        # like the others. A miss here means the reports point at the wrong cells:
        # has IPython's execution count convention changed? See tools/book_kernel.py.
        measured = {r["execution_count"] for r in reports}
        shown = {n for n, c in cells.items() if _shows_figure(c)}
        assert shown <= measured, (
            f"{path.name}: In {sorted(shown - measured)} show a figure that has no report"
        )
        for report in reports:
            cell = cells.get(report["execution_count"], {})
            where = (path.name, cell.get("id"))
            problems = list(report.get("legend_overlaps", []))
            if "error" in report:
                problems.append(f"could not be measured: {report['error']}")
            elif report["width_px"] > EXPLORER_WIDTH:
                problems.append(f"{report['width_px']} px wide, more than the cell's 960")
            elif report["min_text_px"] is not None and report["min_text_px"] < MIN_TEXT_PX:
                problems.append(f"text of {report['min_text_px']} px, under {MIN_TEXT_PX}")
            if problems and where not in KNOWN_FIGURE_FAULTS:
                faults.append(f"{where[0]} cell {where[1]}: {'; '.join(problems)}")
    assert not faults, "\n".join(faults)


# --------------------------------------------------------------------- a look in chromium

CHROMIUM = Path("/usr/bin/chromium")


@book
@pytest.mark.book
@pytest.mark.browser
def test_pages_in_chromium_load_nothing_from_the_network(site):
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    pages = ["index", "03_train_vs_eval", "04_comparison"]
    remote = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.on(
            "request",
            lambda r: remote.append(r.url) if not r.url.startswith(("file:", "data:")) else None,
        )
        try:
            for name in pages:
                if not (site["dir"] / f"{name}.html").exists():
                    continue
                page.goto((site["dir"] / f"{name}.html").resolve().as_uri())
                page.wait_for_load_state("load")
                broken = page.evaluate(
                    "Array.from(document.images).filter(i => !i.complete || !i.naturalWidth)"
                    ".map(i => i.src)"
                )
                assert not broken, f"{name}: images that did not load: {broken[:5]}"
                page.screenshot(path=str(artifacts / f"book-{name}.png"))
                if name != "index":
                    page.locator(
                        "div.bnteach-static-explorer, div.cell_output img"
                    ).first.scroll_into_view_if_needed()
                    page.screenshot(path=str(artifacts / f"book-{name}-figure.png"))
            page.goto((site["dir"] / "search.html").resolve().as_uri() + "?q=momentum")
            page.wait_for_selector("#search-results ul li", timeout=20000)
            hits = page.locator("#search-results ul li").count()
            page.screenshot(path=str(artifacts / "book-search.png"))
        finally:
            browser.close()
    assert hits > 0
    assert not remote, f"pages asked the network for {remote[:10]}"


BODY_PX = 16  # the theme's body text; MIN_TEXT_PX / BODY_PX is the figures' text ratio
# In every cell's input and output: elements whose content is wider than their box (cut off,
# spilling over, or only reachable by scrolling sideways), and boxes that stick out of the
# text column.
TOO_WIDE = """() => {
  const column = document.querySelector('article.bd-article') || document.body;
  const right = column.getBoundingClientRect().right;
  const found = [];
  for (const el of document.querySelectorAll(
      'div.cell_output, div.cell_output *, div.cell_input, div.cell_input *')) {
    const box = el.getBoundingClientRect();
    const what = `${el.tagName.toLowerCase()}.${el.className}: ` +
      (el.innerText || el.getAttribute('src') || '').trim().slice(0, 80);
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
      found.push(`${el.scrollWidth} px of content in ${el.clientWidth}: ${what}`);
    else if (box.width > 0 && box.right > right + 1)
      found.push(`ends ${Math.round(box.right - right)} px past the column: ${what}`);
  }
  return found;
}"""
# Every figure's shown width over the width it was drawn for (a retina PNG says so in its
# width attribute; an explorer's PNG is drawn at its own size).
FIGURE_SCALES = """() => [...document.querySelectorAll('div.cell_output img')].map(img => {
  const drawn = Number(img.getAttribute('width')) || img.naturalWidth;
  return [img.getAttribute('src').slice(-40), drawn, img.getBoundingClientRect().width / drawn];
})"""
# Figures drawn for the cell width: 960 px, plus the few px that a tight bounding box adds.
# A wider one shrinks, and test_every_figure_is_drawn_for_the_page names it.
CELL_FIGURE_PX = 990
BODY_TEXT = "() => parseFloat(getComputedStyle(document.querySelector('article p')).fontSize)"


@book
@pytest.mark.book
@pytest.mark.browser
def test_pages_are_readable_at_1366_and_1920_px(site):
    """At both widths every figure is shown at the size it was drawn for (so its text, at
    least MIN_TEXT_PX, is at least 78% of the body text), and nothing in a cell is wider than
    its box. Screenshots: test-artifacts/book-WIDTH-PAGE.png (the first figure, or the top);
    BNTEACH_BOOK_FULL_SCREENSHOTS=1 takes whole pages instead."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    full = os.environ.get("BNTEACH_BOOK_FULL_SCREENSHOTS") == "1"
    problems = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 600, "height": 400})
            # the check itself: an unbreakable line in a box that hides what overflows
            page.set_content(
                '<article class="bd-article" style="width:500px"><div class="cell_output">'
                '<pre style="overflow:hidden;white-space:pre">' + "x" * 400 + "</pre></div>"
                "</article>"
            )
            assert page.evaluate(TOO_WIDE), "the width check misses a cut-off output"
            page.close()
            for width in (1366, 1920):
                page = browser.new_page(viewport={"width": width, "height": 900})
                for name in ["index", *(path.stem for path in site["notebooks"])]:
                    page.goto((site["dir"] / f"{name}.html").resolve().as_uri())
                    page.wait_for_load_state("load")
                    body = page.evaluate(BODY_TEXT)
                    if body != BODY_PX:
                        problems.append(f"{width} px, {name}: body text {body} px")
                    for src, drawn, scale in page.evaluate(FIGURE_SCALES):
                        if drawn <= CELL_FIGURE_PX and scale < 0.99:
                            problems.append(f"{width} px, {name}: {src} shown at {scale:.0%}")
                    for what in page.evaluate(TOO_WIDE):
                        problems.append(f"{width} px, {name}: {what}")
                    figure = page.locator("div.cell_output img")
                    if figure.count() and not full:
                        figure.first.scroll_into_view_if_needed()
                    shot = artifacts / f"book-{width}-{name}.png"
                    page.screenshot(path=str(shot), full_page=full)
                if width < 1700:  # the page's contents, moved behind the header's button
                    page.locator(".bd-header-article .secondary-toggle").click()
                    page.wait_for_selector("#pst-secondary-sidebar-modal[open] .page-toc")
                page.close()
        finally:
            browser.close()
    assert not problems, "\n".join(problems[:40])
