"""The evaluation report's figures against numbers worked out by hand, from formulas written
out here rather than taken from scipy."""

import itertools
import json
import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats

from reward.statistics import evaluation_report, signed_rank_test

CANDIDATE, BASELINE = "tuned-v2", "base-v1"

# Ten side-by-side votes as (candidate score, baseline score, rater, prompt, candidate on side a).
# Differences: +1 +2 0 +2 -1 +1 0 +3 -1 +3 -> 6 wins, 2 ties, 2 losses.
SIDE_BY_SIDE = [
    (4, 3, 1, 1, True),
    (5, 3, 2, 1, True),
    (3, 3, 1, 2, False),
    (4, 2, 2, 2, True),
    (2, 3, 3, 3, True),
    (5, 4, 3, 3, False),
    (4, 4, 4, 4, True),
    (5, 2, 4, 4, True),
    (3, 4, 1, 5, False),
    (4, 1, 2, 5, True),
]
# Student's t, 0.975 quantile, 9 degrees of freedom (printed tables: 2.262).
T_975_DF9 = 2.2621571627409915


def side_by_side_row(own, other, rater, prompt, candidate_is_a, *, version_b=BASELINE):
    versions = (CANDIDATE, version_b) if candidate_is_a else (version_b, CANDIDATE)
    scores = (own, other) if candidate_is_a else (other, own)
    return {
        "protocol": "side_by_side",
        "version_a": versions[0],
        "version_b": versions[1],
        "choice": None,
        "score_a": scores[0],
        "score_b": scores[1],
        "rater_id": rater,
        "prompt_id": prompt,
        "prompt_text": f"prompt {prompt}",
    }


def preference_row(choice, rater, prompt, *, candidate_is_a=True):
    versions = (CANDIDATE, BASELINE) if candidate_is_a else (BASELINE, CANDIDATE)
    return {
        "protocol": "preference",
        "version_a": versions[0],
        "version_b": versions[1],
        "choice": choice,
        "score_a": None,
        "score_b": None,
        "rater_id": rater,
        "prompt_id": prompt,
    }


def mos_row(version, score, rater, prompt):
    return {
        "protocol": "mos",
        "version_a": version,
        "version_b": None,
        "choice": None,
        "score_a": score,
        "score_b": None,
        "rater_id": rater,
        "prompt_id": prompt,
    }


def report_of(rows):
    report = evaluation_report(rows, candidate=CANDIDATE, baseline=BASELINE)
    json.dumps(report, allow_nan=False)  # stored in a JSON column: no NaN, no numpy types
    return report


def wilson(wins, n, z):
    """Wilson's score interval, written out."""
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_the_side_by_side_example_matches_the_hand_computation():
    report = report_of([side_by_side_row(*vote) for vote in SIDE_BY_SIDE])

    comparison = report["comparison"]
    assert (comparison["wins"], comparison["ties"], comparison["losses"]) == (6, 2, 2)
    assert (comparison["win_pct"], comparison["tie_pct"], comparison["loss_pct"]) == (60, 20, 20)
    assert comparison["decisive"] == 8
    assert comparison["win_rate"] == 0.75
    # Wilson, z = 1.95996: centre 0.66890, half-width 0.25962.
    low, high = wilson(6, 8, NormalDist().inv_cdf(0.975))
    assert comparison["win_rate_ci"] == pytest.approx([low, high], abs=1e-9)
    assert comparison["win_rate_ci"] == pytest.approx([0.40928, 0.92852], abs=1e-5)
    # Sign test: P(X >= 6 | n = 8) = (C(8,6) + C(8,7) + C(8,8)) / 2^8 = 37/256, doubled.
    assert comparison["binomial_p"] == pytest.approx(74 / 256, abs=1e-12)

    assert (report["votes"], report["raters"], report["prompts"]) == (10, 4, 5)
    assert report["skipped_rows"] == 0


