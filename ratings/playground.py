"""The playground: a visitor types a prompt (or picks an example), the `generate` queue renders
two clips for it, and the visitor votes on them as a blind pair, as MusicRL collected its
preferences.

Playground pairs live in one campaign of purpose `playground`, kept paused so the normal lease
API never hands them out: each pair is made for one request and leased to its requester in the
same transaction that marks the request ready, so a pair appears whole or not at all. Votes go
through the ordinary vote API into the ordinary tables; typed prompts carry source
`playground`, which exports can filter on and version leaderboards leave out.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.db import connection, transaction
from django.db.models import Count, F
from django.http import HttpRequest
from django.utils import timezone

from generation.models import GeneratorVersion, Prompt, Track
from generation.services import prompt_get_or_create
from ratings import abuse, leasing, raw_sql, services
from ratings.errors import RatingError
from ratings.models import (
    Assignment,
    Campaign,
    Pair,
    PlaygroundRequest,
    Rater,
    Role,
    Vote,
)
from ratings.moderation import prompt_moderate

logger = logging.getLogger(__name__)

PENDING = (PlaygroundRequest.Status.QUEUED, PlaygroundRequest.Status.GENERATING)
CLIPS_TOTAL = 2
SIDES = ("a", "b")
EXAMPLE_COUNT = 6
# A request still pending this long after its time limit lost its worker: it is failed on the
# next status read, so the visitor is offered a retry instead of waiting forever.
STALE_MARGIN_SECONDS = 60


class UnknownExample(RatingError):
    code = "unknown_example"


class TooManyPending(RatingError):
    status_code = 429
    code = "too_many_pending"


class PlaygroundUnavailable(RatingError):
    status_code = 503
    code = "playground_unavailable"


class NotRetryable(RatingError):
    status_code = 409
    code = "not_retryable"


class NoDownload(RatingError):
    status_code = 409
    code = "no_download"


class RequestNotFound(RatingError):
    status_code = 404
    code = "not_found"


# --- the playground campaign and its versions ----------------------------------------------


def active_version() -> GeneratorVersion:
    """The version new collection uses: the newest active one."""
    version = (
        GeneratorVersion.objects.filter(status=GeneratorVersion.Status.ACTIVE)
        .order_by("-created_at", "-pk")
        .first()
    )
    if version is None:
        raise PlaygroundUnavailable("No generator version is active; ask an admin to promote one.")
    return version


def playground_campaign() -> Campaign:
    """The one campaign that holds every playground pair, created on first use. It stays
    paused: assignment_lease_next only leases new pairs of active campaigns."""
    campaign = _playground_campaign_or_none()
    if campaign is not None:
        return campaign
    version = active_version()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Two first requests at once must not make two campaigns (SQLite's IMMEDIATE
            # transactions already serialise writers).
            with connection.cursor() as cursor:
                cursor.execute(raw_sql.PLAYGROUND_CAMPAIGN_LOCK)
        campaign = _playground_campaign_or_none()
        if campaign is None:
            campaign = Campaign.objects.create(
                name="Playground",
                purpose=Campaign.Purpose.PLAYGROUND,
                protocol=Campaign.Protocol.PREFERENCE,
                status=Campaign.Status.PAUSED,
                version_a=version,
                votes_per_item=1,
                clip_seconds=settings.PLAYGROUND_CLIP_SECONDS,
                instructions="Pairs made for visitors' own prompts in the playground.",
            )
    return campaign


def _playground_campaign_or_none() -> Campaign | None:
    return Campaign.objects.filter(purpose=Campaign.Purpose.PLAYGROUND).order_by("pk").first()


def arena_vote_counts(version_ids: Sequence[int]) -> dict[int, int]:
    """Counted playground votes on battles (pairs of two different versions) per version."""
    votes = (
        Vote.objects.counted()
        .filter(campaign__purpose=Campaign.Purpose.PLAYGROUND)
        .exclude(pair__track_a__generator_version=F("pair__track_b__generator_version"))
    )
    counts = dict.fromkeys(version_ids, 0)
    for side in SIDES:
        field = f"pair__track_{side}__generator_version"
        rows = (
            votes.filter(**{f"{field}__in": version_ids}).values_list(field).annotate(n=Count("id"))
        )
        for version_id, n in rows.order_by():
            counts[version_id] += n
    return counts


def arena_draw(
    versions: Sequence[GeneratorVersion],
    counts: dict[int, int],
    *,
    prior_votes: float,
    rng: random.Random | None = None,
) -> tuple[GeneratorVersion, GeneratorVersion]:
    """Two different versions, each drawn with weight 1/(votes + prior_votes), so the versions
    with the fewest votes are heard most until the counts even out."""
    rng = rng or random.SystemRandom()
    pool = list(versions)
    drawn = []
    for _ in range(2):
        weights = [1.0 / (counts.get(v.pk, 0) + prior_votes) for v in pool]
        pick = rng.choices(range(len(pool)), weights=weights)[0]
        drawn.append(pool.pop(pick))
    return drawn[0], drawn[1]


def _versions_for_request() -> tuple[str, GeneratorVersion, GeneratorVersion]:
    if settings.PLAYGROUND_ARENA:
        enabled = list(GeneratorVersion.objects.filter(arena_enabled=True).order_by("pk"))
        if len(enabled) >= 2:
            counts = arena_vote_counts([v.pk for v in enabled])
            prior = settings.PLAYGROUND_ARENA_PRIOR_VOTES
            version_a, version_b = arena_draw(enabled, counts, prior_votes=prior)
            return PlaygroundRequest.Mode.ARENA, version_a, version_b
    version = active_version()
    return PlaygroundRequest.Mode.SAMPLES, version, version


# --- requests --------------------------------------------------------------------------------


def playground_request_create(
    *,
    rater: Rater,
    text: str | None = None,
    example_id: int | None = None,
    ip_hash: str = "",
) -> tuple[PlaygroundRequest, bool]:
    """Queue the generation of a pair for a typed prompt (moderated first) or an example
    (a curated prompt). Returns (request, created): an identical pending request of this rater
    is returned instead of a second one. More than PLAYGROUND_MAX_PENDING pending requests:
    TooManyPending (429), with nothing stored."""
    from ratings import tasks  # the task module imports this one

    if example_id is None:
        text = prompt_moderate(text=text or "", rater=rater, ip_hash=ip_hash)
    with transaction.atomic():
        # One rater's submissions are serialised, so the bound cannot be raced past.
        Rater.objects.select_for_update().filter(pk=rater.pk).values_list("pk").first()
        prompt = _prompt_for(text=text, example_id=example_id)
        pending = PlaygroundRequest.objects.filter(rater=rater, status__in=PENDING)
        existing = pending.filter(prompt=prompt).first()
        if existing is not None:
            return existing, False
        if pending.count() >= settings.PLAYGROUND_MAX_PENDING:
            raise TooManyPending(
                f"You already have {settings.PLAYGROUND_MAX_PENDING} pairs being made; "
                "wait for one to finish."
            )
        mode, version_a, version_b = _versions_for_request()
        request = PlaygroundRequest.objects.create(
            rater=rater, prompt=prompt, mode=mode, version_a=version_a, version_b=version_b,
            clip_seconds=settings.PLAYGROUND_CLIP_SECONDS,
        )  # fmt: skip
        tasks.generate_playground_request.delay_on_commit(request.pk)
    return request, True


def _prompt_for(*, text: str | None, example_id: int | None) -> Prompt:
    if example_id is not None:
        prompt = Prompt.objects.filter(pk=example_id, source=Prompt.Source.CURATED).first()
        if prompt is None:
            raise UnknownExample("No such example prompt.")
        return prompt
    return prompt_get_or_create(text=text, source=Prompt.Source.PLAYGROUND)


def playground_request_retry(*, rater: Rater, request_id: int) -> PlaygroundRequest:
    """Queue a failed request again (same prompt, same versions): a new attempt that reuses
    any clip the failed one finished. The pending bound applies as to a new request."""
    from ratings import tasks

    with transaction.atomic():
        Rater.objects.select_for_update().filter(pk=rater.pk).values_list("pk").first()
        request = _own_request(rater=rater, request_id=request_id)
        if request.status != PlaygroundRequest.Status.FAILED:
            raise NotRetryable("Only a failed request can be tried again.")
        pending = PlaygroundRequest.objects.filter(rater=rater, status__in=PENDING)
        duplicate = pending.filter(prompt_id=request.prompt_id).first()
        if duplicate is not None:
            return duplicate  # the same prompt was submitted again meanwhile
        if pending.count() >= settings.PLAYGROUND_MAX_PENDING:
            raise TooManyPending("Too many pairs are being made for you; wait for one to finish.")
        PlaygroundRequest.objects.filter(pk=request.pk).update(
            status=PlaygroundRequest.Status.QUEUED, error="", clips_done=0,
            # The stale check counts from created_at while a request waits in the queue.
            started_at=None, finished_at=None, created_at=timezone.now(),
        )  # fmt: skip
        tasks.generate_playground_request.delay_on_commit(request.pk)
    request.refresh_from_db()
    return request


def _own_request(*, rater: Rater, request_id: int) -> PlaygroundRequest:
    request = PlaygroundRequest.objects.filter(pk=request_id, rater=rater).first()
    if request is None:
        # Someone else's request is reported exactly like a missing one.
        raise RequestNotFound("No such playground request.")
    return request


# --- generation (the worker's side) ----------------------------------------------------------


def playground_request_generate(*, request_id: int) -> str:
    """Render both clips, then in one transaction form the pair, lease it to the requester and
    mark the request ready. Any failure (or the time limit) on either side marks it failed
    with a message, and no pair or lease exists. Returns the request's final status."""
    claimed = PlaygroundRequest.objects.filter(
        pk=request_id, status=PlaygroundRequest.Status.QUEUED
    ).update(status=PlaygroundRequest.Status.GENERATING, started_at=timezone.now(), clips_done=0)
    if not claimed:
        return "skipped"  # ready, failed (stale or timed out) or taken by another worker
    request = PlaygroundRequest.objects.select_related("prompt", "version_a", "version_b").get(
        pk=request_id
    )
    side = SIDES[0]
    try:
        tracks = []
        for done, (side, version) in enumerate(
            zip(SIDES, _side_versions(request), strict=True), start=1
        ):
            tracks.append(_render_side(request, side, version))
            PlaygroundRequest.objects.filter(
                pk=request.pk, status=PlaygroundRequest.Status.GENERATING
            ).update(clips_done=done)
        return _publish_pair(request, tracks)
    except SoftTimeLimitExceeded:
        seconds = settings.PLAYGROUND_TIMEOUT_SECONDS
        return _fail(request, f"Making the clips took longer than {seconds} s. Try again.")
    except Exception:
        logger.exception("playground request %s: clip %s failed", request_id, side.upper())
        return _fail(request, f"Clip {side.upper()} could not be made. Try again.")


