"""Anti-abuse on the vote path: salted IP hashes, rate limits per rater and per IP hash, and
flags on stored votes (too fast, bursts, many accounts from one IP hash).

A rate limit refuses the request (429) before anything is stored. A flag never refuses: the
vote is kept with status "flagged", shown to admins and left out of statistics and exports
(`Vote.objects.counted()`) until an admin clears it (the vote admin's "Clear" action,
`quality.votes_clear`). A check that cannot run because its
service is down marks the vote "unverified", never failed: treating an outage as a failed
check would silently drop honest votes for as long as the outage lasts.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.db.models import Case, Count, F, Q, QuerySet, Value, When
from django.http import HttpRequest
from django.utils import timezone
from rest_framework.exceptions import Throttled

from ratings.models import Campaign, Pair, Rater, RaterSession, Vote

logger = logging.getLogger(__name__)

TOO_FAST = "too_fast"
BURST = "burst"
SHARED_IP = "shared_ip"

# --- IP hashes ------------------------------------------------------------------------------


def _ip_key() -> bytes:
    if settings.IP_HASH_SALT:
        return settings.IP_HASH_SALT.encode()
    # A key of its own, so that the hashes say nothing about SECRET_KEY's other uses.
    return hmac.new(settings.SECRET_KEY.encode(), b"ratings.abuse.ip", hashlib.sha256).digest()


def ip_hash(ip: str) -> str:
    """The salted hash stored instead of an IP address ("" when there is no address)."""
    if not ip:
        return ""
    return hmac.new(_ip_key(), ip.encode(), hashlib.sha256).hexdigest()


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or behind TRUSTED_PROXY_COUNT reverse proxies the
    address the outermost trusted proxy saw (entries further left are the client's claims)."""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-min(proxies, len(hops))]
    return request.META.get("REMOTE_ADDR", "")


def request_ip_hash(request: HttpRequest) -> str:
    return ip_hash(client_ip(request))


# --- Rate limits ----------------------------------------------------------------------------


def _hit(key: str, timeout: int) -> int:
    try:
        return cache.incr(key)
    except ValueError:  # no counter yet in this window
        if cache.add(key, 1, timeout):
            return 1
        return cache.incr(key)


def sliding_count(key: str, *, window_seconds: int, now: float) -> float:
    """Count one request under `key` and return the requests of the last `window_seconds`,
    estimated as this fixed window's count plus the previous window's count weighted by the
    share of it still inside the last `window_seconds` (the sliding-window counter of
    Cloudflare's and nginx's limiters). Fixed windows alone let a client send twice the
    limit across a boundary, and whether one more request passes depends on where the
    boundary happens to fall."""
    window, into_window = divmod(now, window_seconds)
    current = _hit(f"{key}:{int(window)}", timeout=2 * window_seconds)
    previous = cache.get(f"{key}:{int(window) - 1}", 0)
    return current + previous * (1 - into_window / window_seconds)


def vote_rate_check(*, rater_id: int, ip_hash: str, now: float | None = None) -> str:
    """Count this vote request against the rater's and the IP hash's sliding one-minute
    windows and raise Throttled (429) over either limit. Returns the vote's verification:
    "unverified" when the cache is unavailable, in which case the vote goes ahead."""
    now = time.time() if now is None else now
    limits = [(f"vote-rate:rater:{rater_id}", settings.VOTE_RATE_LIMIT_PER_MINUTE)]
    if ip_hash:
        limits.append((f"vote-rate:ip:{ip_hash}", settings.VOTE_RATE_LIMIT_PER_IP_PER_MINUTE))
    try:
        counts = [sliding_count(key, window_seconds=60, now=now) for key, _ in limits]
    except Exception:  # any cache outage (connection, timeout, protocol): see the module doc
        logger.warning("Vote rate limiter unavailable; the vote is kept unverified.", exc_info=True)
        return Vote.Verification.UNVERIFIED
    wait = max(1, int(60 - now % 60))
    for count, (key, limit) in zip(counts, limits, strict=True):
        if count > limit:
            who = "you" if ":rater:" in key else "your network"
            raise Throttled(
                wait=wait, detail=f"Too many votes from {who}: at most {limit} a minute."
            )
    return Vote.Verification.VERIFIED


