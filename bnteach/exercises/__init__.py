"""Self-checks for the exercises of notebook 05.

Every ``check_*`` function takes the learner's answers and verifies them by computing: numbers
are recomputed from the learner's own runs (a ``SweepResult``); where the learner reports
numbers from runs the check cannot see (7b, 8), it re-runs seed 0 with the exercise's settings
(and the learner's functions) and compares; claims are compared with those numbers, and
functions the learner wrote are run on test inputs and compared with a reference. An error in
the check itself is reported as an internal error, not as a verdict on the answer.
It returns a :class:`Feedback`: ``"correct"`` (restating what was measured), ``"wrong"`` (a
message aimed at the mistake found, e.g. "you normalized with the unbiased variance") or
``"not attempted"`` (the answer is still the placeholder). A check never raises because of an
answer, shows its feedback (``show=False`` turns that off) and records it for
:func:`progress`.

This module is only an index. The checks live in ``experiments`` (1, 2, 3, 5),
``batch_size`` (4, 9), ``invariance`` (6, 8), ``forward_pass`` (7a, 7b) and ``inference``
(10a, 10b); ``feedback`` holds :class:`Feedback`, :func:`progress` and the check decorator.
The checks of notebook 08's exercises live in ``backward`` (outside notebook 05's ``__all__``
and progress table).
"""

from bnteach.exercises import cnn as cnn  # notebook 07's checks, with their own progress()
from bnteach.exercises._common import NO_WINNER as NO_WINNER
from bnteach.exercises.backward import check_mean_only_backward as check_mean_only_backward
from bnteach.exercises.backward import check_variance_term as check_variance_term
from bnteach.exercises.batch_size import check_batch_size, check_layer_norm
from bnteach.exercises.experiments import ACTIVATION_NAMES as ACTIVATION_NAMES
from bnteach.exercises.experiments import (
    check_activation,
    check_depth,
    check_learning_rate,
    check_placement,
)
from bnteach.exercises.feedback import CORRECT as CORRECT
from bnteach.exercises.feedback import EXERCISES as EXERCISES
from bnteach.exercises.feedback import NOT_ATTEMPTED as NOT_ATTEMPTED
from bnteach.exercises.feedback import WRONG as WRONG
from bnteach.exercises.feedback import Feedback, Progress, progress, reset
from bnteach.exercises.forward_pass import VARIANT_NAMES as VARIANT_NAMES
from bnteach.exercises.forward_pass import check_batch_norm, check_norm_variants
from bnteach.exercises.inference import check_fold, check_freeze
from bnteach.exercises.invariance import check_bias, check_scale_invariance

# What ``from bnteach.exercises import *`` gives, as before the split. The constants above
# (imported as ``X as X``) stay public attributes, e.g. ``exercises.EXERCISES``.
__all__ = [
    "Feedback",
    "Progress",
    "progress",
    "reset",
    "check_learning_rate",
    "check_depth",
    "check_activation",
    "check_batch_size",
    "check_placement",
    "check_bias",
    "check_batch_norm",
    "check_norm_variants",
    "check_scale_invariance",
    "check_layer_norm",
    "check_fold",
    "check_freeze",
]
