"""DPO on synthetic preference pairs whose winner is known: for every prompt, the chosen
track's notes lie high (MIDI 72-95) and the rejected one's low (36-59). The pairs go through
the backend's `sequence_for` from looped-clip events, as stored tracks do; the held-out pairs
have other prompts and other notes."""

import copy
import random

import pytest
import torch

from generation.music.composer import compose
from generation.music.events import Note, Piece, piece_to_events
from generation.music.learned import SamplingConfig, SymbolicTransformerBackend
from generation.music.model import SIZES as FIRST_SIZES
from generation.music.model import MusicGPT
from generation.music.plan import plan_for_piece
from generation.music.planned import SIZES, PlannedMusicGPT
from generation.music.prompts import parse_prompt
from generation.music.text_encoder import get_text_encoder
from generation.music.tokenizer import (
    crop_piece,
    decode_ids,
    decode_plan,
    encode_piece,
    is_well_formed,
    loop_piece,
)
from reward.learning.dpo import DPOConfig, DPOPair, fit_pairs, train_dpo
from reward.learning.loop import Cancelled, LoopConfig
from tests.reward_learning.synthetic import one_thread  # noqa: F401  (autouse fixture)

PROMPTS = ["slow sad piano ballad", "fast techno with drums", "jazz trio in F major", "lofi"]
HELD_OUT = ["happy folk song", "dark cinematic strings"]


@pytest.fixture(scope="module")
def encoder():
    return get_text_encoder()


def models(encoder):
    torch.manual_seed(0)
    model = PlannedMusicGPT(SIZES["tiny"]).eval()
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


def stored_ids(backend: SymbolicTransformerBackend, prompt: str, piece: Piece) -> list[int]:
    """A stored track's ids as the backend re-scores it: its events and the attributes the
    composer stores (those of the prompt)."""
    return backend.sequence_for(prompt, stored_events(piece), parse_prompt(prompt).to_dict())


def pairs(prompts: list[str], count: int, seed: int) -> list[DPOPair]:
    rng = random.Random(seed)
    backend = SymbolicTransformerBackend(
        PlannedMusicGPT(SIZES["tiny"]), sampling=SamplingConfig(max_bars=1)
    )
    made = []
    for index in range(count):
        prompt = prompts[index % len(prompts)]
        chosen = stored_ids(backend, prompt, one_bar(rng, 72, 96))
        made.append(DPOPair(prompt, chosen, stored_ids(backend, prompt, one_bar(rng, 36, 60))))
    return made


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


def test_a_stored_track_is_rescored_as_the_clip_behind_the_plan_the_model_would_write(encoder):
    policy, _ = models(encoder)
    piece = one_bar(random.Random(3), 48, 84)
    prompt = "slow sad piano ballad"

    ids = stored_ids(policy, prompt, piece)

    plan = plan_for_piece(parse_prompt(prompt), piece)
    assert ids == encode_piece(piece, plan=plan, max_bars=1)  # the loop's first bar, plan, EOS
    assert decode_plan(ids) == plan and is_well_formed(ids, max_bars=1)
    assert sorted(decode_ids(ids).notes, key=repr) == sorted(piece.notes, key=repr)
    # a composer track of several instruments, cropped to the model's bar budget
    composed = compose(parse_prompt("jazz trio in F major"), seed=1, duration_seconds=10)
    two_bars = SymbolicTransformerBackend(
        policy.model, sampling=SamplingConfig(max_bars=2), text_encoder=encoder
    )
    attributes = parse_prompt("jazz trio in F major").to_dict()
    ids = two_bars.sequence_for("jazz trio", piece_to_events(composed), attributes)
    assert is_well_formed(ids, max_bars=2) and decode_ids(ids).bars == 2
    assert decode_plan(ids) == plan_for_piece(
        parse_prompt("jazz trio in F major"), crop_piece(composed, 2)
    )
    with torch.no_grad():
        assert torch.isfinite(policy.seq_logprobs(["jazz trio in F major"], [ids])).all()


def test_a_planned_track_is_rescored_with_the_plan_it_declared(encoder):
    policy, _ = models(encoder)
    (sample,) = policy.sample(["fast techno with drums"], 1, seed=4)
    clip = policy.clip_piece(sample, 8.0)

    ids = policy.sequence_for(sample.prompt, piece_to_events(clip), clip.attributes)

    assert clip.attributes["plan"] == sample.plan.to_dict()
    assert decode_plan(ids) == sample.plan


def test_the_first_generator_rescores_stored_tracks_in_its_own_header_format(encoder):
    first = SymbolicTransformerBackend(
        MusicGPT(FIRST_SIZES["tiny"]), sampling=SamplingConfig(max_bars=1), text_encoder=encoder
    )
    piece = one_bar(random.Random(3), 48, 84)

    ids = first.sequence_for("lofi", stored_events(piece), {})

    assert ids == encode_piece(piece, max_bars=1) and decode_plan(ids) is None


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
    room = policy.model.max_sequence_tokens
    short, long = pairs(PROMPTS, 2, 1)
    busy = compose(parse_prompt("busy fast techno with drums"), seed=1, duration_seconds=30)
    long_ids = encode_piece(busy, plan=plan_for_piece(parse_prompt("lofi"), busy))
    too_long = DPOPair("lofi", chosen=long_ids, rejected=short.rejected)

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
