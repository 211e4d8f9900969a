"""IPython extension loaded into the kernels that execute the book's notebooks (and only there;
tools/build_book.py puts this folder on their path and names it in their kernel config).

- Explorers compute their default view before their cell returns
  (``bnteach.widgets.Explorer.background = False``), so the executed notebook holds the
  finished figure and table, which the book shows as a still (in the background, the cell
  would end at "epoch 0" and the still would be empty).
- Every figure rendered to PNG is measured with :func:`bnteach.plots.figure_report` (width,
  smallest text, legends over data) and the report, with the cell's execution count, is
  appended as one JSON line to the file named by ``$BNTEACH_BOOK_FIGURES``. The build stores
  the reports in the executed notebook; tests/test_book.py checks them.
"""

import json
import os

from matplotlib.backend_bases import FigureCanvasBase


def load_ipython_extension(ip):
    from bnteach import plots, widgets

    widgets.Explorer.background = False
    path = os.environ.get("BNTEACH_BOOK_FIGURES")
    if not path:
        return
    print_figure = FigureCanvasBase.print_figure

    def measured(canvas, *args, **kwargs):
        try:
            report = plots.figure_report(canvas.figure)
        except Exception as err:  # a figure the check cannot read: say so, do not break it
            report = {"error": f"{type(err).__name__}: {err}"}
        # IPython has counted the running cell already: it is In [execution_count - 1], the
        # execution count the executed notebook gives that cell.
        report["execution_count"] = ip.execution_count - 1
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(report) + "\n")
        return print_figure(canvas, *args, **kwargs)

    FigureCanvasBase.print_figure = measured
