"""The figures a reward model is judged by, each with a bootstrap interval.

Every function returns plain floats, ints and None (for a figure the data cannot define), so
the results go straight into a JSON field. Votes on the same pair of clips are not independent
draws, so where rows come in groups the interval resamples whole groups (a cluster bootstrap
of the ratio "credit / votes"), not single votes, which would make it too narrow.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

DEFAULT_RESAMPLES = 2000
# BCa needs a jackknife over every observation on top of the resamples; past a few thousand
# observations the percentile interval is as good and far cheaper.
BCA_MAX_OBSERVATIONS = 2000
BOOTSTRAP_BATCH = 250  # resamples held in memory at once


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def paired_bootstrap_interval(
    samples: Sequence[ArrayLike],
    statistic: Callable[..., Any],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    method: str = "auto",
) -> tuple[float, float]:
    """Interval for statistic(*samples) where the samples are parallel arrays whose rows are
    resampled together. method: "BCa", "percentile", or "auto" (BCa up to
    BCA_MAX_OBSERVATIONS rows). (nan, nan) when fewer than two rows; a point interval when
    the statistic does not vary (constant data), where BCa itself is undefined."""
    arrays = tuple(np.asarray(sample, dtype=np.float64) for sample in samples)
    n = len(arrays[0])
    if n < 2:
        return math.nan, math.nan
    if method == "auto":
        method = "BCa" if n <= BCA_MAX_OBSERVATIONS else "percentile"
    for attempt in dict.fromkeys((method, "percentile")):
        with warnings.catch_warnings():
            # BCa warns and returns nan when the resampled statistics are (nearly) all equal
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.bootstrap(
                arrays,
                statistic,
                n_resamples=resamples,
                batch=BOOTSTRAP_BATCH,
                paired=True,
                confidence_level=confidence,
                method=attempt,
                rng=np.random.default_rng(seed),
            )
        low, high = result.confidence_interval
        if math.isfinite(low) and math.isfinite(high):
            return float(low), float(high)
    estimate = float(statistic(*arrays, axis=-1))
    return estimate, estimate


def bootstrap_interval(
    values: ArrayLike,
    statistic: Callable[..., Any] = np.mean,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    method: str = "auto",
) -> tuple[float, float]:
    """(low, high) bootstrap interval of statistic(values); `statistic` takes an `axis`
    argument (numpy's reductions do), which lets scipy evaluate all resamples at once."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) >= 2 and np.all(values == values[0]):
        estimate = float(statistic(values, axis=-1))
        return estimate, estimate
    return paired_bootstrap_interval(
        (values,),
        statistic,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        method=method,
    )


def _ratio(numerators: np.ndarray, denominators: np.ndarray, axis: int = -1) -> np.ndarray:
    return numerators.sum(axis=axis) / denominators.sum(axis=axis)


def _grouped_mean(
    values: np.ndarray, groups: ArrayLike | None, **bootstrap: Any
) -> tuple[float, float, int]:
    """(low, high, number of groups) for the mean of `values`, resampling whole groups
    (each row its own group when groups is None)."""
    if groups is None:
        low, high = bootstrap_interval(values, **bootstrap)
        return low, high, len(values)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse).astype(np.float64)
    low, high = paired_bootstrap_interval((sums, counts), _ratio, **bootstrap)
    return low, high, len(counts)


def _mean_and_interval(
    name: str, values: np.ndarray, groups: ArrayLike | None, **bootstrap: Any
) -> dict[str, Any]:
    """{name: the mean, low, high, n}: `_grouped_mean`'s interval, all None without values."""
    if len(values) == 0:
        return {name: None, "low": None, "high": None, "n": 0}
    low, high, _ = _grouped_mean(values, groups, **bootstrap)
    return {
        name: float(values.mean()),
        "low": _finite(low),
        "high": _finite(high),
        "n": len(values),
    }


