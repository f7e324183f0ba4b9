"""DPO on synthetic preference pairs whose winner is known: for every prompt, the chosen
track's notes lie high (MIDI 72-95) and the rejected one's low (36-59). The pairs go through
`token_ids_for_events` from looped-clip events, as stored tracks do; the held-out pairs have
other prompts and other notes."""

import copy
import random

import pytest
import torch

from generation.music.composer import compose
from generation.music.events import Note, Piece, piece_to_events
from generation.music.learned import SamplingConfig, SymbolicTransformerBackend
from generation.music.model import SIZES, MusicGPT
from generation.music.prompts import parse_prompt
from generation.music.text_encoder import get_text_encoder
from generation.music.tokenizer import decode_ids, encode_piece, is_well_formed, loop_piece
from reward.learning.dpo import (
    DPOConfig,
    DPOPair,
    fit_pairs,
    token_ids_for_events,
    train_dpo,
)
from reward.learning.loop import Cancelled, LoopConfig
from tests.reward_learning.synthetic import one_thread  # noqa: F401  (autouse fixture)

PROMPTS = ["slow sad piano ballad", "fast techno with drums", "jazz trio in F major", "lofi"]
HELD_OUT = ["happy folk song", "dark cinematic strings"]


@pytest.fixture(scope="module")
def encoder():
    return get_text_encoder()


def models(encoder):
    torch.manual_seed(0)
    model = MusicGPT(SIZES["tiny"]).eval()
    sampling = SamplingConfig(max_bars=1)
    policy = SymbolicTransformerBackend(model, sampling=sampling, text_encoder=encoder)
    reference = SymbolicTransformerBackend(
        copy.deepcopy(model), sampling=sampling, text_encoder=encoder
    )
    return policy, reference


def one_bar(rng: random.Random, low: int, high: int) -> Piece:
    notes = [
        Note(
            start=rng.randrange(16),
            duration=rng.choice((2, 4)),
            pitch=rng.randrange(low, high),
            velocity=rng.choice((63, 79, 95)),
            program=rng.choice((0, 24)),
        )
        for _ in range(6)
    ]
    return Piece(notes=notes, tempo_bpm=rng.choice((90, 120)), bars=1)


def stored_events(piece: Piece) -> list[str]:
    """What the platform stores for a track: the events of the clip, looped to 4 bars."""
    return piece_to_events(loop_piece(piece, 4))


def pairs(prompts: list[str], count: int, seed: int) -> list[DPOPair]:
    rng = random.Random(seed)
    return [
        DPOPair(
            prompts[index % len(prompts)],
            chosen=token_ids_for_events(stored_events(one_bar(rng, 72, 96)), max_bars=1),
            rejected=token_ids_for_events(stored_events(one_bar(rng, 36, 60)), max_bars=1),
        )
        for index in range(count)
    ]


def config(**loop) -> DPOConfig:
    settings = dict(
        steps=30,
        learning_rate=1e-3,
        min_learning_rate=1e-4,
        warmup_steps=5,
        weight_decay=0.0,
        checkpoint_every=100,
        eval_every=10,
        num_threads=1,
    )
    return DPOConfig(loop=LoopConfig(**(settings | loop)), beta=0.1, batch_size=8)


def test_token_ids_of_a_stored_track_are_the_clip_as_the_model_writes_it(encoder):
    piece = one_bar(random.Random(3), 48, 84)

    ids = token_ids_for_events(stored_events(piece), max_bars=1)

    assert ids == encode_piece(piece, max_bars=1)  # the loop's first bar, header, EOS
    assert is_well_formed(ids, max_bars=1)
    assert sorted(decode_ids(ids).notes, key=repr) == sorted(piece.notes, key=repr)
    assert token_ids_for_events(stored_events(piece), max_bars=1, max_tokens=10) == ids[:10]
    # a composer track of several instruments, cropped to the model's bar budget
    composed = compose(parse_prompt("jazz trio in F major"), seed=1, duration_seconds=10)
    ids = token_ids_for_events(piece_to_events(composed), max_bars=2)
    assert is_well_formed(ids, max_bars=2) and decode_ids(ids).bars == 2
    policy, _ = models(encoder)
    with torch.no_grad():
        assert torch.isfinite(policy.seq_logprobs(["jazz trio in F major"], [ids])).all()


