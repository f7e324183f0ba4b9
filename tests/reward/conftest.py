"""Real campaigns for reward-model tests: every clip is rendered by the procedural backend,
because a reward model reads audio and placeholder bytes would teach it nothing."""

from __future__ import annotations

import itertools
import random
from unittest import mock

import numpy as np
import pytest

from generation.music.prompts import prompt_is_held_out
from generation.services import derive_seed, prompt_get_or_create
from ratings import campaigns
from ratings.campaigns import campaign_generate_prompt
from ratings.models import Campaign
from tests.factories import CampaignFactory, GeneratorVersionFactory, vote_on

MOODS = ("calm", "sad", "happy", "dark", "energetic", "dreamy", "tense", "playful")
# Styles in which the two versions below differ at least 1.75-fold in notes per bar (in ambient
# music both are a few held chords, and no listener could tell them apart).
# Over three tempos, eight moods and two seeds the least fold is 1.93 (lofi beat). Reggae's fell
# to 1.72 when the composer's melody got a home register, and the preference test's model then
# ranked 3 of its 10 reggae pairs the wrong way round.
STYLES = ("piano ballad", "techno", "folk song", "rock", "lofi beat", "blues", "pop", "house",
          "metal")  # fmt: skip
# The two versions differ in something a listener hears at once: how many notes there are.
SPARSE = "sparse-version"
BUSY = "busy-version"


TEMPOS = ("", "slow", "fast")


def varied_prompts(count: int) -> list[str]:
    combinations = itertools.product(TEMPOS, MOODS, STYLES)
    return [" ".join(filter(None, words)) for words in itertools.islice(combinations, count)]


def sparse_vs_busy_campaign(
    *,
    prompts: int,
    votes_per_item: int,
    clip_seconds: float = 3.0,
    protocol: str = Campaign.Protocol.PREFERENCE,
) -> Campaign:
    """An evaluate campaign whose two procedural versions differ in note density, with every
    clip rendered and every item formed, ready for votes."""
    sparse = GeneratorVersionFactory(name=SPARSE, config={"density_scale": 0.3})
    busy = GeneratorVersionFactory(name=BUSY, config={"density_scale": 3.0})
    campaign = CampaignFactory(
        purpose=Campaign.Purpose.EVALUATE, protocol=protocol, version_a=sparse, version_b=busy,
        status=Campaign.Status.GENERATING, votes_per_item=votes_per_item,
        min_listen_seconds=0.05, clip_seconds=clip_seconds,
    )  # fmt: skip
    # The listening gate still applies, briefly: each simulated rater waits it out before
    # every vote, so it sets how long the votes take (0.2 s made 96 votes a rater 50 s).
    texts_by_id = {}
    for text in varied_prompts(prompts):
        prompt = prompt_get_or_create(text=text)
        campaign.prompts.add(prompt)
        texts_by_id[prompt.pk] = text

    # A campaign seeds each clip from its own and its prompt's database ids, which differ from
    # run to run; seeded from the prompt's text instead, the same clips (and so the same
    # training data) come out of every run.
    def seed_by_text(campaign_id: int, prompt_id: int, *rest: object) -> int:
        return derive_seed("test campaign", texts_by_id[prompt_id], *rest)

    with mock.patch.object(campaigns, "derive_seed", seed_by_text):
        for prompt_id in texts_by_id:
            campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt_id)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.ACTIVE
    return campaign


def best_possible_accuracy(rows, test_share: float = 0.3) -> float:
    """The accuracy of the raters' true taste (the sparse clip) on the held-out decisive votes:
    the ceiling of any model on exactly these votes, so a test can compare a model with it
    without the vote noise of a few dozen held-out votes in the comparison."""
    hits = []
    for row in rows:
        held_out = prompt_is_held_out(row["prompt_text"], test_share=test_share, split_seed=0)
        if not held_out or row["choice"] not in ("a", "b"):
            continue
        sparse_is_a = row["version_a"] == SPARSE
        hits.append((row["choice"] == "a") == sparse_is_a)
    return float(np.mean(hits))


def vote_with_a_known_preference(campaign: Campaign, raters, p_sparse: float = 0.85) -> None:
    """Votes written directly: each rater prefers the sparse clip with probability p_sparse."""
    rng = random.Random(0)
    # In id order: the same random draw lands on the same pair every run.
    for pair in campaign.pairs.select_related("track_a__generator_version").order_by("pk"):
        for rater in raters:
            sparse_wins = rng.random() < p_sparse
            a_is_sparse = pair.track_a.generator_version.name == SPARSE
            vote_on(pair, rater, "a" if sparse_wins == a_is_sparse else "b")


@pytest.fixture
def rendered_campaign():
    return sparse_vs_busy_campaign
