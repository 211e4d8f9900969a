"""The two models of the starting tutorial, one builder for their variants, and a residual MLP.

Every model maps ``(N, input_size)`` features to ``(N, output_size)`` logits.
"""

import numbers

import torch
from torch import nn

from bnteach import checks
from bnteach.batchnorm import BatchRenorm1d, GhostBatchNorm1d

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
NORMS = {
    "none": None,
    "batch": nn.BatchNorm1d,
    "layer": nn.LayerNorm,
    "ghost": GhostBatchNorm1d,  # per-device BN: chunks of virtual_batch_size rows
    "renorm": BatchRenorm1d,  # Batch Renormalization (r_max, d_max)
}
DROPOUT_AT = ("every", "last")


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


def _dropout(p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"dropout must be a probability such as 0.5, got {checks.describe(p)}.")
    if not 0.0 <= p < 1.0:  # NaN fails too
        raise ValueError(
            f"dropout is the probability of zeroing a unit and must be in [0, 1), got {p!r} "
            f"(1 would zero every unit)."
        )
    return float(p)


def _norm_layer(norm, width, virtual_batch_size, r_max, d_max):
    if norm == "ghost":
        return GhostBatchNorm1d(width, virtual_batch_size)
    if norm == "renorm":
        return BatchRenorm1d(width, r_max=r_max, d_max=d_max)
    return NORMS[norm](width)


def _check_norm_options(norm, virtual_batch_size, r_max, d_max):
    if norm == "ghost":
        if virtual_batch_size is None:
            raise ValueError(
                "norm='ghost' needs virtual_batch_size: the rows each device normalizes alone, "
                "e.g. MLP(norm='ghost', virtual_batch_size=4)."
            )
        GhostBatchNorm1d(1, virtual_batch_size)  # its teaching errors
    elif virtual_batch_size is not None:
        raise ValueError(f"virtual_batch_size goes with norm='ghost', not norm={norm!r}.")
    if norm == "renorm":
        BatchRenorm1d(1, r_max=r_max, d_max=d_max)
    elif (r_max, d_max) != (3.0, 5.0):
        raise ValueError(f"r_max and d_max go with norm='renorm', not norm={norm!r}.")


