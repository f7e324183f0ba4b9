"""Check items with a known answer, made from the campaign's own generator so they sound (and
are encoded) like its rating items:

- gold: a generated clip for one of the campaign's prompts against noise of the same length and
  loudness; the music is the better clip. In a MOS campaign the noise alone is the item, and
  the known answer is "bad" (1-2).
- qualification: a generated clip against the same clip 20 dB quieter, under the question
  "Which clip is louder?" (two-clip protocols only).

Trap items need a clip that speaks the answer; there is no speech synthesis here, so admins
upload those clips and mark their pairs in the admin.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
from django.core.files.base import ContentFile
from django.db import transaction

from generation.models import Prompt, Track
from generation.services import derive_seed, prompt_get_or_create, track_generate
from ratings.models import Campaign, Pair
from ratings.quality import CHECK_VOTES_WANTED

LOUDNESS_QUESTION = "Which clip is louder?"
LOUDNESS_QUESTION_SCORED = "Give the louder clip the higher score."
QUIETER_DB = 20.0
TrackMaker = Callable[..., tuple[Track, bool]]


class CheckItemError(ValueError):
    """A check item that cannot be made for this campaign."""


def check_items_create(
    *,
    campaign: Campaign,
    gold: int = 0,
    qualification: int = 0,
    make_track: TrackMaker = track_generate,
) -> list[Pair]:
    """Add gold and qualification items to a campaign, all or none (the track maker renders
    clips; tests pass one that does not). Returns the new pairs."""
    if qualification and campaign.protocol == Campaign.Protocol.MOS:
        raise CheckItemError("qualification items compare two clips; a MOS campaign has one")
    prompts = list(campaign.prompts.order_by("id"))
    if (gold or qualification) and not prompts:
        raise CheckItemError("the campaign has no prompts to make check items from")
    # Numbered after the items made before, so running this again adds new clips.
    made = Pair.objects.filter(campaign=campaign).exclude(kind=Pair.Kind.REGULAR).count()
    rng = random.Random(derive_seed(campaign.pk, "checks", made))
    question = (
        LOUDNESS_QUESTION
        if campaign.protocol == Campaign.Protocol.PREFERENCE
        else LOUDNESS_QUESTION_SCORED
    )
    with transaction.atomic():
        pairs = [
            _gold_item(campaign, prompts[i % len(prompts)], made + i, rng, make_track)
            for i in range(gold)
        ]
        pairs += [
            _loudness_item(
                campaign, prompts[i % len(prompts)], question, made + gold + i, rng, make_track
            )
            for i in range(qualification)
        ]
    return pairs


def _music(campaign: Campaign, prompt: Prompt, label: str, make_track: TrackMaker) -> Track:
    track, _ = make_track(
        prompt=prompt,
        version=campaign.version_a,
        seed=derive_seed(campaign.pk, prompt.pk, label),
        duration_seconds=campaign.clip_seconds,
    )
    return track


def _gold_item(
    campaign: Campaign, prompt: Prompt, index: int, rng: random.Random, make_track: TrackMaker
) -> Pair:
    music = _music(campaign, prompt, f"gold-{index}", make_track)
    noise = _derived_track(music, f"noise-{index}", _noise_like)
    if campaign.protocol == Campaign.Protocol.MOS:
        return _check_pair(campaign, prompt, Pair.Kind.GOLD, (noise, None), "b")
    if rng.random() < 0.5:
        return _check_pair(campaign, prompt, Pair.Kind.GOLD, (music, noise), "a")
    return _check_pair(campaign, prompt, Pair.Kind.GOLD, (noise, music), "b")


def _loudness_item(
    campaign: Campaign,
    source: Prompt,
    question: str,
    index: int,
    rng: random.Random,
    make_track: TrackMaker,
) -> Pair:
    loud = _music(campaign, source, f"qualification-{index}", make_track)
    quiet = _derived_track(loud, f"quiet-{index}", _quieter)
    prompt = prompt_get_or_create(text=question)
    if rng.random() < 0.5:
        return _check_pair(campaign, prompt, Pair.Kind.QUALIFICATION, (loud, quiet), "a")
    return _check_pair(campaign, prompt, Pair.Kind.QUALIFICATION, (quiet, loud), "b")


def _check_pair(
    campaign: Campaign, prompt: Prompt, kind: str, tracks: tuple, expected: str
) -> Pair:
    track_a, track_b = tracks
    return Pair.objects.create(
        campaign=campaign, prompt=prompt, track_a=track_a, track_b=track_b, kind=kind,
        expected_choice=expected, votes_wanted=CHECK_VOTES_WANTED,
    )  # fmt: skip


def _derived_track(source: Track, label: str, transform: Callable) -> Track:
    """A clip made from another one's audio, stored like a generated clip (same codec, rate
    and length) so nothing but its sound tells it apart."""
    from generation.music.render import decode_audio

    with source.audio.open("rb") as file:
        audio, sample_rate = decode_audio(file.read())
    data = transform(audio, sample_rate)
    seed = derive_seed(source.pk, label)
    existing = Track.objects.filter(
        prompt=source.prompt, generator_version=source.generator_version, seed=seed
    ).first()
    if existing is not None:
        return existing
    track = Track(
        prompt=source.prompt, generator_version=source.generator_version, seed=seed,
        mime_type="audio/ogg", duration_seconds=source.duration_seconds,
        sample_rate=source.sample_rate,
    )  # fmt: skip
    track.audio.save("clip.ogg", ContentFile(data), save=False)
    track.save()
    return track


def _noise_like(audio: np.ndarray, sample_rate: int) -> bytes:
    from generation.music.render import encode_normalized

    noise = np.random.default_rng(len(audio)).uniform(-0.5, 0.5, audio.shape)
    return encode_normalized(noise.astype(np.float32), sample_rate)


def _quieter(audio: np.ndarray, sample_rate: int) -> bytes:
    from generation.music.render import encode_ogg_opus

    return encode_ogg_opus(audio * 10 ** (-QUIETER_DB / 20), sample_rate)
