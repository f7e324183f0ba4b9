"""The simulated raters themselves: their accounts (a user, a rater row and an API token
each), their judging profiles (noise, carelessness, a seeded RNG), and how one answers an
item of each protocol given a taste's P(A preferred)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
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
        spread = round(4 * (sigmoid(self._utility(p_a)) - 0.5))
        return {"A": _clamp_score(3 + spread), "B": _clamp_score(3 - spread)}

    def score_clip(self, match: float) -> int:
        """MOS: one clip scored 1-5 by its own fit to the prompt."""
        if self.careless:
            return self.rng.randint(1, 5)
        noise = self.noise * MOS_NOISE_SCALE * self._logistic()
        return _clamp_score(round(1 + 4 * match + noise))


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
