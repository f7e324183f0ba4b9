import random
import statistics

import pytest
import torch

from generation.music.attributes_measure import adherence, measure
from generation.music.composer import compose
from generation.music.model import GPTConfig
from generation.music.pretrain import (
    CHECKPOINT_NAME,
    TrainConfig,
    evaluate,
    held_out_examples,
    held_out_loss,
    train,
)
from generation.music.prompts import parse_prompt, random_attributes
from generation.music.text_encoder import get_text_encoder

TINY = GPTConfig(block_size=256, n_layer=2, n_head=2, n_embd=64, n_prefix=2)
SLOW, FAST = "slow sad piano ballad", "fast techno with drums"


@pytest.fixture(scope="module")
def encoder():
    return get_text_encoder()


def tiny_config(**overrides) -> TrainConfig:
    defaults = dict(
        model=TINY,
        batch_size=4,
        micro_batch_size=4,
        max_bars=1,
        warmup_steps=2,
        lr_decay_steps=20,
        checkpoint_every=2,
        eval_prompts=4,
    )
    return TrainConfig(**{**defaults, **overrides})


def test_a_few_steps_change_the_parameters_and_lower_the_loss(encoder, tmp_path):
    config = tiny_config()
    initial = train(
        config, steps=1, checkpoint_dir=tmp_path / "a", text_encoder=encoder, evaluate_after=False
    )
    first_params = {k: v.clone() for k, v in initial.backend.model.state_dict().items()}
    held_out = held_out_examples(config, 8)
    loss_before = held_out_loss(initial.backend, held_out)

    result = train(
        config, steps=8, checkpoint_dir=tmp_path / "a", text_encoder=encoder, evaluate_after=False
    )

    after = result.backend.model.state_dict()
    assert any(not torch.equal(first_params[k], after[k]) for k in first_params)
    assert held_out_loss(result.backend, held_out) < loss_before - 0.5
    losses = [loss for _, loss in result.metrics["loss_curve"]]
    assert losses[-1] < losses[0]


def test_resuming_from_a_checkpoint_gives_the_same_next_step_loss(encoder, tmp_path):
    config = tiny_config()
    interrupted = tmp_path / "interrupted"
    train(config, steps=4, checkpoint_dir=interrupted, text_encoder=encoder, evaluate_after=False)
    saved = torch.load(interrupted / CHECKPOINT_NAME, weights_only=True)
    resumed = train(
        config, steps=5, checkpoint_dir=interrupted, text_encoder=encoder, evaluate_after=False
    )

    straight = train(
        config, steps=5, checkpoint_dir=tmp_path / "straight", text_encoder=encoder,
        evaluate_after=False,
    )  # fmt: skip

    assert saved["step"] == 4
    assert {"model", "optimizer", "model_config", "train_config"} <= set(saved)
    assert resumed.metrics["loss_curve"][-1][0] == 5
    assert resumed.metrics["loss_curve"][-1][1] == pytest.approx(
        straight.metrics["loss_curve"][-1][1], abs=1e-5
    )


def test_the_composer_scores_high_adherence_and_mismatched_pieces_score_low():
    rng = random.Random(0)
    pairs = [(random_attributes(rng), random_attributes(rng)) for _ in range(60)]
    own = [adherence(a, compose(a, seed=i, duration_seconds=10)) for i, (a, _) in enumerate(pairs)]
    other = [
        adherence(a, compose(b, seed=i, duration_seconds=10)) for i, (a, b) in enumerate(pairs)
    ]

    assert statistics.mean(x.score for x in own) > 0.85
    assert statistics.mean(x.score for x in other) < 0.5
    assert statistics.mean(x.tempo for x in own) == 1.0
    assert measure(compose(parse_prompt(FAST), seed=1, duration_seconds=10)).drums
    assert not measure(compose(parse_prompt(SLOW), seed=1, duration_seconds=10)).drums


def test_after_short_training_contrasting_prompts_give_different_music(encoder, tmp_path):
    # One bar per piece keeps sequences short, so ~50 s of training covers many prompts.
    # The header (tempo, instruments, drums) is what carries the prompt into the notes.
    config = tiny_config(
        batch_size=16, micro_batch_size=8, learning_rate=4e-3, warmup_steps=10,
        lr_decay_steps=None, checkpoint_every=1000, eval_prompts=16,
    )  # fmt: skip
    result = train(config, steps=240, checkpoint_dir=tmp_path, text_encoder=encoder)
    samples = result.backend.sample([SLOW, FAST], 12, seed=0)
    slow = [measure(s.piece) for s in samples[:12]]
    fast = [measure(s.piece) for s in samples[12:]]

    slow_tempo = statistics.median(m.tempo_bpm for m in slow)
    fast_tempo = statistics.median(m.tempo_bpm for m in fast)
    assert fast_tempo - slow_tempo > 30, (slow_tempo, fast_tempo)
    assert sum(m.drums for m in fast) - sum(m.drums for m in slow) >= 4
    assert sum(0 in m.programs for m in slow) > sum(0 in m.programs for m in fast)
    report = evaluate(result.backend, config)
    assert report["valid_share"] > 0.5
    assert 0 <= report["adherence"] <= 1 and report["token_loss"] < 3.0
