"""Writes of the rating loop: leasing pairs, recording votes, creating campaigns."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from generation.models import GeneratorVersion
from generation.services import prompt_get_or_create
from ratings import pair_selection, quality
from ratings.errors import (
    AlreadyVoted,
    AssignmentNotFound,
    InvalidVote,
    LeaseExpired,
    ListeningTooShort,
)
from ratings.models import Assignment, Campaign, MosRating, Pair, Rater, RaterSession, Role, Vote

SLOTS = ("A", "B")  # what the rater sees: A is the left clip, B the right one
VARIANT_BACKENDS = ("procedural", "symbolic")  # the backends whose clips carry their notes


def rater_for_user(*, user: AbstractBaseUser) -> Rater:
    """The user's Rater row, created on first use (superusers made by createsuperuser)."""
    try:
        return user.rater  # usually already loaded by authentication or the role check
    except Rater.DoesNotExist:
        role = Role.ADMIN if user.is_superuser else Role.RATER
        rater, _ = Rater.objects.get_or_create(user=user, defaults={"role": role})
        return rater


# --- Leasing ------------------------------------------------------------------------------


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


# One statement, one round trip: pick the pair, take a slot, record the lease, and return
# what the page needs. Its ORM equivalent costs five round trips and ~4 ms of SQL compiling
# per request, which is most of the lease time at arena load.
_LEASE_SQL_POSTGRESQL = """
WITH candidate AS (
    SELECT p.id FROM ratings_pair p
    WHERE p.campaign_id = %(campaign)s AND p.slots_taken < p.votes_wanted
      AND p.kind = 'regular'
      AND NOT EXISTS (
          SELECT 1 FROM ratings_assignment a WHERE a.pair_id = p.id AND a.rater_id = %(rater)s
      )
    ORDER BY p.slots_taken, p.id
    LIMIT 1
    FOR UPDATE OF p {lock_wait}
), taken AS (
    UPDATE ratings_pair SET slots_taken = ratings_pair.slots_taken + 1
    FROM candidate WHERE ratings_pair.id = candidate.id
    RETURNING ratings_pair.id, ratings_pair.prompt_id, ratings_pair.kind,
              ratings_pair.track_a_id, ratings_pair.track_b_id
), leased AS (
    INSERT INTO ratings_assignment
        (pair_id, rater_id, campaign_id, left_is_a, status, served_at, expires_at)
    SELECT taken.id, %(rater)s, %(campaign)s, %(left_is_a)s, 'live', %(now)s, %(expires_at)s
    FROM taken
    RETURNING id
)
SELECT leased.id, %(left_is_a)s, %(expires_at)s, prompt.text, taken.kind,
       track_a.public_id, track_a.duration_seconds, track_b.public_id, track_b.duration_seconds
FROM leased, taken
JOIN ratings_prompt prompt ON prompt.id = taken.prompt_id
JOIN generation_track track_a ON track_a.id = taken.track_a_id
LEFT JOIN generation_track track_b ON track_b.id = taken.track_b_id
"""
# SKIP LOCKED first: a pair another rater is leasing this instant is passed over rather than
# waited for, so concurrent raters spread over pairs. If every open pair is locked (the last
# slots of a campaign), wait: PostgreSQL re-checks slots_taken once the lock is granted, so a
# filled pair is never handed out and nobody is told "nothing left" while slots remain.
_LEASE_SQL_SKIP_LOCKED = _LEASE_SQL_POSTGRESQL.format(lock_wait="SKIP LOCKED")
_LEASE_SQL_WAIT = _LEASE_SQL_POSTGRESQL.format(lock_wait="")


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
        for sql in (_LEASE_SQL_SKIP_LOCKED, _LEASE_SQL_WAIT):
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
    now = now or timezone.now()
    with transaction.atomic():
        overdue = Assignment.objects.overdue(now).select_for_update(skip_locked=True)
        if campaign_id is not None:
            overdue = overdue.filter(campaign_id=campaign_id)
        rows = list(overdue.values_list("id", "pair_id")[:batch])
        if not rows:
            return 0
        Assignment.objects.filter(id__in=[row[0] for row in rows]).update(
            status=Assignment.Status.EXPIRED
        )
        for pair_id, count in sorted(Counter(row[1] for row in rows).items()):
            Pair.objects.filter(pk=pair_id).update(slots_taken=F("slots_taken") - count)
    return len(rows)


