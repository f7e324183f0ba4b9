"""What a listener hears, measured from the notes: each descriptor moves the way the music
does when only that aspect changes."""

import dataclasses

import pytest

from generation.music.composer import compose
from generation.music.events import TICKS_PER_BAR, Note, Piece
from generation.music.listening import LISTENING_FEATURES, PITCHED_PART_FEATURES, listening_features
from generation.music.prompts import parse_prompt

BALLAD = parse_prompt("slow sad piano ballad")
ROCK = parse_prompt("energetic rock with electric guitar and drums")


def piece_of(notes: list[Note], tempo: int = 120, bars: int = 2) -> Piece:
    return Piece(notes=notes, tempo_bpm=tempo, bars=bars)


def moved(piece: Piece, **change) -> Piece:
    """The same piece with every pitched note changed (pitch by a shift, start by ticks)."""
    notes = [
        note if note.is_drum else dataclasses.replace(
            note,
            pitch=note.pitch + change.get("pitch", 0),
            start=note.start + change.get("start", 0),
        )
        for note in piece.notes
    ]  # fmt: skip
    return dataclasses.replace(piece, notes=notes)


def test_every_descriptor_is_a_finite_number_for_composed_music():
    for target in (BALLAD, ROCK):
        values = listening_features(target, compose(target, seed=2, duration_seconds=8))
        assert list(values) == list(LISTENING_FEATURES)
        assert all(isinstance(v, float) and v == v for v in values.values())


def test_an_octave_up_is_heard_as_a_higher_brighter_register_and_nothing_else_moves():
    piece = compose(ROCK, seed=4, duration_seconds=8)
    before = listening_features(ROCK, piece)
    after = listening_features(ROCK, moved(piece, pitch=12))

    assert after["lead_pitch"] == pytest.approx(before["lead_pitch"] + 12)
    assert after["bass_pitch"] == pytest.approx(before["bass_pitch"] + 12)
    assert after["brightness"] > before["brightness"]
    for name in ("tempo_bpm", "pitch_range", "syncopation", "loudness", "drum_hits_per_bar"):
        assert after[name] == pytest.approx(before[name]), name


def test_tempo_is_signed_against_the_request_and_fits_only_near_it():
    piece = compose(BALLAD, seed=1, duration_seconds=8)
    asked = listening_features(BALLAD, piece)
    double = listening_features(BALLAD, dataclasses.replace(piece, tempo_bpm=2 * piece.tempo_bpm))
    half = listening_features(BALLAD, dataclasses.replace(piece, tempo_bpm=piece.tempo_bpm // 2))

    assert (asked["tempo_vs_request"], asked["tempo_fit"]) == (0.0, 1.0)
    assert double["tempo_vs_request"] == pytest.approx(1.0)
    assert half["tempo_vs_request"] == pytest.approx(-1.0, abs=0.05)
    assert double["tempo_fit"] == half["tempo_fit"] == 0.0  # both far off: fit cannot tell


def test_rhythm_touch_and_form_descriptors():
    on_beats = [Note(start=4 * i, duration=4, pitch=60, velocity=80, program=0) for i in range(8)]
    off_beats = [dataclasses.replace(n, start=n.start + 2, duration=1) for n in on_beats]
    chords = [dataclasses.replace(n, pitch=p) for n in on_beats for p in (60, 64, 67)]
    first_bar = [n for n in on_beats if n.start < TICKS_PER_BAR]
    varied = first_bar + [dataclasses.replace(n, start=n.start + 16, pitch=62) for n in first_bar]

    legato = listening_features(BALLAD, piece_of(on_beats))
    staccato = listening_features(BALLAD, piece_of(off_beats))
    assert (legato["syncopation"], staccato["syncopation"]) == (0.0, 1.0)
    assert (legato["articulation"], staccato["articulation"]) == (1.0, 0.25)
    assert legato["polyphony"] == 1.0
    assert listening_features(BALLAD, piece_of(chords))["polyphony"] == 3.0
    assert legato["repetition"] == 1.0  # bar 2 plays bar 1 again
    assert listening_features(BALLAD, piece_of(varied))["repetition"] == 0.0


def test_silence_is_all_zeros_and_drums_alone_have_no_pitched_register():
    assert set(listening_features(BALLAD, piece_of([])).values()) == {0.0}
    kick = [Note(start=4 * i, duration=1, pitch=36, velocity=100, program=0, is_drum=True)
            for i in range(8)]  # fmt: skip
    drums = listening_features(ROCK, piece_of(kick))
    assert drums["drums"] == 1.0 and drums["drum_hits_per_bar"] == 4.0
    assert all(drums[name] == 0.0 for name in PITCHED_PART_FEATURES)
