"""A clip's variant differs from it along its one axis, as a listener would hear it, and in
nothing else the listening descriptors measure along the other axes."""

import dataclasses
import random

import pytest

from generation.music.attributes_measure import estimate_key
from generation.music.composer import compose
from generation.music.events import VELOCITY_LEVELS
from generation.music.listening import LISTENING_FEATURES, listening_features
from generation.music.prompts import parse_prompt
from generation.music.variants import AXIS_FEATURES, VARIANT_AXES, variant_piece

BALLAD = parse_prompt("slow sad piano ballad")
ROCK_TEXT = "energetic rock with electric guitar and drums"
ROCK = parse_prompt(ROCK_TEXT)


def heard(target, piece):
    return listening_features(target, piece)


@pytest.mark.parametrize("seed", range(6))
def test_tempo_changes_the_tempo_and_keeps_the_notes(seed):
    piece = compose(ROCK, seed=seed, duration_seconds=6)
    variant, change = variant_piece(piece, "tempo", random.Random(seed))
    assert variant.notes == piece.notes
    assert variant.tempo_bpm == change["tempo_bpm"]
    assert 0.75 <= variant.tempo_bpm / piece.tempo_bpm <= 1.3
    assert abs(variant.tempo_bpm / piece.tempo_bpm - 1) >= 0.08


@pytest.mark.parametrize("seed", range(6))
def test_transposition_moves_the_register_and_leaves_drums_and_rhythm(seed):
    piece = compose(ROCK, seed=seed, duration_seconds=6)
    variant, change = variant_piece(piece, "transpose", random.Random(seed))
    before, after = heard(ROCK, piece), heard(ROCK, variant)
    assert after["lead_pitch"] == pytest.approx(before["lead_pitch"] + change["semitones"])
    for name in ("tempo_bpm", "drum_hits_per_bar", "notes_per_bar", "syncopation", "drums"):
        assert after[name] == before[name], name


def test_drums_come_out_where_there_were_some_and_go_in_where_there_were_none():
    rock = compose(ROCK, seed=1, duration_seconds=6)
    ballad = compose(BALLAD, seed=1, duration_seconds=6)
    without, change_out = variant_piece(rock, "drums", random.Random(0))
    with_beat, change_in = variant_piece(ballad, "drums", random.Random(0))
    assert (change_out, change_in) == ({"drums": False}, {"drums": True})
    assert heard(ROCK, without)["drums"] == 0.0 and heard(BALLAD, with_beat)["drums"] == 1.0
    assert [n for n in with_beat.notes if not n.is_drum] == ballad.notes
    assert heard(BALLAD, with_beat)["drum_hits_per_bar"] == 12.0  # 8 hats, 2 kicks, 2 snares


@pytest.mark.parametrize("seed", range(8))
def test_density_thins_or_doubles_the_pitched_notes(seed):
    piece = compose(ROCK, seed=seed, duration_seconds=6)
    variant, change = variant_piece(piece, "density", random.Random(seed))
    pitched_before = sum(1 for n in piece.notes if not n.is_drum)
    pitched_after = sum(1 for n in variant.notes if not n.is_drum)
    if change["density"] == "thinner":
        assert pitched_after < 0.7 * pitched_before
    else:
        assert pitched_after > pitched_before
    assert [n for n in variant.notes if n.is_drum] == [n for n in piece.notes if n.is_drum]


def test_every_axis_is_known_and_an_unknown_one_is_refused():
    piece = compose(BALLAD, seed=0, duration_seconds=4)
    for axis in VARIANT_AXES:
        variant, change = variant_piece(piece, axis, random.Random(0))
        assert variant != piece and change
    with pytest.raises(ValueError, match="unknown variant axis"):
        variant_piece(piece, "timbre", random.Random(0))


@pytest.mark.parametrize("seed", range(4))
def test_each_axis_moves_the_features_it_is_said_to_isolate(seed):
    """The loop collects pairs along an axis to pin down the weights of `AXIS_FEATURES`:
    every axis names real features, and its variant moves at least one of them (a feature
    of the prompt's fit moves only where the prompt asks for it, so not every one each time)."""
    assert list(AXIS_FEATURES) == list(VARIANT_AXES)
    assert {name for names in AXIS_FEATURES.values() for name in names} <= set(LISTENING_FEATURES)
    for text in (ROCK_TEXT, "a calm folk song with flute, acoustic guitar and acoustic bass"):
        target = parse_prompt(text)
        piece = compose(target, seed=seed, duration_seconds=4)
        for axis, names in AXIS_FEATURES.items():
            variant, _ = variant_piece(piece, axis, random.Random(seed))
            before, after = heard(target, piece), heard(target, variant)
            assert any(before[name] != after[name] for name in names), (text, axis)


@pytest.mark.parametrize("seed", range(6))
def test_an_instrument_swap_changes_one_part_s_family_and_nothing_else(seed):
    piece = compose(ROCK, seed=seed, duration_seconds=6)
    variant, change = variant_piece(piece, "instruments", random.Random(seed))
    before, after = heard(ROCK, piece), heard(ROCK, variant)
    old, new = change["program_from"], change["program_to"]
    assert new // 8 not in {n.program // 8 for n in piece.notes if not n.is_drum}
    assert [(n.start, n.pitch) for n in variant.notes] == [(n.start, n.pitch) for n in piece.notes]
    assert {n.program for n in variant.notes if not n.is_drum} == (
        {n.program for n in piece.notes if not n.is_drum} - {old} | {new}
    )
    assert after["instruments_fit"] < before["instruments_fit"]  # the prompt's parts changed
    assert after["melodic_instruments"] == before["melodic_instruments"]


