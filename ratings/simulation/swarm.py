"""The swarm: simulated raters driving the real rating API over HTTP, concurrently.

Each simulated rater does what a rater's browser does: lease a pair, fetch both clips, wait out
the listening gate in real time (the server checks it), and vote with an idempotency key. A run
therefore exercises auth, leasing, the listening checks and replays end to end. For the
raters' judgement (`ratings.simulation.tastes`), the swarm looks each clip up in the database
by the public id in its URL: the oracle judges what the clip plays, not its audio.
"""

from __future__ import annotations

import enum
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.db import connections

from generation.models import Track
from ratings.models import Campaign
from ratings.simulation.raters import SimulatedRater, rater_judgement
from ratings.simulation.tastes import (
    PreferenceFn,
    SimulatedClip,
    default_preference,
    heard_attributes,
)

NEXT_PATH = "/api/v1/assignments/next/"
VOTES_PATH = "/api/v1/votes/"


@dataclass(frozen=True)
class SimulationConfig:
    campaign_id: int
    votes: int
    base_url: str = "http://127.0.0.1:8000"
    preference: PreferenceFn = default_preference
    concurrency: int = 16
    # Waited beyond the required listening time: clocks and the lease round trip differ.
    listen_margin_ms: int = 50
    timeout_seconds: float = 30.0
    vote_attempts: int = 3


@dataclass
class SimulationReport:
    votes_cast: int = 0
    replays: int = 0
    raters_voted: set[str] = field(default_factory=set)
    raters_exhausted: int = 0
    raters_gave_up: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    audio_bytes: int = 0
    elapsed_seconds: float = 0.0

    def summary(self) -> str:
        rate = self.votes_cast / self.elapsed_seconds if self.elapsed_seconds else 0.0
        lines = [
            f"votes cast: {self.votes_cast} ({self.replays} answered as idempotent replays) "
            f"by {len(self.raters_voted)} raters in {self.elapsed_seconds:.1f} s "
            f"({rate:.2f} votes/s)",
            f"raters with nothing left to rate: {self.raters_exhausted}; "
            f"raters who gave up after repeated refusals or errors: {self.raters_gave_up}",
            f"audio fetched: {self.audio_bytes} bytes",
        ]
        for title, counts in (
            ("refusals", self.refusals),
            ("server errors (5xx)", self.server_errors),
            ("transport errors", self.transport_errors),
        ):
            detail = ", ".join(f"{key}: {n}" for key, n in sorted(counts.items())) or "none"
            lines.append(f"{title}: {detail}")
        return "\n".join(lines)


class _Outcome(enum.Enum):
    VOTED = "voted"
    EXHAUSTED = "exhausted"  # a 204: nothing left for this rater
    REFUSED = "refused"  # a 4xx; the rater tries again
    FAILED = "failed"  # 5xx or transport error


class _VoteBudget:
    """The votes still to cast, shared by all workers: taken before a lease, given back when
    the cycle ends without a vote, so exactly the requested number is cast."""

    def __init__(self, total: int) -> None:
        self._left = total
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._left += 1


class _TrackCatalog:
    """The oracle's view of the database: prompt text and generation metadata per clip."""

    def __init__(self) -> None:
        self._cache: dict[uuid.UUID, tuple[str, str, dict[str, Any], str]] = {}
        self._lock = threading.Lock()

    def lookup(self, public_id: uuid.UUID) -> tuple[str, str, dict[str, Any], str]:
        """(prompt text, caption, attributes, generator version name) of one clip."""
        with self._lock:
            cached = self._cache.get(public_id)
        if cached is None:
            track = Track.objects.select_related("prompt", "generator_version").get(
                public_id=public_id
            )
            cached = (
                track.prompt.text,
                track.caption,
                heard_attributes(track.attributes or {}, track.events or [], track.prompt.text),
                track.generator_version.name,
            )
            with self._lock:
                self._cache[public_id] = cached
        return cached


def public_id_from_clip_url(url: str) -> uuid.UUID:
    return uuid.UUID(url.rstrip("/").rsplit("/", 1)[-1])


# Consecutive cycles without a vote after which a rater gives up, so a broken server or a
# refusing campaign ends the run instead of spinning.
MAX_FAILURES_PER_RATER = 5


