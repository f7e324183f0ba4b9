"""Scales, chord progressions and voicings for the procedural composer."""

from __future__ import annotations

import random
from dataclasses import dataclass

from generation.music.events import TICKS_PER_BAR

MODE_STEPS = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
PENTATONIC_STEPS = {"major": (0, 2, 4, 7, 9), "minor": (0, 3, 5, 7, 10)}
BLUES_STEPS = (0, 3, 5, 6, 7, 10)
PENTATONIC_GENRES = frozenset({"rock", "metal", "folk", "hip hop", "funk", "reggae"})

# Scale-degree progressions (0 = tonic); the piece cycles through one of them.
PROGRESSIONS = {
    "major": [(0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 3), (5, 3, 0, 4), (0, 3, 0, 4), (0, 2, 3, 4)],
    "minor": [(0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 5, 3, 4), (0, 3, 6, 2), (0, 2, 5, 4)],
}
GENRE_PROGRESSIONS = {
    "techno": [(0, 0, 0, 0), (0, 0, 5, 5), (0, 6, 0, 5), (0, 0, 3, 3)],
    "house": [(0, 5, 3, 4), (0, 3), (0, 5), (1, 4, 0, 0)],
    "ambient": [(0, 3), (0, 5, 3, 4), (0, 4, 5, 3), (3, 0)],
    "jazz": [(1, 4, 0, 0), (0, 5, 1, 4), (2, 5, 1, 4), (0, 3, 1, 4)],
    "lofi": [(1, 4, 0, 5), (3, 2, 1, 0), (0, 5, 1, 4)],
    "metal": [(0, 5, 6, 0), (0, 6, 5, 6), (0, 0, 5, 6), (0, 1, 0, 6)],
    "reggae": [(0, 3), (0, 4), (0, 3, 4, 3), (0, 5, 3, 4)],
    "funk": [(0, 0, 3, 0), (0, 3), (0, 0, 0, 6)],
    "hip hop": [(0, 5), (0, 3, 5, 4), (0, 0, 5, 6)],
}
SUBSTITUTE_DEGREE = {0: 5, 1: 3, 2: 0, 3: 1, 4: 6, 5: 3, 6: 4}
SEVENTH_GENRES = frozenset({"jazz", "lofi", "funk", "house", "hip hop", "blues"})
HARMONIC_MINOR_GENRES = frozenset({"classical", "cinematic", "ballad"})
TWELVE_BAR_BLUES = (0, 0, 0, 0, 5, 5, 0, 0, 7, 5, 0, 7)


@dataclass(frozen=True)
class Chord:
    start: int  # tick
    length: int  # ticks
    root: int  # pitch class
    tones: tuple[int, ...]  # pitch classes, root first

    @property
    def fifth(self) -> int:
        return self.tones[2]


def scale_steps(key_root: int, mode: str) -> tuple[int, ...]:
    """Pitch classes of the key's diatonic scale, tonic first."""
    return tuple((key_root + step) % 12 for step in MODE_STEPS[mode])


def melody_steps(genre: str, key_root: int, mode: str) -> tuple[int, ...]:
    """The scale melodies draw from: blues and riff genres use gapped scales."""
    if genre == "blues":
        steps = BLUES_STEPS
    elif genre in PENTATONIC_GENRES:
        steps = PENTATONIC_STEPS[mode]
    else:
        steps = MODE_STEPS[mode]
    return tuple((key_root + step) % 12 for step in steps)


def _diatonic_chord(scale: tuple[int, ...], degree: int, size: int) -> tuple[int, ...]:
    return tuple(scale[(degree + 2 * k) % 7] for k in range(size))


def _chord_tones(genre: str, mode: str, scale: tuple[int, ...], degree: int, size: int):
    tones = list(_diatonic_chord(scale, degree, size))
    if mode == "minor" and degree == 4 and genre in HARMONIC_MINOR_GENRES:
        tones[1] = (tones[0] + 4) % 12  # major dominant pulls harder back to the tonic
    return tuple(tones)


def _pick_degrees(genre: str, mode: str, rng: random.Random, variation: float) -> list[int]:
    options = GENRE_PROGRESSIONS.get(genre) or PROGRESSIONS[mode]
    degrees = list(rng.choice(options))
    for index in range(1, len(degrees)):
        if rng.random() < 0.3 * variation:
            degrees[index] = SUBSTITUTE_DEGREE[degrees[index]]
    return degrees


def _blues_chords(key_root: int, mode: str, bars: int) -> list[Chord]:
    chords = []
    for bar in range(bars):
        offset = TWELVE_BAR_BLUES[bar % 12]
        third = 3 if mode == "minor" and offset != 7 else 4
        root = (key_root + offset) % 12
        tones = tuple((root + interval) % 12 for interval in (0, third, 7, 10))
        chords.append(Chord(bar * TICKS_PER_BAR, TICKS_PER_BAR, root, tones))
    return chords


def build_chords(
    genre: str, key_root: int, mode: str, bars: int, rng: random.Random, variation: float
) -> list[Chord]:
    """One chord per bar (two bars in ambient); the last bar resolves to the tonic."""
    if genre == "blues":
        return _blues_chords(key_root, mode, bars)
    scale = scale_steps(key_root, mode)
    degrees = _pick_degrees(genre, mode, rng, variation)
    size = 4 if genre in SEVENTH_GENRES or rng.random() < 0.25 * variation else 3
    bars_per_chord = 2 if genre == "ambient" else 1
    chords = []
    for index, start_bar in enumerate(range(0, bars, bars_per_chord)):
        is_last = start_bar + bars_per_chord >= bars and bars > 1
        degree = 0 if is_last else degrees[index % len(degrees)]
        length = min(bars_per_chord, bars - start_bar) * TICKS_PER_BAR
        tones = _chord_tones(genre, mode, scale, degree, size)
        chords.append(Chord(start_bar * TICKS_PER_BAR, length, tones[0], tones))
    return chords


def nearest_pitch(pitch_class: int, target: float) -> int:
    """The MIDI pitch of this pitch class closest to target."""
    base = round(target) - 6
    return base + (pitch_class - base) % 12


def voice_chord(tones: tuple[int, ...], center: float) -> list[int]:
    """Close voicing around center, so consecutive chords move by small steps."""
    return sorted(nearest_pitch(pitch_class, center) for pitch_class in tones)


def chord_at(chords: list[Chord], tick: int) -> Chord:
    for chord in chords:
        if chord.start <= tick < chord.start + chord.length:
            return chord
    return chords[-1]