# --- Voting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoteInput:
    """A vote as the rater's screen sends it: in terms of the shown slots A (left), B (right)."""

    assignment_id: int
    idempotency_key: uuid.UUID
    listen_ms: dict[str, int]
    choice: str | None = None
    scores: dict[str, int] | None = None
    comment: str = ""  # the rater's own words, optional
    # From the request, stored with the vote in the same statement (ratings.abuse).
    ip_hash: str = ""
    verification: str = Vote.Verification.VERIFIED


def vote_record(
    *, rater: Rater, vote_input: VoteInput, now: datetime | None = None
) -> tuple[Vote, bool]:
    """Record a vote once. Returns (vote, created); a replay with the same idempotency key
    returns the original vote with created=False and changes nothing."""
    now = now or timezone.now()
    context = _vote_context(rater=rater, assignment_id=vote_input.assignment_id)
    if context is None:
        # Someone else's assignment is reported exactly like a missing one: no probing.
        raise AssignmentNotFound("No such assignment for you.")
    if context.status == Assignment.Status.VOTED:
        return _vote_replay(rater=rater, vote_input=vote_input), False
    if context.status == Assignment.Status.EXPIRED or context.expires_at <= now:
        raise LeaseExpired("This pair's lease has expired; load the next pair.")
    elapsed_ms = int((now - context.served_at).total_seconds() * 1000)
    by_track = _map_slots_to_tracks(context, vote_input)
    _check_listening(context, by_track, elapsed_ms)
    review = quality.needs_review(campaign=context.campaign, pair_kind=context.pair_kind)
    try:
        # A reviewed vote and its grading are stored together or not at all.
        with transaction.atomic() if review else contextlib.nullcontext():
            vote = _vote_write(context, rater, vote_input, by_track, elapsed_ms, now)
            if vote is not None and review:
                quality.vote_review(
                    vote=vote, rater=rater, campaign=context.campaign, pair_kind=context.pair_kind,
                    expected_choice=context.expected_choice, scores=by_track.scores,
                )  # fmt: skip
    except IntegrityError:
        # The same key arrived twice at once and the other request stored it.
        return _vote_replay(rater=rater, vote_input=vote_input), False
    if vote is None:
        # The lease changed after it was read: a concurrent request voted, or it expired.
        voted = Assignment.objects.filter(pk=context.assignment_id, status=Assignment.Status.VOTED)
        if voted.exists():
            return _vote_replay(rater=rater, vote_input=vote_input), False
        raise LeaseExpired("This pair's lease has expired; load the next pair.")
    return vote, True


@dataclass(frozen=True)
class _VoteContext:
    """What a vote's checks and writes need, read in one query without locking: the write
    claims the lease with a conditional UPDATE, which is where concurrency is decided."""

    assignment_id: int
    status: str
    served_at: datetime
    expires_at: datetime
    left_is_a: bool
    pair_id: int
    campaign_id: int
    campaign: Campaign  # unsaved; carries the listening rules and the quality policy
    track_ids: tuple[int, ...]
    durations: tuple[float, ...]
    pair_kind: str
    expected_choice: str


_VOTE_CONTEXT_COLUMNS = (
    "id", "status", "served_at", "expires_at", "left_is_a", "pair_id", "campaign_id",
    "campaign__protocol", "campaign__min_listen_seconds", "campaign__listen_to_end",
    "campaign__quality_policy", "pair__kind", "pair__expected_choice",
    "pair__track_a_id", "pair__track_a__duration_seconds",
    "pair__track_b_id", "pair__track_b__duration_seconds",
)  # fmt: skip


