"""Quality control of crowd ratings (ITU-T P.808 with Prolific's two-failure rule).

- Qualification: a campaign with `qualification_required` serves only its qualification items
  until the rater has answered all of them; the round is graded when nothing of it is left to
  serve (an item whose lease ran out counts as wrong) and passes with at least
  QUALIFICATION_PASS_SHARE right. The result, passed or failed, holds for
  `qualification_valid_hours`; after that the rater takes the check again (the old round's
  answers are discarded, its Qualification row stays as the record).
- Checks: gold and trap items are mixed in at the campaign's `check_rate` by the lease path and
  graded when the vote is written (Vote.check_passed). A wrong answer flags that vote and counts
  one failed check in the rater's session.
- The P.808 policy adds two rules, each one more failed check: a vote on which a clip was not
  played (heard for less than PLAYED_MS), judged at every vote; and ratings that barely vary,
  judged every FLAT_EVERY rating items of the session, at most once per session.
- Under P.808 a session with REJECT_AFTER failed checks is rejected: its votes, and any later
  vote in it, become `rejected` with the reasons in their flags (kept, never counted), and their
  slots go back to the pairs so that other raters fill them. Under the policy `none` failures
  are recorded on the session and nothing is rejected.
- Reliability: per rater, agreement with gold, with the majority of the other raters and (for
  scores) the correlation with the other raters' mean score of each clip.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from ratings.dataset import RELIABILITY_MIN_VOTES, gold_accuracy, rater_reliability
from ratings.models import (
    Assignment,
    Campaign,
    MosRating,
    Pair,
    Qualification,
    Rater,
    RaterSession,
    Vote,
)

QUALIFICATION_PASS_SHARE = 0.8
# Prolific: a submission may be rejected only after at least two failed attention checks.
REJECT_AFTER = 2
PLAYED_MS = 1000
FLAT_EVERY = 10
# Straight-lining: one screen answer (A, B, tie, both bad) in this share of the session's
# choices, or 1-5 scores whose standard deviation is below FLAT_SCORE_STD (all but one equal).
FLAT_CHOICE_SHARE = 0.9
FLAT_SCORE_STD = 0.25
CHECK_KINDS = (Pair.Kind.GOLD, Pair.Kind.TRAP)


# --- sessions --------------------------------------------------------------------------------


def session_for(*, rater: Rater, campaign: Campaign | int) -> RaterSession:
    """The rater's current session in the campaign: the newest one that is active, or rejected
    (a rejected rater stays rejected until a new crowd session is opened for them). Raters
    without one (local raters voting directly) get one here; safe to call concurrently."""
    campaign_id = campaign if isinstance(campaign, int) else campaign.pk
    session = _current_session(rater.pk, campaign_id)
    if session is not None:
        return session
    with transaction.atomic():
        # The rater's row is the lock: two requests of one rater cannot both create a session.
        Rater.objects.select_for_update().filter(pk=rater.pk).values_list("pk", flat=True).get()
        session = _current_session(rater.pk, campaign_id)
        if session is None:
            session = RaterSession.objects.create(
                rater_id=rater.pk, campaign_id=campaign_id, source=rater.source
            )
    return session


def _current_session(rater_id: int, campaign_id: int) -> RaterSession | None:
    return (
        RaterSession.objects.filter(
            rater_id=rater_id,
            campaign_id=campaign_id,
            status__in=[RaterSession.Status.ACTIVE, RaterSession.Status.REJECTED],
        )
        .order_by("-started_at", "-pk")
        .first()
    )


def session_reject(*, session: RaterSession, reasons: list[str]) -> int:
    """Reject a session and every vote in it (kept, never counted), recording why. Returns
    how many votes became rejected."""
    with transaction.atomic():
        session = RaterSession.objects.select_for_update().get(pk=session.pk)
        session.status = RaterSession.Status.REJECTED
        session.rejection_reasons = list(dict.fromkeys([*session.rejection_reasons, *reasons]))
        session.completed_at = session.completed_at or timezone.now()
        session.save(update_fields=["status", "rejection_reasons", "completed_at"])
        return _votes_reject(session.votes.all(), session.rejection_reasons)


def _votes_reject(votes: QuerySet[Vote], reasons: list[str]) -> int:
    """Mark votes rejected and give their slots back to their pairs, so other raters fill
    them; Pair.vote_count then counts the votes that are not rejected."""
    rows = list(votes.exclude(status=Vote.Status.REJECTED).only("id", "pair_id", "flags"))
    marks = [f"session_rejected:{reason}" for reason in reasons]
    for vote in rows:
        vote.status = Vote.Status.REJECTED
        vote.flags = list(dict.fromkeys([*vote.flags, *marks]))
    Vote.objects.bulk_update(rows, ["status", "flags"])
    for pair_id, count in sorted(Counter(vote.pair_id for vote in rows).items()):
        Pair.objects.filter(pk=pair_id).update(
            vote_count=F("vote_count") - count, slots_taken=F("slots_taken") - count
        )
    return len(rows)


def votes_clear(*, votes: QuerySet[Vote]) -> int:
    """An admin's decision that flagged or rejected votes count after all (their flags stay as
    the record). A rejected vote takes its slot back where the pair still has room."""
    rows = list(votes.exclude(status=Vote.Status.COUNTED).only("id", "pair_id", "status"))
    with transaction.atomic():
        regained = Counter(vote.pair_id for vote in rows if vote.status == Vote.Status.REJECTED)
        Vote.objects.filter(pk__in=[vote.pk for vote in rows]).update(status=Vote.Status.COUNTED)
        for pair_id, count in sorted(regained.items()):
            pair = Pair.objects.select_for_update().get(pk=pair_id)
            count = min(count, pair.votes_wanted - pair.slots_taken)
            Pair.objects.filter(pk=pair_id).update(
                vote_count=F("vote_count") + count, slots_taken=F("slots_taken") + count
            )
    return len(rows)


def votes_reject(*, votes: QuerySet[Vote], reason: str = "admin") -> int:
    """An admin's rejection of single votes (not their sessions)."""
    with transaction.atomic():
        return _votes_reject(votes, [reason])


