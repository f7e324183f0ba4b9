"""Simulated raters: synthetic accounts that drive the real rating API over HTTP.

Each simulated rater does what a rater's browser does: lease a pair, fetch both clips, wait out
the listening gate in real time (the server checks it), and vote with an idempotency key. A run
therefore exercises auth, leasing, the listening checks and replays end to end.

Their judgement is an oracle, not a blind human: it reads each clip's generation metadata from
the database by the public id in the clip URL, and a pluggable preference function turns that
into P(the clip shown as A is preferred). Noise and careless raters make the votes realistic.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.contrib.auth import get_user_model
from django.db import connections, transaction
from rest_framework.authtoken.models import Token

from generation.models import Track
from generation.music.prompts import parse_prompt
from ratings.models import Campaign, Rater, Role

NEXT_PATH = "/api/v1/assignments/next/"
VOTES_PATH = "/api/v1/votes/"


@dataclass(frozen=True)
class SimulatedClip:
    """One clip as the oracle rater perceives it: the audio and what generated it."""

    audio_bytes: bytes
    caption: str
    attributes: dict[str, Any]
    generator_version: str


PreferenceFn = Callable[[str, SimulatedClip, SimulatedClip], float]


# --- The default oracle: attribute match plus a population-wide liking -------------------

# What a listener notices first weighs most: the tempo and the instruments. Genre and mood
# are not in the list: they cannot be heard apart from these, and a clip's recorded labels
# are what it was asked for, not what it plays.
MATCH_WEIGHTS = {
    "tempo_bpm": 0.3,
    "instruments": 0.3,
    "mode": 0.2,
    "drums": 0.2,
}
# A tempo this far from the prompt's counts as not matching at all.
TEMPO_TOLERANCE_BPM = 40.0
# Logit per unit of match difference: a clear mismatch (0.5) gives P ~ 0.95.
PREFERENCE_SHARPNESS = 6.0
# The default population also likes a higher, brighter lead line, whatever the prompt: a
# logit per 5 semitones of the lead's mean pitch. The shipped generator plays each genre's
# usual register, so this is a taste it does not already satisfy, and one it can learn both
# in its plan (the declared register) and in its notes.
LEAD_PITCH_LIKING = 0.2  # logits per semitone


@functools.lru_cache(maxsize=4096)
def prompt_attributes(prompt_text: str) -> dict[str, Any]:
    """The attributes a prompt asks for (cached: parsing compiles many patterns)."""
    return dataclasses.asdict(parse_prompt(prompt_text))


def attribute_match(wanted: dict[str, Any], heard: dict[str, Any]) -> float:
    """How well a track's attributes fit the prompt's, from 0 (nothing) to 1 (all)."""
    score = 0.0
    for name, weight in MATCH_WEIGHTS.items():
        if name in wanted and name in heard:
            score += weight * _attribute_similarity(name, wanted[name], heard[name])
        else:
            # Unknown (e.g. a backend that records no attributes): neither fits nor fails.
            score += weight * 0.5
    return score


def _attribute_similarity(name: str, wanted: Any, heard: Any) -> float:
    if name == "tempo_bpm":
        distance = abs(float(wanted) - float(heard))
        return max(0.0, 1.0 - distance / TEMPO_TOLERANCE_BPM)
    if name == "instruments":
        wanted_set, heard_set = set(wanted), set(heard)
        union = wanted_set | heard_set
        return len(wanted_set & heard_set) / len(union) if union else 1.0
    return 1.0 if wanted == heard else 0.0


def clip_match(prompt_text: str, clip: SimulatedClip) -> float:
    return attribute_match(prompt_attributes(prompt_text), clip.attributes)


def heard(clip: SimulatedClip, name: str) -> float | None:
    """One of the listening descriptors of a clip (generation/music/listening.py), or None
    for a clip without notes to measure."""
    value = (clip.attributes.get("listening") or {}).get(name)
    return None if value is None else float(value)


def _difference(clip_a: SimulatedClip, clip_b: SimulatedClip, name: str) -> float:
    """heard(a) - heard(b); 0 (no preference) when either cannot be measured."""
    a, b = heard(clip_a, name), heard(clip_b, name)
    return 0.0 if a is None or b is None else a - b


def prompt_adherence(prompt_text: str, clip_a: SimulatedClip, clip_b: SimulatedClip) -> float:
    """P(A preferred) for raters who only want what the prompt asked for."""
    margin = clip_match(prompt_text, clip_a) - clip_match(prompt_text, clip_b)
    return _sigmoid(PREFERENCE_SHARPNESS * margin)


def default_preference(prompt_text: str, clip_a: SimulatedClip, clip_b: SimulatedClip) -> float:
    """The default population: P(A preferred) = sigmoid(6 (match_a - match_b) + 0.2 (lead
    pitch_a - lead pitch_b)): the clip that fits the prompt better wins, and among clips that
    fit alike the one whose lead sits higher."""
    margin = clip_match(prompt_text, clip_a) - clip_match(prompt_text, clip_b)
    liking = LEAD_PITCH_LIKING * _difference(clip_a, clip_b, "lead_pitch")
    return _sigmoid(PREFERENCE_SHARPNESS * margin + liking)


# --- Other tastes, for checking that the loop learns what it was never tuned on ------------
# Each is a plain function of what a listener hears. Some live in what the plan decides
# (tempo, mode, instruments, drums), some only in the notes (articulation).


def prefers_faster(prompt_text: str, clip_a: SimulatedClip, clip_b: SimulatedClip) -> float:
    """Faster is better, whatever the prompt asks: 8 bpm more is a logit unit."""
    return _sigmoid((clip_a.attributes["tempo_bpm"] - clip_b.attributes["tempo_bpm"]) / 8.0)


def prefers_slower(prompt_text: str, clip_a: SimulatedClip, clip_b: SimulatedClip) -> float:
    """Slower is better, whatever the prompt asks: 8 bpm less is a logit unit."""
    return prefers_faster(prompt_text, clip_b, clip_a)


def prefers_fewer_instruments(
    prompt_text: str, clip_a: SimulatedClip, clip_b: SimulatedClip
) -> float:
    """Sparse arrangements are better: each instrument fewer is 1.5 logit units."""
    count_a = len(clip_a.attributes["instruments"]) + bool(clip_a.attributes.get("drums"))
    count_b = len(clip_b.attributes["instruments"]) + bool(clip_b.attributes.get("drums"))
    return _sigmoid(1.5 * (count_b - count_a))


def prefers_minor(prompt_text: str, clip_a: SimulatedClip, clip_b: SimulatedClip) -> float:
    """Minor keys are better, whatever the prompt asks: a minor clip against a major one
    wins 0.88 of the time."""
    return _sigmoid(2.0 * _difference(clip_a, clip_b, "minor_mode"))


def prefers_higher_register(
    prompt_text: str, clip_a: SimulatedClip, clip_b: SimulatedClip
) -> float:
    """A higher lead line is better: 3 semitones higher is a logit unit."""
    return _sigmoid(_difference(clip_a, clip_b, "lead_pitch") / 3.0)


def prefers_legato(prompt_text: str, clip_a: SimulatedClip, clip_b: SimulatedClip) -> float:
    """Notes held into the next one are better than short, detached ones: a quarter of the
    gap more is 1.5 logit units. Only the notes decide this; no plan token names it."""
    return _sigmoid(6.0 * _difference(clip_a, clip_b, "articulation"))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _logit(p: float) -> float:
    # Clamped so that a certain preference (1.0) stays finite and noise can still act on it.
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


# --- A rater's judgement -------------------------------------------------------------------

# |utility| below this reads as "about the same": identical attributes give ties.
TIE_BAND = 0.15
# A logistic unit in MOS points: at noise 1 the score wobbles by about one point (sd ~0.9).
MOS_NOISE_SCALE = 0.5
CARELESS_CHOICES = (("A", 0.45), ("B", 0.45), ("tie", 0.05), ("both_bad", 0.05))


@dataclass
class SimulatedRater:
    """One synthetic rater. `noise` is the temperature of the logistic choice: 0 always picks
    the preferred clip, 1 follows the preference probability, more flattens it. A careless
    rater ignores the clips and answers at random."""

    username: str
    token: str
    noise: float
    careless: bool
    rng: random.Random

    def _logistic(self) -> float:
        """A standard logistic sample: the noise of a logit choice model."""
        u = self.rng.random()
        return math.log(u / (1 - u)) if 0 < u < 1 else 0.0

    def _utility(self, p_a: float) -> float:
        return _logit(p_a) + self.noise * self._logistic()

    def choose(self, p_a: float) -> str:
        """A preference-protocol answer in screen terms: A, B, tie or both_bad."""
        if self.careless:
            choices, weights = zip(*CARELESS_CHOICES, strict=True)
            return self.rng.choices(choices, weights)[0]
        utility = self._utility(p_a)
        if abs(utility) < TIE_BAND:
            return "tie"
        return "A" if utility > 0 else "B"

    def score_pair(self, p_a: float) -> dict[str, int]:
        """Side-by-side: both clips scored 1-5 around 3, apart by how clear the preference is."""
        if self.careless:
            return {"A": self.rng.randint(1, 5), "B": self.rng.randint(1, 5)}
        spread = round(4 * (_sigmoid(self._utility(p_a)) - 0.5))
        return {"A": _clamp_score(3 + spread), "B": _clamp_score(3 - spread)}

    def score_clip(self, match: float) -> int:
        """MOS: one clip scored 1-5 by its own fit to the prompt."""
        if self.careless:
            return self.rng.randint(1, 5)
        noise = self.noise * MOS_NOISE_SCALE * self._logistic()
        return _clamp_score(round(1 + 4 * match + noise))


def _clamp_score(score: int) -> int:
    return min(max(score, 1), 5)


def rater_judgement(
    *,
    rater: SimulatedRater,
    protocol: str,
    prompt_text: str,
    clips: list[SimulatedClip],
    preference: PreferenceFn,
) -> dict[str, Any]:
    """The answer part of a vote body for the campaign's protocol, in shown-slot terms."""
    if protocol == Campaign.Protocol.MOS:
        return {"scores": {"A": rater.score_clip(clip_match(prompt_text, clips[0]))}}
    # clips are in shown order, so the probability is about the slot the rater calls A.
    p_a = float(preference(prompt_text, clips[0], clips[1]))
    if protocol == Campaign.Protocol.SIDE_BY_SIDE:
        return {"scores": rater.score_pair(p_a)}
    return {"choice": rater.choose(p_a)}