def _vote_context(*, rater: Rater, assignment_id: int) -> _VoteContext | None:
    row = (
        Assignment.objects.filter(pk=assignment_id, rater=rater)
        .values_list(*_VOTE_CONTEXT_COLUMNS)
        .first()
    )
    if row is None:
        return None
    (pk, status, served_at, expires_at, left_is_a, pair_id, campaign_id, protocol,
     min_listen_seconds, listen_to_end, quality_policy, kind, expected, *tracks) = row  # fmt: skip
    campaign = Campaign(
        pk=campaign_id, protocol=protocol, min_listen_seconds=min_listen_seconds,
        listen_to_end=listen_to_end, quality_policy=quality_policy,
    )  # fmt: skip
    track_ids, durations = tracks[::2], tracks[1::2]
    clips = len(track_ids) if track_ids[-1] is not None else 1
    return _VoteContext(
        pk, status, served_at, expires_at, bool(left_is_a), pair_id, campaign_id, campaign,
        tuple(track_ids[:clips]), tuple(durations[:clips]), kind, expected,
    )  # fmt: skip


def _vote_write(
    context: _VoteContext,
    rater: Rater,
    vote_input: VoteInput,
    by_track: _TrackOrderedVote,
    elapsed_ms: int,
    now: datetime,
) -> Vote | None:
    """Claim the lease and store the vote; None when the lease is no longer live. Claiming is
    a conditional UPDATE, which locks the assignment row: a concurrent duplicate waits for it
    and then finds the lease already voted."""
    vote = Vote(
        assignment_id=context.assignment_id,
        pair_id=context.pair_id,
        rater=rater,
        campaign_id=context.campaign_id,
        choice=by_track.choice,
        left_is_a=context.left_is_a,
        listen_ms_a=by_track.listen_ms[0],
        listen_ms_b=by_track.listen_ms[1] if len(by_track.listen_ms) > 1 else None,
        elapsed_ms=elapsed_ms,
        idempotency_key=vote_input.idempotency_key,
        comment=vote_input.comment,
        ip_hash=vote_input.ip_hash,
        verification=vote_input.verification,
        created_at=now,
    )
    if connection.vendor == "postgresql":
        return _vote_write_postgresql(vote, context, by_track, now)
    return _vote_write_portable(vote, context, by_track, now)


# Claim, count, store and rate in one statement: one round trip instead of five (BEGIN, three
# writes, COMMIT) on the hot path. Data-modifying CTEs all run, and the later ones only act
# when `claimed` returned the lease.
_VOTE_SQL_POSTGRESQL = """
WITH claimed AS (
    UPDATE ratings_assignment SET status = 'voted'
    WHERE id = %(assignment)s AND status = 'live' AND expires_at > %(now)s
    RETURNING id
), counted AS (
    UPDATE ratings_pair SET vote_count = vote_count + 1
    WHERE id = %(pair)s AND EXISTS (SELECT 1 FROM claimed)
), stored AS (
    INSERT INTO ratings_vote (assignment_id, pair_id, rater_id, campaign_id, choice, left_is_a,
                              listen_ms_a, listen_ms_b, elapsed_ms, idempotency_key, comment,
                              ip_hash, verification, session_id, created_at)
    SELECT claimed.id, %(pair)s::bigint, %(rater)s::bigint, %(campaign)s::bigint,
           %(choice)s::varchar, %(left_is_a)s::boolean, %(listen_ms_a)s::integer,
           %(listen_ms_b)s::integer, %(elapsed_ms)s::integer, %(idempotency_key)s::uuid,
           %(comment)s::text, %(ip_hash)s::varchar, %(verification)s::varchar,
           (SELECT s.id FROM ratings_ratersession s
            WHERE s.rater_id = %(rater)s AND s.campaign_id = %(campaign)s AND s.status = 'active'
            ORDER BY s.started_at DESC, s.id DESC LIMIT 1),
           %(now)s::timestamptz
    FROM claimed
    RETURNING id, session_id
){ratings}
SELECT id, session_id FROM stored
"""
_RATINGS_CTE = """, rated AS (
    INSERT INTO ratings_mosrating (vote_id, track_id, rater_id, campaign_id, score, listen_ms,
                                   created_at)
    SELECT stored.id, clip.track_id, %(rater)s::bigint, %(campaign)s::bigint, clip.score,
           clip.listen_ms, %(now)s::timestamptz
    FROM stored, (VALUES {rows}) AS clip(track_id, score, listen_ms)
)"""
_VOTE_SQL_BY_RATED_CLIPS = {
    0: _VOTE_SQL_POSTGRESQL.format(ratings=""),
    **{
        clips: _VOTE_SQL_POSTGRESQL.format(
            ratings=_RATINGS_CTE.format(
                rows=", ".join(
                    f"(%(track_{i})s::bigint, %(score_{i})s::integer, %(listen_{i})s::integer)"
                    for i in range(clips)
                )
            )
        )
        for clips in (1, 2)
    },
}


