"""Bradley-Terry strengths of generator versions from pairwise votes, with bootstrap intervals.

Pure numpy/scipy (no Django), so it can be tested and benchmarked on its own.

The model: version i beats version j with probability sigmoid(theta_i - theta_j). The fit works
on a compact table, one row per version pair with its wins, ties and losses, never on one row
per vote: the likelihood only depends on those counts, so a million votes over 50 versions is a
table of at most 1,225 rows and every fit, bootstrap round included, costs the same whatever the
number of votes.

- Ties count as half a win for each side (also "both bad", which the caller maps to a tie, as
  Chatbot Arena does).
- A Gaussian prior on each log-strength (sd `prior_sd_elo` on the Elo scale) keeps an unbeaten
  version's strength finite, and fixes the otherwise free offset: at the optimum the strengths
  sum to zero, because the likelihood's gradient sums to zero over versions. Ratings are
  therefore anchored at a mean of 1000 over the fitted versions, in every bootstrap round too.
- Intervals: the votes are resampled with replacement (one multinomial draw over all cells of
  the table, which is what resampling the votes does), every round is refitted by a few Newton
  steps started from the point estimate, all rounds at once as a batch, and the 2.5 and 97.5
  percentiles of each version's ratings are its 95% interval.
- Rank = 1 + the number of listed versions whose lower bound is above this version's upper
  bound, so versions whose intervals overlap share a rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

ELO_PER_NAT = 400 / math.log(10)  # 173.7 rating points per unit of log-strength
ELO_ANCHOR = 1000.0
DEFAULT_PRIOR_SD_ELO = 400.0
# The largest change of one log-strength in a single Newton step: far from the optimum a full
# step can overshoot, and a damped one is still a descent direction.
MAX_STEP = 1.0


@dataclass(frozen=True)
class OutcomeTable:
    """Counted outcomes per unordered version pair (first < second), versions as 0..n-1."""

    n_versions: int
    first: np.ndarray  # int, shape (pairs,)
    second: np.ndarray
    wins: np.ndarray  # first beat second
    ties: np.ndarray
    losses: np.ndarray  # second beat first

    @classmethod
    def from_counts(
        cls, n_versions: int, rows: Iterable[tuple[int, int, int, int, int]]
    ) -> OutcomeTable:
        """Rows of (i, j, i's wins, ties, j's wins) for ordered pairs, in any order and possibly
        repeated: (j, i) rows are folded into (i, j), so the caller need not canonicalise."""
        cells: dict[tuple[int, int], np.ndarray] = {}
        for i, j, wins, ties, losses in rows:
            if i == j:
                continue  # two clips of one version say nothing about versions
            if i < j:
                key, counts = (i, j), (wins, ties, losses)
            else:
                key, counts = (j, i), (losses, ties, wins)
            cells.setdefault(key, np.zeros(3, dtype=np.int64))
            cells[key] += counts
        keys = sorted(cells)
        counts = np.array([cells[k] for k in keys], dtype=np.int64).reshape(-1, 3)
        pairs = np.array(keys, dtype=np.intp).reshape(-1, 2)
        return cls(n_versions, pairs[:, 0], pairs[:, 1], *counts.T)

    @property
    def totals(self) -> np.ndarray:
        return self.wins + self.ties + self.losses

    def version_counts(self) -> np.ndarray:
        """(n_versions, 3) array of each version's wins, ties and losses over all its pairs."""
        out = np.zeros((self.n_versions, 3), dtype=np.int64)
        np.add.at(out, self.first, np.stack([self.wins, self.ties, self.losses], axis=1))
        np.add.at(out, self.second, np.stack([self.losses, self.ties, self.wins], axis=1))
        return out


@dataclass(frozen=True)
class Standing:
    """One listed version: `index` into the table's versions; ratings on the Elo scale."""

    index: int
    rating: float
    ci_low: float
    ci_high: float
    votes: int
    wins: int
    ties: int
    losses: int
    rank: int


def prior_precision(prior_sd_elo: float) -> float:
    """The L2 penalty on log-strengths equivalent to a Gaussian prior of this sd in Elo."""
    return (ELO_PER_NAT / prior_sd_elo) ** 2


def to_elo(theta: np.ndarray) -> np.ndarray:
    return ELO_ANCHOR + ELO_PER_NAT * theta


def negative_log_posterior(
    theta: np.ndarray, table: OutcomeTable, precision: float
) -> tuple[float, np.ndarray]:
    """The objective the fit minimises, with its gradient (for scipy, and for tests)."""
    diff = theta[table.first] - theta[table.second]
    won = table.wins + 0.5 * table.ties
    lost = table.totals - won
    # log sigmoid(x) = -logaddexp(0, -x), stable for large |x|.
    value = np.sum(won * np.logaddexp(0, -diff) + lost * np.logaddexp(0, diff))
    value += 0.5 * precision * float(theta @ theta)
    residual = won - table.totals * _sigmoid(diff)
    grad = precision * theta
    np.subtract.at(grad, table.first, residual)
    np.add.at(grad, table.second, residual)
    return float(value), grad


def fit_strengths(
    table: OutcomeTable,
    *,
    prior_sd_elo: float = DEFAULT_PRIOR_SD_ELO,
    tol: float = 1e-9,
    max_iter: int = 100,
) -> np.ndarray:
    """Maximum a posteriori log-strengths (mean zero), by damped Newton from zero."""
    won = (table.wins + 0.5 * table.ties)[None, :]
    start = np.zeros((1, table.n_versions))
    theta = _newton_batch(
        start, table, won, table.totals[None, :], prior_precision(prior_sd_elo), tol, max_iter
    )
    return theta[0]


