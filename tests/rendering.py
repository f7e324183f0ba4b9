"""Real rendered clips for tests that play or decode audio.

The factories' tracks hold placeholder bytes, which is enough for the rating rules but not for
a browser that has to decode and play them. These helpers render real Ogg/Opus clips with the
project's own procedural backend, through the same service the generation jobs use, so the
bytes, MIME type, duration and file name are exactly what raters get in production.
"""

from __future__ import annotations

from generation.models import GeneratorVersion, Prompt, Track
from generation.services import track_generate
from ratings.models import Campaign, Pair
from tests.factories import GeneratorVersionFactory, PromptFactory

SHORT_CLIP_SECONDS = 4.0


def rendered_track(
    *,
    prompt: Prompt | None = None,
    version: GeneratorVersion | None = None,
    seed: int = 1,
    duration_seconds: float = SHORT_CLIP_SECONDS,
) -> Track:
    """Render one clip with the procedural backend and save it as a Track row."""
    prompt = prompt or PromptFactory(text="a calm piano piece in C major at 90 bpm")
    version = version or GeneratorVersionFactory(backend="procedural")
    track, _ = track_generate(
        prompt=prompt, version=version, seed=seed, duration_seconds=duration_seconds
    )
    return track


def rendered_pair(
    *,
    campaign: Campaign,
    prompt: Prompt | None = None,
    seed: int = 1,
    duration_seconds: float = SHORT_CLIP_SECONDS,
) -> Pair:
    """A rating item of the campaign with really rendered audio: two clips of one prompt
    (two seeds of version A for collect, version A against B for evaluate), or one clip for
    the MOS protocol."""
    prompt = prompt or PromptFactory()
    campaign.prompts.add(prompt)
    version_b = campaign.version_b or campaign.version_a
    track_a = rendered_track(
        prompt=prompt, version=campaign.version_a, seed=seed, duration_seconds=duration_seconds
    )
    track_b = None
    if campaign.protocol != Campaign.Protocol.MOS:
        track_b = rendered_track(
            prompt=prompt, version=version_b, seed=seed + 1, duration_seconds=duration_seconds
        )
    return Pair.objects.create(
        campaign=campaign,
        prompt=prompt,
        track_a=track_a,
        track_b=track_b,
        votes_wanted=campaign.votes_per_item,
    )