# --- Accounts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedAccount:
    username: str
    token: str  # for the API and the clip URLs it returns


def simulated_raters_ensure(*, campaign_id: int, count: int) -> list[SimulatedAccount]:
    """Create (or reuse) the campaign's synthetic raters, each with an API token."""
    user_model = get_user_model()
    accounts = []
    with transaction.atomic():
        for index in range(1, count + 1):
            user, created = user_model.objects.get_or_create(username=f"sim-{campaign_id}-{index}")
            if created:
                user.set_unusable_password()  # nobody logs in as a simulated rater by hand
                user.save(update_fields=["password"])
            Rater.objects.get_or_create(
                user=user, defaults={"role": Role.RATER, "source": Rater.Source.LOCAL}
            )
            token, _ = Token.objects.get_or_create(user=user)
            accounts.append(SimulatedAccount(user.get_username(), token.key))
    return accounts


def simulated_raters_build(
    *, accounts: list[SimulatedAccount], noise: float, careless_fraction: float, seed: int | None
) -> list[SimulatedRater]:
    """The raters' judging profiles; the same seed picks the same careless raters."""
    master = random.Random(seed)
    careless = set(master.sample(range(len(accounts)), round(careless_fraction * len(accounts))))
    return [
        SimulatedRater(
            username=account.username,
            token=account.token,
            noise=noise,
            careless=index in careless,
            rng=random.Random(master.getrandbits(64)),
        )
        for index, account in enumerate(accounts)
    ]


