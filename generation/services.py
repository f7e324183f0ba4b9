"""Writes of the generation app: rendering tracks and forming a campaign's pairs."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import F

from generation.models import GeneratorVersion, Track
from generation.music.backends import (
    PARENT_GENERATOR,
    SHIPPED_GENERATOR,
    GeneratedClip,
    get_backend,
)
from ratings.models import Campaign, Pair, Prompt

logger = logging.getLogger(__name__)


# The shipped learned generators' version names: the planned generator, the default, and its
# parent, the first learned generator (kept: votes and runs of existing databases use it).
SHIPPED_VERSION_NAME = "planned-small-v1"
PARENT_VERSION_NAME = "symbolic-small-v1"


def shipped_evaluation(checkpoint: str) -> dict:
    """The held-out evaluation stored beside a shipped checkpoint (`<name>.json`, written by
    `train_generator --export`), readable without loading the model; {} if there is none."""
    sidecar = (Path(settings.BASE_DIR) / checkpoint).with_suffix(".json")
    return json.loads(sidecar.read_text()) if sidecar.exists() else {}


def shipped_version_register() -> GeneratorVersion | None:
    """The learned generator the repository ships, registered once as an active version, with
    the first learned generator registered as its parent (retired: the planned one replaces
    it for new collection). None if the checkpoint file is absent. Existing rows are kept as
    they are, so a database made before the planned generator keeps its versions."""
    if not (Path(settings.BASE_DIR) / SHIPPED_GENERATOR).exists():
        return None
    with transaction.atomic():
        parent = None
        if (Path(settings.BASE_DIR) / PARENT_GENERATOR).exists():
            parent, _ = GeneratorVersion.objects.get_or_create(
                name=PARENT_VERSION_NAME,
                defaults={
                    "backend": "symbolic",
                    "checkpoint": PARENT_GENERATOR,
                    "status": GeneratorVersion.Status.RETIRED,
                    "metrics": shipped_evaluation(PARENT_GENERATOR),
                },
            )
        version, _ = GeneratorVersion.objects.get_or_create(
            name=SHIPPED_VERSION_NAME,
            defaults={
                "backend": "symbolic",
                "checkpoint": SHIPPED_GENERATOR,
                "status": GeneratorVersion.Status.ACTIVE,
                "parent": parent,
                "metrics": shipped_evaluation(SHIPPED_GENERATOR),
            },
        )
    return version


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from the parts, so a retried job regenerates the same sample."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def track_generate(
    *, prompt: Prompt, version: GeneratorVersion, seed: int, duration_seconds: float
) -> tuple[Track, bool]:
    """Render one clip, or return the one already made for (prompt, version, seed)."""
    existing = Track.objects.filter(prompt=prompt, generator_version=version, seed=seed).first()
    if existing is not None:
        return existing, False
    clip = get_backend(version.backend, version.backend_config()).generate(
        prompt.text, seed=seed, duration_seconds=duration_seconds
    )
    return _track_store(prompt, version, seed, clip, clip.attributes)


def track_variant(
    *, track: Track, axis: str, seed: int, duration_seconds: float
) -> tuple[Track, bool]:
    """A clip that differs from `track` along one audible axis (`generation.music.variants`),
    stored as a track of the same prompt and version, the change recorded in its attributes
    under "variant"; or the one already made with this seed."""
    from generation.music.backends import encode_clip
    from generation.music.events import events_to_piece
    from generation.music.variants import variant_piece

    version = track.generator_version
    existing = Track.objects.filter(prompt=track.prompt, generator_version=version, seed=seed)
    if (found := existing.first()) is not None:
        return found, False
    if not track.events:
        raise ValueError(f"track {track.pk} has no notes to vary")
    piece, change = variant_piece(events_to_piece(track.events), axis, random.Random(seed))
    clip = encode_clip(piece, duration_seconds)
    variant = {"of_track": track.pk, "axis": axis, **change}
    return _track_store(track.prompt, version, seed, clip, {**track.attributes, "variant": variant})


def _track_store(
    prompt: Prompt, version: GeneratorVersion, seed: int, clip: GeneratedClip, attributes: dict
) -> tuple[Track, bool]:
    track = Track(
        prompt=prompt,
        generator_version=version,
        seed=seed,
        mime_type=clip.mime_type,
        duration_seconds=clip.duration_seconds,
        sample_rate=clip.sample_rate,
        caption=clip.caption,
        attributes=attributes,
        events=clip.events,
    )
    track.audio.save(f"clip.{clip.file_extension}", ContentFile(clip.audio_bytes), save=False)
    try:
        with transaction.atomic():
            track.save()
    except IntegrityError:
        # A concurrent retry of the same job saved this sample first; keep theirs.
        track.audio.delete(save=False)
        return Track.objects.get(prompt=prompt, generator_version=version, seed=seed), False
    return track, True


def campaign_generate_prompt(*, campaign_id: int, prompt_id: int) -> None:
    """Make the clips of one prompt and form its rating items. Safe to run twice."""
    campaign = Campaign.objects.select_related("version_a", "version_b").get(pk=campaign_id)
    prompt = Prompt.objects.get(pk=prompt_id)
    tracks = []
    made = 0
    axis = variant_axis_for(campaign, prompt)
    for side, version in _versions_per_side(campaign):
        seed = derive_seed(campaign.pk, prompt.pk, side)
        if side == "b" and axis is not None:
            track, created = track_variant(
                track=tracks[0], axis=axis, seed=derive_seed(seed, "variant", axis),
                duration_seconds=campaign.clip_seconds,
            )  # fmt: skip
        else:
            track, created = track_generate(
                prompt=prompt, version=version, seed=seed, duration_seconds=campaign.clip_seconds
            )
        tracks.append(track)
        made += int(created)
    with transaction.atomic():
        _form_items(campaign, prompt, tracks)
        if made:
            Campaign.objects.filter(pk=campaign.pk).update(
                generation_done=F("generation_done") + made
            )
        _activate_when_complete(campaign)


def variant_axis_for(campaign: Campaign, prompt: Prompt) -> str | None:
    """The axis along which this prompt's second clip varies the first, or None for two
    samples: a variant_share of a collect campaign's prompts, fixed per (campaign, prompt)."""
    if not campaign.variant_axes or campaign.purpose != Campaign.Purpose.COLLECT:
        return None
    rng = random.Random(derive_seed(campaign.pk, prompt.pk, "variant"))
    if rng.random() >= campaign.variant_share:
        return None
    return rng.choice(campaign.variant_axes)


