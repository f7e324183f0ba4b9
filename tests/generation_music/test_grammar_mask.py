"""The models' grammar mask: it must allow every sequence the tokenizer writes (a forbidden
training target would make the loss infinite), and samples obey it. Both formats: the plan
(planned generator) and the first generator's header."""

import random
from dataclasses import replace

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generation.music.composer import compose
from generation.music.events import note_sort_key
from generation.music.model import SIZES as FIRST_SIZES
from generation.music.model import MusicGPT
from generation.music.plan import plan_for_piece
from generation.music.planned import SIZES, PlannedMusicGPT
from generation.music.prompt_sampling import random_attributes
from generation.music.prompts import parse_prompt
from generation.music.tokenizer import (
    BAR_ID,
    BOS_ID,
    EOS_ID,
    PLAN_GRAMMAR,
    TOKEN_TO_ID,
    TOKENS,
    crop_piece,
    decode_plan,
    encode_piece,
    is_well_formed,
    one_strike_per_key,
)


def teacher_forced_logprobs(model, sequences: list[list[int]]) -> torch.Tensor:
    longest = max(len(ids) for ids in sequences)
    targets = torch.zeros(len(sequences), longest, dtype=torch.long)
    for row, ids in enumerate(sequences):
        targets[row, : len(ids)] = torch.tensor(ids)
    inputs = torch.cat([torch.full((len(sequences), 1), BOS_ID), targets[:, :-1]], dim=1)
    with torch.no_grad():
        logits = model(torch.randn(len(sequences), 384), inputs)
    logprobs = logits.log_softmax(-1).gather(2, targets[..., None])[..., 0]
    return torch.cat([logprobs[row, : len(ids)] for row, ids in enumerate(sequences)])


PLANNED = PlannedMusicGPT(replace(SIZES["tiny"], body=replace(SIZES["tiny"].body, block_size=1024)))
FIRST = MusicGPT(replace(FIRST_SIZES["tiny"], block_size=1024))  # two busy bars fit


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), bars=st.integers(1, 2), cut=st.integers(20, 400))
def test_the_mask_allows_every_token_the_tokenizer_writes(seed, bars, cut):
    attrs = random_attributes(random.Random(seed))
    piece = compose(attrs, seed=seed, duration_seconds=12)
    plan = plan_for_piece(attrs, crop_piece(piece, bars))
    planned = [
        encode_piece(piece, plan=plan, max_bars=bars),
        encode_piece(piece, plan=plan, max_bars=bars, max_tokens=cut),
    ]
    first = [
        encode_piece(piece, max_bars=bars),
        encode_piece(piece, max_bars=bars, max_tokens=cut),
        encode_piece(crop_piece(piece, 0)),
    ]

    torch.manual_seed(0)
    assert torch.isfinite(teacher_forced_logprobs(PLANNED.eval(), planned)).all()
    assert torch.isfinite(teacher_forced_logprobs(FIRST.eval(), first)).all()


def sample_ids(model, seed: int) -> list[list[int]]:
    torch.manual_seed(seed)
    tokens, _, lengths = model.sample(
        torch.randn(16, 384), max_new_tokens=400, max_bars=1, generator=torch.Generator()
    )
    return [tokens[row, :length].tolist() for row, length in enumerate(lengths.tolist())]


def complete(ids: list[int]) -> bool:
    """Ended, with a note: the grammar cannot force a note or an end."""
    ended = ids[-1] == EOS_ID or ids.count(BAR_ID) == 2
    return ended and any(TOKENS[i].startswith("Duration") for i in ids)


def test_an_untrained_model_samples_only_well_formed_pieces():
    for model in (PlannedMusicGPT(SIZES["tiny"]).eval(), MusicGPT(FIRST_SIZES["tiny"]).eval()):
        checked = [ids for ids in sample_ids(model, 1) if complete(ids)]
        assert len(checked) >= 4
        for ids in checked:
            assert is_well_formed(ids, max_bars=1, grammar=model.grammar), ids


