"""Seeds from one place, and paired comparisons over seeds that say how sure they are.

Every notebook and exercise check takes its seeds from :func:`seeds`, so that one environment
variable, ``BNTEACH_SEED_OFFSET``, re-runs the whole collection on seeds it was not written
with. A claim such as "BN is more accurate" is then stated with :func:`paired`: the per-seed
differences, their mean, a t confidence interval, win/loss counts, and a :meth:`Paired.verdict`
that says only what the interval supports. Student's t quantiles come from scipy.
"""

import math
import os
from dataclasses import dataclass

OFFSET_VARIABLE = "BNTEACH_SEED_OFFSET"


def seed_offset():
    """The integer in ``BNTEACH_SEED_OFFSET`` (default 0): where :func:`seeds` starts."""
    raw = os.environ.get(OFFSET_VARIABLE, "").strip()
    if raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{OFFSET_VARIABLE}={raw!r} is not a whole number. It shifts every seed the "
            f"notebooks use; set it to an integer such as {OFFSET_VARIABLE}=100, or unset it "
            f"for the shipped seeds (offset 0)."
        ) from None
    if value < 0:
        raise ValueError(
            f"{OFFSET_VARIABLE}={value} is negative; torch seeds must be >= 0. "
            f"Use a non-negative integer such as {OFFSET_VARIABLE}=100."
        )
    return value


def seeds(n, start=0):
    """The ``n`` seeds ``[offset + start, ..., offset + start + n - 1]`` as a list of ints.

    ``offset`` comes from ``BNTEACH_SEED_OFFSET`` (see :func:`seed_offset`). ``start`` lets one
    notebook take a second, disjoint block (e.g. ``seeds(10, start=100)``).
    """
    for value, name in ((n, "n"), (start, "start")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"seeds({name}=...) takes a whole number, got {value!r}.")
    if n < 1:
        raise ValueError(f"seeds(n) needs n >= 1 (how many seeds to use), got {n}.")
    if start < 0:
        raise ValueError(f"seeds(start=...) must be >= 0, got {start}.")
    first = seed_offset() + start
    return list(range(first, first + n))


# ----------------------------------------------------------------------------------------
# Paired comparisons over seeds
# ----------------------------------------------------------------------------------------


def _as_floats(values, name):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a list of numbers (one per seed), got {values!r}.")
    out = []
    for v in values.tolist() if hasattr(values, "tolist") else values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must hold numbers (one per seed), got {v!r}.")
        if not math.isfinite(v):
            raise ValueError(
                f"{name} contains {v!r}: a run diverged or a metric is missing. Compare finite "
                f"numbers only (e.g. count diverged runs separately)."
            )
        out.append(float(v))
    return out