def _versions_per_side(campaign: Campaign) -> list[tuple[str, GeneratorVersion]]:
    if campaign.purpose == Campaign.Purpose.EVALUATE:
        return [("a", campaign.version_a), ("b", campaign.version_b)]
    # collect: two different samples (different seeds) of the same version
    return [("a", campaign.version_a), ("b", campaign.version_a)]


def _form_items(campaign: Campaign, prompt: Prompt, tracks: list[Track]) -> None:
    if campaign.protocol == Campaign.Protocol.MOS:
        items = [(track, None) for track in tracks]
    else:
        items = [(tracks[0], tracks[1])]
    for track_a, track_b in items:
        Pair.objects.get_or_create(
            campaign=campaign,
            track_a=track_a,
            defaults={
                "prompt": prompt,
                "track_b": track_b,
                "votes_wanted": campaign.votes_per_item,
            },
        )


def _activate_when_complete(campaign: Campaign) -> None:
    expected_items = campaign.prompts.count() * (
        2 if campaign.protocol == Campaign.Protocol.MOS else 1
    )
    if Pair.objects.filter(campaign=campaign).count() >= expected_items:
        # Conditional: a paused or finished campaign is not reopened by a late retry.
        Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.GENERATING).update(
            status=Campaign.Status.ACTIVE
        )


def campaign_record_generation_failure(*, campaign_id: int, error: str) -> None:
    Campaign.objects.filter(pk=campaign_id).update(
        status=Campaign.Status.FAILED, generation_error=error[:2000]
    )