def _vote_write_postgresql(
    vote: Vote, context: _VoteContext, by_track: _TrackOrderedVote, now: datetime
) -> Vote | None:
    scores = by_track.scores or []
    params = {
        "assignment": vote.assignment_id,
        "pair": vote.pair_id,
        "rater": vote.rater_id,
        "campaign": vote.campaign_id,
        "choice": vote.choice,
        "left_is_a": vote.left_is_a,
        "listen_ms_a": vote.listen_ms_a,
        "listen_ms_b": vote.listen_ms_b,
        "elapsed_ms": vote.elapsed_ms,
        "idempotency_key": vote.idempotency_key,
        "comment": vote.comment,
        "ip_hash": vote.ip_hash,
        "verification": vote.verification,
        "now": now,
    }
    for i, (track_id, score) in enumerate(zip(context.track_ids, scores, strict=False)):
        params.update({f"track_{i}": track_id, f"score_{i}": score})
        params[f"listen_{i}"] = by_track.listen_ms[i]
    # One statement is atomic by itself. Only a caller's open transaction needs a savepoint,
    # so that a duplicate key rolls back this statement and not the caller's work.
    nested = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
    with nested, connection.cursor() as cursor:
        cursor.execute(_VOTE_SQL_BY_RATED_CLIPS[len(scores)], params)
        row = cursor.fetchone()
    if row is None:
        return None
    vote.pk, vote.session_id = row
    return vote


@transaction.atomic
def _vote_write_portable(
    vote: Vote, context: _VoteContext, by_track: _TrackOrderedVote, now: datetime
) -> Vote | None:
    claimed = Assignment.objects.filter(
        pk=context.assignment_id, status=Assignment.Status.LIVE, expires_at__gt=now
    ).update(status=Assignment.Status.VOTED)
    if not claimed:
        return None
    # The rater's active session in this campaign, as the PostgreSQL statement's subquery.
    vote.session_id = (
        RaterSession.objects.filter(
            rater_id=vote.rater_id, campaign_id=vote.campaign_id, status=RaterSession.Status.ACTIVE
        )
        .order_by("-started_at", "-pk")
        .values_list("pk", flat=True)
        .first()
    )
    vote.save(force_insert=True)
    if by_track.scores:
        MosRating.objects.bulk_create(
            MosRating(
                vote=vote,
                track_id=track_id,
                rater_id=vote.rater_id,
                campaign_id=context.campaign_id,
                score=score,
                listen_ms=listen_ms,
            )
            for track_id, score, listen_ms in zip(
                context.track_ids, by_track.scores, by_track.listen_ms, strict=True
            )
        )
    Pair.objects.filter(pk=context.pair_id).update(vote_count=F("vote_count") + 1)
    return vote


def _vote_replay(*, rater: Rater, vote_input: VoteInput) -> Vote:
    vote = Vote.objects.filter(rater=rater, idempotency_key=vote_input.idempotency_key).first()
    if vote is None:
        raise AlreadyVoted("You already voted on this pair.")
    if vote.assignment_id != vote_input.assignment_id:
        raise AlreadyVoted("This idempotency key was already used for another vote.")
    return vote