def test_dpo_moves_the_log_ratio_of_winners_above_losers(encoder, tmp_path):
    policy, reference = models(encoder)

    result = train_dpo(
        config(), policy, reference, pairs(PROMPTS, 64, 1), pairs(HELD_OUT, 32, 2), tmp_path
    )

    before, metrics = result.metrics["initial"], result.metrics
    # policy = reference: every implicit reward margin is exactly zero (a tie counts half)
    assert before["heldout_margin"] == 0.0 and before["heldout_reward_accuracy"] == 0.5
    assert before["heldout_loss"] == pytest.approx(0.6931, abs=1e-4)
    assert metrics["heldout_reward_accuracy"] > 0.8
    assert metrics["heldout_margin"] > 0.3
    assert metrics["heldout_loss"] < 0.5
    assert metrics["heldout_kl_chosen"] > metrics["heldout_kl_rejected"]
    curve = [entry for entry in result.history if "heldout_margin" in entry]
    assert [entry["step"] for entry in curve] == [10, 20, 30]
    for key in ("loss", "reward_accuracy", "margin", "kl_chosen", "kl_rejected"):
        assert all(key in entry for entry in result.history), key
    assert metrics["train_pairs"] == 64 and metrics["heldout_pairs"] == 32


def test_a_cancelled_dpo_run_resumes_exactly(encoder, tmp_path):
    train, held_out = pairs(PROMPTS, 16, 1), pairs(HELD_OUT, 8, 2)
    settings = config(steps=6, eval_every=3)

    def cancel_at_3(step, total, entry):
        if step == 3:
            raise Cancelled

    policy, reference = models(encoder)
    with pytest.raises(Cancelled):
        train_dpo(settings, policy, reference, train, held_out, tmp_path / "a", cancel_at_3)
    policy, reference = models(encoder)
    resumed = train_dpo(settings, policy, reference, train, held_out, tmp_path / "a")
    policy, reference = models(encoder)
    straight = train_dpo(settings, policy, reference, train, held_out, tmp_path / "b")

    assert resumed.resumed_from == 3 and resumed.history == straight.history
    for name, tensor in straight.policy.model.state_dict().items():
        assert torch.equal(resumed.policy.model.state_dict()[name], tensor), name


def test_sequences_longer_than_the_context_are_cut_and_bad_inputs_are_refused(encoder, tmp_path):
    policy, reference = models(encoder)
    room = SIZES["tiny"].block_size - SIZES["tiny"].n_prefix
    short, long = pairs(PROMPTS, 2, 1)
    busy = compose(parse_prompt("busy fast techno with drums"), seed=1, duration_seconds=30)
    too_long = DPOPair(
        "lofi", chosen=token_ids_for_events(piece_to_events(busy), 16), rejected=short.rejected
    )

    fitted, cut = fit_pairs([too_long, long], policy)

    assert cut == 1 and fitted[0].chosen == too_long.chosen[:room] and fitted[1] == long
    with torch.no_grad():  # the cut sequence fits the model
        assert torch.isfinite(policy.seq_logprobs(["lofi"], [fitted[0].chosen])).all()
    with pytest.raises(ValueError, match="empty"):
        fit_pairs([DPOPair("lofi", chosen=[], rejected=short.rejected)], policy)
    with pytest.raises(ValueError, match="no training pairs"):
        train_dpo(config(), policy, reference, [], [], tmp_path)
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0.0)
    assert DPOConfig.from_dict(config().to_dict()) == config()
