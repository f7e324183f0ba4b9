"""Evaluation pages. Researchers read every report; only admins promote or retire a candidate.

The detail page recomputes its report on every view (one query for the votes, one for their
scores, and a few milliseconds of statistics), so it is never stale; the list recomputes only
the reports that a vote arrived for since they were computed.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from ratings.models import Role
from ratings.roles import has_role
from ratings.selectors import campaign_progress
from ratings.views import role_required
from reward import evaluations
from reward.models import Evaluation

DASH = "\u2014"
OUTCOME_COLOURS = {"win": "#2f9e44", "tie": "#adb5bd", "loss": "#c92a2a"}
BAR_LEFT, BAR_WIDTH = 10.0, 540.0
# The mean-score chart: the 1-5 scale drawn from SCALE_LEFT to SCALE_LEFT + SCALE_WIDTH.
SCALE_LEFT, SCALE_WIDTH = 150.0, 380.0


@require_GET
@role_required(Role.RESEARCHER)
def evaluation_list(request: HttpRequest) -> HttpResponse:
    """Researcher and above: every evaluation with its headline win rate."""
    rows = [
        {"evaluation": evaluation, "table": report_table(evaluation.report)}
        for evaluation in evaluations.evaluations_for_list()
    ]
    return render(request, "reward/evaluation_list.html", {"rows": rows})


@require_GET
@role_required(Role.RESEARCHER)
def evaluation_detail(request: HttpRequest, evaluation_id: int) -> HttpResponse:
    """Researcher and above: the MusicRL-style table and chart of one evaluation."""
    evaluation = get_object_or_404(
        Evaluation.objects.select_related(
            "campaign", "candidate__parent", "baseline__parent", "fine_tune_run"
        ),
        pk=evaluation_id,
    )
    report = evaluations.evaluation_refresh(evaluation)
    context = {
        "evaluation": evaluation,
        "report": report,
        "verdict": evaluations.verdict(report),
        "table": report_table(report),
        "chart": report_chart(report),
        "progress": campaign_progress(campaign=evaluation.campaign),
        "candidate_lineage": evaluation.candidate.lineage(),
        "baseline_lineage": evaluation.baseline.lineage(),
        "can_decide": has_role(request.user, Role.ADMIN),
        **adherence_table(report, evaluation),
    }
    return render(request, "reward/evaluation_detail.html", context)


def adherence_table(report: dict, evaluation: Evaluation) -> dict[str, Any]:
    """Candidate first, then the baseline: each version's mean fit per attribute, of its
    clips' notes and of the plans they declared; and, where measured, of whole pieces, with
    the candidate's difference from the baseline (`evaluations.held_out_adherence`)."""
    from generation.music.evaluation import FIT_PARTS

    parts = [*FIT_PARTS, "score"]

    def rows(fits: dict) -> list[dict]:
        return [
            {"version": name, "values": [fits[name][p] for p in parts],
             "clips": fits[name]["clips"]}
            for name in (evaluation.candidate.name, evaluation.baseline.name)
            if name in fits
        ]  # fmt: skip

    whole = report.get("held_out_adherence") or {}
    notes = whole.get("notes") or {}
    return {
        "adherence_parts": parts,
        "adherence_rows": rows(report.get("adherence") or {}),
        "plan_adherence_rows": rows(report.get("plan_adherence") or {}),
        "whole_piece_rows": [{"part": part, **notes[part]} for part in parts if part in notes],
        "whole_piece_samples": whole.get("samples_per_prompt"),
        "whole_piece_prompts": notes.get("prompts"),
    }


@require_POST
@role_required(Role.ADMIN)
def evaluation_promote(request: HttpRequest, evaluation_id: int) -> HttpResponse:
    """Admin: make the candidate an active version (preselected for new collection)."""
    evaluation = get_object_or_404(Evaluation.objects.select_related("candidate"), pk=evaluation_id)
    evaluations.version_promote(evaluation.candidate)
    return redirect("evaluation-detail", evaluation_id=evaluation.pk)


@require_POST
@role_required(Role.ADMIN)
def evaluation_retire(request: HttpRequest, evaluation_id: int) -> HttpResponse:
    """Admin: retire the candidate."""
    evaluation = get_object_or_404(Evaluation.objects.select_related("candidate"), pk=evaluation_id)
    evaluations.version_retire(evaluation.candidate)
    return redirect("evaluation-detail", evaluation_id=evaluation.pk)


def report_table(report: dict[str, Any]) -> dict[str, Any]:
    """The report's figures as the page prints them ("—" for what cannot be computed)."""
    comparison, wilcoxon = report["comparison"], report["wilcoxon"]
    interval = comparison["win_rate_ci"]
    return {
        "win": _percent(comparison["win_pct"]),
        "tie": _percent(comparison["tie_pct"]),
        "loss": _percent(comparison["loss_pct"]),
        "win_rate": _percent(_times_100(comparison["win_rate"])),
        "win_rate_ci": (
            f"[{_percent(100 * interval[0])}, {_percent(100 * interval[1])}]" if interval else ""
        ),
        "binomial_p": _p_value(comparison["binomial_p"]),
        "wilcoxon_p": _p_value(wilcoxon["p"]),
        "scores": [
            {
                "side": side,
                "version": summary["version"],
                "n": summary["n"],
                "mean": _number(summary["mean"]),
                "sd": _number(summary["sd"]),
                "ci": (
                    f"[{_number(summary['ci'][0])}, {_number(summary['ci'][1])}]"
                    if summary["ci"]
                    else DASH
                ),
            }
            for side, summary in report["scores"].items()
        ],
    }


def _times_100(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _percent(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}%"


def _number(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def _p_value(value: float | None) -> str:
    if value is None:
        return DASH
    return "< 0.0001" if value < 0.0001 else f"{value:.4f}"


def report_chart(report: dict[str, Any]) -> dict[str, Any]:
    """Geometry of the page's inline SVG: a stacked win / tie / loss bar (in % of all
    comparisons) and each version's mean score on the 1-5 scale with its 95% interval."""
    comparison = report["comparison"]
    segments, x = [], BAR_LEFT
    if comparison["n"]:
        for outcome, key in (("win", "win_pct"), ("tie", "tie_pct"), ("loss", "loss_pct")):
            width = BAR_WIDTH * comparison[key] / 100
            segments.append(
                {
                    "outcome": outcome,
                    "pct": comparison[key],
                    "x": round(x, 2),
                    "width": round(width, 2),
                    "middle": round(x + width / 2, 2),
                    "colour": OUTCOME_COLOURS[outcome],
                    "labelled": width >= 70,
                }
            )
            x += width
    means = []
    for row, side in enumerate(("candidate", "baseline")):
        summary = report["scores"][side]
        if summary["mean"] is None:
            continue
        interval = summary["ci"] or [summary["mean"], summary["mean"]]
        means.append(
            {
                "side": side,
                "version": summary["version"],
                "mean": summary["mean"],
                "y": 30 + 40 * row,
                "x": _scale_x(summary["mean"]),
                "low_x": _scale_x(interval[0]),
                "high_x": _scale_x(interval[1]),
                "colour": "#3b5bdb" if side == "candidate" else "#667085",
            }
        )
    ticks = [{"value": value, "x": _scale_x(value)} for value in range(1, 6)]
    return {"segments": segments, "means": means, "ticks": ticks}


def _scale_x(score: float) -> float:
    clamped = min(max(score, 1.0), 5.0)
    return round(SCALE_LEFT + SCALE_WIDTH * (clamped - 1) / 4, 2)
