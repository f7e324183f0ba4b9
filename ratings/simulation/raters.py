"""The simulated raters themselves: their accounts (a user, a rater row and an API token
each), their judging profiles (noise, carelessness, a seeded RNG), and how one answers an
item of each protocol given a taste's P(A preferred)."""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authtoken.models import Token

from ratings.models import Campaign, Rater, Role
from ratings.simulation.tastes import PreferenceFn, SimulatedClip, clip_match, sigmoid

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
    rater ignores the clips and answers at random.

    An answer to clips (`rater_judgement`) is drawn from a generator seeded by the rater (the
    state of `rng`), the prompt and what the clips are, in an order that does not depend on the
    screen: the same rater gives the same answer to the same pair whenever it is served and
    whichever side each clip is shown on. So a seeded simulation casts the same votes however
    its raters' requests interleave (the server shows sides at random, by design). A caller
    with no clips passes no generator, and `rng` itself is drawn from in turn."""

    username: str
    token: str
    noise: float
    careless: bool
    rng: random.Random
    seed: int = field(init=False)

    def __post_init__(self) -> None:
        # From the generator's state, not a draw, so callers drawing from `rng` in turn get
        # the sequence they always got.
        self.seed = int.from_bytes(hashlib.sha256(repr(self.rng.getstate()).encode()).digest()[:8])

    def draws(self, prompt_text: str, clips: list[SimulatedClip]) -> tuple[random.Random, bool]:
        """The generator of this rater's answer to these clips, and whether the clips are
        shown in the reverse of the order the draws are about (A is the second clip)."""
        digests = [_identity(clip) for clip in clips]
        key = hashlib.sha256(f"{self.seed}\0{prompt_text}".encode())
        for digest in sorted(digests):
            key.update(digest)
        return random.Random(key.digest()), len(digests) == 2 and digests[0] > digests[1]

    def choose(self, p_a: float, rng: random.Random | None = None, flipped: bool = False) -> str:
        """A preference-protocol answer in screen terms: A, B, tie or both_bad."""
        rng = rng or self.rng
        if self.careless:
            choices, weights = zip(*CARELESS_CHOICES, strict=True)
            return _on_screen(rng.choices(choices, weights)[0], flipped)
        utility = self._utility(p_a, rng, flipped)
        if abs(utility) < TIE_BAND:
            return "tie"
        return "A" if utility > 0 else "B"

    def score_pair(
        self, p_a: float, rng: random.Random | None = None, flipped: bool = False
    ) -> dict[str, int]:
        """Side-by-side: both clips scored 1-5 around 3, apart by how clear the preference is."""
        rng = rng or self.rng
        if self.careless:
            first, second = rng.randint(1, 5), rng.randint(1, 5)
            return {"A": second, "B": first} if flipped else {"A": first, "B": second}
        spread = round(4 * (sigmoid(self._utility(p_a, rng, flipped)) - 0.5))
        return {"A": _clamp_score(3 + spread), "B": _clamp_score(3 - spread)}

    def score_clip(self, match: float, rng: random.Random | None = None) -> int:
        """MOS: one clip scored 1-5 by its own fit to the prompt."""
        rng = rng or self.rng
        if self.careless:
            return rng.randint(1, 5)
        noise = self.noise * MOS_NOISE_SCALE * _logistic(rng)
        return _clamp_score(round(1 + 4 * match + noise))

    def _utility(self, p_a: float, rng: random.Random, flipped: bool) -> float:
        # The noise is drawn for the clips in their own order and turns sign with the screen,
        # so the utility of the shown A is minus that of the shown B, whichever is shown first.
        noise = _logistic(rng)
        return _logit(p_a) + self.noise * (-noise if flipped else noise)


def _logistic(rng: random.Random) -> float:
    """A standard logistic sample: the noise of a logit choice model."""
    u = rng.random()
    return math.log(u / (1 - u)) if 0 < u < 1 else 0.0


def _identity(clip: SimulatedClip) -> bytes:
    """What a clip is, the same in every run: what made it and what it plays. Not its audio
    bytes, which an encoder may stamp differently each time (an Ogg stream's serial number)."""
    described = json.dumps([clip.generator_version, clip.caption, clip.attributes],
                           sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(described.encode()).digest()


def _on_screen(choice: str, flipped: bool) -> str:
    return {"A": "B", "B": "A"}.get(choice, choice) if flipped else choice


def _logit(p: float) -> float:
    # Clamped so that a certain preference (1.0) stays finite and noise can still act on it.
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


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
    rng, flipped = rater.draws(prompt_text, clips)
    if protocol == Campaign.Protocol.MOS:
        return {"scores": {"A": rater.score_clip(clip_match(prompt_text, clips[0]), rng)}}
    # clips are in shown order, so the probability is about the slot the rater calls A.
    p_a = float(preference(prompt_text, clips[0], clips[1]))
    if protocol == Campaign.Protocol.SIDE_BY_SIDE:
        return {"scores": rater.score_pair(p_a, rng, flipped)}
    return {"choice": rater.choose(p_a, rng, flipped)}


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