# --- The run -------------------------------------------------------------------------------


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


def heard_attributes(
    attributes: dict[str, Any], events: list[str], prompt_text: str | None = None
) -> dict[str, Any]:
    """What a listener hears in a clip, in the oracle's terms: its notes measured, never what
    it was asked for (a learned generator records its prompt's attributes): tempo,
    instruments, drums, mode and notes per bar, and, given the prompt, every listening
    descriptor under "listening". A clip without notes (an audio-only backend) keeps its
    recorded attributes: there is nothing else to go by."""
    if not events:
        return attributes
    from generation.music.attributes_measure import measure
    from generation.music.events import events_to_piece
    from generation.music.listening import listening_features

    piece = events_to_piece(events)
    if not piece.notes:
        return {"tempo_bpm": piece.tempo_bpm, "instruments": [], "drums": False,
                "mode": None, "notes_per_bar": 0.0}  # fmt: skip
    measured = measure(piece)
    values: dict[str, Any] = {
        "tempo_bpm": measured.tempo_bpm,
        "instruments": list(measured.programs),
        "drums": measured.drums,
        "mode": measured.mode,
        "notes_per_bar": measured.notes_per_bar,
    }
    if prompt_text is not None:
        values["listening"] = listening_features(parse_prompt(prompt_text), piece)
    return values


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
                try:
                    rater, failures = self._raters.get_nowait()
                except queue.Empty:
                    return
                if not self._budget.take():
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
