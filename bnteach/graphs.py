"""A picture of BN's forward pass as a computational graph (for notebook 08).

``bn_graph_figure()`` draws the nodes of training-mode BN for x of shape (N, C):
``mu = mean(x)``, ``xc = x - mu``, ``var = mean(xc**2)``, ``rstd = (var + eps)**-1/2``,
``xhat = xc * rstd``, ``y = gamma * xhat + beta``, each with its shape, and the gradient that
flows back into it. Pure matplotlib (``Figure``, no pyplot state).
"""

from matplotlib.figure import Figure

from bnteach import checks

# name: (x, y position, formula, shape)
NODES = {
    "x": (0.0, 1.0, "x", "(N, C)"),
    "mu": (2.2, 2.5, "mu = mean(x)", "(C,)"),
    "xc": (4.4, 1.0, "xc = x - mu", "(N, C)"),
    "var": (6.6, 2.5, "var = mean(xc**2)", "(C,)"),
    "rstd": (9.1, 2.5, "rstd =\n(var + eps)**-0.5", "(C,)"),
    "xhat": (11.3, 1.0, "xhat = xc * rstd", "(N, C)"),
    "gamma": (11.3, -0.9, "gamma", "(C,)"),
    "beta": (13.6, -0.9, "beta", "(C,)"),
    "y": (13.6, 1.0, "y = gamma * xhat\n+ beta", "(N, C)"),
}
EDGES = [
    ("x", "mu"),
    ("x", "xc"),
    ("mu", "xc"),
    ("xc", "var"),
    ("var", "rstd"),
    ("xc", "xhat"),
    ("rstd", "xhat"),
    ("xhat", "y"),
    ("gamma", "y"),
    ("beta", "y"),
]


def bn_graph_figure(gradients=True, width=11.0):
    """The graph of BN's forward pass; with ``gradients`` the name of each node's gradient
    (d<node>) in red under it. Returns a matplotlib Figure ``width`` inches wide (2 to 40)."""
    checks.flag(gradients, "gradients")
    width = checks.positive_number(width, "width (inches)", example=9.6)
    if not 2 <= width <= 40:
        raise ValueError(
            f"width is in inches and must be between 2 and 40 (9.6 fills a notebook cell), got "
            f"{width:g}: a figure that small cannot show the nodes, one that large cannot be "
            f"drawn."
        )
    fig = Figure(figsize=(width, width * 0.4), layout="constrained")
    ax = fig.add_subplot()
    box = {"boxstyle": "round,pad=0.35", "fc": "#e8f0fe", "ec": "#1a56b0", "lw": 1.2}
    leaf = {**box, "fc": "#f1f3f4", "ec": "#5f6368"}
    texts = {}
    for name, (x, y, formula, shape) in NODES.items():
        style = leaf if name in ("x", "gamma", "beta") else box
        texts[name] = ax.text(
            x, y, f"{formula}\n{shape}", ha="center", va="center", fontsize=9, bbox=style
        )
        if gradients:
            dy_above = 0.85 if name == "y" else -0.8  # keep dy clear of beta's arrow
            ax.text(
                x,
                y + dy_above,
                f"d{name}",
                ha="center",
                va="center",
                fontsize=10,
                color="#c62828",
                fontweight="bold",
            )
    for a, b in EDGES:
        (xa, ya, *_), (xb, yb, *_) = NODES[a], NODES[b]
        ax.annotate(
            "",
            xy=(xb, yb),
            xytext=(xa, ya),
            arrowprops={
                "arrowstyle": "-|>",
                "color": "#444444",
                "lw": 1.1,
                "patchA": texts[a].get_bbox_patch(),  # start and end at the boxes' edges
                "patchB": texts[b].get_bbox_patch(),
                "shrinkA": 3,
                "shrinkB": 3,
            },
        )
    ax.set_xlim(-0.9, 14.9)
    ax.set_ylim(-1.9, 3.2)
    ax.axis("off")
    title = "BN's forward pass (training mode): forward along the arrows"
    ax.set_title(title + (", gradients (red) back against them" if gradients else ""), fontsize=10)
    return fig