class RaterSwarm:
    """Runs raters concurrently on a thread pool: each worker takes a rater from a shared
    queue, runs one lease-listen-vote cycle and puts the rater back unless it is done."""

    def __init__(
        self,
        *,
        config: SimulationConfig,
        raters: list[SimulatedRater],
        on_vote: Callable[[], object] = lambda: None,
    ) -> None:
        self.config = config
        self.report = SimulationReport()
        self._raters: queue.SimpleQueue[tuple[SimulatedRater, int]] = queue.SimpleQueue()
        for rater in raters:
            self._raters.put((rater, 0))
        self._budget = _VoteBudget(config.votes)
        self._catalog = _TrackCatalog()
        self._lock = threading.Lock()
        self._on_vote = on_vote
        self._protocol = Campaign.objects.values_list("protocol", flat=True).get(
            pk=config.campaign_id
        )
        self._client = httpx.Client(
            base_url=config.base_url,
            timeout=config.timeout_seconds,
            limits=httpx.Limits(max_connections=2 * config.concurrency),
        )

    def run(self) -> SimulationReport:
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
                for future in [pool.submit(self._worker) for _ in range(self.config.concurrency)]:
                    future.result()
        finally:
            self._client.close()
        self.report.elapsed_seconds = time.monotonic() - started
        return self.report

    def _worker(self) -> None:
        try:
            while True:
                # The budget first, then a rater: a worker that took a rater and then found
                # the budget spent would end with that rater in hand, and if the cycle that
                # held the last vote then gave it back (its rater had nothing left), the
                # rater who still owed votes was gone (one vote short, now and then).
                if not self._budget.take():
                    return
                try:
                    rater, failures = self._raters.get_nowait()
                except queue.Empty:
                    self._budget.give_back()
                    return
                outcome = self._cycle(rater)
                if outcome is not _Outcome.VOTED:
                    self._budget.give_back()
                self._requeue(rater, failures, outcome)
        finally:
            # The oracle's lookups opened this thread's own connection; do not leak it.
            connections.close_all()

    def _requeue(self, rater: SimulatedRater, failures: int, outcome: _Outcome) -> None:
        if outcome is _Outcome.EXHAUSTED:
            with self._lock:
                self.report.raters_exhausted += 1
            return
        # Refusals count as failures too, or a rater whose every request is refused (say,
        # with a 403) would loop for ever; a vote starts the count afresh.
        failures = 0 if outcome is _Outcome.VOTED else failures + 1
        if failures < MAX_FAILURES_PER_RATER:
            self._raters.put((rater, failures))
        else:
            with self._lock:
                self.report.raters_gave_up += 1

    def _cycle(self, rater: SimulatedRater) -> _Outcome:
        lease = self._request(rater, "GET", NEXT_PATH, params={"campaign": self.config.campaign_id})
        if lease is None or lease.status_code >= 500:
            return _Outcome.FAILED
        if lease.status_code == 204:
            return _Outcome.EXHAUSTED
        if lease.status_code != 200:
            self._refused("GET next", lease)
            return _Outcome.REFUSED
        # The server stamped served_at before answering, so waiting from here is enough.
        leased_at = time.monotonic()
        payload = lease.json()
        heard = self._listen(rater, payload["clips"])
        if heard is None:
            return _Outcome.FAILED
        body = self._vote_body(rater, payload, *heard)
        self._wait_listening(leased_at, payload["clips"])
        return self._vote(rater, body)

    def _vote_body(
        self,
        rater: SimulatedRater,
        payload: dict[str, Any],
        prompt_text: str,
        clips: list[SimulatedClip],
    ) -> dict[str, Any]:
        answer = rater_judgement(
            rater=rater,
            protocol=payload.get("protocol", self._protocol),
            prompt_text=prompt_text,
            clips=clips,
            preference=self.config.preference,
        )
        return {
            "assignment": payload["assignment"],
            "idempotency_key": str(uuid.uuid4()),
            # Reported as exactly what was required: the wait above covers their sum.
            "listen_ms": {clip["slot"]: clip["required_listen_ms"] for clip in payload["clips"]},
            **answer,
        }

    def _listen(
        self, rater: SimulatedRater, shown: list[dict[str, Any]]
    ) -> tuple[str, list[SimulatedClip]] | None:
        """Fetch each shown clip's audio over HTTP and pair it with its metadata, in the
        shown order. The bytes are not decoded: they only have to arrive."""
        clips, prompt_text = [], ""
        for shown_clip in shown:
            response = self._request(rater, "GET", shown_clip["url"])
            if response is None or response.status_code != 200:
                if response is not None and response.status_code < 500:
                    self._refused("GET clip", response)
                return None
            public_id = public_id_from_clip_url(shown_clip["url"])
            prompt_text, caption, attributes, version = self._catalog.lookup(public_id)
            audio = response.content
            with self._lock:
                self.report.audio_bytes += len(audio)
            clips.append(SimulatedClip(audio, caption, attributes, version))
        return prompt_text, clips

    def _wait_listening(self, leased_at: float, shown: list[dict[str, Any]]) -> None:
        required_ms = sum(clip["required_listen_ms"] for clip in shown)
        wake_at = leased_at + (required_ms + self.config.listen_margin_ms) / 1000
        time.sleep(max(0.0, wake_at - time.monotonic()))

    def _vote(self, rater: SimulatedRater, body: dict[str, Any]) -> _Outcome:
        """POST the vote; a lost connection or a throttle is retried with the same key, which
        the server answers as a replay instead of a second vote."""
        for _ in range(self.config.vote_attempts):
            response = self._request(rater, "POST", VOTES_PATH, json=body)
            if response is None or response.status_code >= 500:
                continue
            if response.status_code == 429:
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status_code in (200, 201):
                self._voted(rater, replay=response.status_code == 200)
                return _Outcome.VOTED
            self._refused("POST vote", response)
            return _Outcome.REFUSED
        return _Outcome.FAILED

    def _request(
        self, rater: SimulatedRater, method: str, url: str, **kwargs: Any
    ) -> httpx.Response | None:
        """One HTTP request as this rater; 5xx and transport errors are counted here."""
        headers = {"Authorization": f"Token {rater.token}"}
        label = f"{method} {_route_label(url)}"
        try:
            response = self._client.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            self._tally("transport_errors", f"{label}: {type(exc).__name__}")
            return None
        if response.status_code >= 500:
            self._tally("server_errors", f"{label} {response.status_code}")
        return response

    def _refused(self, label: str, response: httpx.Response) -> None:
        try:
            code = response.json().get("error", "")
        except ValueError:
            code = ""
        self._tally("refusals", f"{label} {response.status_code} {code}".strip())

    def _voted(self, rater: SimulatedRater, *, replay: bool) -> None:
        with self._lock:
            self.report.votes_cast += 1
            self.report.replays += int(replay)
            self.report.raters_voted.add(rater.username)
            self._on_vote()  # under the lock: progress bars are not thread-safe

    def _tally(self, counter: str, key: str) -> None:
        with self._lock:
            getattr(self.report, counter)[key] += 1


def _route_label(url: str) -> str:
    if url.startswith(NEXT_PATH):
        return "next"
    if url.startswith(VOTES_PATH):
        return "vote"
    return "clip"