def pairwise_accuracy(
    margins: ArrayLike,
    targets: ArrayLike,
    groups: ArrayLike | None = None,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Share of decisive votes (target 1 or 0; ties are left out) whose winner has the larger
    reward; margin = r_a - r_b, and a margin of exactly 0 earns half. With `groups` (the pair
    each vote is on) the interval resamples pairs. Returns accuracy, low, high, n (votes)."""
    margins = np.asarray(margins, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    decisive = targets != 0.5
    margins, targets = margins[decisive], targets[decisive]
    credit = np.where(margins == 0, 0.5, ((margins > 0) == (targets > 0.5)).astype(np.float64))
    if groups is not None:
        groups = np.asarray(groups).reshape(-1)[decisive]
    bootstrap = {"confidence": confidence, "resamples": resamples, "seed": seed}
    return _mean_and_interval("accuracy", credit, groups, **bootstrap)


def log_likelihood_gain(
    margins: ArrayLike,
    targets: ArrayLike,
    groups: ArrayLike | None = None,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """How much better than a coin the model predicts the votes: the mean over all votes (ties
    count half to each side) of log P(vote) under P(a wins) = sigmoid(margin), less log 0.5,
    in nats per vote, with a (pair-resampling, given `groups`) interval.

    Unlike accuracy it is not diluted by pairs on which raters are indifferent: a model that
    learned the taste predicts about 0.5 there, which gains and costs almost nothing, while
    every such pair costs accuracy a coin flip of noise. Returns gain, low, high, n (votes)."""
    margins = np.asarray(margins, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    gains = (
        targets * special.log_expit(margins)
        + (1 - targets) * special.log_expit(-margins)
        + math.log(2.0)
    )
    bootstrap = {"confidence": confidence, "resamples": resamples, "seed": seed}
    return _mean_and_interval("gain", gains, groups, **bootstrap)


def agreement_votes(targets: ArrayLike, groups: ArrayLike) -> np.ndarray:
    """Which votes `rater_agreement` reads: the decisive ones (target 1 or 0) on pairs with at
    least two of them. A model's accuracy on exactly these votes is the one to set beside
    the raters' agreement: the same votes on the same pairs."""
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    decisive = targets != 0.5
    pairs, counts = np.unique(groups[decisive], return_counts=True)
    return decisive & np.isin(groups, pairs[counts >= 2])


def rater_agreement(
    votes_by_group: Mapping[int, Sequence[float]],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """How well people agree with each other: the noise ceiling for pairwise accuracy.

    votes_by_group maps a pair to its votes, all oriented the same way (1.0: the first clip
    preferred, 0.0: the second, 0.5: a tie). Ties are dropped and only pairs with >= 2
    decisive votes count. `accuracy` predicts each vote by the majority of the other votes on
    its pair (leave-one-out; an even split earns 0.5), averaged over votes like a model's
    held-out accuracy, with a pair-resampling interval (low, high). `agreement` is the chance
    that two different votes on a pair agree, averaged over pairs (Fleiss' observed
    agreement). With few votes per pair the majority of the others is itself noisy, so
    `accuracy` is a low estimate of the ceiling. `ceiling_upper` is a high one: a pair whose
    votes go one way with probability p has agreement A = p^2 + (1-p)^2, and the best any
    model can do on its votes is max(p, 1-p) = (1 + sqrt(2A - 1)) / 2; that of the mean
    agreement is at least the mean of it (Jensen), equal if all pairs were equally hard."""
    credit_sums, vote_counts, agreements = [], [], []
    for votes in votes_by_group.values():
        decisive = [vote for vote in votes if vote != 0.5]
        k = len(decisive)
        if k < 2:
            continue
        ones = sum(1 for vote in decisive if vote > 0.5)
        zeros = k - ones
        credit = 0.0
        for is_one, count in ((True, ones), (False, zeros)):
            same, other = (ones - 1, zeros) if is_one else (zeros - 1, ones)
            # the other k-1 votes: `same` agree with this vote, `other` disagree
            credit += count * (1.0 if same > other else 0.5 if same == other else 0.0)
        credit_sums.append(credit)
        vote_counts.append(k)
        agreements.append((ones * (ones - 1) + zeros * (zeros - 1)) / (k * (k - 1)))
    n_pairs, n_votes = len(vote_counts), int(sum(vote_counts))
    if n_pairs == 0:
        return {
            "accuracy": None,
            "low": None,
            "high": None,
            "agreement": None,
            "ceiling_upper": None,
            "n_pairs": 0,
            "n_votes": 0,
        }
    sums, counts = np.asarray(credit_sums), np.asarray(vote_counts, dtype=np.float64)
    low, high = paired_bootstrap_interval(
        (sums, counts), _ratio, confidence=confidence, resamples=resamples, seed=seed
    )
    agreement = float(np.mean(agreements))
    return {
        "accuracy": float(sums.sum() / counts.sum()),
        "low": _finite(low),
        "high": _finite(high),
        "agreement": agreement,
        "ceiling_upper": (1.0 + math.sqrt(max(0.0, 2.0 * agreement - 1.0))) / 2.0,
        "n_pairs": n_pairs,
        "n_votes": n_votes,
    }


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return stats.pearsonr(x, y, axis=axis).statistic


def pearson(pred: ArrayLike, target: ArrayLike) -> float | None:
    """Pearson's r, or None where it is undefined (fewer than 3 points, a constant input)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    target = np.asarray(target, dtype=np.float64).reshape(-1)
    if len(pred) < 3 or np.all(pred == pred[0]) or np.all(target == target[0]):
        return None
    return _finite(stats.pearsonr(pred, target).statistic)


def regression_metrics(
    pred: ArrayLike,
    target: ArrayLike,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """pearson (with a bootstrap interval pearson_low, pearson_high), spearman, mse and n.
    A correlation is None when undefined (fewer than 3 points, or a constant input)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    target = np.asarray(target, dtype=np.float64).reshape(-1)
    n = len(pred)
    figures: dict[str, Any] = {
        "pearson": None,
        "pearson_low": None,
        "pearson_high": None,
        "spearman": None,
        "mse": float(np.mean((pred - target) ** 2)) if n else None,
        "n": n,
    }
    if n < 3 or np.all(pred == pred[0]) or np.all(target == target[0]):
        return figures
    low, high = paired_bootstrap_interval(
        (pred, target), _pearson, confidence=confidence, resamples=resamples, seed=seed
    )
    figures["pearson"] = pearson(pred, target)
    figures["pearson_low"], figures["pearson_high"] = _finite(low), _finite(high)
    figures["spearman"] = _finite(stats.spearmanr(pred, target).statistic)
    return figures