def _side_versions(request: PlaygroundRequest) -> tuple[GeneratorVersion, GeneratorVersion]:
    return request.version_a, request.version_b


def _render_side(request: PlaygroundRequest, side: str, version: GeneratorVersion) -> Track:
    from generation.services import derive_seed, track_generate

    seed = derive_seed("playground", request.pk, side)
    track, _ = track_generate(
        prompt=request.prompt, version=version, seed=seed, duration_seconds=request.clip_seconds
    )
    return track


def _publish_pair(request: PlaygroundRequest, tracks: list[Track]) -> str:
    campaign = playground_campaign()
    now = timezone.now()
    with transaction.atomic():
        pair = Pair.objects.create(
            campaign=campaign, prompt=request.prompt, track_a=tracks[0], track_b=tracks[1],
            votes_wanted=1, slots_taken=1,
        )  # fmt: skip
        assignment = Assignment.objects.create(
            pair=pair, rater_id=request.rater_id, campaign=campaign,
            left_is_a=secrets.randbelow(2) == 1, served_at=now,
            expires_at=now + timedelta(seconds=settings.RATING_LEASE_SECONDS),
        )  # fmt: skip
        ready = PlaygroundRequest.objects.filter(
            pk=request.pk, status=PlaygroundRequest.Status.GENERATING
        ).update(
            status=PlaygroundRequest.Status.READY, clips_done=CLIPS_TOTAL, pair=pair,
            assignment=assignment, finished_at=now, error="",
        )  # fmt: skip
        if not ready:
            # Failed meanwhile (timed out on a status read): never show half a decision.
            transaction.set_rollback(True)
            return PlaygroundRequest.Status.FAILED
    return PlaygroundRequest.Status.READY