def test_the_wilcoxon_p_is_the_exact_one_worked_out_by_hand():
    """Pratt: |d| = 1 2 0 2 1 1 0 3 1 3 ranked with the zeros: zeros 1.5, ones 4.5, twos 7.5,
    threes 9.5. W+ = 4.5 + 7.5 + 7.5 + 4.5 + 9.5 + 9.5 = 43, W- = 4.5 + 4.5 = 9. Under the null
    each of the 8 non-zero signs is a fair coin; W- <= 9 in 1 (none) + 4 (one 4.5) + 6 (two
    4.5s) + 2 (one 7.5) = 13 of 256 sign patterns; two-sided p = 26/256."""
    report = report_of([side_by_side_row(*vote) for vote in SIDE_BY_SIDE])

    wilcoxon = report["wilcoxon"]
    assert (wilcoxon["n"], wilcoxon["nonzero"]) == (10, 8)
    assert (wilcoxon["w_plus"], wilcoxon["w_minus"], wilcoxon["statistic"]) == (43, 9, 9)
    assert wilcoxon["zero_method"] == "pratt"
    assert wilcoxon["method"] == "exact"
    assert wilcoxon["p"] == pytest.approx(26 / 256, abs=1e-12)
    assert wilcoxon["mean_difference"] == pytest.approx(1.0)


def test_the_exact_p_enumerates_the_same_distribution_as_a_brute_force_count():
    d = [1, 1, 0, -2, 3, 1, 2, 0, -1, 2, 1]
    ranks = stats.rankdata(np.abs(d))  # Pratt: zeros ranked too
    nonzero = [(rank, value > 0) for rank, value in zip(ranks, d, strict=True) if value != 0]
    observed = sum(rank for rank, positive in nonzero if positive)
    centre = sum(rank for rank, _ in nonzero) / 2
    extreme = sum(
        abs(sum(rank for (rank, _), sign in zip(nonzero, signs, strict=True) if sign) - centre)
        >= abs(observed - centre) - 1e-9
        for signs in itertools.product((False, True), repeat=len(nonzero))
    )
    result = signed_rank_test(d)
    assert result["method"] == "exact"
    assert result["p"] == pytest.approx(extreme / 2 ** len(nonzero), abs=1e-12)
    # and scipy's own Pratt test, which enumerates every pattern for n <= 13 too
    scipy_p = stats.wilcoxon(
        d, zero_method="pratt", method=stats.PermutationMethod(n_resamples=9999)
    ).pvalue
    assert result["p"] == pytest.approx(scipy_p, abs=1e-12)


def test_large_samples_use_the_normal_approximation_with_tie_and_zero_corrections():
    d = [1, 2, 0, -1, 1, 3, 1, 0, 2, -2, 1, 1, 0, 2, 1, -1, 4, 1, 2, 0]
    n, zeros = len(d), d.count(0)
    ranks = stats.rankdata(np.abs(d))
    w_plus = sum(rank for rank, value in zip(ranks, d, strict=True) if value > 0)
    mean = (n * (n + 1) - zeros * (zeros + 1)) / 4
    ties = [list(np.abs(d)).count(size) for size in {abs(x) for x in d if x}]
    variance = (n * (n + 1) * (2 * n + 1) - zeros * (zeros + 1) * (2 * zeros + 1)) / 24 - sum(
        t**3 - t for t in ties
    ) / 48
    z = (w_plus - mean) / math.sqrt(variance)

    result = signed_rank_test(d)

    assert result["method"] == "normal approximation"
    assert result["nonzero"] == 16
    assert result["p"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)


def test_mean_scores_have_student_t_intervals():
    report = report_of([side_by_side_row(*vote) for vote in SIDE_BY_SIDE])

    # Candidate 4 5 3 4 2 5 4 5 3 4: mean 3.9, squared deviations sum to 8.9, sd = sqrt(8.9/9).
    # Baseline 3 3 3 2 3 4 4 2 4 1: mean 2.9, the same 8.9.
    sd = math.sqrt(8.9 / 9)
    half = T_975_DF9 * sd / math.sqrt(10)
    for side, mean in (("candidate", 3.9), ("baseline", 2.9)):
        summary = report["scores"][side]
        assert summary["n"] == 10
        assert summary["mean"] == pytest.approx(mean)
        assert summary["sd"] == pytest.approx(sd)
        assert summary["ci"] == pytest.approx([mean - half, mean + half], abs=1e-9)
    assert report["scores"]["candidate"]["version"] == CANDIDATE


def test_preference_votes_count_both_bad_as_a_tie_from_either_side():
    rows = [
        preference_row("a", 1, 1),
        preference_row("b", 2, 1, candidate_is_a=False),  # candidate on side b, chosen
        preference_row("b", 3, 1),
        preference_row("tie", 1, 2),
        preference_row("both_bad", 2, 2, candidate_is_a=False),
    ]
    report = report_of(rows)

    comparison = report["comparison"]
    assert (comparison["wins"], comparison["ties"], comparison["losses"]) == (2, 2, 1)
    assert comparison["both_bad"] == 1
    assert comparison["win_rate"] == pytest.approx(2 / 3)
    assert comparison["binomial_p"] == pytest.approx(1.0)  # 2 of 3 is no evidence
    assert report["wilcoxon"]["p"] is None  # no scores to pair
    assert report["scores"]["candidate"]["n"] == 0
    assert report["protocols"] == ["preference"]


