import math

import numpy as np
import pytest
from scipy import stats

from reward.learning.metrics import (
    agreement_votes,
    bootstrap_interval,
    log_likelihood_gain,
    pairwise_accuracy,
    rater_agreement,
    regression_metrics,
)


def test_rater_agreement_by_hand():
    votes = {
        1: [1.0, 1.0, 1.0],  # each vote: the other two agree with it -> 3 of 3
        2: [1.0, 0.0],  # the other vote always disagrees -> 0 of 2
        3: [1.0, 1.0, 0.0],  # the 1s see an even split (0.5 each), the 0 sees two 1s -> 1 of 3
        4: [1.0, 0.5],  # one decisive vote: not a pair that can agree with itself
        5: [0.5, 0.5],
    }
    figures = rater_agreement(votes, resamples=500)
    assert figures["accuracy"] == pytest.approx(4 / 8)
    # vote pairs agreeing per pair: 1, 0, 1/3 -> mean over pairs
    assert figures["agreement"] == pytest.approx((1 + 0 + 1 / 3) / 3)
    assert figures["ceiling_upper"] == 0.5  # agreement below a half: no better than a coin
    assert (figures["n_pairs"], figures["n_votes"]) == (3, 8)
    assert figures["low"] <= figures["accuracy"] <= figures["high"]


def test_agreement_votes_are_the_votes_rater_agreement_counts():
    votes = {
        1: [1.0, 1.0, 1.0],
        2: [1.0, 0.0],
        3: [1.0, 0.5],  # one decisive vote and a tie: not counted
        4: [0.5, 0.5],
        5: [0.0],
    }
    targets = np.array([vote for group in votes.values() for vote in group])
    groups = np.array([group for group, votes_on in votes.items() for _ in votes_on])

    counted = agreement_votes(targets, groups)

    assert counted.tolist() == [True] * 5 + [False] * 5
    assert int(counted.sum()) == rater_agreement(votes, resamples=50)["n_votes"]


def test_rater_agreement_extremes():
    unanimous = rater_agreement({1: [1.0, 1.0], 2: [0.0, 0.0, 0.0]}, resamples=200)
    assert unanimous["accuracy"] == unanimous["agreement"] == 1.0
    assert unanimous["low"] == unanimous["high"] == 1.0  # constant: a point, not a crash
    split = rater_agreement({1: [1.0, 0.0, 1.0, 0.0]}, resamples=200)
    assert split["accuracy"] == 0.0  # the other three always lean the other way
    assert split["agreement"] == pytest.approx(4 / 12)
    # votes going 80:20 agree 0.68 of the time; the best predictor is right 0.8 of the time
    leaning = rater_agreement({i: [1.0] * 8 + [0.0] * 2 for i in range(5)}, resamples=200)
    assert leaning["agreement"] == pytest.approx((8 * 7 + 2 * 1) / (10 * 9))
    assert leaning["accuracy"] == pytest.approx(0.8)  # 10 votes: the others' majority is right
    expected_upper = (1 + math.sqrt(2 * leaning["agreement"] - 1)) / 2
    assert leaning["ceiling_upper"] == pytest.approx(expected_upper)
    empty = rater_agreement({1: [1.0], 2: [0.5, 1.0]})
    assert empty["n_pairs"] == 0 and empty["accuracy"] is None


def test_pairwise_accuracy_leaves_ties_out():
    figures = pairwise_accuracy([2.0, -1.0, 5.0, -5.0], [1.0, 1.0, 0.5, 0.5], resamples=200)
    assert figures["accuracy"] == 0.5 and figures["n"] == 2
    zero_margin = pairwise_accuracy([0.0, 1.0], [1.0, 1.0], resamples=200)
    assert zero_margin["accuracy"] == 0.75  # an undecided model earns half
    assert pairwise_accuracy([1.0], [0.5])["accuracy"] is None


