"""Which open item a rater is served next, by the campaign's `pair_selection`:

- uniform: fewest slots taken first (the lease path's single statement on PostgreSQL);
- active: the pair whose outcome is most uncertain first, i.e. the smallest gap between the two
  clips' rewards, which the hook in settings.ACTIVE_SELECTION_REWARD_HOOK supplies (by
  default `reward.selectors.campaign_clip_reward`: the newest usable preference reward model
  that scored them); uniform while there is none (and for pairs it did not score);
- undersampled: a version pair (the versions of the two clips) drawn with weight
  1 / (its counted votes in the campaign + UNDERSAMPLED_C), so the comparisons with the fewest
  votes are filled first without starving the others; then fewest slots first within it.

Each function returns a queryset of candidate pairs in order of preference; the lease path
locks and takes the first one that is still open.
"""

from __future__ import annotations

import random

from django.conf import settings
from django.db.models import Count, F, Q, QuerySet
from django.db.models.functions import Abs
from django.utils.module_loading import import_string

from ratings.models import Campaign, Pair, Rater, Vote

UNDERSAMPLED_C = 1.0
# Mixing checks and drawing version pairs need no secrecy, only independence per request.
_rng = random.Random()


def open_items(rater: Rater, campaign: Campaign) -> QuerySet[Pair]:
    """Rating items (never checks) with a free slot that this rater was not served yet."""
    return (
        Pair.objects.filter(campaign=campaign, kind=Pair.Kind.REGULAR)
        .open_slots()
        .not_served_to(rater)
    )


def uniform_items(rater: Rater, campaign: Campaign) -> QuerySet[Pair]:
    return open_items(rater, campaign).order_by("slots_taken", "id")


def serve_check(campaign: Campaign) -> bool:
    """Whether this lease is a gold or trap check: true with probability check_rate."""
    return _rng.random() < campaign.check_rate


def check_items(rater: Rater, campaign: Campaign) -> QuerySet[Pair]:
    """Gold and trap items this rater has not seen, the least served first."""
    return (
        Pair.objects.filter(campaign=campaign, kind__in=[Pair.Kind.GOLD, Pair.Kind.TRAP])
        .open_slots()
        .not_served_to(rater)
        .order_by("slots_taken", "id")
    )


def preferred_items(rater: Rater, campaign: Campaign) -> QuerySet[Pair] | None:
    """The candidates of the campaign's mode; None for uniform (or when the mode cannot
    apply), which the lease path serves with its own fast statement."""
    if campaign.pair_selection == Campaign.PairSelection.ACTIVE:
        return active_items(rater, campaign)
    if campaign.pair_selection == Campaign.PairSelection.UNDERSAMPLED:
        return undersampled_items(rater, campaign)
    return None


def active_items(rater: Rater, campaign: Campaign) -> QuerySet[Pair] | None:
    """Open items by the gap between their two clips' rewards, smallest first. The rewards
    come from the hook named by settings.ACTIVE_SELECTION_REWARD_HOOK (reward models live
    downstream of ratings): given the campaign it returns a function from a pair's track
    field to that clip's reward expression, or None while no model can rank the pairs."""
    if not settings.ACTIVE_SELECTION_REWARD_HOOK:
        return None
    clip_reward = import_string(settings.ACTIVE_SELECTION_REWARD_HOOK)(campaign)
    if clip_reward is None:
        return None
    return (
        open_items(rater, campaign)
        .annotate(reward_gap=Abs(clip_reward("track_a") - clip_reward("track_b")))
        .order_by(F("reward_gap").asc(nulls_last=True), "slots_taken", "id")
    )


def undersampled_items(rater: Rater, campaign: Campaign) -> QuerySet[Pair] | None:
    groups = version_pair_weights(rater, campaign)
    if len(groups) < 2:
        return None  # one comparison: nothing to weigh
    keys, weights = zip(*groups.items(), strict=True)
    version_a, version_b = _rng.choices(keys, weights)[0]
    return (
        open_items(rater, campaign)
        .filter(_version_pair_filter(version_a, version_b))
        .order_by("slots_taken", "id")
    )


def version_pair_weights(rater: Rater, campaign: Campaign) -> dict[tuple, float]:
    """1 / (counted votes + c) per version pair that still has an item open for this rater;
    a pair's versions are sorted, so A-vs-B and B-vs-A are one comparison."""
    open_ids = open_items(rater, campaign).values("id")
    rows = (
        Pair.objects.filter(campaign=campaign, kind=Pair.Kind.REGULAR)
        .values_list(*VERSIONS)
        .annotate(open=Count("id", filter=Q(id__in=open_ids)))
        .order_by()
    )
    votes: dict[tuple, int] = {}
    counted = (
        Vote.objects.counted()
        .filter(campaign=campaign)
        .values_list(*[f"pair__{path}" for path in VERSIONS])
        .annotate(n=Count("id"))
        .order_by()
    )
    for version_a, version_b, n in counted:
        key = _key(version_a, version_b)
        votes[key] = votes.get(key, 0) + n
    weights: dict[tuple, float] = {}
    for version_a, version_b, open_count in rows:
        if open_count:
            weights[_key(version_a, version_b)] = 1.0 / (
                votes.get(_key(version_a, version_b), 0) + UNDERSAMPLED_C
            )
    return weights


VERSIONS = ("track_a__generator_version_id", "track_b__generator_version_id")


def _key(version_a: int, version_b: int | None) -> tuple:
    # None (a single-clip item) sorts first.
    return tuple(sorted((version_a, version_b), key=lambda v: (v is not None, v or 0)))


def _version_pair_filter(first: int | None, second: int | None) -> Q:
    def side(path: str, version: int | None) -> Q:
        if version is None:
            return Q(**{f"{path}__isnull": True})
        return Q(**{f"{path}__generator_version_id": version})

    return (side("track_a", first) & side("track_b", second)) | (
        side("track_a", second) & side("track_b", first)
    )