def _fail(request: PlaygroundRequest, message: str) -> str:
    PlaygroundRequest.objects.filter(pk=request.pk, status__in=PENDING).update(
        status=PlaygroundRequest.Status.FAILED, error=message, finished_at=timezone.now()
    )
    return PlaygroundRequest.Status.FAILED


def _fail_if_stale(request: PlaygroundRequest, now: datetime) -> None:
    limit = timedelta(seconds=settings.PLAYGROUND_TIMEOUT_SECONDS + STALE_MARGIN_SECONDS)
    if request.status in PENDING and (request.started_at or request.created_at) < now - limit:
        _fail(request, "Making the clips took too long. Try again.")
        request.refresh_from_db()


# --- reads -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reveal:
    """What the page may show after the vote: the versions per shown slot (None when
    PLAYGROUND_REVEAL_VERSIONS is off), the choice in slot terms, and the preferred clip."""

    names: dict[str, str | None]
    choice: str
    preferred: Track | None


def playground_request_for(*, rater: Rater, request_id: int) -> PlaygroundRequest:
    request = _own_request(rater=rater, request_id=request_id)
    _fail_if_stale(request, timezone.now())
    return request


def playground_lease(request: PlaygroundRequest, *, now: datetime | None = None):
    """The request's live lease as the rating page's Lease, or None (not ready, voted or
    expired)."""
    now = now or timezone.now()
    if request.status != PlaygroundRequest.Status.READY or request.assignment_id is None:
        return None
    assignment = (
        Assignment.objects.live(now)
        .select_related("pair__prompt", "pair__track_a", "pair__track_b")
        .filter(pk=request.assignment_id)
        .first()
    )
    if assignment is None:
        return None
    pair = assignment.pair
    clips = tuple(
        leasing.LeasedClip(public_id=track.public_id, duration_seconds=track.duration_seconds)
        for track in (pair.track_a, pair.track_b)
    )
    return leasing.Lease(
        assignment.pk, assignment.left_is_a, assignment.expires_at, pair.prompt.text, clips
    )


