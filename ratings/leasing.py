"""Leasing: which rating item a rater gets next, held for them until it expires. One
statement on PostgreSQL takes the least-served open pair under a row lock; the pair
selection modes (pair_selection.py) rank candidates for the others."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from ratings import pair_selection, quality, raw_sql
from ratings.models import Assignment, Campaign, Pair, Rater


@dataclass(frozen=True)
class LeasedClip:
    public_id: uuid.UUID
    duration_seconds: float


@dataclass(frozen=True)
class Lease:
    """What a rater's page needs about a leased item; clips are in the pair's own order.
    `qualification` marks the listening check before real items (never gold or trap items:
    those must look exactly like rating items)."""

    assignment_id: int
    left_is_a: bool
    expires_at: datetime
    prompt_text: str
    clips: tuple[LeasedClip, ...]
    qualification: bool = False

    def shown_clips(self) -> tuple[LeasedClip, ...]:
        """The clips in the order this rater sees them, left (slot A) first."""
        return self.clips if self.left_is_a else self.clips[::-1]


# The rating hot path reads only these columns: a track's events alone are ~18 KB of JSON.
_LEASE_COLUMNS = (
    "id", "left_is_a", "expires_at", "pair__prompt__text", "pair__kind",
    "pair__track_a__public_id", "pair__track_a__duration_seconds",
    "pair__track_b__public_id", "pair__track_b__duration_seconds",
)  # fmt: skip


def assignment_lease_next(
    *, rater: Rater, campaign: Campaign, now: datetime | None = None
) -> Lease | None:
    """The rater's current item in this campaign, or a newly leased one; None when nothing
    is left for this rater. A reload returns the same lease instead of taking another slot."""
    now = now or timezone.now()
    lease = _lease_current_or_new(rater=rater, campaign=campaign, now=now)
    # Only when nothing is free is it worth sweeping this campaign's overdue leases.
    if lease is None and assignments_expire(now=now, campaign_id=campaign.pk):
        lease = _lease_current_or_new(rater=rater, campaign=campaign, now=now)
    return lease


@transaction.atomic
def _lease_current_or_new(*, rater: Rater, campaign: Campaign, now: datetime) -> Lease | None:
    # One rater's requests lease one at a time (the rater's row lock): a burst of them (a
    # double click, a reload storm) would otherwise each lease a pair of its own, and one
    # waiting on another's pair would break the unique (pair, rater) rule. After the lock,
    # each finds the lease the one before it took, and returns it.
    Rater.objects.select_for_update().filter(pk=rater.pk).values_list("pk").first()
    current = (
        Assignment.objects.live(now)
        .filter(rater=rater, campaign=campaign)
        .values_list(*_LEASE_COLUMNS)
        .first()
    )
    if current is not None:
        return _lease_from_row(current)
    if campaign.status != Campaign.Status.ACTIVE:
        return None
    return _lease_new_pair(rater=rater, campaign=campaign, now=now)


def _lease_from_row(row: tuple) -> Lease:
    assignment_id, left_is_a, expires_at, prompt_text, kind, *clip_columns = row
    clips = tuple(
        LeasedClip(public_id=public_id, duration_seconds=duration)
        for public_id, duration in zip(clip_columns[::2], clip_columns[1::2], strict=True)
        if public_id is not None
    )
    qualification = kind == Pair.Kind.QUALIFICATION
    return Lease(assignment_id, bool(left_is_a), expires_at, prompt_text, clips, qualification)


def _lease_new_pair(*, rater: Rater, campaign: Campaign, now: datetime) -> Lease | None:
    """Qualification items first where the campaign asks for them, then now and then a gold
    or trap check (check_rate), else a rating item in the campaign's pair_selection mode."""
    left_is_a = secrets.randbelow(2) == 1
    expires_at = now + timedelta(seconds=settings.RATING_LEASE_SECONDS)
    lease_args = (rater, campaign, left_is_a, now, expires_at)
    if quality.screens_apply(campaign):
        gate = quality.lease_gate(rater=rater, campaign=campaign, now=now)
        if gate.qualification_items is not None:
            return _lease_from_candidates(gate.qualification_items, *lease_args)
        if not gate.open:
            return None
    if campaign.check_rate and pair_selection.serve_check(campaign):
        lease = _lease_from_candidates(pair_selection.check_items(rater, campaign), *lease_args)
        if lease is not None:
            return lease
    preferred = pair_selection.preferred_items(rater, campaign)
    if preferred is not None:
        lease = _lease_from_candidates(preferred, *lease_args)
        if lease is not None:
            return lease
    if connection.vendor == "postgresql":
        return _lease_new_pair_postgresql(*lease_args)
    return _lease_from_candidates(pair_selection.uniform_items(rater, campaign), *lease_args)


def _lease_new_pair_postgresql(
    rater: Rater, campaign: Campaign, left_is_a: bool, now: datetime, expires_at: datetime
) -> Lease | None:
    params = {
        "campaign": campaign.pk,
        "rater": rater.pk,
        "left_is_a": left_is_a,
        "now": now,
        "expires_at": expires_at,
    }
    with connection.cursor() as cursor:
        for sql in (raw_sql.LEASE_SKIP_LOCKED, raw_sql.LEASE_WAIT):
            cursor.execute(sql, params)
            row = cursor.fetchone()
            if row is not None:
                return _lease_from_row(row)
    return None


@transaction.atomic
def _lease_from_candidates(
    candidates: QuerySet[Pair],
    rater: Rater,
    campaign: Campaign,
    left_is_a: bool,
    now: datetime,
    expires_at: datetime,
) -> Lease | None:
    """Lease the first of `candidates` (open pairs not served to this rater, in the order of
    preference): the portable path, and the one of the modes other than uniform."""
    # PostgreSQL: the same two tries as the single statement, SKIP LOCKED and then wait (the
    # lock re-checks the open-slot filter). SQLite ignores FOR UPDATE: its IMMEDIATE
    # transactions serialise writers, so a plain read-then-write cannot hand out a slot twice.
    tries = (True, False) if connection.vendor == "postgresql" else (False,)
    pair_id = None
    for skip_locked in tries:
        locked = candidates.select_for_update(skip_locked=skip_locked, of=("self",))
        pair_id = locked.values_list("id", flat=True).first()
        if pair_id is not None:
            break
    if pair_id is None:
        return None
    Pair.objects.filter(pk=pair_id).update(slots_taken=F("slots_taken") + 1)
    assignment = Assignment.objects.create(
        pair_id=pair_id,
        rater=rater,
        campaign=campaign,
        left_is_a=left_is_a,
        served_at=now,
        expires_at=expires_at,
    )
    return _lease_from_row(
        Assignment.objects.filter(pk=assignment.pk).values_list(*_LEASE_COLUMNS).get()
    )


def assignments_expire(
    *, now: datetime | None = None, campaign_id: int | None = None, batch: int = 1000
) -> int:
    """Close overdue leases and give their slots back. Returns how many were closed."""
    overdue = Assignment.objects.overdue(now or timezone.now())
    if campaign_id is not None:
        overdue = overdue.filter(campaign_id=campaign_id)
    return overdue.close(batch=batch)
