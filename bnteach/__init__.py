"""bnteach: small, tested helpers for a hands-on course on Batch Normalization.

Import what you need from its modules, e.g. ``from bnteach.models import MLPWithBN``.
Importing the package itself does nothing but set ``__version__``.
"""

__version__ = "0.1.0"
