"""Real campaigns for reward-model tests: every clip is rendered by the procedural backend,
because a reward model reads audio and placeholder bytes would teach it nothing."""

from __future__ import annotations

import itertools

import pytest

from generation.services import campaign_generate_prompt
from ratings.models import Campaign
from ratings.services import prompt_get_or_create
from tests.factories import CampaignFactory, GeneratorVersionFactory

MOODS = ("calm", "sad", "happy", "dark", "energetic", "dreamy", "tense", "playful")
# Styles in which the two versions below differ at least 1.75-fold in notes per bar (in ambient
# music both are a few held chords, and no listener could tell them apart).
STYLES = ("piano ballad", "techno", "folk song", "rock", "lofi beat", "blues", "pop", "house",
          "reggae")  # fmt: skip
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
        min_listen_seconds=0.2, clip_seconds=clip_seconds,
    )  # fmt: skip
    for text in varied_prompts(prompts):
        prompt = prompt_get_or_create(text=text)
        campaign.prompts.add(prompt)
        campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt.pk)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.ACTIVE
    return campaign


@pytest.fixture
def rendered_campaign():
    return sparse_vs_busy_campaign
