"""Votes and ratings become training data: ties are one half, both-bad votes are left out,
the split never puts a prompt on both sides, and the rows are the ones a dataset exports."""

import random
from datetime import timedelta

import pytest
import torch
from django.utils import timezone

from generation.music.prompts import prompt_is_held_out
from ratings.dataset import DataFilters, rater_reliability, rating_rows, rows_sha256, vote_rows
from ratings.models import Campaign, Vote
from reward.training_sets import (
    preference_pairs,
    rater_normalisers,
    rating_targets,
)
from tests.factories import CampaignFactory, PairFactory, PromptFactory, RaterFactory, vote_on

pytestmark = pytest.mark.django_db


def pairs_for(rows):
    return preference_pairs(rows, test_share=0.5, split_seed=0)


def all_targets(data):
    return data.train["target"] + data.test["target"]


def test_a_vote_for_a_is_1_for_b_is_0_and_a_tie_is_one_half():
    pair = PairFactory()
    raters = RaterFactory.create_batch(3)
    for rater, choice in zip(raters, ["a", "b", "tie"], strict=True):
        vote_on(pair, rater, choice)

    data = pairs_for(list(vote_rows(DataFilters())))

    assert sorted(all_targets(data)) == [0.0, 0.5, 1.0]
    assert data.summary["ties"] == 1


def test_ties_can_be_filtered_out_and_then_no_half_targets_remain():
    pair = PairFactory()
    for choice in ["a", "tie", "tie"]:
        vote_on(pair, RaterFactory(), choice)

    data = pairs_for(list(vote_rows(DataFilters(include_ties=False))))

    assert all_targets(data) == [1.0]


def test_both_bad_votes_are_left_out_of_preference_pairs():
    pair = PairFactory()
    vote_on(pair, RaterFactory(), "both_bad")
    vote_on(pair, RaterFactory(), "a")

    data = pairs_for(list(vote_rows(DataFilters())))

    assert all_targets(data) == [1.0]
    assert data.summary["left_out"] == 1
    assert data.summary["votes"] == 2


def test_side_by_side_scores_count_as_a_choice_with_equal_scores_a_tie():
    campaign = CampaignFactory(protocol=Campaign.Protocol.SIDE_BY_SIDE)
    pair = PairFactory(campaign=campaign)
    vote_on(pair, RaterFactory(), scores=(5, 2))
    vote_on(pair, RaterFactory(), scores=(1, 4))
    vote_on(pair, RaterFactory(), scores=(3, 3))

    data = pairs_for(list(vote_rows(DataFilters())))

    assert sorted(all_targets(data)) == [0.0, 0.5, 1.0]


def test_the_split_is_by_prompt_so_no_prompt_is_on_both_sides():
    rater_pool = RaterFactory.create_batch(4)
    for index in range(40):
        pair = PairFactory(prompt=PromptFactory(text=f"prompt {index}"), votes_wanted=4)
        for rater in rater_pool:
            vote_on(pair, rater, "a" if index % 3 else "b")

    rows = list(vote_rows(DataFilters()))
    data = preference_pairs(rows, test_share=0.25, split_seed=3)

    train_prompts = {data.prompt_texts[i] for i in data.train["prompt"]}
    test_prompts = {data.prompt_texts[i] for i in data.test["prompt"]}
    assert train_prompts and test_prompts
    assert not train_prompts & test_prompts
    assert len(train_prompts) + len(test_prompts) == 40
    # Every vote on a held-out prompt is held out, and the share is about what was asked.
    assert data.summary["test_pairs"] == 4 * len(test_prompts)
    assert 4 <= len(test_prompts) <= 18


def test_the_same_votes_cast_in_another_order_give_the_same_examples():
    """Concurrent raters make the order votes arrive in a matter of timing; the examples (clip
    indices, batches) must not depend on it, or a seeded model would not be reproducible."""
    rater_pool = RaterFactory.create_batch(3)
    for index in range(12):
        pair = PairFactory(prompt=PromptFactory(text=f"prompt {index}"), votes_wanted=3)
        for rater in rater_pool:
            vote_on(pair, rater, "a" if (index + rater.pk) % 3 else "b")
    rows = list(vote_rows(DataFilters()))

    in_order = preference_pairs(rows, test_share=0.25, split_seed=3)
    shuffled = preference_pairs(random.Random(5).sample(rows, len(rows)), test_share=0.25,
                                split_seed=3)  # fmt: skip

    assert shuffled.track_ids == in_order.track_ids
    assert shuffled.prompt_texts == in_order.prompt_texts
    assert shuffled.train == in_order.train and shuffled.test == in_order.test


