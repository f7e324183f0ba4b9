"""Prompts and attributes made up at random: the corpus's attributes, whose captions parse back
exactly, and the fine-tuning pools, which never put one prompt on both sides of the split."""

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.music.prompt_sampling import (
    HARMONY_POOLS,
    prompt_pools,
    prompt_variant,
    random_attributes,
)
from generation.music.prompts import (
    EXAMPLE_PROMPTS,
    GENRES,
    POLYPHONIC_PROGRAMS,
    caption_for,
    parse_prompt,
    prompt_is_held_out,
)


def test_captions_of_random_attributes_parse_back_exactly():
    rng = random.Random(1234)
    for _ in range(300):
        attrs = random_attributes(rng)
        assert parse_prompt(caption_for(attrs)) == attrs, caption_for(attrs)


def test_random_attributes_cover_genres_and_depend_on_the_rng():
    samples = [random_attributes(random.Random(seed)) for seed in range(200)]
    assert {a.genre for a in samples} == set(GENRES)
    assert random_attributes(random.Random(5)) == random_attributes(random.Random(5))


def test_harmony_pools_only_hold_chordal_instruments():
    for genre, pool in HARMONY_POOLS.items():
        assert all(p in POLYPHONIC_PROGRAMS for p in pool), genre


# --- fine-tuning prompt pools ---


def _normalised(texts):
    return {" ".join(t.casefold().split()) for t in texts}


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    split_seed=st.integers(0, 50),
    test_share=st.sampled_from([0.1, 0.2, 0.5]),
    curated=st.lists(st.sampled_from((*EXAMPLE_PROMPTS, "SLOW sad  piano ballad")), max_size=6),
)
def test_fine_tuning_pools_never_share_a_prompt_and_hold_their_counts(
    seed, split_seed, test_share, curated
):
    train, held_out = prompt_pools(
        curated, train_count=40, held_out_count=8,
        test_share=test_share, split_seed=split_seed, seed=seed,
    )  # fmt: skip

    assert not _normalised(train) & _normalised(held_out)  # also "SLOW sad  piano ballad"
    assert len(_normalised(train)) == len(train) and len(_normalised(held_out)) == len(held_out)
    assert len(held_out) == 8 and len(train) >= 40
    for text in train:
        assert not prompt_is_held_out(text, test_share=test_share, split_seed=split_seed)
    for text in held_out:
        assert prompt_is_held_out(text, test_share=test_share, split_seed=split_seed)


def test_fine_tuning_pools_keep_the_curated_prompts_and_reach_thousands():
    curated = list(EXAMPLE_PROMPTS)
    train, held_out = prompt_pools(
        curated, train_count=2000, held_out_count=64, test_share=0.2, split_seed=0, seed=0
    )
    again = prompt_pools(
        curated, train_count=2000, held_out_count=64, test_share=0.2, split_seed=0, seed=0
    )

    assert (train, held_out) == again  # the same pools every time for the same settings
    assert len(train) == 2000 and len(held_out) == 64
    on_train = [p for p in curated if not prompt_is_held_out(p, test_share=0.2, split_seed=0)]
    assert train[: len(on_train)] == on_train  # people's prompts first, all of them
    assert any(len(p.split()) <= 6 for p in train) and any(" BPM " in p for p in train)


def test_a_split_that_starves_one_side_is_refused_instead_of_looping():
    with pytest.raises(ValueError, match="could not draw"):
        prompt_pools([], train_count=4, held_out_count=4, test_share=1e-9, split_seed=0, seed=0)
    with pytest.raises(ValueError, match="at least one"):
        prompt_pools([], train_count=4, held_out_count=0, test_share=0.2, split_seed=0, seed=0)


@pytest.mark.parametrize("prompt", ["slow sad piano ballad", "energetic rock with drums", "jazz"])
def test_a_prompt_variant_asks_for_the_same_music_changed_along_one_axis(prompt):
    asked = dataclasses.asdict(parse_prompt(prompt))
    changed_fields = []
    for seed in range(20):
        variant = dataclasses.asdict(parse_prompt(prompt_variant(prompt, random.Random(seed))))
        changed = [name for name in asked if variant[name] != asked[name]]
        assert len(changed) == 1, (prompt, variant, changed)
        changed_fields += changed
        if changed == ["tempo_bpm"]:  # 0.8x or 1.25x, to the tempo grid
            ratio = variant["tempo_bpm"] / asked["tempo_bpm"]
            assert any(abs(ratio - factor) <= 0.05 for factor in (0.8, 1.25)), ratio
        if changed == ["instruments"]:
            assert variant["instruments"][0] == asked["instruments"][0]  # the lead stays
            assert len(variant["instruments"]) == len(asked["instruments"]) - 1
    assert len(set(changed_fields)) >= 3  # the axes are drawn at random


def test_a_prompt_variant_changes_only_the_axes_it_is_given():
    prompt = "energetic rock with drums"
    asked = dataclasses.asdict(parse_prompt(prompt))
    rng = random.Random(0)
    for axes, field in ((["mode"], "mode"), (["drums", "density"], None)):
        for _ in range(10):
            variant = dataclasses.asdict(parse_prompt(prompt_variant(prompt, rng, axes)))
            (changed,) = [name for name in asked if variant[name] != asked[name]]
            assert changed == field if field else changed in ("drums", "density")
    # A lone instrument has nothing to leave out: with that the only axis, the prompt stays.
    assert prompt_variant("solo piano", rng, ["instruments"]) == "solo piano"
    with pytest.raises(ValueError, match="no such variant axes"):
        prompt_variant(prompt, rng, ["key"])
