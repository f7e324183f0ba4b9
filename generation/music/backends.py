"""The backend registry (`get_backend`, `register_backend`) and the procedural backend. The
interface every backend implements is `generation.music.interface`."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from generation.music.composer import ComposerStyle, compose
from generation.music.events import Piece
from generation.music.interface import (
    GeneratedClip,
    MusicBackend,
    check_duration,
    clips_one_by_one,
    encode_clip,
)
from generation.music.prompts import parse_prompt


@dataclass(frozen=True)
class ProceduralConfig:
    """What a GeneratorVersion of the procedural backend may set."""

    variation: float = 0.5  # 0..1: plain and repetitive -> leaps, syncopation, substitutions
    humanize: float = 0.3  # 0..1: velocity spread
    density_scale: float = 1.0  # 0.1..3: scales the prompt's note density
    register_shift: int = 0  # -12..12 semitones: the melody's range moves up or down
    target_lufs: float = -16.0  # every clip is normalised to this loudness
    stereo: bool = False

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None) -> ProceduralConfig:
        config = dict(config or {})
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown procedural backend config keys: {unknown}")
        if not isinstance(config.get("stereo", False), bool):
            raise ValueError("stereo must be true or false")
        if not float(config.get("register_shift", 0)).is_integer():
            raise ValueError("register_shift must be a whole number of semitones")
        integers = {"register_shift": int, "stereo": bool}
        parsed = cls(**{k: integers.get(k, float)(v) for k, v in config.items()})
        parsed.composer_style()  # validates the ranges
        if not -40.0 <= parsed.target_lufs <= -6.0:
            raise ValueError("target_lufs must lie in [-40, -6]")
        return parsed

    def composer_style(self) -> ComposerStyle:
        return ComposerStyle(
            variation=float(self.variation),
            humanize=float(self.humanize),
            density_scale=float(self.density_scale),
            register_shift=int(self.register_shift),
        )


class ProceduralBackend:
    """Rule-based composer + FluidSynth. Fast, seedable, needs no model weights."""

    name = "procedural"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = ProceduralConfig.from_dict(config)
        self.style = self.config.composer_style()

    def compose(self, prompt_text: str, *, seed: int, duration_seconds: float) -> Piece:
        """The symbolic piece alone (no audio), e.g. for building a training corpus."""
        check_duration(duration_seconds)
        attrs = parse_prompt(prompt_text)
        return compose(attrs, seed=seed, duration_seconds=duration_seconds, style=self.style)

    def generate(self, prompt_text: str, *, seed: int, duration_seconds: float) -> GeneratedClip:
        piece = self.compose(prompt_text, seed=seed, duration_seconds=duration_seconds)
        return encode_clip(
            piece,
            duration_seconds,
            target_lufs=self.config.target_lufs,
            stereo=self.config.stereo,
        )

    def generate_many(
        self, requests: Sequence[tuple[str, int]], *, duration_seconds: float
    ) -> list[GeneratedClip]:
        return clips_one_by_one(self, requests, duration_seconds=duration_seconds)


def _symbolic_backend(config: dict[str, Any] | None) -> MusicBackend:
    # Imported on first use: the learned backend needs torch, which the web process
    # must never import.
    from generation.music.learned import create_backend

    return create_backend(config)


# The learned generators the repository ships (relative to the project root), so a fresh
# machine has one without training: the default (its parent's weights trained further on
# the composer whose melody keeps to its register), its parent (the body with melody
# tallies), the first planned generator (whose body had none) and the first learned
# generator (a header of tempo and instruments, no plan), each the parent of the next;
# README.md gives the commands that made them. The older ones stay: votes and runs in
# existing databases use them.
SHIPPED_GENERATOR = "generation/checkpoints/planned-small-v3.pt"
PARENT_GENERATOR = "generation/checkpoints/planned-small-v2.pt"
FIRST_PLANNED_GENERATOR = "generation/checkpoints/planned-small.pt"
FIRST_GENERATOR = "generation/checkpoints/symbolic-small.pt"

BackendFactory = Callable[[dict[str, Any] | None], MusicBackend]
_BACKENDS: dict[str, BackendFactory] = {
    ProceduralBackend.name: ProceduralBackend,
    "symbolic": _symbolic_backend,
}


# The backends whose `generate_many` samples in batches, faster than clip by clip: campaign
# generation gives them several prompts per task. By name: the web process that queues the
# tasks must not load a backend (the learned one needs torch).
BATCHING_BACKENDS = frozenset({"symbolic"})


def register_backend(name: str, factory: BackendFactory) -> None:
    """Later backends (symbolic transformer, MusicGen) add themselves here."""
    _BACKENDS[name] = factory
    with _LOADED_LOCK:
        for key in [key for key in _LOADED if key[0] == name]:
            del _LOADED[key]


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


# Backends built in this process, so a warm worker keeps its generator (and, through
# render's shared synthesizer, its SoundFont) loaded between jobs instead of per clip.
_LOADED_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str], MusicBackend] = {}


# Environment variables a factory reads besides its config (the MusicGen weights' directory):
# a backend built under another value is another backend.
_FACTORY_ENVIRONMENT: dict[str, tuple[str, ...]] = {"musicgen": ("MUSICGEN_PATH",)}


def _cache_key(name: str, config: dict[str, Any] | None) -> tuple[str, str]:
    config = dict(config or {})
    for variable in _FACTORY_ENVIRONMENT.get(name, ()):
        config[f"env:{variable}"] = os.environ.get(variable)
    checkpoint = config.get("checkpoint")
    if isinstance(checkpoint, str) and os.path.exists(checkpoint):
        # A checkpoint rewritten in place is a different generator: load it again.
        config["checkpoint_mtime"] = os.stat(checkpoint).st_mtime_ns
    return name, json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def get_backend(name: str, config: dict[str, Any] | None = None) -> MusicBackend:
    """The backend for (name, config), built once per process and then reused."""
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {available_backends()}") from None
    key = _cache_key(name, config)
    with _LOADED_LOCK:
        backend = _LOADED.get(key)
    if backend is None:
        backend = factory(config)  # an invalid config raises here and is never cached
        with _LOADED_LOCK:
            backend = _LOADED.setdefault(key, backend)
    return backend


def _musicgen_backend(config: dict[str, Any] | None) -> MusicBackend:
    # Imported on use: importing this module must not pull in torch or transformers.
    from generation.music.musicgen import MusicGenBackend

    return MusicGenBackend.from_settings(config)


register_backend("musicgen", _musicgen_backend)
