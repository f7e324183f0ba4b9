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

from generation.models import Track
from ratings.dataset import DataFilters, vote_rows
from reward.models import RewardModel, TrackReward
from reward.training import reward_model_create, reward_model_execute
from reward.training_sets import preference_pairs
from tests.reward.conftest import SPARSE, best_possible_accuracy

P_SPARSE = 0.85
SETTINGS = {"test_share": 0.3, "batch_size": 32, "eval_every": 50, "learning_rate": 2e-3}
# 150 steps give the same held-out accuracy as 300 did (0.882), in half the training time;
# 100 steps gave 0.853.
STEPS = 150


def prefer_sparse(prompt_text, clip_a, clip_b) -> float:
    """The simulated raters' known taste: P(the clip shown as A is preferred)."""
    if clip_a.generator_version == clip_b.generator_version:
        return 0.5
    return P_SPARSE if clip_a.generator_version == SPARSE else 1 - P_SPARSE


def vote_through_the_api(live_server, campaign) -> None:
    # As many raters as votes per pair, so each rater votes on every pair: which rater
    # answers which pair is then fixed, and with the raters' answers fixed per pair
    # (`SimulatedRater.draws`), the votes are the same in every run, however the raters'
    # requests interleave. With more raters than that, who got which pair was timing, and the
    # held-out accuracy moved between runs (0.64 [0.47, 0.78] in one CI run, 0.757 in another).
    call_command(
        "simulate_raters", "--campaign", str(campaign.pk), "--raters", "3", "--votes", "288",
        "--noise", "1", "--preference", f"{__name__}.prefer_sparse", "--seed", "1",
        "--base-url", live_server.url, "--no-progress",
    )  # fmt: skip


# One test, because rendering the clips and casting the votes is half of its minute and a
# quarter: the model learns the taste, and the same training on random labels does not.
@pytest.mark.django_db(transaction=True)
def test_held_out_accuracy_is_near_the_best_possible_and_random_labels_stay_at_chance(
    live_server, rendered_campaign, tmp_path, settings
):
    # Three raters cast 96 votes each at about four a second, near the per-rater limit of 240
    # a minute: a throttled vote is retried, but it is not this test's subject, and a vote
    # lost to it changes the data.
    settings.VOTE_RATE_LIMIT_PER_MINUTE = 100_000
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
    # The votes, the clips' audio and the training are the same in every run, alone or after
    # other tests: 0.882 [0.785, 0.942] on the held-out votes, against a best possible 0.882
    # on the same votes. (The audio was not: FluidSynth carried state from one render to the
    # next, so 9 of the 192 clips sounded different after other tests had rendered, and the
    # control below reached 0.649 in one CI run.) While reggae, whose two versions differ only
    # 1.72-fold in notes, was among the styles, it was 0.726 against 0.877 (conftest.STYLES).
    # Above chance with its 95% interval (margin 0.285). The interval is over about 25
    # held-out pairs, so it is wide; closeness to the best possible is checked below.
    assert low > 0.5, heldout
    # Each held-out pair the model ranks the wrong way round costs about 0.04: the margin
    # allows three such pairs (0.15 here).
    assert heldout["accuracy"] >= ceiling - 0.15, (heldout, ceiling)
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
    from reward.trainers import _clip_table

    data = preference_pairs(rows, test_share=0.3, split_seed=0)
    # Each decisive training vote is pinned to one of its two clips whatever the rater chose:
    # the sparse clip wins exactly half of them, chosen at random. Exactly half, not a coin per
    # vote: a coin leaves a chance surplus of a few percent for the sparse side, which the model
    # learns and which then predicts the real held-out votes a little (one CI run: 0.639).
    version_of = dict(
        Track.objects.filter(pk__in=data.track_ids).values_list("pk", "generator_version__name")
    )
    targets = data.train["target"]
    decisive = [row for row, target in enumerate(targets) if target != 0.5]
    sparse_wins = set(random.Random(0).sample(decisive, len(decisive) // 2))
    for row in decisive:
        sparse_is_a = version_of[data.track_ids[data.train["clip_a"][row]]] == SPARSE
        targets[row] = 1.0 if sparse_is_a == (row in sparse_wins) else 0.0
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

    # Its held-out log loss stays near a coin's (log 2 = 0.693) and its accuracy well below the
    # real model's. Not a log loss above a fixed 0.68: on 75 held-out votes the chance fit of
    # 71 pairs' labels still moves it by a few hundredths (two CI runs: 0.639 with a coin per
    # vote, 0.624 with balanced labels). Nor a log loss above the real model's: that model is
    # accurate but overconfident on a few votes, and one CI run had it at 0.850, the control at
    # 0.846.
    # On these votes: log loss 0.764 (margin 0.164), accuracy 0.324 (margin 0.458 under the
    # real model's). After 300 steps: 1.210 and 0.382.
    assert trained.metrics["heldout_log_loss"] > 0.6, trained.metrics
    assert trained.metrics["heldout_accuracy"] < heldout["accuracy"] - 0.1, trained.metrics