def hourly_limit_check(*, keys: list[str], limit: int, now: float, what: str) -> None:
    """Count one request against each key's sliding one-hour window and raise Throttled (429)
    over the limit. A cache outage lets the request through (logged), as for votes."""
    try:
        counts = [sliding_count(key, window_seconds=3600, now=now) for key in keys]
    except Exception:  # any cache outage: see the module doc
        logger.warning("Rate limiter unavailable; %s go unlimited.", what, exc_info=True)
        return
    if any(count > limit for count in counts):
        wait = max(1, int(3600 - now % 3600))
        raise Throttled(wait=wait, detail=f"Too many {what}: at most {limit} an hour.")


# --- Flags on stored votes ------------------------------------------------------------------


def is_open_recruit(rater: Rater) -> bool:
    """Raters who made their own account (Prolific, MTurk, self-registration) carry an external
    id; accounts an admin made (a lab, scripts) are vouched for and never flagged."""
    return bool(rater.external_id)


def _too_fast(vote: Vote) -> bool:
    """The server already refuses votes faster than the campaign's listening requirement, less
    a slack for the browser's clock. This flags votes inside that slack, and votes faster than
    a share of the clips' full length when a campaign asks for little listening."""
    columns = ("track_a__duration_seconds", "track_b__duration_seconds",
               "campaign__min_listen_seconds", "campaign__listen_to_end")  # fmt: skip
    row = Pair.objects.filter(pk=vote.pair_id).values_list(*columns).get()
    *durations, min_listen_seconds, listen_to_end = row
    durations = [d for d in durations if d is not None]
    rules = Campaign(min_listen_seconds=min_listen_seconds, listen_to_end=listen_to_end)
    required = sum(rules.required_listen_ms(d) for d in durations)
    full = settings.VOTE_TOO_FAST_SHARE * 1000 * sum(durations)
    return vote.elapsed_ms < max(required, full)


def _burst(vote: Vote, now: datetime) -> bool:
    since = now - timedelta(seconds=settings.VOTE_BURST_WINDOW_SECONDS)
    recent = Vote.objects.filter(rater_id=vote.rater_id, created_at__gte=since).count()
    return recent > settings.VOTE_BURST_MAX


def _shared_ip(vote: Vote, ip_hash: str, now: datetime) -> bool:
    """More accounts than allowed voted or joined from this IP hash within the window."""
    if not ip_hash:
        return False
    since = now - timedelta(hours=settings.SHARED_IP_WINDOW_HOURS)
    voters = Vote.objects.filter(ip_hash=ip_hash, created_at__gte=since).values_list("rater_id")
    joiners = RaterSession.objects.filter(ip_hash=ip_hash, started_at__gte=since).values_list(
        "rater_id"
    )
    raters = {row[0] for row in voters.union(joiners)} | {vote.rater_id}
    return len(raters) > settings.SHARED_IP_MAX_RATERS


def vote_flags(*, vote: Vote, ip_hash: str, now: datetime | None = None) -> list[str]:
    """The abuse flags of a freshly stored vote."""
    now = now or timezone.now()
    checks = ((TOO_FAST, lambda: _too_fast(vote)), (BURST, lambda: _burst(vote, now)),
              (SHARED_IP, lambda: _shared_ip(vote, ip_hash, now)))  # fmt: skip
    return [name for name, check in checks if check()]


