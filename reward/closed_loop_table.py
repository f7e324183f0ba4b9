"""MusicRL's table from a `musicrl_loop --presets` run's evaluation reports: per comparison
(R vs base, U vs base, RU vs R, RU vs base), the win rate with ties excluded and its Wilson
interval, win / tie / loss, and each side's mean 1-5 score with its t-interval. Plain
Python: the reports are `reward.statistics.evaluation_report` dicts."""

from __future__ import annotations

from typing import Any


def presets_table(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """MusicRL's table: per comparison, the win rate with ties excluded and its Wilson
    interval, win / tie / loss, and each side's mean 1-5 score with its t-interval."""
    rows = []
    for label, report in reports.items():
        comparison, scores = report.get("comparison") or {}, report.get("scores") or {}
        rows.append({
            "comparison": label,
            "win_rate": comparison.get("win_rate"),
            "win_rate_ci": comparison.get("win_rate_ci"),
            "wins": comparison.get("wins"), "ties": comparison.get("ties"),
            "losses": comparison.get("losses"),
            "candidate_score": (scores.get("candidate") or {}).get("mean"),
            "candidate_score_ci": (scores.get("candidate") or {}).get("ci"),
            "baseline_score": (scores.get("baseline") or {}).get("mean"),
            "baseline_score_ci": (scores.get("baseline") or {}).get("ci"),
            "wilcoxon_p": (report.get("wilcoxon") or {}).get("p"),
        })  # fmt: skip
    return rows


def table_lines(table: list[dict[str, Any]]) -> list[str]:
    def figure(value: float | None, interval: list[float] | None) -> str:
        if value is None:
            return "-"
        return f"{value:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else f"{value:.2f}"

    lines = [
        f"{'comparison':<12} {'win rate [95%]':<20} {'W/T/L':<12} "
        f"{'score [95%]':<20} {'other side [95%]':<20}"
    ]
    for row in table:
        wtl = f"{row['wins']}/{row['ties']}/{row['losses']}"
        lines.append(
            f"{row['comparison']:<12} {figure(row['win_rate'], row['win_rate_ci']):<20} "
            f"{wtl:<12} {figure(row['candidate_score'], row['candidate_score_ci']):<20} "
            f"{figure(row['baseline_score'], row['baseline_score_ci']):<20}"
        )
    return lines