def playground_vote(request: PlaygroundRequest) -> Vote | None:
    if request.assignment_id is None:
        return None
    return Vote.objects.filter(assignment_id=request.assignment_id).first()


def playground_reveal(request: PlaygroundRequest, vote: Vote | None) -> Reveal | None:
    if vote is None:
        return None
    pair = Pair.objects.select_related(
        "track_a__generator_version", "track_b__generator_version"
    ).get(pk=vote.pair_id)
    shown = (pair.track_a, pair.track_b) if vote.left_is_a else (pair.track_b, pair.track_a)
    names = {
        slot: track.generator_version.name if settings.PLAYGROUND_REVEAL_VERSIONS else None
        for slot, track in zip("AB", shown, strict=True)
    }
    by_track = {Vote.Choice.A: pair.track_a, Vote.Choice.B: pair.track_b}
    preferred = by_track.get(vote.choice)
    choice = vote.choice
    if preferred is not None:
        choice = "A" if preferred == shown[0] else "B"
    return Reveal(names=names, choice=choice, preferred=preferred)


def playground_download(*, rater: Rater, request_id: int) -> Track:
    """The clip the requester preferred: only after their vote, and only for A or B."""
    request = _own_request(rater=rater, request_id=request_id)
    reveal = playground_reveal(request, playground_vote(request))
    if reveal is None:
        raise NoDownload("Vote first: the download is the clip you preferred.")
    if reveal.preferred is None:
        raise NoDownload("You preferred neither clip, so there is nothing to download.")
    return reveal.preferred


def example_prompts(*, count: int = EXAMPLE_COUNT) -> list[Prompt]:
    """A few curated prompts to start from, drawn from the newest curated ones."""
    recent = list(
        Prompt.objects.filter(source=Prompt.Source.CURATED).order_by("-pk").only("pk", "text")[:50]
    )
    unique = list({prompt.text: prompt for prompt in reversed(recent)}.values())
    return random.sample(unique, min(count, len(unique)))


# --- guests ----------------------------------------------------------------------------------


def playground_rater(request: HttpRequest) -> Rater | None:
    """The caller's rater: a signed-in user's, or (when PLAYGROUND_ALLOW_ANONYMOUS) a guest
    rater created on first use and bound to the visitor's session by logging the guest user
    in. Note that logging in rotates the CSRF token. None when anonymous use is off."""
    if request.user.is_authenticated:
        return services.rater_for_user(user=request.user)
    if not settings.PLAYGROUND_ALLOW_ANONYMOUS:
        return None
    rater = guest_rater_create()
    login(request, rater.user, backend="django.contrib.auth.backends.ModelBackend")
    return rater


def guest_rater_create() -> Rater:
    external_id = f"guest-{uuid.uuid4()}"
    user = get_user_model().objects.create_user(username=external_id)  # unusable password
    return Rater.objects.create(
        user=user, role=Role.RATER, source=Rater.Source.GUEST, external_id=external_id
    )


def guest_rate_check(*, rater: Rater, ip_hash: str, now: float | None = None) -> None:
    """Guests' requests per hour, per guest and per IP hash (a new session is a new guest, so
    the IP hash is what holds): Throttled (429) over either limit."""
    if rater.source != Rater.Source.GUEST:
        return
    now = time.time() if now is None else now
    limit = settings.PLAYGROUND_GUEST_REQUESTS_PER_HOUR
    keys = [f"playground:rater:{rater.pk}"] + ([f"playground:ip:{ip_hash}"] if ip_hash else [])
    abuse.hourly_limit_check(keys=keys, limit=limit, now=now, what="playground requests")