# --- the lease gate: qualification and rejected sessions ---------------------------------------


@dataclass(frozen=True)
class Gate:
    """What the lease path may serve a rater: real items (`open`), or first these
    qualification items."""

    open: bool
    qualification_items: QuerySet[Pair] | None = None


OPEN, CLOSED = Gate(open=True), Gate(open=False)


def screens_apply(campaign: Campaign) -> bool:
    return campaign.qualification_required or campaign.quality_policy == Campaign.QualityPolicy.P808


def lease_gate(*, rater: Rater, campaign: Campaign, now: datetime) -> Gate:
    p808 = campaign.quality_policy == Campaign.QualityPolicy.P808
    if p808 and session_for(rater=rater, campaign=campaign).status == RaterSession.Status.REJECTED:
        return CLOSED
    if not campaign.qualification_required:
        return OPEN
    latest = latest_qualification(rater=rater, campaign=campaign)
    if latest is not None and latest.expires_at > now:
        return OPEN if latest.passed else CLOSED
    items = qualification_items(rater=rater, campaign=campaign, expired=latest)
    if items.exists():
        return Gate(open=False, qualification_items=items)
    result = qualification_grade(rater=rater, campaign=campaign, now=now)
    return OPEN if result is not None and result.passed else CLOSED


def latest_qualification(*, rater: Rater, campaign: Campaign) -> Qualification | None:
    return (
        Qualification.objects.filter(rater=rater, campaign=campaign)
        .order_by("-taken_at", "-pk")
        .first()
    )


def qualification_items(
    *, rater: Rater, campaign: Campaign, expired: Qualification | None = None
) -> QuerySet[Pair]:
    """The qualification items still to serve in the rater's current round. The answers of
    an expired round are discarded first: a rater answers each item once per round."""
    if expired is not None:
        _qualification_round_discard(rater, campaign, before=expired.taken_at)
    return (
        Pair.objects.filter(campaign=campaign, kind=Pair.Kind.QUALIFICATION)
        .open_slots()
        .not_served_to(rater)
        .order_by("id")
    )


@transaction.atomic
def _qualification_round_discard(rater: Rater, campaign: Campaign, *, before: datetime) -> None:
    old = Assignment.objects.filter(
        rater=rater, campaign=campaign, pair__kind=Pair.Kind.QUALIFICATION, served_at__lte=before
    ).exclude(status=Assignment.Status.LIVE)
    ids = list(old.values_list("id", flat=True))
    if not ids:
        return
    votes = Vote.objects.filter(assignment__in=ids)
    # Expired leases and rejected votes already gave their slot back; the others hold one.
    holding = Counter(votes.exclude(status=Vote.Status.REJECTED).values_list("pair_id", flat=True))
    MosRating.objects.filter(vote__in=votes).delete()
    votes.delete()
    Assignment.objects.filter(pk__in=ids).delete()
    for pair_id, count in sorted(holding.items()):
        Pair.objects.filter(pk=pair_id).update(
            slots_taken=F("slots_taken") - count, vote_count=F("vote_count") - count
        )