def test_an_untrained_planner_writes_a_whole_plan_of_distinct_instruments_every_time():
    """Random weights put no order on the plan's fields: the mask alone makes every sample's
    header a complete plan, with each instrument at most once and at most eight."""
    for ids in sample_ids(PlannedMusicGPT(SIZES["tiny"]).eval(), 2):
        plan = decode_plan(ids)
        assert plan is not None, [TOKENS[i] for i in ids[:20]]
        assert len(set(plan.instruments)) == len(plan.instruments)
        assert len(plan.instruments) + plan.drums <= PLAN_GRAMMAR.max_header_instruments


def test_the_plan_grammar_refuses_a_repeated_instrument_and_a_missing_field():
    attrs = random_attributes(random.Random(5))
    piece = crop_piece(compose(attrs, seed=5, duration_seconds=8), 1)
    ids = encode_piece(piece, plan=plan_for_piece(attrs, piece))
    assert is_well_formed(ids)
    first_program = next(i for i, t in enumerate(ids) if TOKENS[t].startswith("Program_"))

    repeated = [*ids[: first_program + 1], ids[first_program], *ids[first_program + 1 :]]
    without_mode = [t for t in ids if not TOKENS[t].startswith("Mode_")]
    ascending_tempo_first = [TOKEN_TO_ID["Tempo_100"], *ids[1:]]

    assert not is_well_formed(repeated)
    assert not is_well_formed(without_mode)
    assert not is_well_formed(ascending_tempo_first, grammar=PLAN_GRAMMAR)


def test_pitches_rise_within_an_onset_s_instrument_in_the_check_and_the_mask():
    """A chord is written lowest note first; a repeated or falling pitch within one onset's
    instrument is refused by `is_well_formed` and gets probability 0 from the mask (a sample
    that piled notes onto one onset ran on until its token budget was spent), while a new
    onset or instrument starts over."""
    attrs = parse_prompt("slow sad piano ballad")
    piece = crop_piece(compose(attrs, seed=2, duration_seconds=8), 1)
    plan = plan_for_piece(attrs, piece)
    header = encode_piece(piece, plan=plan)[: len(plan.events())]

    def note(pitch: int) -> list[int]:
        return [
            TOKEN_TO_ID[f"Pitch_{pitch}"],
            TOKEN_TO_ID["Velocity_71"],
            TOKEN_TO_ID["Duration_4"],
        ]

    onset, piano = [BAR_ID, TOKEN_TO_ID["Position_0"]], TOKEN_TO_ID["Program_0"]
    rising = [*header, *onset, piano, *note(48), *note(55), *note(60), EOS_ID]
    again = [*header, *onset, piano, *note(48), *note(55), *note(55), EOS_ID]
    falling = [*header, *onset, piano, *note(48), *note(55), *note(52), EOS_ID]
    next_onset = [*header, *onset, piano, *note(55), TOKEN_TO_ID["Position_4"], piano, *note(52)]

    assert is_well_formed(rising) and is_well_formed([*next_onset, EOS_ID])
    assert not is_well_formed(again) and not is_well_formed(falling)
    torch.manual_seed(0)
    scores = teacher_forced_logprobs(PLANNED.eval(), [rising, again, falling])
    per_sequence = scores.split(len(rising))
    assert torch.isfinite(per_sequence[0]).all()
    offending = len(header) + 3 + 6  # BAR, Position, Program, two notes, then the third pitch
    for refused in per_sequence[1:]:
        assert refused[offending] == float("-inf")
        assert torch.isfinite(refused[:offending]).all()


def test_a_stored_clip_that_strikes_one_key_twice_at_once_is_rescored_with_it_once():
    piece = crop_piece(
        compose(parse_prompt("slow sad piano ballad"), seed=2, duration_seconds=8), 1
    )
    doubled = replace(piece, notes=[*piece.notes, piece.notes[0]])

    once = one_strike_per_key(doubled)

    assert sorted(once.notes, key=note_sort_key) == sorted(piece.notes, key=note_sort_key)
    assert is_well_formed(encode_piece(once, plan=plan_for_piece(parse_prompt("piano"), once)))
