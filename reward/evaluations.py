"""Evaluations: a candidate generator version against a baseline in an evaluate campaign, the
report computed from its votes, and the admin's decision to promote or retire the candidate."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from generation.models import GeneratorVersion
from ratings import campaigns
from ratings.dataset import DataFilters, vote_rows
from ratings.errors import RatingError
from ratings.models import Campaign
from reward.models import Evaluation, FineTuneRun
from reward.statistics import REPORT_VERSION, evaluation_report

CAMPAIGN_NAME_MAX = 200


class EvaluationError(ValueError):
    """An evaluation that cannot be made as asked; the message is for the person asking."""


# --- writes ----------------------------------------------------------------------------------


def evaluation_create(
    *,
    candidate: GeneratorVersion,
    baseline: GeneratorVersion,
    prompt_texts: list[str],
    fine_tune_run: FineTuneRun | None = None,
    protocol: str = Campaign.Protocol.SIDE_BY_SIDE,
    votes_per_item: int = 3,
    clip_seconds: float | None = None,
    min_listen_seconds: float = 5.0,
    listen_to_end: bool = False,
    instructions: str = "",
    created_by: AbstractBaseUser | None = None,
    queue: bool = True,
) -> Evaluation:
    """An evaluate campaign of `candidate` (version a) against `baseline` (version b) and its
    Evaluation row, in one transaction; the clips are generated once it commits (queue=False:
    the caller generates them, as the closed loop does in its own process)."""
    if candidate.pk == baseline.pk:
        raise EvaluationError("The candidate and the baseline must be different versions.")
    if protocol not in Campaign.Protocol.values:
        raise EvaluationError(f"Unknown protocol {protocol!r}.")
    name = f"Evaluation: {candidate.name} vs {baseline.name}"[:CAMPAIGN_NAME_MAX]
    with transaction.atomic():
        try:
            campaign = campaigns.campaign_create(
                name=name,
                purpose=Campaign.Purpose.EVALUATE,
                protocol=protocol,
                prompt_texts=prompt_texts,
                version_a=candidate,
                version_b=baseline,
                votes_per_item=votes_per_item,
                min_listen_seconds=min_listen_seconds,
                listen_to_end=listen_to_end,
                clip_seconds=clip_seconds,
                instructions=instructions,
                created_by=created_by,
                queue=queue,
            )
        except RatingError as error:
            raise EvaluationError(error.message) from error
        return Evaluation.objects.create(
            campaign=campaign,
            candidate=candidate,
            baseline=baseline,
            fine_tune_run=fine_tune_run,
            report=evaluation_report([], candidate=candidate.name, baseline=baseline.name),
            computed_at=timezone.now(),
        )


def evaluation_refresh(evaluation: Evaluation) -> dict[str, Any]:
    """Recompute the report from the campaign's votes and store it, with how well each
    version's clips follow their prompts."""
    rows = vote_rows(DataFilters(campaign_ids=(evaluation.campaign_id,)))
    report = evaluation_report(
        rows, candidate=evaluation.candidate.name, baseline=evaluation.baseline.name
    )
    # The clips change only while they are generated: measure them again only then.
    clips = evaluation.campaign.pairs.count()
    previous = evaluation.report or {}
    if previous.get("adherence_pairs") == clips and "plan_adherence" in previous:
        report["adherence"] = previous["adherence"]
        report["plan_adherence"] = previous["plan_adherence"]
    else:
        report["adherence"], report["plan_adherence"] = campaign_adherence(evaluation.campaign)
    report["adherence_pairs"] = clips
    evaluation.report = report
    evaluation.computed_at = timezone.now()
    evaluation.save(update_fields=["report", "computed_at"])
    return report


