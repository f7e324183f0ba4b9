"""Voting: recording a rater's answer on their lease, once (idempotent by key), after
checking the listening the page reported against the server's own clock."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from ratings import quality, raw_sql
from ratings.errors import (
    AlreadyVoted,
    AssignmentNotFound,
    InvalidVote,
    LeaseExpired,
    ListeningTooShort,
)
from ratings.models import Assignment, Campaign, MosRating, Pair, Rater, RaterSession, Vote

SLOTS = ("A", "B")  # what the rater sees: A is the left clip, B the right one


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
        cursor.execute(raw_sql.VOTE_BY_RATED_CLIPS[len(scores)], params)
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
