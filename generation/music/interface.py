"""The generator interface the platform calls: every backend turns (prompt, seed, duration)
into a GeneratedClip of exactly that duration, loudness-normalised and Opus-encoded, so that
nothing but the music itself tells two versions apart. The registry of backends is
`generation.music.backends`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from generation.music import render
from generation.music.events import Piece, piece_to_events

MIN_DURATION_SECONDS = 1.0  # BS.1770 gating needs at least one 400 ms block; 1 s is sane
MAX_DURATION_SECONDS = 120.0


@dataclass
class GeneratedClip:
    audio_bytes: bytes  # Ogg/Opus
    file_extension: str  # "ogg"
    mime_type: str  # "audio/ogg"
    sample_rate: int
    duration_seconds: float
    caption: str
    attributes: dict[str, Any]  # JSON-serialisable parsed attributes
    events: list[str]  # REMI-like events


class MusicBackend(Protocol):
    name: str

    def generate(
        self, prompt_text: str, *, seed: int, duration_seconds: float
    ) -> GeneratedClip: ...

    def generate_many(
        self, requests: Sequence[tuple[str, int]], *, duration_seconds: float
    ) -> list[GeneratedClip]:
        """One clip per (prompt, seed), in order: each the clip `generate` makes for it. A
        backend that samples in batches makes them faster together than one by one."""
        ...


def clips_one_by_one(
    backend: MusicBackend, requests: Sequence[tuple[str, int]], *, duration_seconds: float
) -> list[GeneratedClip]:
    """`generate_many` for a backend that does not sample in batches: `generate` for each
    (prompt, seed) in turn."""
    return [
        backend.generate(prompt, seed=seed, duration_seconds=duration_seconds)
        for prompt, seed in requests
    ]


def check_duration(duration_seconds: float) -> None:
    if not MIN_DURATION_SECONDS <= duration_seconds <= MAX_DURATION_SECONDS:
        raise ValueError(
            f"duration_seconds must lie in [{MIN_DURATION_SECONDS}, {MAX_DURATION_SECONDS}]"
        )


def encode_clip(
    piece: Piece, duration_seconds: float, *, target_lufs: float = -16.0, stereo: bool = False
) -> GeneratedClip:
    """Render, normalise and encode a piece: shared by every symbolic backend."""
    audio = render.render_piece(piece, duration_seconds=duration_seconds, stereo=stereo)
    return GeneratedClip(
        audio_bytes=render.encode_normalized(audio, render.SAMPLE_RATE, target_lufs=target_lufs),
        file_extension="ogg",
        mime_type="audio/ogg",
        sample_rate=render.SAMPLE_RATE,
        duration_seconds=float(duration_seconds),
        caption=piece.caption,
        attributes=dict(piece.attributes),
        events=piece_to_events(piece),
    )
