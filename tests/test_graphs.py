"""bnteach.graphs: the computational-graph figure of notebook 08."""

import io
import math

import pytest
from matplotlib.figure import Figure

from bnteach.graphs import EDGES, NODES, bn_graph_figure


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_graph_figure_shows_every_node_and_gradient():
    fig = bn_graph_figure()
    assert isinstance(fig, Figure)
    shown = texts(fig)
    for name, (_, _, formula, shape) in NODES.items():
        assert f"{formula}\n{shape}" in shown
        assert f"d{name}" in shown
    arrows = [c for c in fig.axes[0].get_children() if type(c).__name__ == "Annotation"]
    assert len(arrows) == len(EDGES)
    fig.savefig(io.BytesIO(), format="png")  # it draws


def test_graph_figure_without_gradients():
    assert not any(t.startswith("d") for t in texts(bn_graph_figure(gradients=False)))


def test_edges_follow_the_forward_pass():
    order = list(NODES)
    inputs = {b for _, b in EDGES}
    assert {"mu", "xc", "var", "rstd", "xhat", "y"} == inputs
    assert ("x", "mu") in EDGES and ("var", "rstd") in EDGES
    assert all(a in order and b in order for a, b in EDGES)


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        (dict(gradients="no"), TypeError, "gradients must be True or False"),
        (dict(width="11"), TypeError, "width"),
        (dict(width=1e30), ValueError, "between 2 and 40"),
        (dict(width=1e-30), ValueError, "between 2 and 40"),
        (dict(width=math.nan), ValueError, "positive, finite"),
    ],
)
def test_graph_figure_refuses_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        bn_graph_figure(**kwargs)
