"""The two models of the starting tutorial, and one builder for their variants.

Every model maps ``(N, input_size)`` features to ``(N, output_size)`` logits.
"""

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
NORMS = {"none": None, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


class MLP(nn.Module):
    """A fully connected net: ``[Linear -> (norm) -> activation] * depth -> Linear``.

    norm: ``"none"``, ``"batch"`` (``BatchNorm1d``) or ``"layer"`` (``LayerNorm``).
    placement: ``"before"`` puts the norm between Linear and activation (the tutorial's and
    the BN paper's choice), ``"after"`` puts it after the activation.
    bias: whether hidden Linear layers have a bias (redundant right before BatchNorm).
    """

    def __init__(
        self,
        input_size=20,
        hidden_sizes=(128, 64),
        output_size=1,
        norm="none",
        activation="relu",
        placement="before",
        bias=True,
    ):
        super().__init__()
        if norm is None:
            norm = "none"
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {sorted(NORMS)}, got {norm!r}.")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}."
            )
        if placement not in ("before", "after"):
            raise ValueError(f"placement must be 'before' or 'after', got {placement!r}.")
        sizes = [input_size, *hidden_sizes]
        if any(not isinstance(s, int) or s < 1 for s in [*sizes, output_size]):
            raise ValueError(
                f"layer sizes must be positive integers, got input_size={input_size!r}, "
                f"hidden_sizes={hidden_sizes!r}, output_size={output_size!r}."
            )
        self.input_size, self.norm, self.placement = input_size, norm, placement
        layers = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers.append(nn.Linear(fan_in, fan_out, bias=bias))
            block = [ACTIVATIONS[activation]()]
            if NORMS[norm] is not None:
                block.insert(0 if placement == "before" else 1, NORMS[norm](fan_out))
            layers += block
        layers.append(nn.Linear(sizes[-1], output_size))
        self.network = nn.Sequential(*layers)

    def forward(self, x):
        """x: (N, input_size) -> logits (N, output_size)."""
        return self.network(x)


class SimpleMLP(MLP):
    """The tutorial's plain net: Linear -> ReLU -> Linear -> ReLU -> Linear."""

    def __init__(self, input_size, hidden_size1, hidden_size2, output_size):
        super().__init__(input_size, (hidden_size1, hidden_size2), output_size, norm="none")


class MLPWithBN(MLP):
    """The tutorial's BN net: Linear -> BatchNorm1d -> ReLU, twice, then Linear."""

    def __init__(self, input_size, hidden_size1, hidden_size2, output_size):
        super().__init__(input_size, (hidden_size1, hidden_size2), output_size, norm="batch")


def count_parameters(model):
    """Number of trainable numbers (parameters with ``requires_grad``) in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