def test_no_votes_gives_a_report_of_nothing():
    report = report_of([])

    assert (report["votes"], report["raters"], report["prompts"]) == (0, 0, 0)
    comparison = report["comparison"]
    assert comparison["n"] == 0
    assert comparison["win_pct"] is None
    assert comparison["win_rate"] is None and comparison["win_rate_ci"] is None
    assert comparison["binomial_p"] is None
    assert report["wilcoxon"]["p"] is None and report["wilcoxon"]["mean_difference"] is None
    assert report["scores"]["baseline"] == {
        "version": BASELINE,
        "n": 0,
        "mean": None,
        "sd": None,
        "ci": None,
    }


def test_all_ties_leave_the_win_rate_and_the_wilcoxon_p_undefined():
    rows = [side_by_side_row(3, 3, rater, 1, True) for rater in range(5)]
    report = report_of(rows)

    comparison = report["comparison"]
    assert (comparison["ties"], comparison["tie_pct"], comparison["decisive"]) == (5, 100, 0)
    assert comparison["win_rate"] is None and comparison["binomial_p"] is None
    assert report["wilcoxon"]["nonzero"] == 0 and report["wilcoxon"]["p"] is None
    # identical scores: the interval of the mean is the mean itself
    assert report["scores"]["candidate"]["ci"] == [3.0, 3.0]


def test_a_mos_campaign_gives_per_version_means_only():
    rows = [
        mos_row(CANDIDATE, 4, 1, 1),
        mos_row(CANDIDATE, 5, 2, 1),
        mos_row(CANDIDATE, 3, 3, 2),
        mos_row(BASELINE, 2, 1, 1),
        mos_row(BASELINE, 3, 2, 2),
        mos_row("someone-else", 5, 1, 3),
    ]
    report = report_of(rows)

    assert report["comparison"]["n"] == 0 and report["comparison"]["win_rate"] is None
    assert report["wilcoxon"]["n"] == 0 and report["wilcoxon"]["p"] is None
    candidate, baseline = report["scores"]["candidate"], report["scores"]["baseline"]
    # candidate 4 5 3: mean 4, sd 1, t(0.975, 2) = 4.302653 -> 4 +- 4.302653 / sqrt(3)
    assert candidate["mean"] == pytest.approx(4.0) and candidate["sd"] == pytest.approx(1.0)
    half = 4.302652729749464 / math.sqrt(3)
    assert candidate["ci"] == pytest.approx([4 - half, 4 + half], abs=1e-9)
    # baseline 2 3: mean 2.5, sd sqrt(0.5), t(0.975, 1) = 12.7062
    assert baseline["mean"] == pytest.approx(2.5)
    half = 12.706204736174707 * math.sqrt(0.5) / math.sqrt(2)
    assert baseline["ci"] == pytest.approx([2.5 - half, 2.5 + half], abs=1e-9)
    assert (report["votes"], report["raters"], report["prompts"], report["skipped_rows"]) == (
        5,
        3,
        2,
        1,
    )


def test_a_single_score_has_a_mean_but_no_interval():
    report = report_of([mos_row(CANDIDATE, 4, 1, 1)])

    assert report["scores"]["candidate"] == {
        "version": CANDIDATE,
        "n": 1,
        "mean": 4.0,
        "sd": None,
        "ci": None,
    }


def test_votes_about_other_versions_are_skipped():
    rows = [
        side_by_side_row(4, 3, 1, 1, True),
        side_by_side_row(4, 3, 1, 1, True, version_b="other-version"),
        {**preference_row("a", 1, 1), "version_a": BASELINE},  # a collect vote: baseline twice
    ]
    report = report_of(rows)

    assert report["votes"] == 1 and report["skipped_rows"] == 2
    assert report["comparison"]["wins"] == 1


def test_a_single_non_zero_difference_is_too_few_to_test():
    result = signed_rank_test([0, 0, 2])

    assert (result["n"], result["nonzero"]) == (3, 1)
    assert result["p"] is None and result["statistic"] is None
    assert signed_rank_test([0, -1, 2])["p"] == pytest.approx(
        1.0
    )  # every sign pattern is as extreme
