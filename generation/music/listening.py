"""What a listener hears in a piece, measured from its notes, against what its prompt asked.

These are the descriptors a preference model may put weight on (`reward/learning/measured.py`)
and that simulated tastes may care about: each is a plain function of the notes a listener
hears, never of how a generator made them. Values are raw (BPM, MIDI pitch, shares in [0, 1],
counts per bar); a model standardises them itself.

- tempo: the BPM, how far above (+) or below (-) the request it is, in octaves of tempo
  (log2 of the ratio: twice as fast is +1), and its fit to the request (1 on it, falling to
  0 at the tolerance either way: a linear model needs both to express "as asked");
- arrangement: how many pitched instruments play, drums or not, each with its fit to the
  request (`attributes_measure.adherence`);
- harmony: minor or major, whether mode and key root are the requested ones;
- activity: the lead's rhythmic density (the composer's scale), its difference from the
  request and its fit, notes per bar, drum hits per bar, how many notes sound together (polyphony);
- register: the mean pitch of the lead and of the lowest part, the range played (5th to 95th
  percentile), and brightness (the share of sounding time above C5);
- rhythm and touch: syncopation (the share of onsets off the beat), articulation (how much of
  the gap to the same instrument's next onset a note fills: 1 legato, small staccato),
  loudness and dynamics (mean and spread of the pitched parts' velocities);
- form: repetition, the share of bars that repeat an earlier bar's notes exactly.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from generation.music.attributes_measure import adherence, estimate_key, measure
from generation.music.events import TICKS_PER_BAR, TICKS_PER_BEAT, Note, Piece
from generation.music.prompts import MusicAttributes

LISTENING_FEATURES: tuple[str, ...] = (
    "tempo_bpm",
    "tempo_vs_request",
    "tempo_fit",
    "melodic_instruments",
    "instruments_fit",
    "drums",
    "drums_fit",
    "minor_mode",
    "mode_fit",
    "key_fit",
    "density",
    "density_vs_request",
    "density_fit",
    "notes_per_bar",
    "drum_hits_per_bar",
    "polyphony",
    "lead_pitch",
    "bass_pitch",
    "pitch_range",
    "brightness",
    "syncopation",
    "articulation",
    "loudness",
    "dynamics",
    "repetition",
)
# Each field a prompt asks for (evaluation.FIT_PARTS), the features that measure it signed
# (faster, more instruments, minor: weights on them ask for more or less of it whatever the
# request), and its fit to the request (a weight below 0 on it asks for something else).
PROMPT_FIELD_FEATURES: dict[str, tuple[tuple[str, ...], str]] = {
    "tempo": (("tempo_bpm", "tempo_vs_request"), "tempo_fit"),
    "instruments": (("melodic_instruments",), "instruments_fit"),
    "drums": (("drums", "drum_hits_per_bar"), "drums_fit"),
    "mode": (("minor_mode",), "mode_fit"),
    "density": (("density", "density_vs_request", "notes_per_bar"), "density_fit"),
    "key": ((), "key_fit"),  # a key is heard only against the request
}
# What no plan token decides (plan.py declares tempo, instruments, drums, key, mode, density
# and the lead's register): the touch, loudness, rhythm and form only a body writes. A taste
# that lives in these alone gains nothing from RL on plans.
BODY_ONLY_FEATURES = ("syncopation", "articulation", "loudness", "dynamics", "repetition")
# Measured from the pitched parts only (0 for drums alone).
PITCHED_PART_FEATURES = (
    "polyphony", "lead_pitch", "bass_pitch", "pitch_range", "brightness", "syncopation",
    "articulation", "loudness", "dynamics",
)  # fmt: skip
BRIGHT_PITCH = 72  # C5: above it, most of a GM instrument's energy is in the upper octaves


def _lead_and_bass(pitched: list[Note], lead_hint: int | None) -> tuple[list[Note], list[Note]]:
    """The lead's notes (the requested lead if it plays, else the busiest instrument) and the
    lowest part's (the instrument with the lowest mean pitch)."""
    by_program: dict[int, list[Note]] = defaultdict(list)
    for note in pitched:
        by_program[note.program].append(note)
    lead = lead_hint
    if lead not in by_program:  # the requested lead is silent: the busiest part leads
        lead = max(by_program, key=lambda program: len(by_program[program]))
    bass = min(by_program, key=lambda p: float(np.mean([n.pitch for n in by_program[p]])))
    return by_program[lead], by_program[bass]


