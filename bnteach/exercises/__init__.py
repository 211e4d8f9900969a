"""Self-checks for the exercises of the notebooks, one module per topic on one kit.

:mod:`bnteach.exercises.kit` holds what every check stands on: :class:`Feedback`, the
per-notebook :class:`~bnteach.exercises.kit.Notebook` (titles, results, progress, reset, the
check decorator), the readers of the learner's answers and the shared re-run helpers.

Notebook 05's checks live in ``experiments`` (1, 2, 3, 5), ``batch_size`` (4, 9),
``invariance`` (6, 8), ``forward_pass`` (7a, 7b) and ``inference`` (10a, 10b) and are imported
here, with 05's :func:`progress` and :func:`reset`; notebook 07's in ``cnn``, notebook 08's in
``backward``, notebook 10's in ``distributed``, notebook 11's in ``shift``, notebook 12's in
``neighbours``, each with its own ``progress()``.
"""

from bnteach.exercises import backward as backward  # notebook 08
from bnteach.exercises import cnn as cnn  # notebook 07
from bnteach.exercises import distributed as distributed  # notebook 10
from bnteach.exercises import kit
from bnteach.exercises import neighbours as neighbours  # notebook 12
from bnteach.exercises import shift as shift  # notebook 11
from bnteach.exercises.batch_size import check_batch_size, check_layer_norm
from bnteach.exercises.experiments import ACTIVATION_NAMES as ACTIVATION_NAMES
from bnteach.exercises.experiments import (
    check_activation,
    check_depth,
    check_learning_rate,
    check_placement,
)
from bnteach.exercises.forward_pass import VARIANT_NAMES as VARIANT_NAMES
from bnteach.exercises.forward_pass import check_batch_norm, check_norm_variants
from bnteach.exercises.inference import check_fold, check_freeze
from bnteach.exercises.invariance import check_bias, check_scale_invariance
from bnteach.exercises.kit import CORRECT as CORRECT
from bnteach.exercises.kit import NOT_ATTEMPTED as NOT_ATTEMPTED
from bnteach.exercises.kit import WRONG as WRONG
from bnteach.exercises.kit import Feedback, Progress

NOTEBOOK = kit.notebook("05")
EXERCISES = NOTEBOOK.titles
progress, reset = NOTEBOOK.progress, NOTEBOOK.reset

# What ``from bnteach.exercises import *`` gives. The constants above (imported as ``X as X``)
# stay public attributes, e.g. ``exercises.EXERCISES``.
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
