"""Sphinx configuration of the executed edition (``make book``; see tools/build_book.py).

The source folder is generated (``_build/book-src``): the executed notebooks, the landing page
made from README.md and the instructor guide. Notebooks are executed before Sphinx runs, so
myst-nb only renders them. Everything the pages load ships with the theme: no fonts, scripts or
images come from the network when the book is built or read.
"""

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent

project = "bnteach: Batch Normalization, hands-on"
author = "the bnteach authors"
copyright = "the bnteach authors, MIT license"

extensions = ["myst_nb"]
nb_execution_mode = "off"  # executed (and cached) by tools/build_book.py
nb_merge_streams = True
myst_enable_extensions = []  # no dollar math: the notebooks have none, and MathJax is online

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_extra_path = [os.environ["BNTEACH_BOOK_EXTRA"]] if "BNTEACH_BOOK_EXTRA" in os.environ else []
html_static_path = [str(HERE / "_static")]
html_css_files = ["bnteach-book.css"]
html_js_files = ["bnteach-book.js"]  # the "On this page" button (see the file)
html_title = "bnteach"
html_last_updated_fmt = None
html_show_sourcelink = False
html_copy_source = True  # the theme's download button offers the executed .ipynb

html_theme = "sphinx_book_theme"
html_theme_options = {
    "repository_url": "https://github.com/bnteach/bnteach",
    "repository_branch": "HEAD",
    "path_to_docs": "notebooks",
    "use_repository_button": True,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "launch_buttons": {
        "binderhub_url": "https://mybinder.org",
        "notebook_interface": "jupyterlab",
    },
    "show_toc_level": 1,
    "navigation_with_keys": False,
}
