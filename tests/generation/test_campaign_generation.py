"""Generating a campaign's clips: the right versions and seeds per side, idempotent retries,
and pairs formed per protocol. Rendering is real (FluidSynth); short clips keep it quick."""

import pytest

from generation.models import Track
from generation.services import campaign_generate_prompt, track_generate
from ratings.models import Campaign, Pair
from tests.factories import CampaignFactory, GeneratorVersionFactory, PromptFactory

pytestmark = pytest.mark.django_db


def campaign_with_prompt(**kwargs) -> tuple[Campaign, object]:
    campaign = CampaignFactory(status=Campaign.Status.GENERATING, clip_seconds=3.0, **kwargs)
    prompt = PromptFactory(text="fast techno with drums")
    campaign.prompts.add(prompt)
    return campaign, prompt


def test_a_collect_pair_is_two_different_samples_of_one_version():
    campaign, prompt = campaign_with_prompt()

    campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt.pk)

    pair = Pair.objects.get(campaign=campaign)
    assert pair.track_a.generator_version == pair.track_b.generator_version == campaign.version_a
    assert pair.track_a.seed != pair.track_b.seed
    assert pair.track_a.audio.read() != pair.track_b.audio.read()
    campaign.refresh_from_db()
    assert (campaign.status, campaign.generation_done) == (Campaign.Status.ACTIVE, 2)


def test_an_evaluate_pair_has_one_sample_of_each_version():
    challenger = GeneratorVersionFactory(config={"humanize": 0.6, "variation": 0.8})
    campaign, prompt = campaign_with_prompt(purpose="evaluate", version_b=challenger)

    campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt.pk)

    pair = Pair.objects.get(campaign=campaign)
    assert {pair.track_a.generator_version, pair.track_b.generator_version} == {
        campaign.version_a,
        challenger,
    }
    # Blindness: the two versions' clips last exactly as long as each other.
    assert pair.track_a.duration_seconds == pair.track_b.duration_seconds


def test_a_mos_campaign_rates_each_clip_on_its_own():
    campaign, prompt = campaign_with_prompt(protocol=Campaign.Protocol.MOS)

    campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt.pk)

    items = Pair.objects.filter(campaign=campaign)
    assert items.count() == 2
    assert all(item.track_b_id is None for item in items)


def test_running_the_job_twice_makes_no_second_track_or_pair():
    campaign, prompt = campaign_with_prompt()

    campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt.pk)
    campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt.pk)

    assert Track.objects.count() == 2
    assert Pair.objects.count() == 1
    campaign.refresh_from_db()
    assert campaign.generation_done == 2


def test_track_generate_returns_the_existing_sample_for_the_same_seed():
    version = GeneratorVersionFactory()
    prompt = PromptFactory(text="calm ambient pad")
    first, created = track_generate(prompt=prompt, version=version, seed=7, duration_seconds=2.0)
    again, created_again = track_generate(
        prompt=prompt, version=version, seed=7, duration_seconds=2.0
    )
    assert (created, created_again) == (True, False)
    assert again.pk == first.pk


def test_audio_files_have_opaque_names():
    version = GeneratorVersionFactory(name="secret-version-name")
    prompt = PromptFactory(text="happy folk song")
    track, _ = track_generate(prompt=prompt, version=version, seed=1, duration_seconds=2.0)
    assert track.audio.name == f"audio/{track.public_id.hex}.ogg"
