"""Bad arguments to bnteach.models: a table of (case, call, error type, phrase in the message)."""

import numpy as np
import torch
from conftest import assert_teaching_error, table

from bnteach.models import (
    MLP,
    MLPWithBN,
    ResidualBlock,
    ResidualMLP,
    SimpleMLP,
    count_parameters,
)

CASES = [
    ("input_size 0", lambda: MLP(0), ValueError, "input_size is 0"),
    ("input_size -3", lambda: MLP(-3), ValueError, "positive integers"),
    ("input_size 20.0", lambda: MLP(20.0), TypeError, "input_size is float 20.0"),
    ("input_size True", lambda: MLP(True), TypeError, "input_size is bool True"),
    ("input_size '20'", lambda: MLP("20"), TypeError, "whole numbers"),
    ("input_size None", lambda: MLP(None), TypeError, "input_size"),
    ("input_size a tensor", lambda: MLP(torch.zeros(3, 20)), TypeError, "input_size is a tensor"),
    ("hidden_sizes (0,)", lambda: MLP(hidden_sizes=(0,)), ValueError, "positive integers"),
    ("hidden_sizes (64, 32.5)", lambda: MLP(hidden_sizes=(64, 32.5)), TypeError, "hidden_sizes[1]"),
    (
        "hidden_sizes (True,)",
        lambda: MLP(hidden_sizes=(True,)),
        TypeError,
        "hidden_sizes[0] is bool",
    ),
    ("hidden_sizes '64'", lambda: MLP(hidden_sizes="64"), TypeError, "tuple of layer widths"),
    ("hidden_sizes None", lambda: MLP(hidden_sizes=None), TypeError, "tuple of layer widths"),
    ("hidden_sizes 64.0", lambda: MLP(hidden_sizes=64.0), TypeError, "tuple of layer widths"),
    ("hidden_sizes {64}", lambda: MLP(hidden_sizes={64}), TypeError, "tuple of layer widths"),
    (
        "empty hidden_sizes with BN",
        lambda: MLP(hidden_sizes=(), norm="batch"),
        ValueError,
        "needs a hidden layer",
    ),
    (
        "empty hidden_sizes with LN",
        lambda: MLP(hidden_sizes=[], norm="layer"),
        ValueError,
        "needs a hidden layer",
    ),
    ("output_size 0", lambda: MLP(output_size=0), ValueError, "output_size is 0"),
    ("output_size 1.0", lambda: MLP(output_size=1.0), TypeError, "output_size is float"),
    ("norm 'group'", lambda: MLP(norm="group"), ValueError, "norm must be one of"),
    ("norm 'Batch'", lambda: MLP(norm="Batch"), ValueError, "'batch'"),
    ("norm ['batch']", lambda: MLP(norm=["batch"]), TypeError, "norm must be one of"),
    ("norm True", lambda: MLP(norm=True), TypeError, "(a string)"),
    (
        "activation 'swish'",
        lambda: MLP(activation="swish"),
        ValueError,
        "activation must be one of",
    ),
    (
        "activation nn class",
        lambda: MLP(activation=torch.nn.ReLU),
        TypeError,
        "activation must be one of",
    ),
    ("placement 'middle'", lambda: MLP(placement="middle"), ValueError, "placement"),
    ("placement None", lambda: MLP(placement=None), TypeError, "placement"),
    ("bias 0", lambda: MLP(bias=0), TypeError, "bias must be True or False"),
    ("bias 'no'", lambda: MLP(bias="no"), TypeError, "bias must be True or False"),
    (
        "SimpleMLP hidden_size1 128.0",
        lambda: SimpleMLP(20, 128.0, 64, 1),
        TypeError,
        "hidden_size1 is float",
    ),
    ("SimpleMLP hidden_size2 0", lambda: SimpleMLP(20, 128, 0, 1), ValueError, "hidden_size2 is 0"),
    (
        "MLPWithBN output_size -1",
        lambda: MLPWithBN(20, 128, 64, -1),
        ValueError,
        "output_size is -1",
    ),
    (
        "MLPWithBN input_size tensor shape",
        lambda: MLPWithBN(torch.Size([800, 20]), 8, 8, 1),
        TypeError,
        "input_size",
    ),
    (
        "count_parameters of a tensor",
        lambda: count_parameters(torch.zeros(3)),
        TypeError,
        "nn.Module",
    ),
]


