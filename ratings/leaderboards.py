"""Version leaderboards: Bradley-Terry ratings of the generator versions compared in a campaign,
computed by a periodic job (never in a rater's request) and stored in `Leaderboard` rows that
the page and the API serve as they are.

What counts (recorded in each row's `settings`):
- only `Vote.objects.counted()` votes: no flagged or rejected votes, no gold, trap or
  qualification checks;
- no votes on playground prompts (users' own prompts stay out of version leaderboards);
- in the playground's campaign, one vote per (curated prompt, rater): the first;
- only pairs whose two clips come from different versions (two samples of one version say
  nothing about versions, so collect campaigns have no leaderboard);
- preference votes: A or B wins; "tie" and "both bad" are ties (as in Chatbot Arena: neither
  version was preferred), which the fit counts as half a win each;
- side-by-side votes: the clip with the higher 1-5 score wins, equal scores tie. MOS campaigns
  (one clip per item) have no pairwise outcomes and no leaderboard.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from generation.models import GeneratorVersion, Prompt
from ratings import bradley_terry
from ratings.models import Campaign, Leaderboard, MosRating, Vote

logger = logging.getLogger(__name__)

PAIRWISE_PROTOCOLS = (Campaign.Protocol.PREFERENCE, Campaign.Protocol.SIDE_BY_SIDE)


@dataclass(frozen=True)
class OutcomeCounts:
    """Counted outcomes of one ordered (version of track A, version of track B) pair."""

    version_a: int
    version_b: int
    a_wins: int
    ties: int
    b_wins: int


def campaign_outcome_counts(*, campaign: Campaign) -> list[OutcomeCounts]:
    """The campaign's counted outcomes per version pair, from one aggregate query (GROUP BY
    version pair): PostgreSQL counts the votes, Python never sees them one by one."""
    votes = (
        Vote.objects.counted()
        .filter(campaign=campaign, pair__track_b__isnull=False)
        .exclude(pair__prompt__source=Prompt.Source.PLAYGROUND)
        .exclude(pair__track_a__generator_version=F("pair__track_b__generator_version"))
    )
    if campaign.purpose == Campaign.Purpose.PLAYGROUND:
        votes = _first_per_prompt_and_rater(votes)
    votes, a_wins, ties, b_wins = _outcome_conditions(votes, campaign.protocol)
    grouped = (
        votes.values(
            version_a=F("pair__track_a__generator_version"),
            version_b=F("pair__track_b__generator_version"),
        )
        .annotate(
            a_wins=Count("pk", filter=a_wins),
            ties=Count("pk", filter=ties),
            b_wins=Count("pk", filter=b_wins),
        )
        .order_by("version_a", "version_b")
    )
    return [OutcomeCounts(**row) for row in grouped]


def _first_per_prompt_and_rater(votes: QuerySet) -> QuerySet:
    """In the playground a rater may ask for the same curated prompt again and again; only
    their first counted vote on each prompt is kept, so no one can stack a prompt."""
    first = votes.filter(rater=OuterRef("rater"), pair__prompt=OuterRef("pair__prompt"))
    return votes.filter(pk=Subquery(first.order_by("pk").values("pk")[:1]))


def _outcome_conditions(votes: QuerySet, protocol: str) -> tuple[QuerySet, Q, Q, Q]:
    if protocol != Campaign.Protocol.SIDE_BY_SIDE:
        tie = Q(choice__in=[Vote.Choice.TIE, Vote.Choice.BOTH_BAD])
        return votes, Q(choice=Vote.Choice.A), tie, Q(choice=Vote.Choice.B)

    def score_of(track: str) -> Subquery:
        scores = MosRating.objects.filter(vote=OuterRef("pk"), track=OuterRef(f"pair__{track}"))
        return Subquery(scores.values("score")[:1])

    votes = votes.annotate(score_a=score_of("track_a"), score_b=score_of("track_b"))
    # A vote missing a score matches none of the three and so is not counted.
    return (
        votes,
        Q(score_a__gt=F("score_b")),
        Q(score_a=F("score_b")),
        Q(score_b__gt=F("score_a")),
    )


def fit_settings() -> dict[str, object]:
    return {
        "bootstrap_rounds": settings.LEADERBOARD_BOOTSTRAP_ROUNDS,
        "min_votes": settings.LEADERBOARD_MIN_VOTES,
        "prior_sd_elo": bradley_terry.DEFAULT_PRIOR_SD_ELO,
        "seed": 0,
        "ties": "half a win each; both bad counts as a tie",
        "anchor": "mean of the fitted versions = 1000",
        "excluded": "uncounted votes, check pairs, playground prompts, same-version pairs",
        "playground": "curated prompts count once per prompt and rater (the first vote)",
    }


def leaderboard_refresh(*, campaign_id: int, force: bool = False) -> Leaderboard | None:
    """Recompute and store one campaign's leaderboard; None for a campaign without pairwise
    outcomes. Unless forced, the fit is skipped when the counted outcomes (and settings) are
    the same as at the last computation, which the stored fingerprint records."""
    campaign = Campaign.objects.get(pk=campaign_id)
    if campaign.protocol not in PAIRWISE_PROTOCOLS:
        return None
    counts = campaign_outcome_counts(campaign=campaign)
    options = fit_settings()
    fingerprint = _fingerprint(counts, options)
    existing = Leaderboard.objects.filter(campaign=campaign).first()
    if existing and not force and existing.settings.get("fingerprint") == fingerprint:
        return existing
    rows = _fit_rows(counts, options)
    with transaction.atomic():
        board, _ = Leaderboard.objects.update_or_create(
            campaign=campaign,
            defaults={
                "computed_at": timezone.now(),
                "vote_count": sum(c.a_wins + c.ties + c.b_wins for c in counts),
                "bootstrap_rounds": options["bootstrap_rounds"],
                "rows": rows,
                "settings": {**options, "fingerprint": fingerprint},
            },
        )
    return board


def _fit_rows(counts: list[OutcomeCounts], options: dict[str, object]) -> list[dict[str, object]]:
    version_ids = sorted({c.version_a for c in counts} | {c.version_b for c in counts})
    index = {pk: k for k, pk in enumerate(version_ids)}
    table = bradley_terry.OutcomeTable.from_counts(
        len(version_ids),
        ((index[c.version_a], index[c.version_b], c.a_wins, c.ties, c.b_wins) for c in counts),
    )
    standings = bradley_terry.leaderboard(
        table,
        rounds=int(options["bootstrap_rounds"]),
        min_votes=int(options["min_votes"]),
        seed=int(options["seed"]),
        prior_sd_elo=float(options["prior_sd_elo"]),
    )
    names = dict(GeneratorVersion.objects.filter(pk__in=version_ids).values_list("pk", "name"))
    labels = [{"version": pk, "name": names.get(pk, "")} for pk in version_ids]
    return bradley_terry.standings_as_rows(standings, labels)


def _fingerprint(counts: list[OutcomeCounts], options: dict[str, object]) -> str:
    payload = json.dumps([[list(vars(c).values()) for c in counts], options], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def leaderboards_refresh_all() -> int:
    """Refresh every pairwise evaluate campaign that has votes, and the playground's (its arena
    battles; collect campaigns compare one version with itself); returns how many were
    recomputed.

    Every such campaign is checked, not only those with votes newer than its leaderboard: a vote
    flagged, rejected or cleared later changes what counts without a new vote. The check is the
    aggregate query alone; the fit and its bootstrap run only when the outcomes changed."""
    campaign_ids = (
        Campaign.objects.filter(
            purpose__in=[Campaign.Purpose.EVALUATE, Campaign.Purpose.PLAYGROUND],
            protocol__in=PAIRWISE_PROTOCOLS,
            votes__isnull=False,
        )
        .values_list("pk", flat=True)
        .distinct()
        .order_by("pk")
    )
    recomputed = 0
    for campaign_id in campaign_ids:
        before = Leaderboard.objects.filter(campaign_id=campaign_id).values("computed_at").first()
        board = leaderboard_refresh(campaign_id=campaign_id)
        if board is not None and (before is None or board.computed_at != before["computed_at"]):
            recomputed += 1
    logger.info("leaderboards: %d of %d recomputed", recomputed, len(campaign_ids))
    return recomputed