@dataclass(frozen=True)
class _TrackOrderedVote:
    """The vote translated from screen slots into the pair's own track order (a, b)."""

    listen_ms: list[int]
    choice: str | None
    scores: list[int] | None


_SLOT_CHOICES = {"A", "B", "tie", "both_bad"}


def _map_slots_to_tracks(context: _VoteContext, vote_input: VoteInput) -> _TrackOrderedVote:
    slots = SLOTS[: len(context.track_ids)]
    _require_exact_slots("listen_ms", vote_input.listen_ms, slots)
    # Slot A is the left clip; it is track a unless this rater was shown the pair swapped.
    track_order = list(slots) if context.left_is_a else list(reversed(slots))
    listen_ms = [vote_input.listen_ms[slot] for slot in track_order]
    if context.campaign.protocol == Campaign.Protocol.PREFERENCE:
        if vote_input.scores:
            raise InvalidVote("This campaign asks for a choice, not scores.")
        if vote_input.choice not in _SLOT_CHOICES:
            raise InvalidVote("choice must be one of A, B, tie, both_bad.")
        choice = vote_input.choice
        if choice in SLOTS:
            choice = "a" if (choice == "A") == context.left_is_a else "b"
        return _TrackOrderedVote(listen_ms=listen_ms, choice=choice, scores=None)
    if vote_input.choice:
        raise InvalidVote("This campaign asks for 1-5 scores, not a choice.")
    _require_exact_slots("scores", vote_input.scores or {}, slots)
    scores = [vote_input.scores[slot] for slot in track_order]
    if any(score not in range(1, 6) for score in scores):
        raise InvalidVote("Every score must be a whole number from 1 to 5.")
    return _TrackOrderedVote(listen_ms=listen_ms, choice=None, scores=scores)


def _require_exact_slots(field: str, values: dict[str, int], slots: tuple[str, ...]) -> None:
    if set(values) != set(slots):
        raise InvalidVote(f"{field} needs exactly the keys {', '.join(slots)}.")


def _check_listening(context: _VoteContext, vote: _TrackOrderedVote, elapsed_ms: int) -> None:
    """The browser's report is checked against the server's own clock: each clip reported
    as heard long enough, and enough time passed since serving to have heard them all."""
    slack = settings.RATING_LISTEN_SLACK_MS
    required = [context.campaign.required_listen_ms(d) for d in context.durations]
    for heard, needed in zip(vote.listen_ms, required, strict=True):
        if heard < needed:
            raise ListeningTooShort(
                f"Each clip must be heard for {needed / 1000:.1f} s before voting "
                f"(one was heard for {heard / 1000:.1f} s)."
            )
    if elapsed_ms + slack < sum(required):
        raise ListeningTooShort(
            f"Only {elapsed_ms / 1000:.1f} s passed since the clips were served; "
            f"hearing them takes at least {sum(required) / 1000:.1f} s."
        )
    if sum(vote.listen_ms) > elapsed_ms + slack:
        raise ListeningTooShort(
            f"The reported listening ({sum(vote.listen_ms) / 1000:.1f} s) is longer than the "
            f"time since the clips were served ({elapsed_ms / 1000:.1f} s)."
        )


# --- Campaigns ----------------------------------------------------------------------------