def qualification_grade(*, rater: Rater, campaign: Campaign, now: datetime) -> Qualification | None:
    """Grade the rater's finished round; None when the campaign has no qualification items
    (then nobody can qualify, and no real item is served)."""
    items = Pair.objects.filter(campaign=campaign, kind=Pair.Kind.QUALIFICATION)
    total = items.count()
    if not total:
        return None
    correct = Vote.objects.filter(rater=rater, pair__in=items, check_passed=True).count()
    return Qualification.objects.create(
        rater=rater,
        campaign=campaign,
        passed=correct >= math.ceil(QUALIFICATION_PASS_SHARE * total),
        correct=correct,
        total=total,
        taken_at=now,
        expires_at=now + timedelta(hours=campaign.qualification_valid_hours),
    )


# --- grading votes and the P.808 policy --------------------------------------------------------


def needs_review(*, campaign: Campaign, pair_kind: str) -> bool:
    """Whether a vote is graded after it is written: votes on checks, and every vote of a
    P.808 campaign. The others take the single-statement path alone."""
    return pair_kind != Pair.Kind.REGULAR or campaign.quality_policy == Campaign.QualityPolicy.P808


def answer_is_right(*, expected: str, choice: str | None, scores: list[int] | None) -> bool:
    """A check's answer against its known one. Choice protocols: the expected track chosen.
    Side by side: the expected track scored higher. One clip (MOS): 'a' means the clip is good
    (scored 4-5), 'b' that it is bad (1-2)."""
    if choice is not None:
        return choice == expected
    scores = scores or []
    if len(scores) == 2:
        right, other = (scores[0], scores[1]) if expected == "a" else (scores[1], scores[0])
        return right > other
    return bool(scores) and (scores[0] >= 4 if expected == "a" else scores[0] <= 2)


def vote_review(
    *,
    vote: Vote,
    rater: Rater,
    campaign: Campaign,
    pair_kind: str,
    expected_choice: str,
    scores: list[int] | None,
) -> None:
    """Link a just-written vote to the rater's session, grade it if it is a check, apply the
    campaign's policy, and reject the session once it has failed REJECT_AFTER checks. Call it
    in the vote's transaction."""
    session = session_for(rater=rater, campaign=campaign)
    with transaction.atomic():
        # The session row is the lock: a rejection and a vote in the same session serialise,
        # so no vote slips into a rejected session uncounted-as-rejected.
        session = RaterSession.objects.select_for_update().get(pk=session.pk)
        vote.session = session
        failures: list[str] = []
        if pair_kind != Pair.Kind.REGULAR:
            vote.check_passed = answer_is_right(
                expected=expected_choice, choice=vote.choice, scores=scores
            )
            if not vote.check_passed:
                vote.flags = [*vote.flags, "check_failed"]
                if pair_kind in CHECK_KINDS:
                    failures.append(f"{pair_kind}_failed")
        Vote.objects.filter(pk=vote.pk).update(
            session=session, check_passed=vote.check_passed, flags=vote.flags
        )
        if campaign.quality_policy == Campaign.QualityPolicy.P808:
            failures += _p808_failures(vote, session, pair_kind)
        if session.status == RaterSession.Status.REJECTED:
            _votes_reject(Vote.objects.filter(pk=vote.pk), session.rejection_reasons)
        elif failures:
            _session_fail(session, failures, campaign)


def _session_fail(session: RaterSession, failures: list[str], campaign: Campaign) -> None:
    session.failed_checks += len(failures)
    session.rejection_reasons = [*session.rejection_reasons, *failures]
    session.save(update_fields=["failed_checks", "rejection_reasons"])
    if (
        campaign.quality_policy == Campaign.QualityPolicy.P808
        and session.failed_checks >= REJECT_AFTER
    ):
        session_reject(session=session, reasons=sorted(set(session.rejection_reasons)))


def _p808_failures(vote: Vote, session: RaterSession, pair_kind: str) -> list[str]:
    heard = [vote.listen_ms_a, *([] if vote.listen_ms_b is None else [vote.listen_ms_b])]
    failures = ["clip_not_played"] if min(heard) < PLAYED_MS else []
    if pair_kind == Pair.Kind.REGULAR and "ratings_flat" not in session.rejection_reasons:
        items = session.votes.filter(pair__kind=Pair.Kind.REGULAR)
        count = items.count()
        if count >= FLAT_EVERY and count % FLAT_EVERY == 0 and ratings_are_flat(items):
            failures.append("ratings_flat")
    return failures


def ratings_are_flat(votes: QuerySet[Vote]) -> bool:
    """Straight-lining: the same answer on (nearly) every item, in screen terms for choices
    (always the left clip is flat even though the tracks behind it differ)."""
    choices = [
        choice if choice in (Vote.Choice.TIE, Vote.Choice.BOTH_BAD) else (choice == "a") == left
        for choice, left in votes.filter(choice__isnull=False).values_list("choice", "left_is_a")
    ]
    if choices:
        return Counter(choices).most_common(1)[0][1] >= FLAT_CHOICE_SHARE * len(choices)
    scores = list(MosRating.objects.filter(vote__in=votes).values_list("score", flat=True))
    return len(scores) >= 2 and float(np.std(scores)) < FLAT_SCORE_STD


