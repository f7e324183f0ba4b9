import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generation.music.composer import compose
from generation.music.events import (
    EVENT_VOCABULARY,
    TICKS_PER_BAR,
    VELOCITY_LEVELS,
    Note,
    Piece,
    canonical_notes,
)
from generation.music.prompts import random_attributes
from generation.music.tokenizer import (
    BAR_ID,
    EOS_ID,
    PAD_ID,
    VOCAB_SIZE,
    crop_piece,
    decode_ids,
    encode_piece,
    is_well_formed,
    loop_piece,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    attributes_seed=st.integers(0, 2**31),
    compose_seed=st.integers(0, 2**31),
    seconds=st.floats(2.0, 12.0),
)
def test_composer_pieces_round_trip_through_token_ids(attributes_seed, compose_seed, seconds):
    attrs = random_attributes(random.Random(attributes_seed))
    piece = compose(attrs, seed=compose_seed, duration_seconds=seconds)

    ids = encode_piece(piece)
    decoded = decode_ids(ids)

    assert ids[-1] == EOS_ID and all(0 <= i < VOCAB_SIZE for i in ids)
    assert decoded.notes == piece.notes
    assert (decoded.tempo_bpm, decoded.bars) == (piece.tempo_bpm, piece.bars)
    assert is_well_formed(ids)


notes_strategy = st.builds(
    Note,
    start=st.integers(0, 4 * TICKS_PER_BAR - 1),
    duration=st.integers(1, 64),
    pitch=st.integers(0, 127),
    velocity=st.sampled_from(VELOCITY_LEVELS),
    program=st.integers(0, 127),
)
drum_strategy = st.builds(
    Note,
    start=st.integers(0, 4 * TICKS_PER_BAR - 1),
    duration=st.integers(1, 8),
    pitch=st.integers(35, 81),
    velocity=st.sampled_from(VELOCITY_LEVELS),
    program=st.just(0),
    is_drum=st.just(True),
)


@FAST
@given(notes=st.lists(st.one_of(notes_strategy, drum_strategy), min_size=1, max_size=40))
def test_arbitrary_note_lists_on_the_grid_round_trip(notes):
    piece = Piece(notes=canonical_notes(notes), tempo_bpm=100, bars=4)

    decoded = decode_ids(encode_piece(piece))

    assert decoded.notes == piece.notes


@FAST
@given(seed=st.integers(0, 2**31), bars=st.integers(1, 12))
def test_looping_repeats_the_bars_and_cropping_keeps_only_the_first(seed, bars):
    attrs = random_attributes(random.Random(seed))
    piece = crop_piece(compose(attrs, seed=seed, duration_seconds=12), 2)

    looped = loop_piece(piece, bars)

    assert looped.bars == bars
    period = 2 * TICKS_PER_BAR
    first = [n for n in looped.notes if n.start < min(bars, 2) * TICKS_PER_BAR]
    assert first == [n for n in piece.notes if n.start < bars * TICKS_PER_BAR]
    for note in looped.notes:
        assert note.start < bars * TICKS_PER_BAR
        original = note.start % period
        assert any(n.start == original and n.pitch == note.pitch for n in piece.notes)


def test_well_formedness_rejects_broken_grammar_and_accepts_a_bar_budget_stop():
    piece = compose(random_attributes(random.Random(3)), seed=3, duration_seconds=10)
    ids = encode_piece(piece, max_bars=2)
    assert is_well_formed(ids)

    assert not is_well_formed(ids[:-1])  # no proper end
    assert not is_well_formed(ids[1:])  # no tempo first
    pitch_at = next(i for i, t in enumerate(ids) if EVENT_VOCABULARY[t].startswith("Pitch"))
    assert not is_well_formed(ids[:pitch_at] + ids[pitch_at + 1 :])  # velocity without pitch

    budget_stop = [*ids[:-1], BAR_ID]  # sampling stops at the Bar past max_bars
    assert is_well_formed(budget_stop, max_bars=2)
    assert is_well_formed([*ids, PAD_ID, PAD_ID])
    assert decode_ids(budget_stop, max_bars=2).bars == 2
