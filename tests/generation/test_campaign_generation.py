"""Generating a campaign's clips: the right versions and seeds per side, idempotent retries,
and pairs formed per protocol. Rendering is real (FluidSynth); short clips keep it quick."""

from collections import Counter
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from generation.models import Track
from generation.music.events import events_to_piece
from generation.services import derive_seed, track_generate
from ratings import tasks
from ratings.campaigns import (
    campaign_create,
    campaign_generate_prompt,
    campaigns_requeue_stalled,
    variant_axis_for,
)
from ratings.errors import InvalidVote
from ratings.models import Campaign, Pair, Role
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


# --- collect campaigns that teach: a clip and its variant ---


def variant_campaign(texts, **kwargs) -> Campaign:
    version = GeneratorVersionFactory()
    return campaign_create(
        name="teach", purpose="collect", protocol="preference", prompt_texts=texts,
        version_a=version, votes_per_item=1, clip_seconds=3.0, queue=False, **kwargs,
    )  # fmt: skip


def test_a_variant_pair_is_a_clip_and_the_same_clip_changed_along_one_axis():
    campaign = variant_campaign(
        ["fast techno with drums", "slow sad piano ballad", "upbeat jazz with saxophone"],
        variant_axes=["tempo", "drums"], variant_share=1.0,
    )  # fmt: skip

    for prompt in campaign.prompts.all():
        campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt.pk)
        campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt.pk)  # a retry

    assert Track.objects.count() == 6 and Pair.objects.filter(campaign=campaign).count() == 3
    for pair in Pair.objects.filter(campaign=campaign).select_related("track_a", "track_b"):
        original, variant = (
            events_to_piece(pair.track_a.events),
            events_to_piece(pair.track_b.events),
        )
        change = pair.track_b.attributes["variant"]
        assert change["of_track"] == pair.track_a.pk and change["axis"] in ("tempo", "drums")
        assert pair.track_b.generator_version == pair.track_a.generator_version
        assert pair.track_b.duration_seconds == pair.track_a.duration_seconds  # still blind
        if change["axis"] == "tempo":
            assert variant.tempo_bpm == change["tempo_bpm"] != original.tempo_bpm
            assert variant.notes == original.notes
        else:
            has_drums = any(note.is_drum for note in variant.notes)
            assert has_drums == change["drums"] != any(n.is_drum for n in original.notes)
        assert pair.track_a.audio.read() != pair.track_b.audio.read()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.ACTIVE


def test_the_asked_share_of_prompts_get_a_variant_pair_spread_over_the_axes():
    # The choice is a pure function of the campaign's and the prompt's ids: fixed ids here.
    campaign = SimpleNamespace(
        pk=7, purpose="collect", variant_axes=["tempo", "drums", "density"], variant_share=0.3
    )
    chosen = [variant_axis_for(campaign, SimpleNamespace(pk=pk)) for pk in range(1, 1001)]

    axes = Counter(axis for axis in chosen if axis is not None)
    assert 240 <= sum(axes.values()) <= 360  # 300 expected; the bounds are 4 sd away
    assert set(axes) == {"tempo", "drums", "density"} and min(axes.values()) >= 60
    assert chosen == [variant_axis_for(campaign, SimpleNamespace(pk=pk)) for pk in range(1, 1001)]
    campaign.purpose = "evaluate"  # an evaluate campaign compares versions, never variants
    assert variant_axis_for(campaign, SimpleNamespace(pk=1)) is None


@pytest.mark.parametrize(
    "asked",
    [
        {"variant_axes": ["timbre"]},
        {"variant_axes": ["tempo"], "purpose": "evaluate"},
        {"variant_axes": ["tempo"], "protocol": "mos"},
        {"variant_axes": ["tempo"], "variant_share": 0},
        {"variant_axes": ["tempo"], "backend": "musicgen"},
    ],
)
def test_variants_that_cannot_be_made_are_refused_and_nothing_is_stored(asked):
    asked = dict(asked)
    version = GeneratorVersionFactory(backend=asked.pop("backend", "procedural"))
    other = GeneratorVersionFactory() if asked.get("purpose") == "evaluate" else None
    arguments = {"name": "bad", "purpose": "collect", "protocol": "preference",
                 "prompt_texts": ["fast techno"], "version_a": version, "version_b": other,
                 "queue": False} | asked  # fmt: skip

    with pytest.raises(InvalidVote):
        campaign_create(**arguments)

    assert not Campaign.objects.exists()


@pytest.fixture
def queued(monkeypatch) -> list[tuple[int, int]]:
    """The (campaign, prompt) of each prompt sent for generation, in order (a worker test
    runs them)."""
    sent: list[tuple[int, int]] = []

    def send(campaign_id: int, prompt_ids: list[int]) -> None:
        sent.extend((campaign_id, prompt_id) for prompt_id in prompt_ids)

    monkeypatch.setattr(tasks.generate_campaign_prompts, "delay_on_commit", send)
    return sent


