"""Reads of the rating loop."""

from django.db.models import Count, QuerySet

from ratings.models import Assignment, Campaign, Pair, Rater, Vote


def campaigns_open_for_rating() -> QuerySet[Campaign]:
    return Campaign.objects.filter(status=Campaign.Status.ACTIVE).order_by("-created_at")


def rater_progress(*, rater: Rater, campaign: Campaign) -> dict[str, int]:
    voted = Vote.objects.filter(rater=rater, campaign=campaign).count()
    items = Pair.objects.filter(campaign=campaign).count()
    return {"voted": voted, "items": items}


def campaign_progress(*, campaign: Campaign) -> dict:
    """What the admin's campaign page shows: generation, votes per item, votes per rater."""
    pairs = Pair.objects.filter(campaign=campaign)
    histogram = dict(pairs.values_list("vote_count").annotate(n=Count("id")).order_by("vote_count"))
    per_rater = list(
        Vote.objects.filter(campaign=campaign)
        .values("rater__user__username")
        .annotate(votes=Count("id"))
        .order_by("-votes", "rater__user__username")
    )
    votes_wanted = campaign.votes_per_item * pairs.count()
    votes = Vote.objects.filter(campaign=campaign).count()
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
        "votes_per_rater": per_rater,
    }
