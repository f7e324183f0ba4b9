"""The model's grammar mask: it must allow every sequence the tokenizer writes (a
forbidden training target would make the loss infinite), and samples obey it."""

import random
from dataclasses import replace

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generation.music.composer import compose
from generation.music.events import EVENT_VOCABULARY
from generation.music.model import SIZES, MusicGPT
from generation.music.prompts import random_attributes
from generation.music.tokenizer import (
    BAR_ID,
    BOS_ID,
    EOS_ID,
    crop_piece,
    encode_piece,
    is_well_formed,
)


def teacher_forced_logprobs(model: MusicGPT, sequences: list[list[int]]) -> torch.Tensor:
    longest = max(len(ids) for ids in sequences)
    targets = torch.zeros(len(sequences), longest, dtype=torch.long)
    for row, ids in enumerate(sequences):
        targets[row, : len(ids)] = torch.tensor(ids)
    inputs = torch.cat([torch.full((len(sequences), 1), BOS_ID), targets[:, :-1]], dim=1)
    with torch.no_grad():
        logits = model(torch.randn(len(sequences), 384), inputs)
    logprobs = logits.log_softmax(-1).gather(2, targets[..., None])[..., 0]
    return torch.cat([logprobs[row, : len(ids)] for row, ids in enumerate(sequences)])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), bars=st.integers(1, 2), cut=st.integers(20, 400))
def test_the_mask_allows_every_token_the_tokenizer_writes(seed, bars, cut):
    torch.manual_seed(0)
    model = MusicGPT(replace(SIZES["tiny"], block_size=1024)).eval()  # two busy bars fit
    piece = compose(random_attributes(random.Random(seed)), seed=seed, duration_seconds=12)
    full = encode_piece(piece, max_bars=bars)
    truncated = encode_piece(piece, max_bars=bars, max_tokens=cut)
    empty = encode_piece(crop_piece(piece, 0))

    logprobs = teacher_forced_logprobs(model, [full, truncated, empty])

    assert torch.isfinite(logprobs).all()


def test_an_untrained_model_samples_only_well_formed_pieces():
    torch.manual_seed(1)
    model = MusicGPT(SIZES["tiny"]).eval()
    tokens, _, lengths = model.sample(
        torch.randn(16, 384), max_new_tokens=400, max_bars=1, generator=torch.Generator()
    )
    checked = 0
    for row, length in enumerate(lengths.tolist()):
        ids = tokens[row, :length].tolist()
        ended = ids[-1] == EOS_ID or ids.count(BAR_ID) == 2
        has_notes = any(EVENT_VOCABULARY[i].startswith("Duration") for i in ids)
        if ended and has_notes:  # the grammar cannot force a note or an end
            assert is_well_formed(ids, max_bars=1), ids
            checked += 1
    assert checked >= 4