def test_progress_counts_the_clips_that_exist_after_a_retry():
    """A worker died after the prompt's first clip; the retry makes only the second, and the
    campaign still counts both."""
    campaign, prompt = campaign_with_prompt()
    seed_a = derive_seed(campaign.pk, prompt.pk, "a")
    track_generate(prompt=prompt, version=campaign.version_a, seed=seed_a, duration_seconds=3.0)

    campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt.pk)

    campaign.refresh_from_db()
    assert Track.objects.count() == 2
    assert (campaign.status, campaign.generation_done) == (Campaign.Status.ACTIVE, 2)


def test_a_stalled_campaign_is_queued_again_for_the_prompts_it_lacks(queued, settings):
    settings.GENERATION_STALE_SECONDS = 60
    version = GeneratorVersionFactory()
    texts = ["fast techno with drums", "calm ambient pad", "sad piano"]
    campaign = campaign_create(
        name="c", purpose="collect", protocol="preference", prompt_texts=texts,
        version_a=version, clip_seconds=2.0,
    )  # fmt: skip
    first = campaign.prompts.get(text=texts[0])
    campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=first.pk)
    queued.clear()  # what campaign_create sent was lost with the worker

    assert campaigns_requeue_stalled() == {}  # the heartbeat is fresh: prompts may be running
    assert queued == []

    Campaign.objects.filter(pk=campaign.pk).update(
        generation_heartbeat_at=timezone.now() - timedelta(seconds=61)
    )
    lacking = sorted(campaign.prompts.exclude(pk=first.pk).values_list("pk", flat=True))
    assert campaigns_requeue_stalled() == {campaign.pk: lacking}
    assert queued == [(campaign.pk, pk) for pk in lacking]
    assert campaigns_requeue_stalled() == {}  # re-sent at most once per stale interval

    for _, prompt_id in queued:
        campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt_id)
    campaign.refresh_from_db()
    assert (campaign.status, campaign.generation_done) == (Campaign.Status.ACTIVE, 6)


def test_a_campaign_whose_items_all_exist_but_stayed_generating_is_activated(queued, settings):
    settings.GENERATION_STALE_SECONDS = 60
    campaign, prompt = campaign_with_prompt()
    campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt.pk)
    Campaign.objects.filter(pk=campaign.pk).update(
        status=Campaign.Status.GENERATING,
        generation_heartbeat_at=timezone.now() - timedelta(hours=1),
    )

    assert campaigns_requeue_stalled() == {campaign.pk: []}

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.ACTIVE and queued == []


def test_an_admin_re_queues_a_failed_campaign_and_leaves_an_active_one(queued, client, make_rater):
    failed, lacking = campaign_with_prompt()
    Campaign.objects.filter(pk=failed.pk).update(
        status=Campaign.Status.FAILED, generation_error="prompt 3: OSError()"
    )
    active = CampaignFactory(status=Campaign.Status.ACTIVE)
    admin = make_rater(role=Role.ADMIN).user
    admin.is_staff = admin.is_superuser = True
    admin.save()
    client.force_login(admin)

    response = client.post(
        "/admin/ratings/campaign/",
        {"action": "requeue_generation", "_selected_action": [failed.pk, active.pk]},
    )

    assert response.status_code == 302
    failed.refresh_from_db()
    assert (failed.status, failed.generation_error) == (Campaign.Status.GENERATING, "")
    assert queued == [(failed.pk, lacking.pk)]
    assert Campaign.objects.get(pk=active.pk).status == Campaign.Status.ACTIVE


def test_a_learned_generator_s_prompts_are_generated_in_batches_of_clips_made_as_alone(
    monkeypatch, settings
):
    """The learned generator samples many clips at once several times faster than one by one,
    so its campaigns send several prompts per task; each clip is still the one the generator
    makes for its seed alone. Other backends get one prompt per task."""
    from generation.models import GeneratorVersion
    from generation.music.backends import SHIPPED_GENERATOR, get_backend

    settings.GENERATION_PROMPTS_PER_TASK = 2
    sent: list[list[int]] = []
    monkeypatch.setattr(
        tasks.generate_campaign_prompts, "delay_on_commit", lambda _, ids: sent.append(ids)
    )
    learned = GeneratorVersion.objects.create(
        name="learned", backend="symbolic", checkpoint=SHIPPED_GENERATOR
    )
    texts = ["slow sad piano ballad", "fast techno with drums", "calm lofi hip hop beat"]
    campaign = campaign_create(
        name="batched", purpose="collect", protocol="preference", prompt_texts=texts,
        version_a=learned, clip_seconds=3.0,
    )  # fmt: skip
    assert [len(prompt_ids) for prompt_ids in sent] == [2, 1]

    for prompt_ids in sent:
        tasks.generate_campaign_prompts(campaign.pk, prompt_ids)

    campaign.refresh_from_db()
    assert (campaign.status, campaign.generation_done) == (Campaign.Status.ACTIVE, 6)
    backend = get_backend("symbolic", learned.backend_config())
    for track in Track.objects.filter(generator_version=learned).select_related("prompt"):
        alone = backend.generate(track.prompt.text, seed=track.seed, duration_seconds=3.0)
        assert track.events == alone.events

    sent.clear()
    campaign_create(
        name="procedural", purpose="collect", protocol="preference", prompt_texts=texts,
        version_a=GeneratorVersionFactory(), clip_seconds=3.0,
    )  # fmt: skip
    assert [len(prompt_ids) for prompt_ids in sent] == [1, 1, 1]
