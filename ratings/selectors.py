"""Reads of the rating loop."""

import math
from collections import defaultdict

import krippendorff
import numpy as np
from django.db.models import (
    Count,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce
from django.urls import reverse

from generation.models import Prompt, Track
from ratings.models import (
    Assignment,
    Campaign,
    DatasetSnapshot,
    MosRating,
    Pair,
    Qualification,
    Rater,
    RaterSession,
    Vote,
    counted_votes,
)

COUNTED_VOTES = counted_votes("votes__")


def campaigns_open_for_rating() -> QuerySet[Campaign]:
    # The playground's campaign is never listed: its pairs belong to the visitors who asked.
    return (
        Campaign.objects.filter(status=Campaign.Status.ACTIVE)
        .exclude(purpose=Campaign.Purpose.PLAYGROUND)
        .order_by("-created_at")
    )


def rater_progress(*, rater: Rater, campaign: Campaign) -> dict[str, int]:
    # Every vote of the rater counts here, checks too (they are served like items); only the
    # qualification, which comes before rating, is left out.
    qualification = Q(pair__kind=Pair.Kind.QUALIFICATION)
    voted = Vote.objects.filter(rater=rater, campaign=campaign).exclude(qualification).count()
    items = Pair.objects.filter(campaign=campaign).exclude(kind=Pair.Kind.QUALIFICATION).count()
    return {"voted": voted, "items": items}


def campaign_progress(*, campaign: Campaign) -> dict:
    """What the admin's campaign page shows: generation, votes per item, votes per rater with
    their reliability, and the quality checks. Votes are the counted ones (not flagged or
    rejected, on rating items rather than checks); the rater table shows all three."""
    pairs = Pair.objects.filter(campaign=campaign, kind=Pair.Kind.REGULAR)
    counted = Count("id", filter=Q(status=Vote.Status.COUNTED, pair__kind=Pair.Kind.REGULAR))
    histogram = dict(
        pairs.annotate(counted=Count("votes", filter=Q(votes__status=Vote.Status.COUNTED)))
        .values_list("counted")
        .annotate(n=Count("id"))
        .order_by("counted")
    )
    votes_wanted = campaign.votes_per_item * pairs.count()
    votes = Vote.objects.counted().filter(campaign=campaign).count()
    return {
        "items": pairs.count(),
        "votes": votes,
        "votes_wanted": votes_wanted,
        "percent_done": round(100 * votes / votes_wanted, 1) if votes_wanted else 0.0,
        "live_leases": Assignment.objects.filter(
            campaign=campaign, status=Assignment.Status.LIVE
        ).count(),
        "votes_per_item": [
            {"votes": v, "items": histogram.get(v, 0)} for v in range(campaign.votes_per_item + 1)
        ],
        "votes_per_rater": _rater_quality_rows(campaign, counted),
        "quality": campaign_quality(campaign=campaign),
    }


def _rater_quality_rows(campaign: Campaign, counted: Count) -> list[dict]:
    from ratings.quality import Reliability, rater_reliabilities

    votes = Vote.objects.filter(campaign=campaign)
    rows = list(
        votes.values("rater_id", "rater__user__username")
        .annotate(
            votes=counted,
            flagged=Count("id", filter=Q(status=Vote.Status.FLAGGED)),
            rejected=Count("id", filter=Q(status=Vote.Status.REJECTED)),
            checks=Count("id", filter=~Q(pair__kind=Pair.Kind.REGULAR)),
        )
        .order_by("-votes", "rater__user__username")
    )
    reliability = rater_reliabilities(votes)
    for row in rows:
        row["reliability"] = reliability.get(row["rater_id"], Reliability(None, None, None))
    return rows


def campaign_quality(*, campaign: Campaign) -> dict:
    """Checks and agreement of one campaign: check items, flagged and rejected votes,
    sessions by status, qualification results and Krippendorff's alpha."""
    votes = Vote.objects.filter(campaign=campaign)
    by_status = dict(votes.values_list("status").annotate(n=Count("id")).order_by())
    sessions = dict(
        RaterSession.objects.filter(campaign=campaign)
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    check_items = dict(
        Pair.objects.filter(campaign=campaign)
        .exclude(kind=Pair.Kind.REGULAR)
        .values_list("kind")
        .annotate(n=Count("id"))
        .order_by()
    )
    qualifications = Qualification.objects.filter(campaign=campaign)
    return {
        "flagged": by_status.get(Vote.Status.FLAGGED, 0),
        "rejected": by_status.get(Vote.Status.REJECTED, 0),
        "check_items": check_items,
        "sessions": sessions,
        "sessions_with_failures": RaterSession.objects.filter(
            campaign=campaign, failed_checks__gt=0
        ).count(),
        "qualified": qualifications.filter(passed=True).count(),
        "not_qualified": qualifications.filter(passed=False).count(),
        "alpha": campaign_agreement([campaign.pk]).get(campaign.pk),
    }


# --- the researcher side ---------------------------------------------------------------------
# Everything below reveals generator versions: researcher views only, never a rater's page.


def research_votes() -> QuerySet[Vote]:
    """Counted votes (like every export by default: no flagged or rejected votes, no checks)
    with everything a researcher's row shows loaded in a fixed number of queries. The tracks'
    symbolic events can be large and no row shows them, so they stay on disk."""
    return (
        Vote.objects.counted()
        .select_related(
            "campaign",
            "pair__prompt",
            "pair__track_a__generator_version",
            "pair__track_b__generator_version",
        )
        .defer("pair__track_a__events", "pair__track_b__events")
        .prefetch_related(
            Prefetch("ratings", queryset=MosRating.objects.only("vote", "track", "score"))
        )
    )


def research_ratings() -> QuerySet[MosRating]:
    return (
        MosRating.objects.filter(vote__in=Vote.objects.counted())
        .select_related("campaign", "track__generator_version", "track__prompt")
        .defer("track__events")
    )


def research_prompts() -> QuerySet[Prompt]:
    return Prompt.objects.prefetch_related(
        Prefetch("campaigns", queryset=Campaign.objects.only("id"))
    )


def research_tracks() -> QuerySet[Track]:
    return Track.objects.select_related("generator_version").defer("events")


def _count_of(rows: QuerySet, field: str = "campaign") -> Coalesce:
    # A subquery per count: joining votes and pairs together would multiply the rows.
    counts = (
        rows.filter(**{field: OuterRef("pk")})
        .order_by()
        .values(field)
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(counts, output_field=IntegerField()), 0)


def research_campaigns() -> QuerySet[Campaign]:
    return Campaign.objects.select_related("version_a", "version_b").annotate(
        item_count=_count_of(Pair.objects.filter(kind=Pair.Kind.REGULAR)),
        vote_count=_count_of(Vote.objects.counted()),
        rating_count=_count_of(MosRating.objects.filter(vote__in=Vote.objects.counted())),
    )


def campaign_summaries() -> list[dict]:
    """Per campaign, newest first: votes, distinct raters and the raters' agreement on the
    choices (Krippendorff's alpha, nominal; None where it is undefined)."""
    campaigns = list(
        Campaign.objects.select_related("version_a", "version_b")
        .annotate(
            votes_total=Count("votes", filter=COUNTED_VOTES),
            raters_total=Count("votes__rater", filter=COUNTED_VOTES, distinct=True),
        )
        .order_by("-created_at", "-id")
    )
    alphas = campaign_agreement([campaign.pk for campaign in campaigns])
    return [
        {
            "campaign": campaign,
            "votes": campaign.votes_total,
            "raters": campaign.raters_total,
            "alpha": alphas.get(campaign.pk),
        }
        for campaign in campaigns
    ]


def choice_agreement(campaign_ids: list[int]) -> dict[int, float | None]:
    """Krippendorff's alpha of the nominal choices (a / b / tie / both bad) per campaign, with
    each pair as a unit. Built from counts per (pair, choice), one grouped query for all
    campaigns, so the memory is pairs x 4 rather than raters x pairs."""
    categories = list(Vote.Choice.values)
    counts: dict[int, dict[int, list[int]]] = defaultdict(dict)
    rows = (
        Vote.objects.counted()
        .filter(campaign_id__in=campaign_ids, choice__isnull=False)
        .values_list("campaign_id", "pair_id", "choice")
        .annotate(n=Count("id"))
        .order_by()
    )
    # Fetched whole (there are pairs x 4 rows at most), not through a server-side cursor:
    # PostgreSQL plans no parallel scan for a cursor, and the grouping reads every vote.
    for campaign_id, pair_id, choice, n in rows:
        unit = counts[campaign_id].setdefault(pair_id, [0] * len(categories))
        unit[categories.index(choice)] += n
    return {
        campaign_id: _nominal_alpha(list(units.values())) for campaign_id, units in counts.items()
    }


def score_agreement(campaign_ids: list[int]) -> dict[int, float | None]:
    """Krippendorff's alpha of the counted 1-5 scores per campaign (ordinal), with each clip
    as a unit; built from counts per (clip, score) like choice_agreement."""
    counts: dict[int, dict[int, list[int]]] = defaultdict(dict)
    rows = (
        # The votes' campaign too (it is the rating's): PostgreSQL then reads those votes
        # through the campaign index instead of hashing every vote (0.47 s -> 0.12 s with a
        # million preference votes beside the scored ones).
        MosRating.objects.filter(
            counted_votes("vote__"),
            campaign_id__in=campaign_ids,
            vote__campaign_id__in=campaign_ids,
        )
        .values_list("campaign_id", "track_id", "score")
        .annotate(n=Count("id"))
        .order_by()
    )
    for campaign_id, track_id, score, n in rows:  # whole, as in choice_agreement
        counts[campaign_id].setdefault(track_id, [0] * 5)[score - 1] += n
    return {
        campaign_id: _alpha(list(units.values()), "ordinal")
        for campaign_id, units in counts.items()
    }


def campaign_agreement(campaign_ids: list[int]) -> dict[int, float | None]:
    """Krippendorff's alpha per campaign, on what its protocol asks: the choices (nominal)
    for preference campaigns, the 1-5 scores (ordinal) for the others."""
    protocols = dict(Campaign.objects.filter(pk__in=campaign_ids).values_list("pk", "protocol"))
    scored = [pk for pk, protocol in protocols.items() if protocol != Campaign.Protocol.PREFERENCE]
    choices = [pk for pk in protocols if pk not in scored]
    return choice_agreement(choices) | score_agreement(scored)


def _nominal_alpha(value_counts: list[list[int]]) -> float | None:
    return _alpha(value_counts, "nominal")


def _alpha(value_counts: list[list[int]], level: str) -> float | None:
    # Undefined without a unit rated twice (ValueError) or when every answer is the same
    # (no expected disagreement: NaN). The page shows a dash for both.
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = krippendorff.alpha(
                value_counts=np.array(value_counts), level_of_measurement=level
            )
    except ValueError:
        return None
    alpha = float(alpha)
    return None if math.isnan(alpha) else alpha


def snapshot_summaries(limit: int = 20) -> list[dict]:
    """The newest snapshots with the download links the researcher page shows."""
    return [
        {
            "snapshot": snapshot,
            "sha256": (snapshot.manifest or {}).get("sha256"),
            "downloads": [
                (path, snapshot_file_url(snapshot.pk, path))
                for path in snapshot_data_files(snapshot)
            ],
            "audio_files": snapshot_audio_file_count(snapshot),
        }
        for snapshot in DatasetSnapshot.objects.order_by("-created_at", "-id")[:limit]
    ]


def snapshot_data_files(snapshot: DatasetSnapshot) -> list[str]:
    """The files worth a download link: tables and manifest. Audio clips can number in the
    thousands; they stay reachable by the paths the manifest lists."""
    return [path for path in snapshot.files() if "audio" not in path.split("/")[:-1]]


def snapshot_audio_file_count(snapshot: DatasetSnapshot) -> int:
    return len(snapshot.files()) - len(snapshot_data_files(snapshot))


def snapshot_file_url(snapshot_id: int, relative_path: str) -> str:
    return reverse("research-snapshot-file", args=[snapshot_id, relative_path])