def campaign_adherence(
    campaign: Campaign,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per version in the campaign's pairs: the mean prompt adherence of its clips' notes per
    attribute (`generation.music.evaluation.FIT_PARTS`, and "score") and how many clips had
    notes to measure; and the same of the plans its clips declared (a planned generator's),
    per version that declares them. On an evaluation's held-out prompts this shows what the
    candidate gained or gave up on each attribute. The plans say it exactly; the notes of a
    4-second clip say it roughly (the composer's own clips, which play the asked key, measure
    in it about a third of the time). Clips without notes (audio-only backends) are left
    out."""
    from generation.music.evaluation import FIT_PARTS, mean_by_key, piece_fit, plan_fit
    from generation.music.events import events_to_piece
    from generation.music.plan import Plan
    from generation.music.prompts import parse_prompt

    fits: dict[str, list[dict[str, float]]] = {}
    plan_fits: dict[str, list[dict[str, float]]] = {}
    pairs = campaign.pairs.select_related(
        "track_a__prompt", "track_a__generator_version",
        "track_b__prompt", "track_b__generator_version",
    )  # fmt: skip
    seen: set[int] = set()
    for pair in pairs:
        for track in (pair.track_a, pair.track_b):  # a MOS item has no track_b
            if track is None or track.pk in seen or not track.events:
                continue
            seen.add(track.pk)
            target, version = parse_prompt(track.prompt.text), track.generator_version.name
            fits.setdefault(version, []).append(piece_fit(target, events_to_piece(track.events)))
            if declared := (track.attributes or {}).get("plan"):
                plan_fits.setdefault(version, []).append(plan_fit(target, Plan.from_dict(declared)))

    def means(by_version: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
        return {
            version: mean_by_key(rows, (*FIT_PARTS, "score")) | {"clips": len(rows)}
            for version, rows in by_version.items()
        }

    return means(fits), means(plan_fits)


def version_promote(version: GeneratorVersion) -> GeneratorVersion:
    """Make a version active: new collection campaigns preselect an active version. Other
    versions keep their status; retiring the old one is a separate decision."""
    return _version_set_status(version, GeneratorVersion.Status.ACTIVE)


def version_retire(version: GeneratorVersion) -> GeneratorVersion:
    """Take a version out of use; its tracks, votes and campaigns stay as they are."""
    return _version_set_status(version, GeneratorVersion.Status.RETIRED)


def _version_set_status(version: GeneratorVersion, status: str) -> GeneratorVersion:
    version.status = status
    version.save(update_fields=["status"])
    return version


# --- reads -----------------------------------------------------------------------------------


def evaluations_for_list() -> list[Evaluation]:
    """Every evaluation, newest first, each with its report brought up to date first if a vote
    arrived since it was computed (so the list costs one recomputation per changed one)."""
    evaluations = list(
        Evaluation.objects.select_related("campaign", "candidate", "baseline", "fine_tune_run")
        .annotate(last_vote_at=Max("campaign__votes__created_at"))
        .order_by("-created_at", "-id")
    )
    for evaluation in evaluations:
        if report_is_stale(evaluation, last_vote_at=evaluation.last_vote_at):
            evaluation_refresh(evaluation)
    return evaluations


def report_is_stale(evaluation: Evaluation, *, last_vote_at: datetime | None) -> bool:
    return (
        evaluation.computed_at is None
        or evaluation.report.get("report_version") != REPORT_VERSION
        or (last_vote_at is not None and last_vote_at >= evaluation.computed_at)
    )


def verdict(report: dict[str, Any]) -> str | None:
    """A one-line reading of the win rate's 95% interval; None when no pairs were compared."""
    comparison = report.get("comparison") or {}
    if not comparison.get("n"):
        return None
    interval = comparison.get("win_rate_ci")
    if interval is None:
        return "No decisive votes yet: every comparison so far is a tie."
    if interval[0] > 0.5:
        return "The candidate is preferred: the 95% interval of its win rate lies above 50%."
    if interval[1] < 0.5:
        return "The baseline is preferred: the 95% interval of the win rate lies below 50%."
    return "No clear difference yet: the 95% interval of the win rate contains 50%."