def _articulation(pitched: list[Note]) -> float:
    fills = []
    by_program: dict[int, list[int]] = defaultdict(list)
    for note in pitched:
        by_program[note.program].append(note.start)
    onsets = {program: sorted(set(starts)) for program, starts in by_program.items()}
    for note in pitched:
        starts = onsets[note.program]
        later = [start for start in starts if start > note.start]
        if later:
            fills.append(min(1.0, note.duration / (later[0] - note.start)))
    return float(np.mean(fills)) if fills else 1.0


def _polyphony(pitched: list[Note]) -> float:
    """Mean number of pitched notes sounding at each pitched onset."""
    onsets = sorted({note.start for note in pitched})
    sounding = [
        sum(1 for note in pitched if note.start <= tick < note.start + note.duration)
        for tick in onsets
    ]
    return float(np.mean(sounding))


def _repetition(piece: Piece) -> float:
    if piece.bars < 2:
        return 0.0
    bars: dict[int, list[tuple[int, int, int, bool]]] = defaultdict(list)
    for note in piece.notes:
        bar, offset = divmod(note.start, TICKS_PER_BAR)
        bars[bar].append((offset, note.pitch, note.program, note.is_drum))
    patterns = [tuple(sorted(bars.get(bar, []))) for bar in range(piece.bars)]
    repeats = sum(1 for index in range(1, len(patterns)) if patterns[index] in patterns[:index])
    return repeats / (len(patterns) - 1)


def listening_features(target: MusicAttributes, piece: Piece) -> dict[str, float]:
    """LISTENING_FEATURES of one piece for the prompt whose target is given. A piece without
    notes measures as all zeros (silence is slow, empty and fits nothing)."""
    if not piece.notes:
        return dict.fromkeys(LISTENING_FEATURES, 0.0)
    measured = measure(piece, lead_hint=target.instruments[0] if target.instruments else None)
    fit = adherence(target, piece)
    pitched = [note for note in piece.notes if not note.is_drum]
    drum_hits = len(piece.notes) - len(pitched)
    bars = max(piece.bars, 1)
    values = {
        "tempo_bpm": float(measured.tempo_bpm),
        "tempo_vs_request": math.log2(measured.tempo_bpm / target.tempo_bpm),
        "tempo_fit": fit.tempo,
        "melodic_instruments": float(len(measured.programs)),
        "instruments_fit": fit.instruments,
        "drums": float(measured.drums),
        "drums_fit": fit.drums,
        "minor_mode": float(measured.mode == "minor"),
        "mode_fit": fit.mode,
        "key_fit": float(estimate_key(piece.notes)[0] == target.key_root),
        "density": measured.density,
        "density_vs_request": measured.density - target.density,
        "density_fit": fit.density,
        "notes_per_bar": measured.notes_per_bar,
        "drum_hits_per_bar": drum_hits / bars,
    }
    values["repetition"] = _repetition(piece)
    if not pitched:  # drums alone: no register or touch of pitched parts to hear
        return values | dict.fromkeys(PITCHED_PART_FEATURES, 0.0)
    lead, bass = _lead_and_bass(pitched, target.instruments[0] if target.instruments else None)
    pitches = np.array([note.pitch for note in pitched], dtype=float)
    durations = np.array([note.duration for note in pitched], dtype=float)
    velocities = np.array([note.velocity for note in pitched], dtype=float) / 127
    off_beat = sum(1 for note in pitched if note.start % TICKS_PER_BEAT)
    low, high = np.percentile(pitches, [5, 95])
    values |= {
        "polyphony": _polyphony(pitched),
        "lead_pitch": float(np.mean([note.pitch for note in lead])),
        "bass_pitch": float(np.mean([note.pitch for note in bass])),
        "pitch_range": float(high - low),
        "brightness": float(durations[pitches > BRIGHT_PITCH].sum() / durations.sum()),
        "syncopation": off_beat / len(pitched),
        "articulation": _articulation(pitched),
        "loudness": float(velocities.mean()),
        "dynamics": float(velocities.std()),
    }
    return {name: float(values[name]) for name in LISTENING_FEATURES}
