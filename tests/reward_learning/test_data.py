import random

import pytest
import torch

from reward.learning.data import (
    PAD_VALUE,
    PreferenceSet,
    RatingSet,
    held_out_split,
    length_batches,
    padded_batch,
    random_crops,
)


def votes() -> PreferenceSet:
    return PreferenceSet(
        clip_a=[0, 1, 2, 3],
        clip_b=[1, 0, 3, 2],
        prompt=[0, 0, 1, 1],
        target=[1.0, 0.0, 0.5, 1.0],
        group=[7, 7, 8, 8],
    )


def test_preference_set_rows():
    pairs = votes()
    assert len(pairs) == 4
    assert pairs.decisive().target.tolist() == [1.0, 0.0, 1.0]
    assert pairs.subset([3, 0]).clip_a.tolist() == [3, 0]
    assert len(pairs.subset(pairs.prompt == 1)) == 2
    # the second vote saw the pair swapped and chose clip 0 again: the votes agree
    assert pairs.votes_by_group() == {7: [1.0, 1.0], 8: [0.5, 0.0]}
    assert pairs.digest() == votes().digest() != pairs.subset([0, 1, 2]).digest()
    with pytest.raises(ValueError):
        PreferenceSet(clip_a=[0], clip_b=[1, 2], prompt=[0], target=[1.0], group=[0])


def test_rating_set_per_clip_means():
    ratings = RatingSet(
        clip=[5, 3, 5, 5], prompt=[1, 0, 1, 1], target=[1.0, -1.0, 0.0, 2.0],
        raw_score=[4, 2, 3, 5], group=[5, 3, 5, 5],
    )  # fmt: skip
    clip, prompt, mean, count = ratings.per_group()
    assert clip.tolist() == [3, 5] and prompt.tolist() == [0, 1]
    assert mean.tolist() == [-1.0, 1.0] and count.tolist() == [1, 3]
    mixed = RatingSet(clip=[1, 2], prompt=[0, 0], target=[0, 0], raw_score=[3, 3], group=[9, 9])
    with pytest.raises(ValueError):
        mixed.per_group()


def test_held_out_split_keeps_keys_together():
    keys = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4, 5])
    train, test = held_out_split(keys, 0.5, seed=3)
    assert sorted(train.tolist() + test.tolist()) == list(range(10))
    assert not set(keys[train].tolist()) & set(keys[test].tolist())
    assert len(set(keys[test].tolist())) == 3
    assert torch.equal(held_out_split(keys, 0.5, seed=3)[1], test)


def test_crops_and_padding():
    mels = [torch.randn(64, 300), torch.randn(64, 30), torch.randn(64, 50)]
    batch, lengths = random_crops(mels, 50, random.Random(0))
    assert batch.shape == (3, 64, 50) and lengths.tolist() == [50, 30, 50]
    assert torch.all(batch[1, :, 30:] == PAD_VALUE)
    assert torch.equal(batch[1, :, :30], mels[1]) and torch.equal(batch[2], mels[2])
    start = int((mels[0][0] == batch[0, 0, 0]).nonzero()[0])
    assert torch.equal(batch[0], mels[0][:, start : start + 50])
    again, _ = random_crops(mels, 50, random.Random(0))
    assert torch.equal(batch, again)  # the step's RNG decides the crops
    whole, lengths = padded_batch(mels)
    assert whole.shape == (3, 64, 300) and lengths.tolist() == [300, 30, 50]
    short, _ = random_crops(mels[1:2], 50, random.Random(0))
    assert short.shape == (1, 64, 30)  # as wide as the longest crop, no wider


def test_length_batches_group_similar_lengths():
    batches = length_batches([300, 10, 200, 20, 100], 2)
    assert batches == [[1, 3], [4, 2], [0]]
