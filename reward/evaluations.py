"""Evaluations: a candidate generator version against a baseline in an evaluate campaign, the
report computed from its votes, and the admin's decision to promote or retire the candidate."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from generation.models import GeneratorVersion
from generation.music.backends import get_backend
from generation.music.evaluation import (
    FIT_PARTS,
    GeneratedPiece,
    composer_ceiling,
    mean_by_key,
    piece_fit,
    plan_fit,
)
from generation.music.events import events_to_piece
from generation.music.plan import Plan
from generation.music.prompts import parse_prompt
from ratings import campaigns
from ratings.dataset import DataFilters, vote_rows
from ratings.errors import RatingError
from ratings.models import Campaign
from reward.models import Evaluation, FineTuneRun
from reward.statistics import REPORT_VERSION, evaluation_report, score_summary

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
    if "held_out_adherence" in previous:  # measured once, on pieces no vote changes
        report["held_out_adherence"] = previous["held_out_adherence"]
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


# What the 0.02 rule of issue 15 reads: a shortfall this large on a field the raters' taste does
# not pull is one the candidate gave up for nothing the votes asked for.
ADHERENCE_TOLERANCE = 0.02


def held_out_adherence(
    candidate: GeneratorVersion,
    parent: GeneratorVersion,
    prompts: list[str],
    *,
    samples_per_prompt: int,
    seed: int,
    threads: int = 1,
) -> dict[str, Any] | None:
    """Prompt adherence of the candidate beside its parent's on the same prompts, read off
    whole pieces as each version writes them (`samples_per_prompt` each, from the same
    seeds), per attribute of the notes and of the declared plans (`paired_adherence`).

    An evaluation's clips are few (one per prompt and version) and cut to the clip's length,
    which stops before the cadence the key and mode estimates read (the composer's own 4-s
    clips measure in the asked mode 0.69 of the time): a difference of 0.02, the most issue
    15 lets a candidate give up on a field its taste does not pull, is far inside that
    noise. Whole pieces end on their cadence, and several per prompt, paired by prompt,
    narrow the interval. None for a version that samples no notes (an audio-only backend)."""
    from generation.music.learned import torch_threads  # torch: imported on use

    pieces: list[list[GeneratedPiece]] = []
    for version in (candidate, parent):
        backend = get_backend(version.backend, version.backend_config())
        if getattr(backend, "sampling", None) is None:  # not a learned, planned generator
            return None
        with torch_threads(threads):
            samples = backend.sample(prompts, samples_per_prompt, seed)
        pieces.append([GeneratedPiece(s.prompt, s.piece, s.plan, s.well_formed) for s in samples])
    figures = paired_adherence(*pieces) | {"samples_per_prompt": samples_per_prompt}
    if not figures["notes"]:
        return figures
    # The most the measurements credit on these prompts: the composer's whole pieces of the
    # parent's length, each played exactly as its prompt asks.
    ceiling = composer_ceiling(
        prompts, duration_seconds=0, piece_bars=backend.sampling.max_bars, cut=False
    )
    score = figures["notes"]["score"]
    gap = ceiling["score"] - score["parent"]
    return figures | {
        "composer_ceiling": ceiling,
        # The share of the parent's shortfall from the ceiling the candidate made up (issue
        # 15 asks at least half of it when pure prompt adherence is the taste).
        "gap_closed": round((score["candidate"] - score["parent"]) / gap, 4) if gap > 0 else None,
    }


def evaluation_held_out_adherence(
    evaluation: Evaluation, *, samples_per_prompt: int, seed: int, threads: int = 1
) -> dict[str, Any] | None:
    """`held_out_adherence` of the evaluation's candidate and baseline on its prompts, stored
    in its report (the page shows it beside the clips' adherence)."""
    prompts = list(evaluation.campaign.prompts.order_by("pk").values_list("text", flat=True))
    figures = held_out_adherence(
        evaluation.candidate, evaluation.baseline, prompts,
        samples_per_prompt=samples_per_prompt, seed=seed, threads=threads,
    )  # fmt: skip
    evaluation.report = {**(evaluation.report or {}), "held_out_adherence": figures}
    evaluation.save(update_fields=["report"])
    return figures


def paired_adherence(
    candidate: Sequence[GeneratedPiece], parent: Sequence[GeneratedPiece]
) -> dict[str, Any]:
    """Per attribute (`FIT_PARTS` and "score"), of the notes and of the plans both versions
    declared: each version's mean fit over prompts (of each prompt's mean over its pieces),
    and the candidate's difference from the parent, the mean over prompts of the per-prompt
    difference of those means, with its 95%
    Student-t interval over prompts (the pieces of one prompt share its difficulty, so they
    are paired by prompt, not by piece). The notes' density is read on the melody of the
    lead a piece's plan declared: a candidate whose votes pulled the instruments may lead
    with another part than the prompt's, and reading the density of whatever part is
    busiest instead charged a `prefers_darker` candidate whose every plan kept the density
    asked for with -0.29 (a fit of 0.637 on its pieces led by another part); read on the
    declared lead, -0.006."""
    parts = (*FIT_PARTS, "score")

    def by_prompt(pieces: Sequence[GeneratedPiece], plans: bool) -> dict[str, list[dict]]:
        rows: dict[str, list[dict[str, float]]] = {}
        for item in pieces:
            target = parse_prompt(item.prompt)
            if plans and item.plan is None:
                continue
            if plans:
                fit = plan_fit(target, item.plan)
            else:  # the density a listener hears: the melody of the lead the piece plays
                lead = item.plan.lead if item.plan is not None else None
                fit = piece_fit(target, item.piece, lead=lead)
            rows.setdefault(item.prompt, []).append(fit)
        return rows

    def compare(plans: bool) -> dict[str, Any] | None:
        ours, theirs = by_prompt(candidate, plans), by_prompt(parent, plans)
        shared = sorted(set(ours) & set(theirs))
        if not shared:
            return None
        figures: dict[str, Any] = {}
        for part in parts:
            means = [
                [statistics.fmean(row[part] for row in side[prompt]) for prompt in shared]
                for side in (ours, theirs)
            ]
            difference = score_summary(a - b for a, b in zip(*means, strict=True))
            figures[part] = {
                "candidate": round(statistics.fmean(means[0]), 4),
                "parent": round(statistics.fmean(means[1]), 4),
                "difference": round(difference["mean"], 4),
                "difference_ci": [round(bound, 4) for bound in difference["ci"] or ()] or None,
            }
        return figures | {"prompts": len(shared)}

    return {
        "pieces": {"candidate": len(candidate), "parent": len(parent)},
        "notes": compare(plans=False),
        "plans": compare(plans=True),
    }


def adherence_shortfalls(
    figures: dict[str, Any] | None, fields: Sequence[str], tolerance: float = ADHERENCE_TOLERANCE
) -> dict[str, float]:
    """The fields among `fields` (those the raters' taste does not pull) on which the
    candidate's notes fall more than `tolerance` below its parent's (`held_out_adherence`):
    each with its difference. Empty when none does, or when nothing was measured."""
    notes = (figures or {}).get("notes") or {}
    return {
        field: notes[field]["difference"]
        for field in fields
        if field in notes and notes[field]["difference"] < -tolerance
    }


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
