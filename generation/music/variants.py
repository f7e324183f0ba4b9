"""Variants of a clip that differ from it along one audible axis, for collect campaigns that
teach: a vote between a clip and its variant says which way the rater leans on that axis
alone, so a few hundred votes pin down which axes raters care about (the measured-feature
preference model reads them back as weights).

Axes, each changing only what its name says:
- tempo: the same notes 20-25% slower or faster (or about 11%);
- transpose: pitched parts up or down a fourth or a fifth (drums stay);
- drums: the drums taken out, or a plain rock beat added where there were none;
- instruments: one pitched part played on another instrument of a different family (piano
  for guitar, flute for strings...), its notes unchanged;
- density: every second onset of each pitched part dropped, or each note of a beat or longer
  played twice (two halves);
- articulation: each pitched note held until its part's next onset (legato), or cut to at
  most half of that gap (detached), its onset and pitch unchanged;
- loudness: the pitched parts played a third louder or a third softer (drums stay);
- parts: one pitched part left out where two or more play, or, where one plays, a part
  added: its notes an octave below on an instrument of another family. The instruments
  axis keeps the number of parts; only this one shows whether raters want more or fewer;
- mode: the key as heard (`estimate_key`) turned to its parallel: in major the third, sixth
  and seventh degrees a semitone lower (natural minor), in minor the same three a semitone
  higher. The root, the rhythm and every other note stay: only this axis shows whether
  raters want major or minor, which the base otherwise plays as the prompt asks.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
from collections import defaultdict

from generation.music.attributes_measure import estimate_key
from generation.music.events import (
    DRUM_PROGRAM,
    MAX_DURATION_TICKS,
    TICKS_PER_BAR,
    TICKS_PER_BEAT,
    Note,
    Piece,
    quantize_tempo,
    quantize_velocity,
)

VARIANT_AXES = (
    "tempo", "transpose", "drums", "instruments", "density", "articulation", "loudness",
    "parts", "mode",
)  # fmt: skip
# The listening features (`listening.LISTENING_FEATURES`) each axis is made to move: the
# ones whose weight the votes on such pairs pin down. Register spread, syncopation and
# repetition no axis isolates.
AXIS_FEATURES: dict[str, tuple[str, ...]] = {
    "tempo": ("tempo_bpm", "tempo_vs_request", "tempo_fit"),
    "transpose": ("lead_pitch", "bass_pitch", "brightness", "key_fit"),
    "drums": ("drums", "drums_fit", "drum_hits_per_bar"),
    "instruments": ("instruments_fit",),
    "density": ("density", "density_vs_request", "density_fit", "notes_per_bar"),
    "articulation": ("articulation",),
    "loudness": ("loudness", "dynamics"),
    "parts": ("melodic_instruments", "instruments_fit", "polyphony"),
    "mode": ("minor_mode", "mode_fit"),
}
TEMPO_FACTORS = (0.8, 0.9, 1.11, 1.25)
TRANSPOSITIONS = (-7, -5, 5, 7)
KICK, SNARE, CLOSED_HAT = 36, 38, 42
# One common instrument per General MIDI family (piano, organ, guitar, bass, strings,
# ensemble, brass, reed, pipe, synth lead, synth pad): a swap always changes the family.
SWAP_PROGRAMS = (0, 16, 24, 32, 40, 48, 56, 65, 73, 81, 89)
# Semitones above the tonic of the major third, sixth and seventh, and of the minor ones
# (natural minor) that replace them: the degrees that tell a key from its parallel.
MAJOR_TO_MINOR_DEGREES = {4: 3, 9: 8, 11: 10}


def _tempo(piece: Piece, rng: random.Random) -> tuple[Piece, dict]:
    factor = rng.choice(TEMPO_FACTORS)
    tempo = quantize_tempo(round(piece.tempo_bpm * factor))
    return dataclasses.replace(piece, tempo_bpm=tempo), {"tempo_bpm": tempo}


def _transpose(piece: Piece, rng: random.Random) -> tuple[Piece, dict]:
    shift = rng.choice(TRANSPOSITIONS)
    pitched = [note.pitch for note in piece.notes if not note.is_drum]
    if pitched and (max(pitched) + shift > 127 or min(pitched) + shift < 0):
        shift = -shift  # the other way stays in MIDI range
    notes = [
        note if note.is_drum else dataclasses.replace(note, pitch=note.pitch + shift)
        for note in piece.notes
    ]
    return dataclasses.replace(piece, notes=notes), {"semitones": shift}


def _rock_beat(bars: int) -> list[Note]:
    beat = []
    for bar in range(bars):
        start = bar * TICKS_PER_BAR
        for eighth in range(8):
            tick = start + eighth * TICKS_PER_BEAT // 2
            beat.append(Note(tick, 1, CLOSED_HAT, 70, DRUM_PROGRAM, is_drum=True))
        for beat_index, drum in ((0, KICK), (1, SNARE), (2, KICK), (3, SNARE)):
            tick = start + beat_index * TICKS_PER_BEAT
            beat.append(Note(tick, 1, drum, 96, DRUM_PROGRAM, is_drum=True))
    return beat


def _drums(piece: Piece, rng: random.Random) -> tuple[Piece, dict]:
    if any(note.is_drum for note in piece.notes):
        notes = [note for note in piece.notes if not note.is_drum]
        return dataclasses.replace(piece, notes=notes), {"drums": False}
    notes = sorted([*piece.notes, *_rock_beat(piece.bars)], key=lambda note: note.start)
    return dataclasses.replace(piece, notes=notes), {"drums": True}


def _instruments(piece: Piece, rng: random.Random) -> tuple[Piece, dict]:
    programs = sorted({note.program for note in piece.notes if not note.is_drum})
    if not programs:  # drums alone: the closest change a listener hears is a part added
        return _drums(piece, rng)
    old = rng.choice(programs)
    families = {program // 8 for program in programs}
    new = rng.choice([p for p in SWAP_PROGRAMS if p // 8 not in families])
    notes = [
        dataclasses.replace(note, program=new) if not note.is_drum and note.program == old else note
        for note in piece.notes
    ]
    return dataclasses.replace(piece, notes=notes), {"program_from": old, "program_to": new}


def _thinned(notes: list[Note]) -> list[Note]:
    """Every second onset of each part dropped (all the notes of a chord go together)."""
    by_part: dict[int, list[Note]] = defaultdict(list)
    for note in notes:
        by_part[note.program].append(note)
    kept = []
    for part in by_part.values():
        dropped = set(sorted({note.start for note in part})[1::2])
        kept.extend(note for note in part if note.start not in dropped)
    return kept


def _doubled(notes: list[Note]) -> list[Note]:
    doubled = []
    for note in notes:
        if note.duration >= TICKS_PER_BEAT:
            half = note.duration // 2
            doubled.append(dataclasses.replace(note, duration=half))
            doubled.append(
                dataclasses.replace(note, start=note.start + half, duration=note.duration - half)
            )
        else:
            doubled.append(note)
    return doubled


def _density(piece: Piece, rng: random.Random) -> tuple[Piece, dict]:
    pitched = [note for note in piece.notes if not note.is_drum]
    drums = [note for note in piece.notes if note.is_drum]
    thinner = rng.random() < 0.5
    changed = _thinned(pitched) if thinner else _doubled(pitched)
    notes = sorted([*changed, *drums], key=lambda note: note.start)
    return dataclasses.replace(piece, notes=notes), {"density": "thinner" if thinner else "busier"}


def _gaps(notes: list[Note]) -> list[int | None]:
    """Each note's ticks to its part's next onset (None for a part's last onset)."""
    onsets: dict[int, list[int]] = defaultdict(list)
    for note in notes:
        onsets[note.program].append(note.start)
    following = {
        program: dict(zip(starts, [*starts[1:], None], strict=True))
        for program, starts in ((p, sorted(set(s))) for p, s in onsets.items())
    }
    return [
        None if (after := following[note.program][note.start]) is None else after - note.start
        for note in notes
    ]


def _legato(notes: list[Note]) -> list[Note]:
    return [
        note if gap is None else dataclasses.replace(note, duration=min(gap, MAX_DURATION_TICKS))
        for note, gap in zip(notes, _gaps(notes), strict=True)
    ]


def _detached(notes: list[Note]) -> list[Note]:
    return [
        dataclasses.replace(note, duration=max(1, min(note.duration, (gap or note.duration) // 2)))
        for note, gap in zip(notes, _gaps(notes), strict=True)
    ]


def _articulation(piece: Piece, rng: random.Random) -> tuple[Piece, dict]:
    """Legato or detached, whichever changes the notes when only one does (a part already
    held note to note cannot be made more legato)."""
    pitched = [note for note in piece.notes if not note.is_drum]
    drums = [note for note in piece.notes if note.is_drum]
    options = {"legato": _legato(pitched), "detached": _detached(pitched)}
    changing = [name for name, changed in options.items() if changed != pitched] or ["legato"]
    name = rng.choice(changing)
    notes = sorted([*options[name], *drums], key=lambda note: note.start)
    return dataclasses.replace(piece, notes=notes), {"articulation": name}


LOUDNESS_FACTORS = {"louder": 4 / 3, "softer": 2 / 3}


def _loudness(piece: Piece, rng: random.Random) -> tuple[Piece, dict]:
    """The pitched parts a third louder or softer, on the velocity grid events store; parts
    already loud on average get softer, so the change is heard rather than clipped at 127."""
    pitched = [note.velocity for note in piece.notes if not note.is_drum]
    loud = bool(pitched) and statistics.fmean(pitched) * LOUDNESS_FACTORS["louder"] > 127
    name = "softer" if loud else rng.choice(sorted(LOUDNESS_FACTORS))
    factor = LOUDNESS_FACTORS[name]
    notes = [
        note if note.is_drum
        else dataclasses.replace(note, velocity=quantize_velocity(note.velocity * factor))
        for note in piece.notes
    ]  # fmt: skip
    return dataclasses.replace(piece, notes=notes), {"loudness": name}


def _parts(piece: Piece, rng: random.Random) -> tuple[Piece, dict]:
    programs = sorted({note.program for note in piece.notes if not note.is_drum})
    if len(programs) >= 2:
        left_out = rng.choice(programs)
        notes = [note for note in piece.notes if note.is_drum or note.program != left_out]
        return dataclasses.replace(piece, notes=notes), {"part_left_out": left_out}
    if not programs:  # drums alone: the closest change a listener hears is the drums
        return _drums(piece, rng)
    families = {program // 8 for program in programs}
    added = rng.choice([p for p in SWAP_PROGRAMS if p // 8 not in families])
    doubled = [
        dataclasses.replace(note, program=added, pitch=note.pitch - 12)
        for note in piece.notes
        if not note.is_drum and note.pitch >= 12
    ]
    notes = sorted([*piece.notes, *doubled], key=lambda note: note.start)
    return dataclasses.replace(piece, notes=notes), {"part_added": added}


def _mode(piece: Piece, rng: random.Random) -> tuple[Piece, dict]:
    root, mode = estimate_key(piece.notes)
    if root is None:  # no key to hear (drums alone, one pitch class): change the register
        return _transpose(piece, rng)
    if mode == "major":
        moved, step, heard_as = MAJOR_TO_MINOR_DEGREES, -1, "minor"
    else:
        moved, step, heard_as = {v: k for k, v in MAJOR_TO_MINOR_DEGREES.items()}, 1, "major"
    notes = [
        dataclasses.replace(note, pitch=note.pitch + step)
        if not note.is_drum and (note.pitch - root) % 12 in moved and 0 <= note.pitch + step <= 127
        else note
        for note in piece.notes
    ]
    return dataclasses.replace(piece, notes=notes), {"key_root": root, "mode": heard_as}


_MAKERS = {
    "tempo": _tempo,
    "transpose": _transpose,
    "drums": _drums,
    "instruments": _instruments,
    "density": _density,
    "articulation": _articulation,
    "loudness": _loudness,
    "parts": _parts,
    "mode": _mode,
}


def variant_piece(piece: Piece, axis: str, rng: random.Random) -> tuple[Piece, dict]:
    """The piece changed along one axis, and what changed (JSON-ready)."""
    if axis not in _MAKERS:
        raise ValueError(f"unknown variant axis {axis!r}; choose from {', '.join(VARIANT_AXES)}")
    return _MAKERS[axis](piece, rng)