@dataclass(frozen=True)
class Paired:
    """A paired comparison of A and B over the same seeds: ``diffs[i] = a[i] - b[i]``.

    ``mean``, ``low``, ``high``: the mean difference and its ``confidence`` t interval.
    ``wins``/``losses``/``ties``: seeds where A is higher / lower / equal (for a loss, a
    "win" is a higher loss; :meth:`statement` words it as better/worse).
    ``higher_is_better``: True for accuracy, False for a loss (it only words the verdict).
    ``over``: what the pairs are, for the wording ("seeds", or e.g. "data splits").
    """

    names: tuple
    diffs: tuple
    mean: float
    low: float
    high: float
    confidence: float
    wins: int
    losses: int
    ties: int
    higher_is_better: bool = True
    over: str = "seeds"

    @property
    def n(self):
        return len(self.diffs)

    def excludes_zero(self):
        """True when the interval lies entirely on one side of 0."""
        return self.low > 0 or self.high < 0

    def within(self, margin):
        """True when the whole interval lies inside ``[-margin, +margin]``."""
        _check_margin(margin)
        return -margin <= self.low and self.high <= margin

    def verdict(self, margin):
        """What the interval supports, as one of ``"better"``, ``"worse"``, ``"equivalent"``,
        ``"unresolved"`` (from A's side; see :meth:`statement` for the words).

        ``"better"``/``"worse"``: the interval excludes 0. ``"equivalent"``: it lies inside
        ``+/- margin`` and includes 0 ("no practical difference"). Otherwise ``"unresolved"``:
        more seeds (or a wider margin, said in the text) are needed.
        """
        _check_margin(margin)
        if self.excludes_zero():
            return "better" if (self.low > 0) == self.higher_is_better else "worse"
        return "equivalent" if self.within(margin) else "unresolved"

    def statement(self, margin, unit=""):
        """The verdict in words, with the numbers behind it."""
        a, b = self.names
        v = self.verdict(margin)
        better, worse = (
            (self.wins, self.losses) if self.higher_is_better else (self.losses, self.wins)
        )
        numbers = (
            f"mean difference {self.mean:+.4g}{unit}, {self.confidence:.0%} interval "
            f"[{self.low:+.4g}, {self.high:+.4g}]{unit}, {a} better on {better} and worse on "
            f"{worse} of {self.n} {self.over}"
        )
        if v in ("better", "worse"):
            size = " (by less than the margin)" if self.within(margin) else ""
            return f"{a} {v} than {b}{size}: {numbers}"
        if v == "equivalent":
            return f"no practical difference (within +/-{margin:g}{unit}): {numbers}"
        return f"not resolved with {self.n} {self.over} (margin +/-{margin:g}{unit}): {numbers}"

    def __repr__(self):
        a, b = self.names
        return (
            f"Paired({a} - {b} over {self.n} {self.over}: mean {self.mean:+.4g}, "
            f"{self.confidence:.0%} CI [{self.low:+.4g}, {self.high:+.4g}], "
            f"{self.wins} wins / {self.losses} losses / {self.ties} ties)"
        )


def _check_margin(margin):
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise TypeError(
            f"margin must be a number (the largest difference that does not matter), "
            f"got {margin!r}."
        )
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}.")


def paired(a, b, confidence=0.95, names=("A", "B"), higher_is_better=True, over="seeds"):
    """Compare ``a`` and ``b`` (one number per seed, same seeds, same order).

    Returns a :class:`Paired` with the mean of ``a - b`` and its two-sided t interval
    ``mean +/- t_{(1+confidence)/2, n-1} * sd / sqrt(n)`` (the paired t test's interval).
    Needs at least 2 seeds; identical differences give a zero-width interval.
    """
    a, b = _as_floats(a, "a"), _as_floats(b, "b")
    if len(a) != len(b):
        raise ValueError(
            f"a has {len(a)} values and b has {len(b)}: a paired comparison needs one value of "
            f"each per seed, for the same seeds."
        )
    if len(a) < 2:
        raise ValueError(
            f"a paired comparison needs at least 2 seeds, got {len(a)}; one seed cannot show "
            f"how much results vary."
        )
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, (int, float))
        or not (0.0 < confidence < 1.0)
    ):
        raise ValueError(f"confidence must be a fraction such as 0.95, got {confidence!r}.")
    if not (isinstance(names, (tuple, list)) and len(names) == 2):
        raise TypeError(f"names must be two labels such as ('BN', 'plain'), got {names!r}.")
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    mean = math.fsum(diffs) / n
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    from scipy.stats import t  # Student's t (imported here: scipy takes a moment to load)

    half = float(t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
    return Paired(
        names=tuple(str(x) for x in names),
        diffs=tuple(diffs),
        mean=mean,
        low=mean - half,
        high=mean + half,
        confidence=float(confidence),
        wins=sum(d > 0 for d in diffs),
        losses=sum(d < 0 for d in diffs),
        ties=sum(d == 0 for d in diffs),
        higher_is_better=bool(higher_is_better),
        over=str(over),
    )


def mean_interval(values, confidence=0.95):
    """``(mean, low, high)``: the mean of ``values`` and its two-sided t interval."""
    values = _as_floats(values, "values")
    if len(values) < 2:
        raise ValueError(f"an interval needs at least 2 values, got {len(values)}.")
    p = paired(values, [0.0] * len(values), confidence=confidence)
    return p.mean, p.low, p.high
