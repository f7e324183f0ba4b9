"""The figures of a candidate-versus-baseline listening test, MusicRL-style: win / tie / loss,
the win rate with ties left out and its 95% interval, a Wilcoxon signed-rank test on the paired
1-5 scores, and each version's mean score with its 95% interval.

Pure numpy / scipy, no Django: the input is the vote rows of `ratings.dataset.vote_rows` (or
any dicts with the same keys), so the same code serves the pages, scripts and tests.

Every figure is from the candidate's point of view. What counts as a win:

* side by side (both clips scored 1-5, no choice asked): the clip with the higher score wins;
  equal scores are a tie;
* preference: the rater's choice; "tie" **and "both bad" count as ties** (both bad says neither
  clip is better, so it is no evidence for either side; it is also counted on its own);
* MOS (one clip per item, no comparison): no wins or losses, only each version's mean score.

Each vote is one observation, as in MusicRL: votes of several raters on the same item are
treated as independent. The shared clip makes them correlate a little, so the intervals are, if
anything, somewhat too narrow when items get many votes each.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy import stats

REPORT_VERSION = 1
CONFIDENCE = 0.95
# The Wilcoxon p-value is exact (every sign pattern of the non-zero differences enumerated,
# ties and zeros kept as they are) up to this many non-zero differences: 2**12 = 4,096
# patterns, ~20 ms. Above it the normal approximation is accurate enough (scipy's own "auto"
# switches to it above 13).
EXACT_MAX_NONZERO = 12
# Fewer non-zero differences than this and there is nothing to test.
MIN_NONZERO = 2
# Pratt (1959): zero differences (equal scores) are ranked together with the others, then
# dropped. See `signed_rank_test` for why.
ZERO_METHOD = "pratt"


def evaluation_report(
    rows: Iterable[dict[str, Any]], *, candidate: str, baseline: str
) -> dict[str, Any]:
    """The report of a listening test of `candidate` against `baseline` (version names, as in
    the rows' version_a / version_b). Rows about other versions are skipped and counted.

    A JSON-ready dict: `comparison` (win / tie / loss, win rate, binomial test), `wilcoxon`
    (signed-rank test on paired scores), `scores` (per version: n, mean, sd, 95% interval),
    and the counts of votes, raters and prompts. A figure that cannot be computed is None.
    """
    sides = {candidate: "candidate", baseline: "baseline"}
    outcomes = {"win": 0, "tie": 0, "loss": 0}
    both_bad = 0
    differences: list[float] = []
    scores: dict[str, list[float]] = {"candidate": [], "baseline": []}
    raters: set[Any] = set()
    prompts: set[Any] = set()
    protocols: set[str] = set()
    votes = skipped = 0

    for row in rows:
        version_a, version_b = row.get("version_a"), row.get("version_b")
        score_a, score_b = row.get("score_a"), row.get("score_b")
        if version_b is None:  # a single clip (MOS): its score, nothing to compare
            if version_a not in sides or score_a is None:
                skipped += 1
                continue
            scores[sides[version_a]].append(float(score_a))
        else:
            if {version_a, version_b} != {candidate, baseline} or candidate == baseline:
                skipped += 1
                continue
            candidate_is_a = version_a == candidate
            outcome = _outcome(row.get("choice"), score_a, score_b, candidate_is_a)
            if outcome is None:
                skipped += 1
                continue
            outcomes[outcome] += 1
            both_bad += row.get("choice") == "both_bad"
            if score_a is not None and score_b is not None:
                own, other = (score_a, score_b) if candidate_is_a else (score_b, score_a)
                differences.append(float(own - other))
                scores["candidate"].append(float(own))
                scores["baseline"].append(float(other))
        votes += 1
        raters.add(row.get("rater_id"))
        prompts.add(row.get("prompt_id", row.get("prompt_text")))
        if row.get("protocol"):
            protocols.add(row["protocol"])

    return {
        "report_version": REPORT_VERSION,
        "candidate": candidate,
        "baseline": baseline,
        "protocols": sorted(protocols),
        "votes": votes,
        "raters": len(raters),
        "prompts": len(prompts),
        "skipped_rows": skipped,
        "comparison": comparison_figures(
            wins=outcomes["win"], ties=outcomes["tie"], losses=outcomes["loss"], both_bad=both_bad
        ),
        "wilcoxon": signed_rank_test(differences),
        "scores": {
            "candidate": {"version": candidate, **score_summary(scores["candidate"])},
            "baseline": {"version": baseline, **score_summary(scores["baseline"])},
        },
    }


def _outcome(
    choice: str | None, score_a: float | None, score_b: float | None, candidate_is_a: bool
) -> str | None:
    """ "win", "tie" or "loss" for the candidate; None when the vote says nothing."""
    if choice is not None:
        if choice in ("tie", "both_bad"):
            return "tie"
        if choice not in ("a", "b"):
            return None
        return "win" if (choice == "a") == candidate_is_a else "loss"
    if score_a is None or score_b is None:
        return None
    difference = (score_a - score_b) if candidate_is_a else (score_b - score_a)
    return "tie" if difference == 0 else ("win" if difference > 0 else "loss")


def comparison_figures(*, wins: int, ties: int, losses: int, both_bad: int = 0) -> dict[str, Any]:
    """Win / tie / loss in counts and % of all comparisons; the win rate over decisive votes
    (ties left out) with its 95% Wilson interval; and the exact two-sided binomial test of
    that win rate against 1/2 (the sign test)."""
    total = wins + ties + losses
    decisive = wins + losses
    figures: dict[str, Any] = {
        "n": total,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "both_bad": both_bad,
        "win_pct": _pct(wins, total),
        "tie_pct": _pct(ties, total),
        "loss_pct": _pct(losses, total),
        "decisive": decisive,
        "win_rate": None,
        "win_rate_ci": None,
        "binomial_p": None,
    }
    if decisive:
        test = stats.binomtest(wins, decisive, p=0.5, alternative="two-sided")
        interval = test.proportion_ci(confidence_level=CONFIDENCE, method="wilson")
        figures["win_rate"] = wins / decisive
        figures["win_rate_ci"] = [float(interval.low), float(interval.high)]
        figures["binomial_p"] = float(test.pvalue)
    return figures


def signed_rank_test(differences: Iterable[float]) -> dict[str, Any]:
    """Wilcoxon signed-rank test (two-sided) on paired differences, candidate minus baseline.

    Zero differences (equal scores, which a 1-5 scale makes common) follow Pratt (1959): they
    are ranked with the others as the smallest differences, then dropped. Dropping them before
    ranking (scipy's default "wilcox") throws away observations of "no difference" and is not
    monotone (Pratt's paradox): turning a tie into a small loss can make the candidate look
    *more* significantly better. "zsplit" counts each tie as half a win and half a loss, which
    dilutes a real effect in proportion to the ties. Pratt keeps the ties' weight without
    siding them with either version. (The win rate and the binomial test are the
    ties-excluded view of the same votes.)

    The p-value is exact for up to EXACT_MAX_NONZERO non-zero differences: scipy's permutation
    test over every sign pattern of the Pratt signed ranks, which is right with tied ranks,
    where the textbook exact table is not. Above that: the normal approximation with the tie
    and zero (Cureton) corrections, no continuity correction.

    p (and the rank sums) are None with fewer than MIN_NONZERO non-zero differences: no pairs,
    all ties, or a single non-zero difference, whose two sign patterns always give p = 1.
    """
    d = np.asarray(list(differences), dtype=float)
    nonzero = int(np.count_nonzero(d))
    result: dict[str, Any] = {
        "n": int(d.size),
        "nonzero": nonzero,
        "zero_method": ZERO_METHOD,
        "mean_difference": float(d.mean()) if d.size else None,
        "w_plus": None,
        "w_minus": None,
        "statistic": None,
        "p": None,
        "method": None,
    }
    if nonzero < MIN_NONZERO:
        return result
    # Pratt's signed ranks: rank |d| over all differences, zeros included, keep the non-zero.
    ranks = stats.rankdata(np.abs(d))
    signed = np.sign(d) * ranks
    signed = signed[d != 0]
    result["w_plus"] = float(signed[signed > 0].sum())
    result["w_minus"] = float(np.abs(signed[signed < 0]).sum())
    if nonzero <= EXACT_MAX_NONZERO:
        exact = stats.permutation_test(
            (signed,),
            _positive_rank_sum,
            permutation_type="samples",  # a one-sample "samples" test flips signs
            vectorized=True,
            n_resamples=np.inf,  # enumerate all 2**nonzero sign patterns
            alternative="two-sided",
        )
        result["statistic"] = min(result["w_plus"], result["w_minus"])
        result["p"] = float(min(exact.pvalue, 1.0))
        result["method"] = "exact"
    else:
        test = stats.wilcoxon(
            d, zero_method=ZERO_METHOD, correction=False, alternative="two-sided",
            method="asymptotic",
        )  # fmt: skip
        result["statistic"] = float(test.statistic)
        result["p"] = float(test.pvalue)
        result["method"] = "normal approximation"
    return result


def _positive_rank_sum(signed_ranks: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(np.where(signed_ranks > 0, signed_ranks, 0.0), axis=axis)


def score_summary(values: Iterable[float]) -> dict[str, Any]:
    """n, mean, sample standard deviation and the 95% Student-t interval of the mean of 1-5
    scores; the sd and interval are None with fewer than two scores."""
    x = np.asarray(list(values), dtype=float)
    summary: dict[str, Any] = {"n": int(x.size), "mean": None, "sd": None, "ci": None}
    if x.size == 0:
        return summary
    summary["mean"] = float(x.mean())
    if x.size < 2:
        return summary
    sd = float(x.std(ddof=1))
    summary["sd"] = sd
    if sd == 0:
        summary["ci"] = [summary["mean"], summary["mean"]]
    else:
        low, high = stats.t.interval(
            CONFIDENCE, df=x.size - 1, loc=summary["mean"], scale=sd / math.sqrt(x.size)
        )
        summary["ci"] = [float(low), float(high)]
    return summary


def _pct(count: int, total: int) -> float | None:
    return 100.0 * count / total if total else None
