"""The body's melody tallies (melody_features.py): the batch and the step-by-step versions
agree, and on the composer's own pieces they read exactly what the plan declares."""

from __future__ import annotations

import random

import pytest
import torch

from generation.music.composer import HANDS_SPLIT, accompanies_itself, assign_roles, compose
from generation.music.melody_features import (
    FEATURE_SIZES,
    MAX_BALANCE,
    MIN_OWED,
    MelodyFeatures,
    MelodyTracker,
)
from generation.music.plan import plan_for_piece
from generation.music.planned import SIZES, PlannedConfig, PlannedMusicGPT
from generation.music.pretrain import TrainConfig, corpus_example
from generation.music.prompts import parse_prompt
from generation.music.text_encoder import get_text_encoder
from generation.music.tokenizer import BAR_ID, BOS_ID, EOS_ID, PAD_ID, TOKEN_TO_ID, encode_piece

PHRASE, OWED, BELOW, ABOVE = range(len(FEATURE_SIZES))


@pytest.fixture(scope="module")
def features() -> MelodyFeatures:
    return MelodyFeatures()


def batch_of(sequences: list[list[int]]) -> torch.Tensor:
    """BOS + each sequence, PAD after its end."""
    idx = torch.full((len(sequences), 1 + max(map(len, sequences))), PAD_ID)
    idx[:, 0] = BOS_ID
    for row, ids in enumerate(sequences):
        idx[row, 1 : 1 + len(ids)] = torch.tensor(ids)
    return idx


def stepwise(features: MelodyFeatures, idx: torch.Tensor) -> torch.Tensor:
    tracker = MelodyTracker(features, len(idx))
    return torch.stack([tracker.advance(idx[:, t]) for t in range(idx.shape[1])], 1)


def corpus(count: int, seed: int = 0):
    rng = random.Random(seed)
    return [corpus_example(rng, TrainConfig(size="tiny"), held_out=False) for _ in range(count)]


def test_the_batch_and_the_step_by_step_features_agree_on_composed_sequences(features):
    examples = corpus(32)
    idx = batch_of([e.token_ids for e in examples])

    batch = features.sequence_features(idx)

    assert batch.shape == (32, idx.shape[1], len(FEATURE_SIZES))
    assert torch.equal(batch, stepwise(features, idx))
    # the corpus holds lone chordal leads, whose melody is only part of their notes
    assert any(accompanies_itself(e.plan.lead, e.plan.instruments) for e in examples)


def test_the_features_agree_on_a_model_s_samples_which_need_not_follow_their_plan(features):
    torch.manual_seed(0)
    model = PlannedMusicGPT(SIZES["tiny"]).eval()
    text = get_text_encoder().encode(["slow sad piano ballad", "fast techno with drums"] * 4)
    tokens, _, lengths = model.sample(text, max_new_tokens=300, max_bars=2)
    idx = torch.cat([torch.full((len(tokens), 1), BOS_ID), tokens], 1)

    batch, steps = features.sequence_features(idx), stepwise(features, idx)

    for row, length in enumerate(lengths.tolist()):
        assert torch.equal(batch[row, : 1 + length], steps[row, : 1 + length])


def test_on_the_composer_s_pieces_every_bar_ends_owing_nothing_and_the_melody_ends_in_its_band(
    features,
):
    """The composer plays the onsets its density means and its melody's median lies in the
    declared band, so the tallies must read exactly that: 0 owed at each bar's end, and at
    the end no more melody notes below the band than others, nor above it (an even count's
    median is the mean of two, so a balance can end at 0)."""
    examples = corpus(48, seed=1)
    idx = batch_of([e.token_ids for e in examples])
    tallies = features.sequence_features(idx)

    bar_ends = whole = 0
    for row, example in enumerate(examples):
        length = len(example.token_ids) + 1
        bars = (idx[row, :length] == BAR_ID).nonzero()[:, 0].tolist()
        for closing in bars[2:]:  # each Bar after the first body bar: the bar before ended
            assert int(tallies[row, closing - 1, OWED]) == 1 - MIN_OWED
            bar_ends += 1
        if example.token_ids[-1] == EOS_ID:  # whole (the tiny model's block cuts long ones)
            last = tallies[row, length - 2]  # after the last token before EOS
            assert int(last[BELOW]) <= MAX_BALANCE + 1 and int(last[ABOVE]) <= MAX_BALANCE + 1
            whole += 1
    assert bar_ends > 48 and whole > 24


def test_only_the_right_hand_of_a_lone_piano_counts_as_its_melody(features):
    """Hand-written: a lone piano in C plays a chord at or below the split and then a melody
    note above it, at the same onset; only the melody note counts as an onset and as a
    register note."""
    attrs = parse_prompt("calm piano solo in C major")
    assert assign_roles(attrs.instruments)[1] == (0,)
    piece = compose(attrs, seed=3, duration_seconds=8)
    plan = plan_for_piece(attrs, piece)
    header = encode_piece(piece, plan=plan)[: len(plan.events())]
    program = TOKEN_TO_ID["Program_0"]

    def note(pitch: int) -> list[int]:
        velocity, duration = TOKEN_TO_ID["Velocity_71"], TOKEN_TO_ID["Duration_4"]
        return [TOKEN_TO_ID[f"Pitch_{pitch - plan.key_root}"], velocity, duration]

    body = [BAR_ID, TOKEN_TO_ID["Position_0"], program, *note(48), *note(55), *note(72)]
    idx = batch_of([header + body])
    tallies = features.sequence_features(idx)[0]
    owed_at_start = int(tallies[len(header) + 1, OWED])  # at the Bar

    after_chord = tallies[len(header) + 3 + 6]  # BOS and the header, Bar, Position, Program
    after_melody = tallies[len(header) + 3 + 9]
    assert HANDS_SPLIT < 72 and max(48, 55) <= HANDS_SPLIT
    assert int(after_chord[OWED]) == owed_at_start  # the left hand owes nothing less
    assert int(after_melody[OWED]) == owed_at_start - 1
    assert int(after_chord[BELOW]) == int(after_chord[ABOVE]) == MAX_BALANCE + 1  # no notes
    assert int(tallies[0].abs().sum()) == 0 and int(tallies[len(header)].abs().sum()) == 0


def test_a_planned_config_from_before_the_features_loads_without_them():
    """Checkpoints saved before the features have a body config that does not name them."""
    saved = SIZES["tiny"].to_dict()
    del saved["body"]["melody_features"]

    model = PlannedMusicGPT(PlannedConfig.from_dict(saved))

    assert model.body.melody is None and model.body.feature_emb is None
    assert "feature_emb.weight" not in model.body.state_dict()
    assert SIZES["small"].body.melody_features and SIZES["tiny"].body.melody_features