# --- reliability -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reliability:
    gold_accuracy: float | None
    majority_agreement: float | None
    score_correlation: float | None


def rater_reliabilities(votes: QuerySet[Vote] | None = None) -> dict[int, Reliability]:
    """Per rater in `votes` (all votes by default): agreement with gold over their check
    answers, with the majority of the others over counted votes, and the correlation of their
    1-5 scores with the other raters' mean score of each clip. None where too few votes."""
    votes = Vote.objects.all() if votes is None else votes
    counted = votes.filter(status=Vote.Status.COUNTED, pair__kind=Pair.Kind.REGULAR)
    gold = gold_accuracy(votes)
    majority = rater_reliability(counted)
    correlation = score_correlations(counted)
    return {
        rater_id: Reliability(
            gold.get(rater_id),
            majority[rater_id].reliability if rater_id in majority else None,
            correlation.get(rater_id),
        )
        for rater_id in set(gold) | set(majority) | set(correlation)
    }


def score_correlations(votes: QuerySet[Vote]) -> dict[int, float | None]:
    """Pearson correlation of each rater's scores with the mean of the other raters' scores of
    the same clip in the same campaign (leave-one-out)."""
    rows = list(
        MosRating.objects.filter(vote__in=votes).values_list(
            "rater_id", "campaign_id", "track_id", "score"
        )
    )
    totals: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for _, campaign_id, track_id, score in rows:
        total = totals[campaign_id, track_id]
        total[0] += score
        total[1] += 1
    points: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for rater_id, campaign_id, track_id, score in rows:
        summed, count = totals[campaign_id, track_id]
        if count > 1:
            points[rater_id].append((score, (summed - score) / (count - 1)))
    return {rater_id: _pearson(pairs) for rater_id, pairs in points.items()}


def _pearson(points: list[tuple[float, float]]) -> float | None:
    if len(points) < RELIABILITY_MIN_VOTES:
        return None
    own, others = np.array(points, dtype=float).T
    if own.std() == 0 or others.std() == 0:
        return None  # undefined for a constant series
    return float(np.corrcoef(own, others)[0, 1])


def reliability_refresh(*, now: datetime | None = None) -> int:
    """Store every rater's reliability (Rater.gold_accuracy, ...). Returns raters updated."""
    now = now or timezone.now()
    scores = rater_reliabilities()
    raters = list(Rater.objects.only("id"))
    for rater in raters:
        score = scores.get(rater.pk, Reliability(None, None, None))
        rater.gold_accuracy = score.gold_accuracy
        rater.majority_agreement = score.majority_agreement
        rater.score_correlation = score.score_correlation
        rater.reliability_updated_at = now
    Rater.objects.bulk_update(
        raters,
        ["gold_accuracy", "majority_agreement", "score_correlation", "reliability_updated_at"],
        batch_size=1000,
    )
    return len(raters)


# --- admin actions -------------------------------------------------------------------------------

# A check item is served to every rater once: its slots never run out (the column's maximum).
CHECK_VOTES_WANTED = 32767


def pairs_mark(*, pairs: QuerySet[Pair], kind: str, expected_choice: str = "") -> int:
    """Make pairs gold, trap or qualification items with a known answer, or rating items
    again. Votes already cast on them are graded (choice protocols) but move no session."""
    if kind not in Pair.Kind.values:
        raise ValueError(f"unknown pair kind {kind!r}")
    regular = kind == Pair.Kind.REGULAR
    if regular == bool(expected_choice) or expected_choice not in ("", "a", "b"):
        raise ValueError("a check item needs the expected answer 'a' or 'b'; an item none")
    with transaction.atomic():
        rows = list(pairs.select_for_update().select_related("campaign"))
        for pair in rows:
            pair.kind, pair.expected_choice = kind, expected_choice
            pair.votes_wanted = (
                max(pair.campaign.votes_per_item, pair.slots_taken)
                if regular
                else CHECK_VOTES_WANTED
            )
        Pair.objects.bulk_update(rows, ["kind", "expected_choice", "votes_wanted"])
        votes = Vote.objects.filter(pair__in=rows, choice__isnull=False)
        if regular:
            votes.update(check_passed=None)
        else:
            votes.filter(choice=expected_choice).update(check_passed=True)
            votes.exclude(choice=expected_choice).update(check_passed=False)
    return len(rows)
