"""The preference reward model learns what simulated raters with a known taste prefer.

Raters are driven through the real HTTP API by the simulate_raters command. Their taste: the
sparse version's clip is preferred with probability 0.85 (the logistic choice model, noise 1),
so no predictor can beat about 85% on their held-out votes. The model must get close to that
from the audio alone, and the same pipeline with randomly flipped labels must not.
"""

import random

import numpy as np
import pytest
from django.core.management import call_command

from ratings.dataset import DataFilters, vote_rows
from reward.models import RewardModel, TrackReward
from reward.training import (
    preference_pairs,
    prompt_is_held_out,
    reward_model_create,
    reward_model_execute,
)
from tests.reward.conftest import SPARSE

P_SPARSE = 0.85
SETTINGS = {"test_share": 0.3, "batch_size": 32, "eval_every": 50, "learning_rate": 2e-3}
STEPS = 300


def prefer_sparse(prompt_text, clip_a, clip_b) -> float:
    """The simulated raters' known taste: P(the clip shown as A is preferred)."""
    if clip_a.generator_version == clip_b.generator_version:
        return 0.5
    return P_SPARSE if clip_a.generator_version == SPARSE else 1 - P_SPARSE


def best_possible_accuracy(rows) -> float:
    """The accuracy of the true taste itself on the held-out decisive votes: the ceiling."""
    hits = []
    for row in rows:
        held_out = prompt_is_held_out(row["prompt_text"], test_share=0.3, split_seed=0)
        if not held_out or row["choice"] not in ("a", "b"):
            continue
        sparse_is_a = row["version_a"] == SPARSE
        hits.append((row["choice"] == "a") == sparse_is_a)
    return float(np.mean(hits))


def vote_through_the_api(live_server, campaign) -> None:
    call_command(
        "simulate_raters", "--campaign", str(campaign.pk), "--raters", "6", "--votes", "288",
        "--noise", "1", "--preference", f"{__name__}.prefer_sparse", "--seed", "1",
        "--base-url", live_server.url, "--no-progress",
    )  # fmt: skip


# One test, because rendering the clips and casting the votes is most of its minute and a
# half: the model learns the taste, and the same training on random labels does not.
@pytest.mark.django_db(transaction=True)
def test_held_out_accuracy_is_near_the_best_possible_and_random_labels_stay_at_chance(
    live_server, rendered_campaign, tmp_path
):
    voted_campaign = rendered_campaign(prompts=96, votes_per_item=3)
    vote_through_the_api(live_server, voted_campaign)
    rows = list(vote_rows(DataFilters(campaign_ids=(voted_campaign.pk,))))
    assert len(rows) == 288
    reward_model = reward_model_create(
        name="taste", kind="preference", steps=STEPS, settings=SETTINGS, queue=False,
        filters=DataFilters(campaign_ids=(voted_campaign.pk,)),
    )  # fmt: skip

    reward_model = reward_model_execute(reward_model_id=reward_model.pk)

    assert reward_model.status == RewardModel.Status.FINISHED, reward_model.error
    assert reward_model.usable
    heldout = reward_model.metrics["heldout"]
    ceiling = best_possible_accuracy(rows)
    low, high = heldout["accuracy_ci"]
    assert low > 0.6, heldout  # clearly above chance, with its 95% interval
    assert heldout["accuracy"] >= ceiling - 0.1, (heldout, ceiling)
    assert low <= heldout["accuracy"] <= high
    # The raters' own agreement on the same pairs is reported next to it.
    assert reward_model.metrics["noise_ceiling"]["heldout"]["n_pairs"] > 0
    assert reward_model.data_summary["rows_sha256"]
    # The scoring service stored a reward for every clip it saw, and sparse clips score higher.
    rewards = TrackReward.objects.filter(reward_model=reward_model).select_related(
        "track__generator_version"
    )
    assert rewards.count() == 192
    by_version = {SPARSE: [], "other": []}
    for reward in rewards:
        name = reward.track.generator_version.name
        by_version[SPARSE if name == SPARSE else "other"].append(reward.value)
    assert np.mean(by_version[SPARSE]) > np.mean(by_version["other"])

    # The control: the same data and training with labels made random learns nothing.
    from reward.learning.data import PreferenceSet
    from reward.learning.loop import LoopConfig
    from reward.learning.preference import PreferenceConfig, train_preference
    from reward.training import _clip_table

    data = preference_pairs(rows, test_share=0.3, split_seed=0)
    # Each training vote is pinned to a random one of its two clips, whatever the rater chose.
    rng = random.Random(0)
    for row, target in enumerate(data.train["target"]):
        if rng.random() < 0.5:
            data.train["target"][row] = 1.0 - target
    config = PreferenceConfig(
        loop=LoopConfig(steps=STEPS, learning_rate=2e-3, eval_every=50, num_threads=1),
        batch_size=32,
    )

    class NoHeartbeat:
        def phase(self, text):
            pass

    clips = _clip_table(data.track_ids, data.prompt_texts, NoHeartbeat())
    trained = train_preference(
        config, clips, PreferenceSet(**data.train), PreferenceSet(**data.test), tmp_path
    )

    # Its held-out log loss stays at that of a coin (log 2), far from the real model's.
    assert trained.metrics["heldout_log_loss"] > 0.68, trained.metrics
    assert trained.metrics["heldout_accuracy"] < heldout["accuracy"] - 0.1, trained.metrics
