"""bnteach.checks, the input contract every module stands on: each check returns the value or
raises a teaching error (TypeError for the wrong kind, ValueError for a wrong value), never an
OverflowError, an AttributeError or a silently accepted look-alike."""

import math

import numpy as np
import pytest
import torch
from conftest import assert_teaching_error

from bnteach import checks

CASES = {
    # name: (call, error, words)
    "a 400-digit integer as a positive number": (
        lambda: checks.positive_number(10**400, "lr"),
        ValueError,
        "too large for a float",
    ),
    "a 400-digit integer as a finite number": (
        lambda: checks.finite_number(-(10**400), "shift"),
        ValueError,
        "too large for a float",
    ),
    "a 400-digit integer as a fraction": (
        lambda: checks.fraction(10**400, "p"),
        ValueError,
        "too large for a float",
    ),
    "a 400-digit integer as momentum": (
        lambda: checks.momentum(10**400),
        ValueError,
        "too large for a float",
    ),
    "NaN as a positive number": (
        lambda: checks.positive_number(np.float64("nan"), "lr"),
        ValueError,
        "positive, finite",
    ),
    "inf as a positive number": (
        lambda: checks.positive_number(math.inf, "lr"),
        ValueError,
        "positive, finite",
    ),
    "NaN as a fraction": (lambda: checks.fraction(math.nan, "p"), ValueError, "fraction in"),
    "NaN as momentum": (lambda: checks.momentum(math.nan), ValueError, "momentum must be in"),
    "a string as a flag": (lambda: checks.flag("False", "shuffle"), TypeError, "True or False"),
    "a NumPy bool as a flag": (lambda: checks.flag(np.bool_(True), "shuffle"), TypeError, "True"),
    "a 0-d tensor as a flag": (lambda: checks.flag(torch.tensor(True), "f"), TypeError, "True"),
    "a bool as a number": (lambda: checks.positive_number(True, "lr"), TypeError, "a number"),
    "a float as a whole number": (
        lambda: checks.whole_number(3.0, "epochs"),
        TypeError,
        "Write 3 without the decimal point",
    ),
    "a list for finite()": (
        lambda: checks.finite([1.0, math.nan], "x"),
        TypeError,
        "x must be a torch tensor",
    ),
    "a NumPy array for binary_labels()": (
        lambda: checks.binary_labels(np.array([0.0, 1.0]), "y"),
        TypeError,
        "y must be a torch tensor",
    ),
    "NaN in a tensor": (
        lambda: checks.finite(torch.tensor([[0.0, 1.0], [math.nan, 2.0]]), "X"),
        checks.DataError,
        r"NaN at X[1, 0]",
    ),
    "labels -1/+1": (
        lambda: checks.binary_labels(torch.tensor([-1.0, 1.0]), "y"),
        checks.DataError,
        "(y + 1) / 2",
    ),
    "None as a loader": (lambda: checks.loader(None, "loader"), TypeError, "must be a loader"),
    "a tensor as a loader": (
        lambda: checks.loader(torch.zeros(3), "loader"),
        TypeError,
        "must be a loader",
    ),
    "a GPU index without a GPU": (
        lambda: checks.device(7),
        ValueError,
        "cuda:7",
    ),
    "a made-up device": (lambda: checks.device("gpu"), ValueError, "not a device torch knows"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_value_gets_a_teaching_error(case):
    assert_teaching_error(*CASES[case])


def test_valid_values_pass_through():
    assert checks.positive_number(10**300, "x") == 1e300
    assert checks.momentum(None) is None and checks.momentum(np.float32(0.5)) == 0.5
    assert checks.whole_number(np.int64(3), "n") == 3
    assert checks.flag(False, "f") is False
    t = torch.tensor([0.0, 1.0])
    assert checks.finite(t, "t") is t and checks.binary_labels(t, "t") is t
    assert checks.position(torch.tensor([[False, True], [True, False]])) == ("[0, 1]", 2)
