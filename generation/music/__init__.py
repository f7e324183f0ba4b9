"""Pure-Python music generation: prompts, a procedural composer, a REMI-like event
format and FluidSynth rendering. No Django or torch imports live in this package."""

from generation.music.backends import (
    ProceduralBackend,
    available_backends,
    get_backend,
    register_backend,
)
from generation.music.composer import ComposerStyle, compose
from generation.music.events import (
    EVENT_VOCABULARY,
    Note,
    Piece,
    events_to_piece,
    piece_to_events,
)
from generation.music.interface import GeneratedClip
from generation.music.prompt_sampling import random_attributes
from generation.music.prompts import MusicAttributes, caption_for, parse_prompt

__all__ = [
    "EVENT_VOCABULARY",
    "ComposerStyle",
    "GeneratedClip",
    "MusicAttributes",
    "Note",
    "Piece",
    "ProceduralBackend",
    "available_backends",
    "caption_for",
    "compose",
    "events_to_piece",
    "get_backend",
    "parse_prompt",
    "piece_to_events",
    "random_attributes",
    "register_backend",
]