def campaign_create(
    *,
    name: str,
    purpose: str,
    protocol: str,
    prompt_texts: list[str],
    version_a: GeneratorVersion,
    version_b: GeneratorVersion | None = None,
    votes_per_item: int = 3,
    min_listen_seconds: float = 5.0,
    listen_to_end: bool = False,
    clip_seconds: float | None = None,
    instructions: str = "",
    created_by: AbstractBaseUser | None = None,
    queue: bool = True,
    qualification_required: bool = False,
    qualification_valid_hours: float = 24.0,
    check_rate: float = 0.0,
    quality_policy: str = Campaign.QualityPolicy.NONE,
    pair_selection: str = Campaign.PairSelection.UNIFORM,
    consent_text: str = "",
    completion_code: str = "",
    completion_url: str = "",
    votes_per_session: int | None = None,
    max_votes_per_rater: int | None = None,
    variant_axes: list[str] | tuple[str, ...] = (),
    variant_share: float = 0.5,
    rater_title: str = "",
    crowd_study_ids: list[str] | tuple[str, ...] = (),
) -> Campaign:
    """Create a campaign and queue the generation of its tracks and pairs (queue=False: the
    caller runs ratings.campaigns.campaign_generate_prompt for each prompt itself).
    The quality and recruitment settings are the ones CampaignForm.campaign_settings()
    returns."""
    from ratings.campaigns import campaign_generation_queue

    texts = [text.strip() for text in prompt_texts if text.strip()]
    if not texts:
        raise InvalidVote("A campaign needs at least one prompt.")
    variant_axes = list(dict.fromkeys(variant_axes))
    if variant_axes:
        variants_check(purpose, protocol, version_a, variant_axes, variant_share)
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=name,
            rater_title=rater_title,
            crowd_study_ids=list(crowd_study_ids),
            purpose=purpose,
            protocol=protocol,
            version_a=version_a,
            version_b=version_b,
            votes_per_item=votes_per_item,
            min_listen_seconds=min_listen_seconds,
            listen_to_end=listen_to_end,
            clip_seconds=clip_seconds or settings.GENERATION_DEFAULT_CLIP_SECONDS,
            instructions=instructions,
            created_by=created_by,
            generation_total=2 * len(texts),
            qualification_required=qualification_required,
            qualification_valid_hours=qualification_valid_hours,
            check_rate=check_rate,
            quality_policy=quality_policy,
            pair_selection=pair_selection,
            consent_text=consent_text,
            completion_code=completion_code,
            completion_url=completion_url,
            votes_per_session=votes_per_session,
            max_votes_per_rater=max_votes_per_rater,
            variant_axes=variant_axes,
            variant_share=variant_share,
        )
        prompts = [prompt_get_or_create(text=text) for text in texts]
        campaign.prompts.set(prompts)
        if queue:
            campaign_generation_queue(campaign)
    return campaign


def campaign_votes_extend(*, campaign: Campaign, extra_per_item: int) -> Campaign:
    """Ask for `extra_per_item` more votes on every item of the campaign: for a listening
    test that has not yet gathered enough decisive votes to tell its versions apart."""
    if extra_per_item < 1:
        raise InvalidVote("Ask for at least one more vote per item.")
    if campaign.votes_per_item + extra_per_item > 1000:
        raise InvalidVote("A campaign takes at most 1000 votes per item.")
    with transaction.atomic():
        Campaign.objects.filter(pk=campaign.pk).update(
            votes_per_item=F("votes_per_item") + extra_per_item
        )
        Pair.objects.filter(campaign=campaign).update(
            votes_wanted=F("votes_wanted") + extra_per_item
        )
    campaign.refresh_from_db()
    return campaign


def variants_check(
    purpose: str,
    protocol: str,
    version: GeneratorVersion,
    axes: list[str],
    share: float,
) -> None:
    """Raises InvalidVote unless a campaign so set up can pair clips with their variants."""
    from generation.music.variants import VARIANT_AXES

    unknown = [axis for axis in axes if axis not in VARIANT_AXES]
    if unknown:
        raise InvalidVote(
            f"Unknown variant axes: {', '.join(unknown)} (choose from {', '.join(VARIANT_AXES)})."
        )
    if purpose != Campaign.Purpose.COLLECT or protocol != Campaign.Protocol.PREFERENCE:
        raise InvalidVote("Variants are for collect campaigns with side-by-side preference.")
    if version.backend not in VARIANT_BACKENDS:
        raise InvalidVote(
            f"Variants change a clip's notes: {version} ({version.backend}) makes audio only."
        )
    if not 0 < share <= 1:
        raise InvalidVote("The share of variant pairs must lie in (0, 1].")
