"""The two models of the starting tutorial, and one builder for their variants.

Every model maps ``(N, input_size)`` features to ``(N, output_size)`` logits.
"""

import numbers

from torch import nn

from bnteach import checks

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
NORMS = {"none": None, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


def _size(value, name):
    """A layer size: a whole number >= 1 (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"layer sizes must be positive integers (whole numbers such as 64): {name} is "
            f"{checks.describe(value)}."
        )
    if value < 1:
        raise ValueError(f"layer sizes must be positive integers: {name} is {value!r}.")
    return int(value)


def _option(value, options, name):
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be one of {sorted(options)} (a string), got {checks.describe(value)}."
        )
    if value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {value!r}.")


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
        _option(norm, NORMS, "norm")
        _option(activation, ACTIVATIONS, "activation")
        _option(placement, ("before", "after"), "placement")
        input_size = _size(input_size, "input_size")
        if isinstance(hidden_sizes, numbers.Integral) and not isinstance(hidden_sizes, bool):
            hidden_sizes = (hidden_sizes,)  # one hidden layer
        if isinstance(hidden_sizes, (str, bytes)) or not isinstance(
            hidden_sizes, (list, tuple, range)
        ):
            raise TypeError(
                f"hidden_sizes must be a tuple of layer widths such as (128, 64), got "
                f"{checks.describe(hidden_sizes)}."
            )
        hidden_sizes = tuple(_size(s, f"hidden_sizes[{i}]") for i, s in enumerate(hidden_sizes))
        output_size = _size(output_size, "output_size")
        checks.flag(bias, "bias")
        if not hidden_sizes and norm != "none":
            raise ValueError(
                f"norm={norm!r} needs a hidden layer to normalize, but hidden_sizes is empty "
                f"(a single Linear layer): give hidden sizes such as (128, 64), or norm='none'."
            )
        sizes = [input_size, *hidden_sizes]
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
        _size(hidden_size1, "hidden_size1"), _size(hidden_size2, "hidden_size2")
        super().__init__(input_size, (hidden_size1, hidden_size2), output_size, norm="none")


class MLPWithBN(MLP):
    """The tutorial's BN net: Linear -> BatchNorm1d -> ReLU, twice, then Linear."""

    def __init__(self, input_size, hidden_size1, hidden_size2, output_size):
        _size(hidden_size1, "hidden_size1"), _size(hidden_size2, "hidden_size2")
        super().__init__(input_size, (hidden_size1, hidden_size2), output_size, norm="batch")


def count_parameters(model):
    """Number of trainable numbers (parameters with ``requires_grad``) in ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"count_parameters needs an nn.Module (a model), got {checks.describe(model)}."
        )
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