def bootstrap_strengths(
    table: OutcomeTable,
    theta_hat: np.ndarray,
    *,
    rounds: int,
    rng: np.random.Generator,
    prior_sd_elo: float = DEFAULT_PRIOR_SD_ELO,
    tol: float = 1e-7,
    max_iter: int = 50,
) -> np.ndarray:
    """(rounds, n_versions) log-strengths refitted on resampled votes."""
    cells = np.stack([table.wins, table.ties, table.losses], axis=1).ravel()
    n_votes = int(cells.sum())
    # One multinomial draw over every (pair, outcome) cell = resampling the votes themselves.
    draws = rng.multinomial(n_votes, cells / n_votes, size=rounds).reshape(rounds, -1, 3)
    won = draws[:, :, 0] + 0.5 * draws[:, :, 1]
    totals = draws.sum(axis=2)
    start = np.broadcast_to(theta_hat, (rounds, table.n_versions))
    precision = prior_precision(prior_sd_elo)
    return _newton_batch(start, table, won, totals, precision, tol, max_iter)


def ranks(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """1 + how many versions have a lower bound above this version's upper bound."""
    return 1 + (lower[None, :] > upper[:, None]).sum(axis=1)


def leaderboard(
    table: OutcomeTable,
    *,
    rounds: int = 1000,
    min_votes: int = 20,
    seed: int = 0,
    prior_sd_elo: float = DEFAULT_PRIOR_SD_ELO,
) -> list[Standing]:
    """The listed versions (those with at least `min_votes` comparisons), best first.

    Every version is fitted, so the strengths of the listed ones still use what is known about
    the rest; only the listing and the ranks are restricted."""
    if table.n_versions == 0 or len(table.first) == 0:
        return []
    theta = fit_strengths(table, prior_sd_elo=prior_sd_elo)
    rating = to_elo(theta)
    if rounds > 0:
        samples = bootstrap_strengths(
            table, theta, rounds=rounds, rng=np.random.default_rng(seed), prior_sd_elo=prior_sd_elo
        )
        low, high = np.percentile(to_elo(samples), [2.5, 97.5], axis=0)
    else:
        low, high = rating.copy(), rating.copy()
    counts = table.version_counts()
    votes = counts.sum(axis=1)
    listed = np.flatnonzero(votes >= max(min_votes, 1))
    listed_ranks = ranks(low[listed], high[listed])
    standings = [
        Standing(
            index=int(k),
            rating=float(rating[k]),
            ci_low=float(low[k]),
            ci_high=float(high[k]),
            votes=int(votes[k]),
            wins=int(counts[k, 0]),
            ties=int(counts[k, 1]),
            losses=int(counts[k, 2]),
            rank=int(rank),
        )
        for k, rank in zip(listed, listed_ranks, strict=True)
    ]
    return sorted(standings, key=lambda s: (s.rank, -s.rating))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # exact and overflow-free


def _incidence(table: OutcomeTable) -> np.ndarray:
    """(pairs, versions) matrix with +1 at the first and -1 at the second version of a pair:
    differences are theta @ A.T and per-version sums of pair terms are r @ A, as matmuls."""
    a = np.zeros((len(table.first), table.n_versions))
    rows = np.arange(len(table.first))
    a[rows, table.first] = 1.0
    a[rows, table.second] = -1.0
    return a


def _newton_batch(
    theta: np.ndarray,
    table: OutcomeTable,
    won: np.ndarray,
    totals: np.ndarray,
    precision: float,
    tol: float,
    max_iter: int,
) -> np.ndarray:
    """Damped Newton on a batch of independent fits (one per row of `won`/`totals`), which
    share the pair structure: R fits of K versions cost R small K x K solves per step."""
    incidence = _incidence(table)
    absolute = np.abs(incidence)
    n_versions = table.n_versions
    diag = np.arange(n_versions)
    theta = np.array(theta, dtype=float)
    for _ in range(max_iter):
        p = _sigmoid(theta @ incidence.T)
        grad = precision * theta - (won - totals * p) @ incidence
        curvature = totals * p * (1.0 - p)
        hessian = np.zeros((theta.shape[0], n_versions, n_versions))
        hessian[:, table.first, table.second] = -curvature
        hessian[:, table.second, table.first] = -curvature
        hessian[:, diag, diag] = curvature @ absolute + precision
        step = np.linalg.solve(hessian, -grad[:, :, None])[:, :, 0]
        largest = np.abs(step).max(axis=1, keepdims=True)
        step *= np.minimum(1.0, MAX_STEP / np.maximum(largest, 1e-300))
        theta += step
        if largest.max() < tol:
            break
    return theta


def standings_as_rows(
    standings: Sequence[Standing], labels: Sequence[dict]
) -> list[dict[str, object]]:
    """JSON rows for storage: each standing merged with its version's label dict (id, name)."""
    return [
        {
            **labels[s.index],
            "rating": round(s.rating, 2),
            "ci_low": round(s.ci_low, 2),
            "ci_high": round(s.ci_high, 2),
            "votes": s.votes,
            "wins": s.wins,
            "ties": s.ties,
            "losses": s.losses,
            "rank": s.rank,
        }
        for s in standings
    ]
