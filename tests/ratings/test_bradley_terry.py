"""The Bradley-Terry fit on counted outcomes: it agrees with an independent fit of the per-vote
likelihood and with the closed form for two versions, keeps unbeaten versions finite, its
bootstrap intervals cover known strengths, and ranks follow the interval rule."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from ratings import bradley_terry as bt

ELO = 400 / math.log(10)


def per_vote_fit(votes: list[tuple[int, int, float]], n_versions: int, prior_sd_elo: float):
    """Independent reference: scipy's BFGS on one likelihood term per vote (outcome 1 = first
    wins, 0.5 = tie, 0 = second wins), with the same Gaussian prior, as Elo ratings."""
    first, second, outcome = (np.array(column) for column in zip(*votes, strict=True))
    precision = (ELO / prior_sd_elo) ** 2

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        diff = theta[first] - theta[second]
        value = -np.sum(outcome * log_expit(diff) + (1 - outcome) * log_expit(-diff))
        residual = outcome - expit(diff)
        grad = precision * theta
        np.subtract.at(grad, first, residual)
        np.add.at(grad, second, residual)
        return value + 0.5 * precision * theta @ theta, grad

    result = minimize(objective, np.zeros(n_versions), jac=True, method="BFGS", tol=1e-10)
    return 1000 + ELO * result.x


def test_point_estimates_match_scipy_on_the_per_vote_likelihood():
    # (first, second, first's wins, ties, second's wins), with a reversed duplicate pair.
    rows = [(0, 1, 7, 2, 3), (1, 2, 5, 1, 4), (0, 2, 6, 0, 2), (3, 0, 2, 1, 5), (2, 3, 4, 3, 3)]
    rows.append((1, 0, 1, 0, 2))
    votes = [
        (i, j, outcome)
        for i, j, wins, ties, losses in rows
        for outcome, count in ((1.0, wins), (0.5, ties), (0.0, losses))
        for _ in range(count)
    ]
    table = bt.OutcomeTable.from_counts(4, rows)

    ours = bt.to_elo(bt.fit_strengths(table, prior_sd_elo=400))

    np.testing.assert_allclose(ours, per_vote_fit(votes, 4, 400), atol=0.01)
    assert ours.mean() == pytest.approx(1000)


def test_two_versions_match_the_closed_form_with_ties_as_half_wins():
    # Without a prior the MLE difference is log(won / lost): 25 of 40 won, ties halved.
    table = bt.OutcomeTable.from_counts(2, [(0, 1, 20, 10, 10)])

    rating = bt.to_elo(bt.fit_strengths(table, prior_sd_elo=1e7))

    assert rating[0] - rating[1] == pytest.approx(ELO * math.log(25 / 15), abs=1e-3)
    assert rating.mean() == pytest.approx(1000)


def test_reversed_rows_fold_into_one_pair_and_same_version_rows_are_dropped():
    table = bt.OutcomeTable.from_counts(3, [(1, 0, 2, 1, 3), (0, 1, 4, 0, 0), (2, 2, 9, 9, 9)])

    assert table.first.tolist() == [0] and table.second.tolist() == [1]
    assert (table.wins[0], table.ties[0], table.losses[0]) == (7, 1, 2)
    assert table.version_counts().tolist() == [[7, 1, 2], [2, 1, 7], [0, 0, 0]]


def test_an_unbeaten_version_has_a_finite_rating_and_interval():
    table = bt.OutcomeTable.from_counts(3, [(0, 1, 20, 0, 0), (0, 2, 15, 0, 0), (1, 2, 8, 2, 6)])

    standings = bt.leaderboard(table, rounds=300, min_votes=1)

    best = standings[0]
    assert best.index == 0 and best.losses == 0 and best.ties == 0
    values = [best.rating, best.ci_low, best.ci_high]
    assert all(math.isfinite(v) for v in values)
    assert 1000 < best.rating < 2000 and best.ci_high < 2500


def test_bootstrap_intervals_cover_the_true_strengths_of_a_simulated_population():
    rng = np.random.default_rng(7)
    true_elo = np.array([-150.0, -60.0, 0.0, 40.0, 70.0, 100.0])
    true_elo -= true_elo.mean()  # the fit's anchor: mean 1000
    n_versions, runs, votes_per_run = len(true_elo), 12, 3000
    covered = []
    for run in range(runs):
        first = rng.integers(0, n_versions, votes_per_run)
        second = (first + rng.integers(1, n_versions, votes_per_run)) % n_versions
        p_first = expit((true_elo[first] - true_elo[second]) / ELO)
        # Ties drawn so that a tie as half a win keeps the model true: P(win) + P(tie) / 2 is
        # the Bradley-Terry probability. (Ties drawn regardless of strength would pull every
        # strength towards the mean, and no interval of this model would cover them.)
        p_tie = 0.3 * np.minimum(p_first, 1 - p_first)
        u = rng.random(votes_per_run)
        outcome = np.where(u < p_first - p_tie / 2, 0, np.where(u < p_first + p_tie / 2, 1, 2))
        counts = np.zeros((n_versions, n_versions, 3), dtype=int)
        np.add.at(counts, (first, second, outcome), 1)
        rows = [(i, j, *counts[i, j]) for i in range(n_versions) for j in range(n_versions)]
        table = bt.OutcomeTable.from_counts(n_versions, rows)

        standings = bt.leaderboard(table, rounds=400, min_votes=1, seed=run)

        for s in standings:
            covered.append(s.ci_low <= 1000 + true_elo[s.index] <= s.ci_high)
    assert len(covered) == runs * n_versions
    assert np.mean(covered) >= 0.85


def test_rank_is_one_plus_the_versions_whose_lower_bound_is_above_the_upper_bound():
    lower = np.array([1100.0, 1080.0, 990.0, 900.0])
    upper = np.array([1200.0, 1150.0, 1090.0, 950.0])

    # Version 2's upper bound 1090 is below version 0's lower bound only; version 3 is below
    # all three others.
    assert bt.ranks(lower, upper).tolist() == [1, 1, 2, 4]


def test_versions_under_the_vote_minimum_are_fitted_but_not_listed():
    table = bt.OutcomeTable.from_counts(3, [(0, 1, 30, 5, 15), (1, 2, 3, 0, 1)])

    standings = bt.leaderboard(table, rounds=50, min_votes=20)

    assert sorted(s.index for s in standings) == [0, 1]
    assert [s.rank for s in standings] == sorted(s.rank for s in standings)
    assert standings[0].votes == 50
