"""The measured-feature preference model as a reward-model job: it learns from stored votes
which clips raters prefer, from what it measures in the notes, and is a reward fine-tuning
can use and the track pages can show."""

import pytest
from django.urls import reverse

from ratings.dataset import DataFilters, vote_rows
from ratings.models import Role
from reward.models import RewardModel, TrackReward
from reward.track_scoring import reward_scores
from reward.training import RewardModelError, reward_model_create, reward_model_execute
from tests.factories import RaterFactory
from tests.reward.conftest import SPARSE, best_possible_accuracy, vote_with_a_known_preference

pytestmark = pytest.mark.django_db


def test_it_learns_that_raters_prefer_the_sparse_clips(rendered_campaign, client, make_rater):
    campaign = rendered_campaign(prompts=80, votes_per_item=3, clip_seconds=2.0)
    vote_with_a_known_preference(campaign, RaterFactory.create_batch(3), p_sparse=0.85)
    job = reward_model_create(
        name="measured", kind="preference", method="measured", steps=1, queue=False,
        filters=DataFilters(campaign_ids=(campaign.pk,)), settings={"test_share": 0.5},
    )  # fmt: skip

    model = reward_model_execute(reward_model_id=job.pk)

    assert model.status == RewardModel.Status.FINISHED, model.error
    assert model.usable
    heldout = model.metrics["heldout"]
    # Raters follow their taste 85% of the time; the model is held to the true taste's own
    # accuracy on these held-out votes within 0.15, as the preference model's test allows, and
    # its 95% interval must clear chance. The clips are the same in every run (the fixture
    # seeds them by prompt text, not database ids), so these figures are too: 0.797 with the
    # interval [0.706, 0.870] on 123 held-out votes against the taste's 0.850; margins 0.097
    # and 0.206. (With 40 prompts and seeds from the ids, two runs gave 0.561 and 0.754; with
    # these seeds, 0.649 and an interval down to 0.491: too few votes for a stable check.)
    ceiling = best_possible_accuracy(list(vote_rows(DataFilters(campaign_ids=(campaign.pk,)))))
    assert heldout["accuracy"] >= ceiling - 0.15, (heldout, ceiling)
    assert heldout["accuracy_ci"][0] > 0.5
    assert model.metrics["train"]["votes"] + heldout["votes"] == 240
    # All 240 votes judged five-fold by prompt: the taste is there, by both figures.
    crossed = model.metrics["cross_validated"]
    assert (crossed["votes"], crossed["folds"]) == (240, 5)
    assert crossed["accuracy_ci"][0] > 0.5 and crossed["gain_over_chance_ci"][0] > 0
    assert heldout["gain_over_chance"] > 0
    # Also read on the votes the raters' agreement counts, held out and on every pair.
    assert 0.5 < heldout["agreement_pairs_accuracy"] <= 1 and model.metrics["noise_ceiling"]["all"]
    assert 0.5 < crossed["agreement_pairs_accuracy"] <= 1
    # The busy version plays more notes: the fitted weights say raters dislike that. Density
    # and notes per bar measure nearly the same thing, so the fit may split their weight
    # either way (one CI run gave notes per bar +0.10, density more negative); only their sum
    # is identified by these votes.
    weights = model.metrics["weights"]
    assert weights["notes_per_bar"] + weights["density"] < 0, weights
    # Every weight has a bootstrap interval (over the training prompts), and the page lists
    # them strongest first, saying which the votes do not pin down.
    intervals = model.metrics["weight_intervals"]
    assert set(intervals) == set(weights) and all(low <= high for low, high in intervals.values())
    client.force_login(make_rater(role=Role.RESEARCHER).user)
    page = client.get(reverse("reward-model-detail", args=[model.pk])).content.decode()
    strongest = max(weights, key=lambda name: abs(weights[name]))
    table = page[page.index('<table id="weights">') :]
    assert table.index(f"<td>{strongest}</td>") < table.index("</table>")
    assert "spans 0" in table  # with 25 features and 120 votes some are not pinned down
    assert model.data_summary["rows_sha256"] and model.data_summary["not_measurable"] == 0
    # Every clip it saw is scored, sparse above busy.
    stored = TrackReward.objects.filter(reward_model=model).select_related("track")
    assert stored.count() == 160
    by_version = {SPARSE: [], "busy-version": []}
    for row in stored.select_related("track__generator_version"):
        by_version[row.track.generator_version.name].append(row.value)
    assert sum(by_version[SPARSE]) / 80 > sum(by_version["busy-version"]) / 80 + 0.5
    tracks = [row.track for row in stored[:4]]
    assert reward_scores(reward_model=model, tracks=tracks) == pytest.approx(
        [row.value for row in stored[:4]]
    )
    # With support_error, on the same votes.
    assert_it_weighs_only_what_the_votes_support(supported_model_on(campaign))


@pytest.mark.parametrize("kind", ["adherence", "quality"])
def test_the_measured_method_is_only_for_preference_models(kind):
    with pytest.raises(RewardModelError, match="not for"):
        reward_model_create(name="wrong", kind=kind, method="measured", steps=1, queue=False)
    assert not RewardModel.objects.exists()


def supported_model_on(campaign):
    """Trained with support_error on the votes of the campaign the test before voted on:
    part of that test, so the 160 clips are rendered once."""
    job = reward_model_create(
        name="measured, supported", kind="preference", method="measured", steps=1,
        queue=False, filters=DataFilters(campaign_ids=(campaign.pk,)),
        settings={"test_share": 0.5, "support_error": 0.05},
    )  # fmt: skip

    model = reward_model_execute(reward_model_id=job.pk)

    assert model.status == RewardModel.Status.FINISHED, model.error
    return model


def assert_it_weighs_only_what_the_votes_support(model):
    chosen = model.metrics["supported_features"]
    weights = model.metrics["weights"]
    assert chosen["error"] == 0.05 and chosen["z"], chosen
    # The reward is the refit on the supported features: every other weight is 0, and the
    # intervals (of the fit on every feature) are still listed for all of them.
    assert {name for name, weight in weights.items() if weight} == set(chosen["z"])
    assert set(model.metrics["weight_intervals"]) == set(weights)
    assert set(chosen["weights_before"]) == set(weights)
    # Chosen inside each fold too, and still clear of chance on all 240 votes.
    crossed = model.metrics["cross_validated"]
    assert crossed["votes"] == 240 and crossed["accuracy_ci"][0] > 0.5
    assert model.metrics["heldout"]["accuracy_ci"][0] > 0.5


@pytest.mark.parametrize("value", [1.0, -0.1, True])
def test_support_error_outside_zero_to_one_is_refused_and_nothing_is_stored(value):
    with pytest.raises(RewardModelError, match="support_error"):
        reward_model_create(
            name="wrong", kind="preference", method="measured", steps=1, queue=False,
            settings={"support_error": value},
        )  # fmt: skip
    assert not RewardModel.objects.exists()
