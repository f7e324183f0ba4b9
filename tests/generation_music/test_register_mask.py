"""A plan declares only a register band it can be played in (plan.playable_registers,
planned.RegisterMask): sampling never draws another, and teacher forcing scores what
sampling drew exactly, and what it could not draw finitely."""

import pytest
import torch

from generation.music.composer import REGISTER_HIGH, REGISTER_STEP, ComposerStyle, home_register
from generation.music.learned import SamplingConfig, SymbolicTransformerBackend
from generation.music.plan import _shift_to, playable_registers
from generation.music.planned import SIZES, PlannedMusicGPT
from generation.music.prompts import MusicAttributes
from generation.music.text_encoder import get_text_encoder
from generation.music.tokenizer import TOKEN_TO_ID

PROMPTS = ["slow sad piano ballad", "fast techno with drums", "jazz trio in F major"]


def fields_of(plan):
    return plan.genre, plan.mood, plan.key_root, plan.mode, plan.instruments


@pytest.mark.parametrize(
    "genre, mood, key_root, mode, instruments",
    [("ballad", "sad", 0, "minor", (0, 32)), ("jazz", "happy", 5, "major", (65, 0, 32)),
     ("techno", "energetic", 9, "minor", (81, 38))],
)  # fmt: skip
def test_the_playable_bands_are_those_the_composer_can_move_the_melody_s_home_to(
    genre, mood, key_root, mode, instruments
):
    attrs = MusicAttributes(
        genre=genre, tempo_bpm=120, key_root=key_root, mode=mode, instruments=instruments,
        drums=False, mood=mood, density=0.5,
    )  # fmt: skip
    playable = playable_registers(genre, mood, key_root, mode, instruments)
    home = home_register(attrs)

    assert home in playable
    # 25 shifts of -12..+12 semitones reach up to seven 4-semitone bands around home (fewer
    # where the lead's range is clamped: a piano's right hand stays above its left).
    assert 2 <= len(playable) <= 8
    assert all(abs(band - home) <= 12 + REGISTER_STEP for band in playable)
    assert home + 5 * REGISTER_STEP not in playable
    for band in playable:  # the composer plays each of them as declared
        assert home_register(attrs, ComposerStyle(register_shift=_shift_to(attrs, band))) == band


def test_a_plan_of_drums_alone_may_declare_any_band():
    assert REGISTER_HIGH in playable_registers("techno", "energetic", 0, "minor", ())


@pytest.fixture(scope="module")
def drawn_high():
    """A tiny planner that puts nearly all its mass on the highest band, which no plan of
    these prompts can be played in."""
    torch.manual_seed(0)
    model = PlannedMusicGPT(SIZES["tiny"]).eval()
    highest = TOKEN_TO_ID[f"Register_{REGISTER_HIGH}"]
    model.planner.logit_mask[highest] = 30.0
    sampling = SamplingConfig(max_bars=1)
    return SymbolicTransformerBackend(model, sampling=sampling, text_encoder=get_text_encoder())


@pytest.mark.parametrize("part", ["plans", "whole sequences"])
def test_a_planner_drawn_to_an_unplayable_band_declares_only_playable_ones(drawn_high, part):
    if part == "plans":
        samples = drawn_high.sample_plans(PROMPTS, 6, seed=1)
    else:
        samples = drawn_high.sample(PROMPTS, 2, seed=1)

    plans = [sample.plan for sample in samples]
    assert all(plan is not None and plan.instruments for plan in plans)
    # Unmasked, the +30 logit would have made nearly every plan declare REGISTER_HIGH.
    assert all(REGISTER_HIGH not in playable_registers(*fields_of(plan)) for plan in plans)
    assert all(plan.register in playable_registers(*fields_of(plan)) for plan in plans)
    # Teacher forcing applies the same mask: the log-probs recorded while sampling.
    rescored = drawn_high.seq_logprobs([s.prompt for s in samples], [s.token_ids for s in samples])
    recorded = torch.tensor([s.logprob for s in samples], dtype=torch.float64)
    torch.testing.assert_close(rescored.detach(), recorded, atol=1e-4, rtol=0)


def test_a_sequence_that_declares_an_unplayable_band_still_scores_finitely(drawn_high):
    (sample,) = drawn_high.sample_plans(PROMPTS[:1], 1, seed=2)
    declared = TOKEN_TO_ID[f"Register_{sample.plan.register}"]
    unplayable = [token if token != declared else TOKEN_TO_ID[f"Register_{REGISTER_HIGH}"]
                  for token in sample.token_ids]  # fmt: skip

    scores = drawn_high.seq_logprobs([sample.prompt] * 2, [sample.token_ids, unplayable]).detach()

    # A corpus piece may declare a band no sample could: it trains, finitely.
    assert torch.isfinite(scores).all()
    # The model's own preference for the highest band shows when it is the token scored.
    assert float(scores[1]) > float(scores[0])