def test_pairwise_interval_resamples_whole_pairs():
    rng = np.random.default_rng(0)
    margins = rng.normal(size=60)
    targets = (margins + rng.normal(size=60) > 0).astype(float)
    # every vote cast five times on its pair: five times the votes but no more information
    repeated = pairwise_accuracy(np.repeat(margins, 5), np.repeat(targets, 5), resamples=1000)
    grouped = pairwise_accuracy(
        np.repeat(margins, 5), np.repeat(targets, 5), np.repeat(np.arange(60), 5), resamples=1000
    )
    single = pairwise_accuracy(margins, targets, resamples=1000)
    assert grouped["accuracy"] == single["accuracy"] == repeated["accuracy"]
    width = lambda figures: figures["high"] - figures["low"]  # noqa: E731
    assert width(repeated) < 0.6 * width(single)
    assert width(grouped) == pytest.approx(width(single), rel=0.25)


def test_bootstrap_interval_contains_the_estimate():
    values = np.random.default_rng(1).normal(2.0, 1.0, size=200)
    low, high = bootstrap_interval(values, resamples=1000)
    assert low < values.mean() < high
    assert 0.15 < high - low < 0.4  # about 2 * 1.96 / sqrt(200) = 0.28
    low, high = bootstrap_interval(values, np.median, resamples=500, method="percentile")
    assert low < np.median(values) < high
    assert bootstrap_interval([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert all(math.isnan(bound) for bound in bootstrap_interval([1.0]))


def test_regression_metrics():
    rng = np.random.default_rng(2)
    target = rng.normal(size=100)
    pred = target + rng.normal(scale=0.5, size=100)
    figures = regression_metrics(pred, target, resamples=500)
    assert figures["pearson"] == pytest.approx(stats.pearsonr(pred, target).statistic)
    assert figures["spearman"] == pytest.approx(stats.spearmanr(pred, target).statistic)
    assert figures["mse"] == pytest.approx(np.mean((pred - target) ** 2))
    assert figures["pearson_low"] < figures["pearson"] < figures["pearson_high"]
    assert figures["n"] == 100
    constant = regression_metrics(np.ones(10), target[:10])
    assert constant["pearson"] is None and constant["spearman"] is None
    assert constant["mse"] is not None


def test_the_log_likelihood_gain_over_chance_matches_a_hand_computation():
    # P(a) = 0.75 for a vote for a: log 0.75 - log 0.5 = log 1.5. A tie on a pair the model
    # calls even: 0.5 log 0.5 + 0.5 log 0.5 - log 0.5 = 0. A vote against a confident model:
    # log 0.25 - log 0.5 = -log 2.
    margins = [math.log(3), 0.0, math.log(3)]
    figures = log_likelihood_gain(margins, [1.0, 0.5, 0.0], resamples=200)
    assert figures["gain"] == pytest.approx((math.log(1.5) + 0 - math.log(2)) / 3)
    assert figures["n"] == 3 and figures["low"] <= figures["gain"] <= figures["high"]


def test_indifferent_pairs_leave_the_gain_s_interval_clear_of_zero_where_accuracy_s_is_not():
    """A taste only 60 of 600 pairs show: raters flip a coin on the rest, and the model calls
    those nearly even (margins within 0.05), so each of them is a coin flip for accuracy but
    costs the log-likelihood almost nothing. Accuracy's interval does not clear 0.5; the gain's
    stays above 0."""
    rng = np.random.default_rng(0)
    shown = np.r_[np.full(60, True), np.full(540, False)]
    margins = np.where(shown, 2.0, rng.uniform(-0.05, 0.05, 600))
    targets = (rng.random(600) < np.where(shown, 0.88, 0.5)).astype(float)
    accuracy = pairwise_accuracy(margins, targets, resamples=500)
    gain = log_likelihood_gain(margins, targets, resamples=500)
    assert accuracy["low"] <= 0.5 < accuracy["accuracy"]  # 0.545 [0.500, 0.578]
    assert gain["low"] > 0  # +0.047 [+0.030, +0.063] nats a vote