def test_the_split_treats_the_same_prompt_typed_differently_as_one_prompt():
    held = [
        prompt_is_held_out(text, test_share=0.5, split_seed=s)
        for s in range(20)
        for text in ["Slow sad piano ballad", "slow  sad piano ballad "]
    ]
    assert held[0::2] == held[1::2]
    assert any(held) and not all(held)  # the seed does move prompts between the sides


def test_filters_select_campaigns_and_a_date_range():
    first, second = PairFactory(), PairFactory()
    old = vote_on(first, RaterFactory(), "a")
    Vote.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    vote_on(first, RaterFactory(), "b")
    vote_on(second, RaterFactory(), "a")

    only_first = list(vote_rows(DataFilters(campaign_ids=(first.campaign_id,))))
    recent = list(vote_rows(DataFilters(since=timezone.now() - timedelta(days=1))))

    assert {row["campaign_id"] for row in only_first} == {first.campaign_id}
    assert len(only_first) == 2
    assert old.pk not in {row["vote_id"] for row in recent}
    assert len(recent) == 2


def test_raters_below_the_reliability_threshold_are_left_out():
    honest = RaterFactory.create_batch(3)
    contrarian = RaterFactory()
    for _ in range(5):
        pair = PairFactory(votes_wanted=4)
        for rater in honest:
            vote_on(pair, rater, "a")
        vote_on(pair, contrarian, "b")

    reliability = rater_reliability()
    kept = list(vote_rows(DataFilters(min_rater_reliability=0.5)))

    assert reliability[contrarian.pk].reliability == 0.0
    assert all(reliability[rater.pk].reliability == 1.0 for rater in honest)
    assert contrarian.pk not in {row["rater_id"] for row in kept}
    assert len(kept) == 15


def test_the_rows_hash_is_stable_and_a_new_vote_changes_it():
    pair = PairFactory(votes_wanted=5)
    vote_on(pair, RaterFactory(), "a")
    first = rows_sha256(vote_rows(DataFilters()))

    assert rows_sha256(vote_rows(DataFilters())) == first
    vote_on(pair, RaterFactory(), "tie")
    assert rows_sha256(vote_rows(DataFilters())) != first


def test_ratings_are_normalised_per_rater():
    campaign = CampaignFactory(protocol=Campaign.Protocol.MOS)
    lenient, strict = RaterFactory(), RaterFactory()
    for index in range(4):
        pair = PairFactory(campaign=campaign, track_b=None, votes_wanted=5)
        vote_on(pair, lenient, scores=(3 + index % 3,))  # 3, 4, 5, 3
        vote_on(pair, strict, scores=(1 + index % 3,))  # 1, 2, 3, 1

    rows = list(rating_rows(DataFilters()))
    norms = rater_normalisers(rows)
    data = rating_targets(rows, test_share=0.5, split_seed=0)

    def z(rater, score):
        mean, sd = norms[rater.pk]
        return (score - mean) / sd

    assert len(rows) == 8
    # The same place in each rater's own range is the same target.
    assert z(lenient, 5) == pytest.approx(z(strict, 3))
    assert z(lenient, 3) == pytest.approx(z(strict, 1))
    targets = sorted(data.train["target"] + data.test["target"])
    expected = sorted(z(lenient, s) for s in (3, 4, 5, 3)) * 1
    assert targets == pytest.approx(sorted(expected + expected))


def test_a_prompt_s_training_embedding_does_not_depend_on_what_it_was_embedded_with():
    """Reward models embed their prompts one by one: in a padded batch a vector depends on its
    batch-mates, and the model trained on it then differs from run to run."""
    from reward.track_scoring import prompt_embeddings

    prompt = "slow sad piano ballad"
    alone = prompt_embeddings([prompt], exact=True)[0]
    among = prompt_embeddings(["a much longer prompt: upbeat funk with slap bass, brass "
                               "stabs and a busy drum kit", prompt], exact=True)[1]  # fmt: skip

    assert torch.equal(alone, among)