def vote_screen(
    *, vote: Vote, rater: Rater, ip_hash: str, verification: str, now: datetime | None = None
) -> list[str]:
    """After a vote is stored (with its IP hash, verification and session, all written by the
    vote's own statement): flag it. Only accounts people made themselves are checked, and the
    UPDATE runs only when there is something to record. Returns the flags."""
    if not is_open_recruit(rater):
        return []
    flags: list[str] = []
    # Inside a caller's transaction a failed query must not spoil it: a savepoint then.
    nested = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
    try:
        with nested:
            flags = vote_flags(vote=vote, ip_hash=ip_hash, now=now)
    except DatabaseError:
        logger.warning("Vote flag checks failed; vote %s kept unverified.", vote.pk)
        verification = Vote.Verification.UNVERIFIED
    updates: dict = {}
    if verification != vote.verification:
        updates["verification"] = verification
    if flags:
        # Keep reasons another check may already have written (quality checks).
        existing = Vote.objects.filter(pk=vote.pk).values_list("flags", flat=True).get()
        updates["flags"] = [*existing, *(flag for flag in flags if flag not in existing)]
        updates["status"] = Case(
            When(status=Vote.Status.COUNTED, then=Value(Vote.Status.FLAGGED)),
            default=F("status"),
        )
    if updates:
        Vote.objects.filter(pk=vote.pk).update(**updates)
    return flags


# --- The admin's alert ----------------------------------------------------------------------

RECENT_HOURS = 24
BASELINE_DAYS = 7


@dataclass(frozen=True)
class CountedShare:
    """One campaign's share of counted votes (on rating items) recently and the week before."""

    campaign_id: int
    campaign_name: str
    recent_votes: int
    recent_counted: int
    recent_flagged: int
    recent_unverified: int
    earlier_votes: int
    earlier_counted: int

    @property
    def recent_share(self) -> float | None:
        return self.recent_counted / self.recent_votes if self.recent_votes else None

    @property
    def earlier_share(self) -> float | None:
        return self.earlier_counted / self.earlier_votes if self.earlier_votes else None

    @property
    def alert(self) -> bool:
        """The recent share fell by COUNTED_SHARE_ALERT_DROP or more below the earlier one
        (below 100% without enough earlier votes to compare with)."""
        if self.recent_votes < settings.COUNTED_SHARE_ALERT_MIN_VOTES:
            return False
        baseline = self.earlier_share
        if baseline is None or self.earlier_votes < settings.COUNTED_SHARE_ALERT_MIN_VOTES:
            baseline = 1.0
        return baseline - self.recent_share >= settings.COUNTED_SHARE_ALERT_DROP


def counted_share_by_campaign(*, now: datetime | None = None) -> list[CountedShare]:
    """Campaigns with votes in the last week and a day, alerts first."""
    now = now or timezone.now()
    recent_start = now - timedelta(hours=RECENT_HOURS)
    earlier_start = recent_start - timedelta(days=BASELINE_DAYS)
    recent = Q(created_at__gte=recent_start)
    earlier = Q(created_at__lt=recent_start)
    counted = Q(status=Vote.Status.COUNTED)
    rows = (
        Vote.objects.filter(pair__kind=Pair.Kind.REGULAR, created_at__gte=earlier_start)
        .values("campaign_id", "campaign__name")
        .annotate(
            recent_votes=Count("id", filter=recent),
            recent_counted=Count("id", filter=recent & counted),
            recent_flagged=Count("id", filter=recent & Q(status=Vote.Status.FLAGGED)),
            recent_unverified=Count(
                "id", filter=recent & Q(verification=Vote.Verification.UNVERIFIED)
            ),
            earlier_votes=Count("id", filter=earlier),
            earlier_counted=Count("id", filter=earlier & counted),
        )
        .order_by("campaign_id")
    )
    shares = [
        CountedShare(
            campaign_id=row.pop("campaign_id"), campaign_name=row.pop("campaign__name"), **row
        )
        for row in rows
    ]
    return sorted(shares, key=lambda share: not share.alert)


def flagged_votes_recent(*, limit: int = 50) -> QuerySet[Vote]:
    return (
        Vote.objects.filter(status=Vote.Status.FLAGGED)
        .select_related("campaign", "rater__user")
        .order_by("-created_at")[:limit]
    )
