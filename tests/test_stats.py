"""bnteach.stats against scipy's paired t test (the oracle), and the seed source's contract."""

import math
import random

import pytest
import scipy.stats

from bnteach import stats


@pytest.mark.parametrize("trial", range(20))
def test_paired_interval_matches_scipy(trial):
    rng = random.Random(trial)
    n = rng.randint(2, 50)
    a = [rng.gauss(0.9, 0.03) for _ in range(n)]
    b = [x - rng.gauss(0.005, 0.01) for x in a]
    conf = rng.choice([0.9, 0.95, 0.99])
    p = stats.paired(a, b, confidence=conf)
    d = [x - y for x, y in zip(a, b)]
    low, high = scipy.stats.t.interval(conf, n - 1, loc=sum(d) / n, scale=scipy.stats.sem(d))
    assert p.mean == pytest.approx(sum(d) / n, abs=1e-15)
    assert (p.low, p.high) == pytest.approx((low, high), rel=1e-9, abs=1e-12)
    # The interval excludes 0 exactly when the paired t test rejects at 1 - conf.
    pvalue = scipy.stats.ttest_rel(a, b).pvalue
    if abs(pvalue - (1 - conf)) > 1e-6:
        assert p.excludes_zero() == (pvalue < 1 - conf)
    assert p.wins + p.losses + p.ties == n
    assert p.wins == sum(x > 0 for x in d)


def test_verdicts_follow_the_interval():
    better = stats.paired([1.0, 1.1, 1.2, 1.05], [0.0, 0.1, 0.15, 0.0], names=("BN", "plain"))
    assert better.verdict(margin=0.1) == "better"
    assert better.statement(margin=0.1).startswith("BN better than plain")
    same = stats.paired([0.5, 0.51, 0.49, 0.5, 0.505], [0.5, 0.5, 0.5, 0.5, 0.5])
    assert same.verdict(margin=0.05) == "equivalent"
    assert "no practical difference" in same.statement(0.05)
    assert same.verdict(margin=0.001) == "unresolved"
    assert "not resolved with 5 seeds" in same.statement(0.001)
    # For a loss, lower is better: A's loss clearly above B's is "worse".
    loss = stats.paired([0.3, 0.31, 0.32], [0.1, 0.12, 0.1], higher_is_better=False)
    assert loss.verdict(0.01) == "worse"
    small = stats.paired([0.1001, 0.10011, 0.10012, 0.1001], [0.1] * 4)
    assert small.verdict(0.01) == "better" and small.within(0.01)
    assert "by less than the margin" in small.statement(0.01)


def test_identical_differences_give_a_zero_width_interval():
    p = stats.paired([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert p.low == p.high == p.mean == 0.5


@pytest.mark.parametrize(
    "a, b, error, phrase",
    [
        ([1.0], [0.0], ValueError, "at least 2 seeds"),
        ([1.0, 2.0], [0.0], ValueError, "same seeds"),
        ([1.0, math.nan], [0.0, 0.0], ValueError, "diverged"),
        ("ab", [0.0, 0.0], TypeError, "list of numbers"),
        ([1.0, None], [0.0, 0.0], TypeError, "numbers"),
        ([True, False], [0.0, 0.0], TypeError, "numbers"),
    ],
)
def test_paired_rejects_bad_input(a, b, error, phrase):
    with pytest.raises(error, match=phrase):
        stats.paired(a, b)


@pytest.mark.parametrize("margin", [-0.1, math.nan, math.inf, "0.1", None])
def test_bad_margin(margin):
    p = stats.paired([1.0, 2.0], [0.0, 0.5])
    with pytest.raises((TypeError, ValueError), match="margin"):
        p.verdict(margin)


def test_mean_interval_matches_scipy():
    values = [0.93, 0.95, 0.94, 0.96, 0.92]
    mean, low, high = stats.mean_interval(values, confidence=0.9)
    expected = scipy.stats.t.interval(0.9, 4, loc=sum(values) / 5, scale=scipy.stats.sem(values))
    assert (low, high) == pytest.approx(expected, rel=1e-9)
    assert mean == pytest.approx(0.94)


def test_seeds_default_and_offset(monkeypatch):
    monkeypatch.delenv("BNTEACH_SEED_OFFSET", raising=False)
    assert stats.seeds(3) == [0, 1, 2]
    assert stats.seeds(2, start=100) == [100, 101]
    monkeypatch.setenv("BNTEACH_SEED_OFFSET", " 1000 ")
    assert stats.seed_offset() == 1000
    assert stats.seeds(3) == [1000, 1001, 1002]
    monkeypatch.setenv("BNTEACH_SEED_OFFSET", "")
    assert stats.seeds(1) == [0]


@pytest.mark.parametrize("raw", ["abc", "1.5", "-3", "0x10", "1e3"])
def test_bad_offset_is_a_clear_error(monkeypatch, raw):
    monkeypatch.setenv("BNTEACH_SEED_OFFSET", raw)
    with pytest.raises(ValueError, match="BNTEACH_SEED_OFFSET"):
        stats.seeds(3)


@pytest.mark.parametrize("n", [0, -1, 2.0, True, "3"])
def test_bad_seed_count(n):
    with pytest.raises((TypeError, ValueError), match="seeds"):
        stats.seeds(n)


def test_statement_names_what_was_paired():
    p = stats.paired([0.9, 0.92, 0.91], [0.9, 0.9, 0.9], names=("BN", "plain"), over="data splits")
    assert "of 3 data splits" in p.statement(0.05) and "3 data splits" in repr(p)


def test_statement_counts_better_and_worse_in_the_metric_s_direction():
    loss = stats.paired(
        [0.1, 0.2, 0.1, 0.1], [0.3, 0.1, 0.3, 0.3], names=("BN", "plain"), higher_is_better=False
    )
    assert (loss.wins, loss.losses) == (1, 3)
    assert "BN better on 3 and worse on 1 of 4 seeds" in loss.statement(0.01)


def test_paired_interval_is_the_paired_t_tests():
    """The same interval as scipy's own paired t test, ttest_rel(...).confidence_interval."""
    a = [0.91, 0.93, 0.90, 0.95, 0.92, 0.94]
    b = [0.90, 0.90, 0.91, 0.92, 0.90, 0.91]
    ci = scipy.stats.ttest_rel(a, b).confidence_interval(0.95)
    p = stats.paired(a, b)
    assert (p.low, p.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
