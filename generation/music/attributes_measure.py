"""Measure musical attributes on generated notes, and score them against a prompt.

The prompt side is `parse_prompt`, the same ground truth the composer follows, so
the composer's own pieces score close to 1 and a generator that ignores the
prompt scores visibly lower. Scores are in [0, 1]; the adherence score is the mean
of the five parts (tempo, instruments, drums, mode, density).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from generation.music.events import TICKS_PER_BAR, Note, Piece
from generation.music.prompts import MusicAttributes, parse_prompt

# Krumhansl-Kessler key profiles (probe-tone ratings), index 0 = tonic.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
TEMPO_TOLERANCE = 0.3  # a tempo 30% off the prompt's scores 0
DENSITY_TOLERANCE = 0.4  # on the composer's 0..1 density scale


@dataclass(frozen=True)
class MeasuredAttributes:
    tempo_bpm: int
    programs: tuple[int, ...]  # pitched GM programs present, most notes first
    drums: bool
    key_root: int | None  # None without pitched notes
    mode: str | None
    density: float  # estimate on the composer's 0..1 scale
    notes_per_bar: float

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["programs"] = list(self.programs)
        return data


def estimate_key(notes: list[Note]) -> tuple[int | None, str | None]:
    """Best-correlating major/minor profile over the duration-weighted pitch classes."""
    histogram = np.zeros(12)
    for note in notes:
        if not note.is_drum:
            histogram[note.pitch % 12] += note.duration
    if histogram.sum() == 0 or np.count_nonzero(histogram) < 2:
        return None, None
    best = max(
        (float(np.corrcoef(histogram, np.roll(profile, root))[0, 1]), root, mode)
        for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE))
        for root in range(12)
    )
    return best[1], best[2]


def _lead_program(notes: list[Note], preferred: int | None) -> int | None:
    counts = Counter(note.program for note in notes if not note.is_drum)
    if preferred is not None and preferred in counts:
        return preferred
    return counts.most_common(1)[0][0] if counts else None


def estimate_density(piece: Piece, lead: int | None) -> float:
    """Invert the composer's lead rhythm: round(1 + density * 7 * tempo_factor) onsets
    per bar. Phrase-ending bars (which halve the count) are left out, and the median
    keeps a repeated motif or one busy bar from dominating."""
    if lead is None or piece.bars == 0:
        return 0.0
    onsets: dict[int, set[int]] = {bar: set() for bar in range(piece.bars)}
    for note in piece.notes:
        if note.program == lead and not note.is_drum and note.start // TICKS_PER_BAR in onsets:
            onsets[note.start // TICKS_PER_BAR].add(note.start)
    counted = [len(ticks) for bar, ticks in onsets.items() if bar % 4 != 3] or [0]
    tempo_factor = min(1.2, max(0.6, 120 / piece.tempo_bpm))
    return float(min(1.0, max(0.0, (statistics.median(counted) - 1) / (7 * tempo_factor))))


def measure(piece: Piece, *, lead_hint: int | None = None) -> MeasuredAttributes:
    pitched = Counter(note.program for note in piece.notes if not note.is_drum)
    key_root, mode = estimate_key(piece.notes)
    lead = _lead_program(piece.notes, lead_hint)
    return MeasuredAttributes(
        tempo_bpm=piece.tempo_bpm,
        programs=tuple(program for program, _ in pitched.most_common()),
        drums=any(note.is_drum for note in piece.notes),
        key_root=key_root,
        mode=mode,
        density=estimate_density(piece, lead),
        notes_per_bar=len(piece.notes) / max(piece.bars, 1),
    )


@dataclass(frozen=True)
class Adherence:
    tempo: float
    instruments: float
    drums: float
    mode: float
    density: float

    @property
    def score(self) -> float:
        return (self.tempo + self.instruments + self.drums + self.mode + self.density) / 5

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "score": self.score}


def attribute_fit(
    target: MusicAttributes,
    *,
    tempo_bpm: float,
    programs: set[int],
    drums: bool,
    mode: str | None,
    density: float,
) -> Adherence:
    """How well the given attributes (measured from notes, or declared by a plan) fit the
    target's, scored per part in [0, 1]."""
    wanted = set(target.instruments)
    tempo_error = abs(tempo_bpm - target.tempo_bpm) / target.tempo_bpm
    return Adherence(
        tempo=max(0.0, 1.0 - tempo_error / TEMPO_TOLERANCE),
        instruments=len(wanted & programs) / len(wanted | programs),
        drums=float(drums == target.drums),
        mode=float(mode == target.mode),
        density=max(0.0, 1.0 - abs(density - target.density) / DENSITY_TOLERANCE),
    )


def adherence(prompt: str | MusicAttributes, piece: Piece) -> Adherence:
    """How well the notes follow the prompt; an empty piece scores 0 everywhere."""
    target = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    if not piece.notes:
        return Adherence(0.0, 0.0, 0.0, 0.0, 0.0)
    measured = measure(piece, lead_hint=target.instruments[0])
    return attribute_fit(
        target,
        tempo_bpm=measured.tempo_bpm,
        programs=set(measured.programs),
        drums=measured.drums,
        mode=measured.mode,
        density=measured.density,
    )
