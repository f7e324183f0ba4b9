"""The quality reward model learns 1-5 ratings from raters who are lenient or strict: it is
trained on per-rater-normalised scores and reports Pearson, Spearman and MSE per held-out clip."""

import random

import pytest

from ratings.dataset import DataFilters
from ratings.models import Campaign
from reward.models import RewardModel
from reward.training import reward_model_create, reward_model_execute
from tests.factories import RaterFactory, vote_on
from tests.reward.conftest import SPARSE


@pytest.mark.django_db
def test_the_quality_model_predicts_held_out_ratings(rendered_campaign):
    campaign = rendered_campaign(prompts=40, votes_per_item=3, protocol=Campaign.Protocol.MOS)
    rng = random.Random(0)
    # A lenient, a neutral and a strict rater who agree that sparse clips are better.
    raters = [(RaterFactory(), offset) for offset in (1, 0, -1)]
    items = campaign.pairs.select_related("track_a__generator_version")
    for item in items:
        quality = 4 if item.track_a.generator_version.name == SPARSE else 2
        for rater, offset in raters:
            score = min(5, max(1, quality + offset + rng.choice((-1, 0, 0, 0, 1))))
            vote_on(item, rater, scores=(score,))
    reward_model = reward_model_create(
        name="quality", kind="quality", steps=150, queue=False,
        filters=DataFilters(campaign_ids=(campaign.pk,)),
        settings={"test_share": 0.3, "learning_rate": 2e-3, "eval_every": 50},
    )  # fmt: skip

    reward_model = reward_model_execute(reward_model_id=reward_model.pk)

    assert reward_model.status == RewardModel.Status.FINISHED, reward_model.error
    assert reward_model.usable
    heldout = reward_model.metrics["heldout"]
    assert heldout["pearson"] > 0.6, heldout
    assert heldout["pearson_ci"][0] > 0.2, heldout
    assert heldout["spearman"] > 0.5, heldout
    assert heldout["mse"] < 1.0, heldout  # targets are z-scores: predicting 0 costs about 1
    assert reward_model.data_summary["raters"] == 3
    assert reward_model.data_summary["ratings"] == 3 * 80
    assert any("heldout_pearson" in point for point in reward_model.curve)
