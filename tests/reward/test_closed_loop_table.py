"""MusicRL's table from the evaluation reports of a `musicrl_loop --presets` run."""

import pytest

from reward.closed_loop_table import presets_table, table_lines
from reward.statistics import comparison_figures, score_summary


def report(wins: int, ties: int, losses: int, candidate: list[int], baseline: list[int]):
    return {
        "comparison": comparison_figures(wins=wins, ties=ties, losses=losses),
        "scores": {"candidate": score_summary(candidate), "baseline": score_summary(baseline)},
        "wilcoxon": {"p": 0.01},
    }


def test_each_comparison_is_a_row_with_its_win_rate_interval_and_mean_scores():
    reports = {
        "R vs base": report(9, 2, 3, [4, 4, 3, 5], [2, 3, 3, 2]),
        "RU vs R": report(0, 4, 0, [3, 3], [3, 3]),  # all ties: no win rate to give
    }

    table = presets_table(reports)

    first, second = table
    assert first["comparison"] == "R vs base"
    assert (first["wins"], first["ties"], first["losses"]) == (9, 2, 3)
    assert first["win_rate"] == pytest.approx(9 / 12)
    # Wilson's 95% interval for 9 of 12, by hand: centre (9 + 1.96^2/2) / (12 + 1.96^2).
    z = 1.959964
    centre = (9 + z * z / 2) / (12 + z * z)
    half = z / (12 + z * z) * (9 * 3 / 12 + z * z / 4) ** 0.5
    assert first["win_rate_ci"] == pytest.approx([centre - half, centre + half], abs=1e-6)
    assert first["candidate_score"] == pytest.approx(4.0)
    assert first["baseline_score"] == pytest.approx(2.5)
    assert first["wilcoxon_p"] == 0.01
    assert second["win_rate"] is None and second["win_rate_ci"] is None

    lines = table_lines(table)
    assert lines[0].split()[:2] == ["comparison", "win"]
    assert lines[1].startswith("R vs base    0.75 [")
    assert "9/2/3" in lines[1] and "4.00 [" in lines[1]
    assert lines[2].startswith("RU vs R      -")