class MLP(nn.Module):
    """A fully connected net: ``[Linear -> (norm) -> activation -> (dropout)] * depth -> Linear``.

    norm: ``"none"``, ``"batch"`` (``BatchNorm1d``), ``"layer"`` (``LayerNorm``), ``"ghost"``
    (per-device BN: :class:`~bnteach.batchnorm.GhostBatchNorm1d` over chunks of
    ``virtual_batch_size`` rows) or ``"renorm"`` (:class:`~bnteach.batchnorm.BatchRenorm1d`
    with ``r_max``, ``d_max``).
    placement: ``"before"`` puts the norm between Linear and activation (the tutorial's and
    the BN paper's choice), ``"after"`` puts it after the activation.
    bias: whether hidden Linear layers have a bias (redundant right before BatchNorm).
    dropout: the probability of ``nn.Dropout`` after the activation of every hidden layer
    (``dropout_at="every"``: it then feeds the next layer's norm) or of the last one only
    (``"last"``: after every norm). 0 adds no dropout layer.
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
        *,
        virtual_batch_size=None,
        r_max=3.0,
        d_max=5.0,
        dropout=0.0,
        dropout_at="every",
    ):
        super().__init__()
        if norm is None:
            norm = "none"
        _option(norm, NORMS, "norm")
        _option(activation, ACTIVATIONS, "activation")
        _option(placement, ("before", "after"), "placement")
        _option(dropout_at, DROPOUT_AT, "dropout_at")
        _check_norm_options(norm, virtual_batch_size, r_max, d_max)
        dropout = _dropout(dropout)
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
        if not hidden_sizes and (norm != "none" or dropout):
            what = f"norm={norm!r}" if norm != "none" else f"dropout={dropout!r}"
            raise ValueError(
                f"{what} needs a hidden layer to act on, but hidden_sizes is empty (a single "
                f"Linear layer): give hidden sizes such as (128, 64), or norm='none' and no "
                f"dropout."
            )
        sizes = [input_size, *hidden_sizes]
        self.input_size, self.norm, self.placement = input_size, norm, placement
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(fan_in, fan_out, bias=bias))
            block = [ACTIVATIONS[activation]()]
            if NORMS[norm] is not None:
                layer = _norm_layer(norm, fan_out, virtual_batch_size, r_max, d_max)
                block.insert(0 if placement == "before" else 1, layer)
            if dropout and (dropout_at == "every" or i == len(hidden_sizes) - 1):
                block.append(nn.Dropout(dropout))
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


# ----------------------------------------------------------------------------- residual MLP

RESIDUAL_INITS = {
    "default": "PyTorch's default initialisation (BN's weight gamma = 1)",
    "zero_gamma": "the last BN's gamma of every block set to 0: each block starts as the identity",
    "skipinit": "no norm; a learned scalar alpha = 0 multiplies each block's branch (De & Smith)",
    "fixup": "no norm; each branch's last Linear 0, its first x blocks ** -0.5 (Fixup-like)",
    "he": "no norm; every Linear He-initialised (std sqrt(2 / fan_in)), nothing else",
}
RESIDUAL_NORMS = ("none", "batch")


class ResidualBlock(nn.Module):
    """``x -> relu(x + alpha * branch(x))`` with ``branch = Linear -> (BN) -> ReLU -> Linear ->
    (BN)``; x (N, width). ``alpha`` is a learned scalar for SkipInit, else absent (1)."""

    def __init__(self, width, norm="batch", skipinit=False):
        super().__init__()
        width = checks.whole_number(width, "width", minimum=1, example=32)
        _option(norm, RESIDUAL_NORMS, "norm")
        checks.flag(skipinit, "skipinit")
        bn = norm == "batch"
        layers = [nn.Linear(width, width, bias=not bn)]
        layers += [nn.BatchNorm1d(width)] if bn else []
        layers += [nn.ReLU(), nn.Linear(width, width, bias=not bn)]
        layers += [nn.BatchNorm1d(width)] if bn else []
        self.branch = nn.Sequential(*layers)
        self.alpha = nn.Parameter(torch.zeros(())) if skipinit else None
        self.act = nn.ReLU()

    def forward(self, x):
        """x (N, width) -> (N, width)."""
        branch = self.branch(x)
        if self.alpha is not None:
            branch = self.alpha * branch
        return self.act(x + branch)


def _check_residual(norm, init):
    _option(norm, RESIDUAL_NORMS, "norm")
    _option(init, RESIDUAL_INITS, "init")
    if init == "zero_gamma" and norm != "batch":
        raise ValueError("init='zero_gamma' sets BatchNorm's gamma: it needs norm='batch'.")
    if init in ("skipinit", "fixup", "he") and norm != "none":
        raise ValueError(
            f"init={init!r} is a way to train a residual net WITHOUT normalization: use "
            f"norm='none' (or init='zero_gamma' / 'default' with norm='batch')."
        )


class ResidualMLP(nn.Module):
    """A deep residual MLP: ``Linear -> (BN) -> ReLU``, then ``blocks`` x :class:`ResidualBlock`,
    then ``Linear`` to ``output_size`` logits. x (N, input_size) -> logits (N, output_size).

    norm: ``"batch"`` or ``"none"``. init: one of :data:`RESIDUAL_INITS`, the ways to make a
    deep residual net trainable: with BN, ``"default"`` or ``"zero_gamma"`` (Goyal et al. 2017);
    without, ``"skipinit"`` (De & Smith 2020), ``"fixup"`` (Zhang et al. 2019; only its
    initialisation, without its scalar biases and multipliers) or plain ``"he"`` (which lets
    the signal grow block by block).
    """

    def __init__(self, input_size=64, width=32, blocks=8, output_size=10, norm="batch",
                 init="default"):  # fmt: skip
        super().__init__()
        input_size, width = _size(input_size, "input_size"), _size(width, "width")
        blocks, output_size = _size(blocks, "blocks"), _size(output_size, "output_size")
        _check_residual(norm, init)
        self.norm, self.init, self.blocks = norm, init, blocks
        stem = [nn.Linear(input_size, width, bias=norm != "batch")]
        stem += [nn.BatchNorm1d(width)] if norm == "batch" else []
        body = [ResidualBlock(width, norm, skipinit=init == "skipinit") for _ in range(blocks)]
        self.network = nn.Sequential(*stem, nn.ReLU(), *body, nn.Linear(width, output_size))
        self._initialise(init, blocks)

    def _initialise(self, init, blocks):
        block_list = [m for m in self.network if isinstance(m, ResidualBlock)]
        with torch.no_grad():
            if init in ("skipinit", "fixup", "he"):
                for m in self.modules():
                    if isinstance(m, nn.Linear):
                        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                        nn.init.zeros_(m.bias)
            for block in block_list:
                first, last = block.branch[0], block.branch[-1]
                if init == "zero_gamma":
                    nn.init.zeros_(last.weight)
                elif init == "fixup":
                    first.weight.mul_(blocks**-0.5)
                    nn.init.zeros_(last.weight)

    def forward(self, x):
        """x (N, input_size) -> logits (N, output_size)."""
        return self.network(x)


def build(input_size, output_size, **spec):
    """The model a spec describes: :class:`ResidualMLP` if it names ``blocks``, else
    :class:`MLP`. Used by :mod:`bnteach.sweep`, so a spec means the same module everywhere."""
    if "blocks" in spec:
        return ResidualMLP(input_size, output_size=output_size, **spec)
    return MLP(input_size, output_size=output_size, **spec)
