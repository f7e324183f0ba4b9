import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generation.music.composer import ComposerStyle, compose
from generation.music.events import (
    EVENT_TO_ID,
    EVENT_VOCABULARY,
    TICKS_PER_BAR,
    VELOCITY_LEVELS,
    Note,
    Piece,
    canonical_notes,
    ids_to_events,
)
from generation.music.plan import Plan, plan_agreement, plan_for_piece
from generation.music.prompt_sampling import random_attributes
from generation.music.tokenizer import (
    BAR_ID,
    EOS_ID,
    PAD_ID,
    PLAN_GRAMMAR,
    VOCAB_SIZE,
    crop_piece,
    decode_ids,
    decode_plan,
    encode_piece,
    grammar_of,
    header_length,
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
    header = ids_to_events(ids[: header_length(ids)])
    programs = sorted({n.program for n in piece.notes if not n.is_drum})
    drums = ["Drums"] if any(n.is_drum for n in piece.notes) else []
    assert header == [f"Tempo_{piece.tempo_bpm}"] + [f"Program_{p}" for p in programs] + drums


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

    ids = encode_piece(piece)
    decoded = decode_ids(ids)

    assert decoded.notes == piece.notes
    assert decoded.tempo_bpm == 100
    # the header declares exactly the instruments played; a key struck twice at one onset
    # round-trips, but the grammar (pitches rise within an onset's instrument) refuses it
    keys = [(n.start, n.is_drum, n.program, n.pitch) for n in notes]
    assert is_well_formed(ids) == (len(set(keys)) == len(keys))


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


def test_well_formedness_checks_the_header_against_the_body():
    notes = [Note(0, 4, 60, 87, 0), Note(0, 4, 64, 87, 33), Note(4, 2, 36, 87, 0, is_drum=True)]
    ids = encode_piece(Piece(notes=canonical_notes(notes), tempo_bpm=100, bars=1))
    program_0, program_33, drums = (EVENT_TO_ID[t] for t in ("Program_0", "Program_33", "Drums"))
    assert ids[:4] == [EVENT_TO_ID["Tempo_100"], program_0, program_33, drums]
    assert ids[4] == BAR_ID and is_well_formed(ids)

    assert not is_well_formed([ids[0], program_33, program_0, *ids[3:]])  # not ascending
    assert not is_well_formed([ids[0], program_0, *ids[3:]])  # Program_33 undeclared
    assert not is_well_formed([ids[0], program_0, program_33, *ids[4:]])  # Drums undeclared
    # The header's Program tokens never reach the notes: only the body's do.
    over_declared = [ids[0], program_0, EVENT_TO_ID["Program_40"], program_33, *ids[3:]]
    assert decode_ids(over_declared).notes == decode_ids(ids).notes


@FAST
@given(
    attributes_seed=st.integers(0, 2**31),
    compose_seed=st.integers(0, 2**31),
    shift=st.sampled_from((-7, 0, 4)),
)
def test_planned_sequences_round_trip_and_declare_what_their_notes_play(
    attributes_seed, compose_seed, shift
):
    attrs = random_attributes(random.Random(attributes_seed))
    style = ComposerStyle(register_shift=shift)
    piece = crop_piece(compose(attrs, seed=compose_seed, duration_seconds=8, style=style), 2)
    plan = plan_for_piece(attrs, piece)

    ids = encode_piece(piece, plan=plan)

    assert decode_ids(ids).notes == piece.notes and decode_plan(ids) == plan
    assert is_well_formed(ids) and grammar_of(ids) is PLAN_GRAMMAR
    assert plan.instruments[0] == attrs.instruments[0]  # the lead comes first
    agreement = plan_agreement(plan, piece)
    assert {agreement[f] for f in ("tempo", "instruments", "drums", "register")} == {1.0}


def test_a_plan_reads_back_from_its_tokens_and_a_broken_header_reads_as_none():
    plan = Plan("hip hop", "dark", 90, 3, "minor", 0.5, (4, 89, 38), True, 60)

    events = plan.events()

    assert events[0] == "Genre_hip-hop" and events[-1] == "Register_60"
    assert Plan.from_events(events) == plan
    assert Plan.from_events([e for e in events if not e.startswith("Key_")]) is None
    assert decode_plan(encode_piece(Piece(notes=[], tempo_bpm=90, bars=1))) is None
