import pytest

from generation.music.composer import compose
from generation.music.events import (
    EVENT_TO_ID,
    EVENT_VOCABULARY,
    TEMPO_BUCKETS,
    VELOCITY_LEVELS,
    Note,
    Piece,
    canonical_notes,
    events_to_ids,
    events_to_piece,
    ids_to_events,
    piece_to_events,
    quantize_tempo,
    quantize_velocity,
)
from generation.music.prompts import GENRES, parse_prompt


@pytest.mark.parametrize("genre", GENRES)
@pytest.mark.parametrize("seed", [0, 7])
def test_composed_pieces_survive_the_event_round_trip_exactly(genre, seed):
    piece = compose(parse_prompt(f"{genre} with drums"), seed=seed, duration_seconds=12)
    assert piece.notes, "a composed piece has notes"

    decoded = events_to_piece(piece_to_events(piece))

    assert decoded.notes == piece.notes
    assert decoded.tempo_bpm == piece.tempo_bpm
    assert decoded.bars == piece.bars


def test_hand_written_piece_round_trips_including_empty_bars_and_drums():
    notes = [
        Note(start=0, duration=4, pitch=60, velocity=87, program=0),
        Note(start=0, duration=16, pitch=48, velocity=55, program=33),
        Note(start=0, duration=1, pitch=36, velocity=111, program=0, is_drum=True),
        Note(start=37, duration=64, pitch=72, velocity=7, program=73),
    ]
    piece = Piece(notes=canonical_notes(notes), tempo_bpm=100, bars=5)

    events = piece_to_events(piece)
    decoded = events_to_piece(events)

    assert events[0] == "Tempo_100"
    assert events.count("Bar") == 5
    assert decoded.notes == piece.notes
    assert decoded.bars == 5


def test_events_interleave_position_instrument_and_note_triples():
    piece = Piece(notes=[Note(20, 2, 64, 79, 40)], tempo_bpm=120, bars=2)

    assert piece_to_events(piece) == [
        "Tempo_120",
        "Bar",
        "Bar",
        "Position_4",
        "Program_40",
        "Pitch_64",
        "Velocity_79",
        "Duration_2",
    ]


def test_off_grid_values_are_snapped_onto_the_grids():
    piece = Piece(notes=[Note(0, 4, 60, 90, 0)], tempo_bpm=121, bars=1)

    decoded = events_to_piece(piece_to_events(piece))

    assert decoded.notes[0].velocity == quantize_velocity(90) == 87
    assert decoded.tempo_bpm == quantize_tempo(121) in TEMPO_BUCKETS


def test_vocabulary_is_unique_stable_and_covers_every_event():
    assert len(EVENT_VOCABULARY) == len(set(EVENT_VOCABULARY))
    assert EVENT_VOCABULARY[:3] == ["PAD", "BOS", "EOS"]
    assert len(VELOCITY_LEVELS) == 16
    expected_size = 3 + len(TEMPO_BUCKETS) + 1 + 16 + 128 + 1 + 128 + 16 + 64
    assert len(EVENT_VOCABULARY) == expected_size
    piece = compose(parse_prompt("busy funk with drums"), seed=3, duration_seconds=8)
    events = piece_to_events(piece)
    assert all(token in EVENT_TO_ID for token in events)
    assert ids_to_events(events_to_ids(events)) == events


def test_decoding_tolerates_garbage_from_a_sampler():
    events = ["BOS", "Pitch_60", "Duration_4", "Bar", "Velocity_87", "Position_99"]
    events += [
        "Position_2",
        "Program_5",
        "Pitch_61",
        "Velocity_87",
        "Duration_3",
        "Nonsense",
        "EOS",
    ]

    piece = events_to_piece(events)

    assert piece.notes == [Note(2, 3, 61, 87, 5)]
    assert piece.tempo_bpm == 120  # default when no Tempo event was sampled


@pytest.mark.parametrize(
    "kwargs",
    [
        {"duration": 0},
        {"duration": 65},
        {"pitch": 128},
        {"velocity": 0},
        {"start": -1},
        {"program": 128},
    ],
)
def test_notes_reject_values_the_event_format_cannot_hold(kwargs):
    fields = {"start": 0, "duration": 4, "pitch": 60, "velocity": 87, "program": 0}
    with pytest.raises(ValueError):
        Note(**{**fields, **kwargs})
