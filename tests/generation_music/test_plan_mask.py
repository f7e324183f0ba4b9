"""What a plan may declare beyond the grammar (planned.PlanMask): only a register band it can
be played in (plan.playable_registers), and under a PromptLock only what its prompt asks on
the kept fields. Sampling never draws anything else, teacher forcing scores what sampling
drew exactly, and what it could not draw finitely."""

import pytest
import torch

from generation.music.composer import REGISTER_HIGH, REGISTER_STEP, ComposerStyle, home_register
from generation.music.evaluation import FIT_PARTS, plan_fit
from generation.music.learned import SamplingConfig, SymbolicTransformerBackend
from generation.music.plan import _shift_to, playable_registers
from generation.music.planned import SIZES, PlannedMusicGPT, PromptLock
from generation.music.prompts import MusicAttributes, parse_prompt
from generation.music.text_encoder import get_text_encoder
from generation.music.tokenizer import TOKEN_TO_ID, TOKENS

PROMPTS = ["slow sad piano ballad", "fast techno with drums", "jazz trio in F major"]
ASKING = [
    "A jazz tune in F major at 140 BPM with tenor sax, piano, acoustic bass and drums, dense.",
    "A sad ballad in A minor at 64 BPM with cello and piano, sparse.",
    "fast techno with drums",
]


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


@pytest.fixture(scope="module")
def random_planner():
    """A tiny untrained planned generator: its plans follow no prompt."""
    torch.manual_seed(0)
    return PlannedMusicGPT(SIZES["tiny"]).eval()


def backend(model, kept=()):
    sampling = SamplingConfig(max_bars=1, kept_fields=kept)
    return SymbolicTransformerBackend(model, sampling=sampling, text_encoder=get_text_encoder())


def mean_fits(samples) -> dict[str, float]:
    fits = [plan_fit(parse_prompt(s.prompt), s.plan) for s in samples]
    return {name: sum(fit[name] for fit in fits) / len(fits) for name in FIT_PARTS}


def test_that_the_lock_holds_every_kept_field_and_only_those(random_planner):
    free = backend(random_planner).sample_plans(ASKING, 8, seed=1)
    assert all(fit < 0.9 for fit in mean_fits(free).values())  # it would stray on each

    locked = backend(random_planner, ("tempo", "drums", "key")).sample_plans(ASKING, 8, seed=1)
    fits = mean_fits(locked)
    assert fits["tempo"] == fits["drums"] == fits["key"] == 1.0
    assert fits["instruments"] < 0.9 and fits["mode"] < 0.9  # not kept, still free

    everything = backend(random_planner, FIT_PARTS)
    for samples in (everything.sample_plans(ASKING, 8, seed=2), everything.sample(ASKING, 2, 3)):
        assert set(mean_fits(samples).values()) == {1.0}
        rescored = everything.seq_logprobs(
            [s.prompt for s in samples], [s.token_ids for s in samples]
        )
        recorded = torch.tensor([s.logprob for s in samples], dtype=torch.float64)
        torch.testing.assert_close(rescored.detach(), recorded, atol=1e-4, rtol=0)


def test_a_locked_model_scores_a_plan_that_strays_finitely(random_planner):
    free = backend(random_planner).sample_plans(ASKING[:1], 4, seed=1)
    strays = [s for s in free if plan_fit(parse_prompt(s.prompt), s.plan)["tempo"] < 1]
    assert strays

    scores = backend(random_planner, FIT_PARTS).seq_logprobs(
        [s.prompt for s in strays], [s.token_ids for s in strays]
    )

    assert torch.isfinite(scores).all()


def test_the_lock_asks_for_every_kept_instrument_then_the_drums_before_the_register():
    target = parse_prompt(ASKING[0])  # tenor sax, piano, acoustic bass and drums
    lock = PromptLock.of(target, ["instruments", "drums", "tempo"])
    programs = [TOKEN_TO_ID[f"Program_{p}"] for p in target.instruments]
    registers = {i for i, token in enumerate(TOKENS) if token.startswith("Register_")}
    drums = TOKEN_TO_ID["Drums"]

    opening = [TOKEN_TO_ID[f"Tempo_{target.tempo_bpm}"], programs[0]]
    forbidden = set(lock.forbidden(opening))
    assert registers | {drums} <= forbidden  # two instruments still to come
    assert not set(programs) & forbidden
    assert TOKEN_TO_ID["Program_0" if 0 not in target.instruments else "Program_1"] in forbidden
    assert TOKEN_TO_ID["Tempo_120"] in forbidden and TOKEN_TO_ID["Tempo_140"] not in forbidden
    # Every instrument declared: Drums next, then the register.
    assert drums not in lock.forbidden(opening + programs[1:])
    assert registers <= set(lock.forbidden(opening + programs[1:]))
    assert not registers & set(lock.forbidden(opening + programs[1:] + [drums]))
    with pytest.raises(ValueError, match="no such prompt fields"):
        PromptLock.of(target, ["register"])


def test_a_lock_the_grammar_cannot_meet_leaves_the_row_the_grammar_s_choice(random_planner):
    """Nine instruments where a plan may declare eight: sampling still ends every plan."""
    nine = PromptLock(fixed=(), instruments=frozenset(
        TOKEN_TO_ID[f"Program_{p}"] for p in range(9)), drums=None)  # fmt: skip
    emb = get_text_encoder().encode(PROMPTS[:2])

    tokens, logprobs, _ = random_planner.sample(
        emb, max_new_tokens=40, max_bars=0, locks=[nine, nine], generator=torch.Generator()
    )

    assert torch.isfinite(logprobs).all()
    assert all(TOKEN_TO_ID["Bar"] in row.tolist() for row in tokens)


def test_kept_fields_are_sampling_settings_that_survive_a_checkpoint(random_planner, tmp_path):
    kept = backend(random_planner, ["tempo", "key"])  # a list, as JSON gives it
    assert kept.sampling.kept_fields == ("tempo", "key")
    loaded = SymbolicTransformerBackend.load(kept.save(tmp_path / "g.pt"))
    assert loaded.sampling == kept.sampling
    assert SamplingConfig.from_dict({"kept_fields": ["mode"]}).kept_fields == ("mode",)
    with pytest.raises(ValueError, match="kept_fields"):
        SamplingConfig.from_dict({"kept_fields": ["register"]})