@pytest.mark.parametrize("seed", range(6))
def test_articulation_changes_only_how_long_the_pitched_notes_are_held(seed):
    piece = compose(ROCK, seed=seed, duration_seconds=6)
    variant, change = variant_piece(piece, "articulation", random.Random(seed))
    before, after = heard(ROCK, piece), heard(ROCK, variant)
    assert [(n.start, n.pitch, n.program, n.velocity) for n in variant.notes] == [
        (n.start, n.pitch, n.program, n.velocity) for n in piece.notes
    ]
    assert [n for n in variant.notes if n.is_drum] == [n for n in piece.notes if n.is_drum]
    if change["articulation"] == "legato":
        assert after["articulation"] > before["articulation"] and after["articulation"] > 0.95
    else:
        assert after["articulation"] < min(before["articulation"], 0.55)
    for name in ("tempo_bpm", "lead_pitch", "notes_per_bar", "syncopation", "loudness"):
        assert after[name] == before[name], name


def test_a_part_already_held_note_to_note_is_detached_not_made_more_legato():
    piece = compose(BALLAD, seed=2, duration_seconds=6)
    variants = [variant_piece(piece, "articulation", random.Random(seed)) for seed in range(20)]
    held = next(variant for variant, change in variants if change["articulation"] == "legato")
    assert heard(BALLAD, held)["articulation"] == 1.0
    for seed in range(5):
        _, change = variant_piece(held, "articulation", random.Random(seed))
        assert change == {"articulation": "detached"}


@pytest.mark.parametrize("seed", range(6))
def test_loudness_scales_the_pitched_velocities_on_the_stored_grid(seed):
    piece = compose(ROCK, seed=seed, duration_seconds=6)
    variant, change = variant_piece(piece, "loudness", random.Random(seed))
    before, after = heard(ROCK, piece), heard(ROCK, variant)
    if change["loudness"] == "louder":
        assert after["loudness"] > before["loudness"] * 1.2
    else:
        assert after["loudness"] < before["loudness"] * 0.8
    assert all(n.velocity in VELOCITY_LEVELS for n in variant.notes if not n.is_drum)
    assert [n for n in variant.notes if n.is_drum] == [n for n in piece.notes if n.is_drum]
    assert [(n.start, n.duration, n.pitch) for n in variant.notes] == [
        (n.start, n.duration, n.pitch) for n in piece.notes
    ]


def test_a_loud_piece_is_made_softer_so_the_change_is_not_clipped():
    piece = compose(ROCK, seed=0, duration_seconds=4)
    loud = dataclasses.replace(
        piece, notes=[dataclasses.replace(n, velocity=119) for n in piece.notes]
    )
    for seed in range(5):
        _, change = variant_piece(loud, "loudness", random.Random(seed))
        assert change == {"loudness": "softer"}


@pytest.mark.parametrize("seed", range(6))
def test_parts_leaves_one_pitched_part_out_and_keeps_the_rest_as_they_were(seed):
    piece = compose(ROCK, seed=seed, duration_seconds=6)
    variant, change = variant_piece(piece, "parts", random.Random(seed))
    before, after = heard(ROCK, piece), heard(ROCK, variant)
    left_out = change["part_left_out"]
    assert left_out in {n.program for n in piece.notes if not n.is_drum}
    assert variant.notes == [n for n in piece.notes if n.is_drum or n.program != left_out]
    assert after["melodic_instruments"] == before["melodic_instruments"] - 1
    assert (after["tempo_bpm"], after["drums"]) == (before["tempo_bpm"], before["drums"])


def test_parts_adds_a_part_an_octave_below_where_only_one_plays():
    piece = compose(BALLAD, seed=2, duration_seconds=6)
    assert len({n.program for n in piece.notes if not n.is_drum}) == 1
    variant, change = variant_piece(piece, "parts", random.Random(0))
    added = change["part_added"]
    new_part = [n for n in variant.notes if n.program == added]
    assert added // 8 not in {n.program // 8 for n in piece.notes}
    assert [n for n in variant.notes if n.program != added] == piece.notes
    assert [(n.start, n.pitch + 12) for n in new_part] == [(n.start, n.pitch) for n in piece.notes]
    assert heard(BALLAD, variant)["melodic_instruments"] == 2.0


@pytest.mark.parametrize(
    "text", ["happy piano ballad in C major", "sad piano ballad in A minor", ROCK_TEXT]
)
@pytest.mark.parametrize("seed", range(3))
def test_mode_turns_the_key_to_its_parallel_and_moves_only_three_degrees(text, seed):
    target = parse_prompt(text)
    piece = compose(target, seed=seed, duration_seconds=6)
    root, mode = estimate_key(piece.notes)
    variant, change = variant_piece(piece, "mode", random.Random(seed))
    before, after = heard(target, piece), heard(target, variant)

    assert change == {"key_root": root, "mode": "minor" if mode == "major" else "major"}
    assert estimate_key(variant.notes) == (root, change["mode"])  # heard in the parallel key
    assert after["minor_mode"] == 1.0 - before["minor_mode"]
    step = -1 if mode == "major" else 1
    moved_from = {4, 9, 11} if mode == "major" else {3, 8, 10}
    for old, new in zip(piece.notes, variant.notes, strict=True):
        # Rhythm, instruments and drums as they were; a pitch moves a semitone exactly when
        # it is one of the three degrees.
        assert dataclasses.replace(new, pitch=old.pitch) == old
        degree_moves = not old.is_drum and (old.pitch - root) % 12 in moved_from
        assert new.pitch - old.pitch == (step if degree_moves else 0)
    assert variant.notes != piece.notes
    for name in ("tempo_bpm", "melodic_instruments", "drums", "notes_per_bar", "articulation"):
        assert after[name] == before[name], name