@table(CASES)
def test_bad_argument_gets_a_teaching_error(call, error, phrase):
    assert_teaching_error(call, error, phrase)


def test_valid_arguments_still_build():
    assert MLP(np.int64(20), (np.int32(8),), 1)(torch.zeros(3, 20)).shape == (3, 1)
    assert len(MLP(hidden_sizes=64).network) == 3  # one hidden layer given as an int
    assert len(MLP(hidden_sizes=()).network) == 1  # logistic regression, no norm
    assert len(MLP(hidden_sizes=range(8, 10)).network) == 5
    assert MLP(norm=None).norm == "none"


NEW_CASES = [
    ("dropout 1", lambda: MLP(norm="batch", dropout=1.0), ValueError, "must be in [0, 1)"),
    ("dropout -0.1", lambda: MLP(dropout=-0.1), ValueError, "must be in [0, 1)"),
    ("dropout nan", lambda: MLP(dropout=float("nan")), ValueError, "must be in [0, 1)"),
    ("dropout '0.5'", lambda: MLP(dropout="0.5"), TypeError, "probability"),
    ("dropout_at 'first'", lambda: MLP(dropout=0.5, dropout_at="first"), ValueError, "dropout_at"),
    ("dropout without hidden", lambda: MLP(hidden_sizes=(), dropout=0.5), ValueError, "hidden"),
    ("ghost without size", lambda: MLP(norm="ghost"), ValueError, "needs virtual_batch_size"),
    ("ghost size 1", lambda: MLP(norm="ghost", virtual_batch_size=1), ValueError, "at least 2"),
    ("size without ghost", lambda: MLP(virtual_batch_size=4), ValueError, "goes with norm='ghost'"),
    ("renorm r_max 0.5", lambda: MLP(norm="renorm", r_max=0.5), ValueError, "r_max"),
    ("renorm d_max -1", lambda: MLP(norm="renorm", d_max=-1.0), ValueError, "d_max"),
    ("r_max without renorm", lambda: MLP(r_max=2.0), ValueError, "go with norm='renorm'"),
    ("residual depth 0", lambda: ResidualMLP(blocks=0), ValueError, "positive integers"),
    ("residual depth 2.0", lambda: ResidualMLP(blocks=2.0), TypeError, "whole numbers"),
    ("residual norm layer", lambda: ResidualMLP(norm="layer"), ValueError, "norm must be one of"),
    ("residual init unknown", lambda: ResidualMLP(init="xavier"), ValueError, "init must be"),
    ("zero_gamma without BN", lambda: ResidualMLP(norm="none", init="zero_gamma"), ValueError,
     "needs norm='batch'"),
    ("skipinit with BN", lambda: ResidualMLP(norm="batch", init="skipinit"), ValueError,
     "WITHOUT normalization"),
    ("block width 0", lambda: ResidualBlock(0), ValueError, "width must be at least 1"),
    ("block width 4.0", lambda: ResidualBlock(4.0), TypeError, "whole number"),
    ("block norm bogus", lambda: ResidualBlock(4, norm="bogus"), ValueError, "norm must be one of"),
    ("block skipinit 'yes'", lambda: ResidualBlock(4, skipinit="yes"), TypeError, "skipinit"),
]  # fmt: skip


@table(NEW_CASES)
def test_variants_get_teaching_errors(call, error, phrase):
    assert_teaching_error(call, error, phrase)
