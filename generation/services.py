"""Writes of the generation app: prompts, rendering tracks (a campaign's pairs are formed by
ratings.campaigns) and registering generator versions, the shipped ones among them."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction

from generation.models import GeneratorVersion, PretrainingRun, Prompt, Track
from generation.music.backends import (
    FIRST_GENERATOR,
    FIRST_PLANNED_GENERATOR,
    PARENT_GENERATOR,
    SHIPPED_GENERATOR,
    GeneratedClip,
    get_backend,
)
from generation.music.prompts import parse_prompt

logger = logging.getLogger(__name__)


# The shipped learned generators, oldest first, each the parent of the next, and the last the
# default: (version name, checkpoint). The older ones are kept: votes and runs of existing
# databases use them.
SHIPPED_LINEAGE: tuple[tuple[str, str], ...] = (
    ("symbolic-small-v1", FIRST_GENERATOR),
    ("planned-small-v1", FIRST_PLANNED_GENERATOR),
    ("planned-small-v2", PARENT_GENERATOR),
    ("planned-small-v3", SHIPPED_GENERATOR),
)
SHIPPED_VERSION_NAME = SHIPPED_LINEAGE[-1][0]
PARENT_VERSION_NAME = SHIPPED_LINEAGE[-2][0]


def shipped_evaluation(checkpoint: str) -> dict:
    """The held-out evaluation stored beside a shipped checkpoint (`<name>.json`, written by
    `train_generator --export`), readable without loading the model; {} if there is none."""
    sidecar = (Path(settings.BASE_DIR) / checkpoint).with_suffix(".json")
    return json.loads(sidecar.read_text()) if sidecar.exists() else {}


def generator_version_register(
    *,
    name: str,
    backend: str,
    config: dict | None = None,
    checkpoint: str = "",
    parent: GeneratorVersion | None = None,
    status: str = GeneratorVersion.Status.CANDIDATE,
    metrics: dict | None = None,
    pretraining_run: PretrainingRun | None = None,
) -> GeneratorVersion:
    """The generator version named `name`, registered once: the one home of creating a
    GeneratorVersion (pretraining, fine-tuning, the shipped generators, the demo).

    The name is the version's identity: campaigns, votes and runs name versions by it, and a
    caller that runs again (a retried job, seed_demo on every start) must get the same row
    back. So a name that is already registered returns that row as it is; the other arguments
    only describe a new row, and an existing one is never rewritten (a database made before
    the planned generator keeps its versions). `parent` is the saved version this one was
    derived from (the lineage the admin shows); `metrics` is what is known about the version
    when it is made: its held-out evaluation, or the run that made it.
    """
    version, _ = GeneratorVersion.objects.get_or_create(
        name=name,
        defaults={
            "backend": backend,
            "config": config or {},
            "checkpoint": checkpoint,
            "parent": parent,
            "status": status,
            "metrics": metrics or {},
            "pretraining_run": pretraining_run,
        },
    )
    return version


def shipped_version_register() -> GeneratorVersion | None:
    """The learned generator the repository ships, registered once as an active version, with
    its ancestors (`SHIPPED_LINEAGE`) registered as its parent, grandparent..., retired: the
    newest replaces them for new collection. None if its checkpoint file is absent. Existing
    rows are kept as they are, so a database made before a newer generator keeps its
    versions, and each version keeps its own checkpoint file."""
    if not (Path(settings.BASE_DIR) / SHIPPED_GENERATOR).exists():
        return None
    with transaction.atomic():
        parent = None
        for name, checkpoint in SHIPPED_LINEAGE[:-1]:
            if (Path(settings.BASE_DIR) / checkpoint).exists():
                parent = generator_version_register(
                    name=name,
                    backend="symbolic",
                    checkpoint=checkpoint,
                    parent=parent,
                    status=GeneratorVersion.Status.RETIRED,
                    metrics=shipped_evaluation(checkpoint),
                )
        return generator_version_register(
            name=SHIPPED_VERSION_NAME,
            backend="symbolic",
            checkpoint=SHIPPED_GENERATOR,
            status=GeneratorVersion.Status.ACTIVE,
            parent=parent,
            metrics=shipped_evaluation(SHIPPED_GENERATOR),
        )


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from the parts, so a retried job regenerates the same sample."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def track_generate(
    *, prompt: Prompt, version: GeneratorVersion, seed: int, duration_seconds: float
) -> tuple[Track, bool]:
    """Render one clip, or return the one already made for (prompt, version, seed)."""
    [made] = tracks_generate(
        version=version, requests=[(prompt, seed)], duration_seconds=duration_seconds
    )
    return made


def tracks_generate(
    *,
    version: GeneratorVersion,
    requests: Sequence[tuple[Prompt, int]],
    duration_seconds: float,
) -> list[tuple[Track, bool]]:
    """`track_generate` for many (prompt, seed) of one version, in order: the clips not made
    yet are made together (`MusicBackend.generate_many`, which the learned backend samples in
    batches), each the clip `track_generate` would make alone."""
    existing = {
        (track.prompt_id, track.seed): track
        for track in Track.objects.filter(
            generator_version=version,
            prompt__in=[prompt for prompt, _ in requests],
            seed__in=[seed for _, seed in requests],
        )
    }
    missing = list({(prompt.pk, seed): (prompt, seed) for prompt, seed in requests
                    if (prompt.pk, seed) not in existing}.values())  # fmt: skip
    made: dict[tuple[int, int], tuple[Track, bool]] = {}
    if missing:
        clips = get_backend(version.backend, version.backend_config()).generate_many(
            [(prompt.text, seed) for prompt, seed in missing], duration_seconds=duration_seconds
        )
        for (prompt, seed), clip in zip(missing, clips, strict=True):
            made[prompt.pk, seed] = _track_store(prompt, version, seed, clip, clip.attributes)
    return [
        made.get((prompt.pk, seed)) or (existing[prompt.pk, seed], False)
        for prompt, seed in requests
    ]


def track_variant(
    *, track: Track, axis: str, seed: int, duration_seconds: float
) -> tuple[Track, bool]:
    """A clip that differs from `track` along one audible axis (`generation.music.variants`),
    stored as a track of the same prompt and version, the change recorded in its attributes
    under "variant"; or the one already made with this seed."""
    from generation.music.events import events_to_piece
    from generation.music.interface import encode_clip
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
    _audio_save(track, f"clip.{clip.file_extension}", clip.audio_bytes)
    try:
        with transaction.atomic():
            track.save()
    except IntegrityError:
        # A concurrent retry of the same job saved this sample first; keep theirs.
        track.audio.delete(save=False)
        return Track.objects.get(prompt=prompt, generator_version=version, seed=seed), False
    return track, True


def _audio_save(track: Track, filename: str, audio: bytes) -> None:
    """Write the clip's file; if the write fails (a full disk, a storage outage), remove what
    was written before raising, so no truncated file is left under the clip's name."""
    name = track.audio.field.generate_filename(track, filename)
    try:
        track.audio.save(filename, ContentFile(audio), save=False)
    except Exception:
        with contextlib.suppress(Exception):  # the storage may be down altogether
            track.audio.storage.delete(name)
        raise


def prompt_get_or_create(*, text: str, source: str = Prompt.Source.CURATED) -> Prompt:
    prompt = Prompt.objects.filter(text=text, source=source).order_by("id").first()
    if prompt is None:
        attributes = dataclasses.asdict(parse_prompt(text))
        prompt = Prompt.objects.create(text=text, source=source, attributes=attributes)
    return prompt
