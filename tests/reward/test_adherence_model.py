"""Adherence reward models as jobs: the learned two-tower model trains on the composer's
captioned corpus and reports retrieval on held-out captions next to the exact attribute match;
the attribute match itself is a model with a name that scores symbolic tracks."""

import pytest

from reward.models import RewardModel
from reward.track_scoring import reward_scores
from reward.training import reward_model_create, reward_model_execute
from tests.factories import PromptFactory
from tests.rendering import rendered_track

pytestmark = pytest.mark.django_db

SMALL_CORPUS = {"corpus_size": 48, "held_out_size": 16, "clip_seconds": 2.0}


def test_the_learned_adherence_model_trains_and_scores_any_track():
    reward_model = reward_model_create(
        name="mulan-small", kind="adherence", steps=40, queue=False,
        settings={**SMALL_CORPUS, "batch_size": 16, "eval_every": 20},
    )  # fmt: skip

    reward_model = reward_model_execute(reward_model_id=reward_model.pk)

    assert reward_model.status == RewardModel.Status.FINISHED, reward_model.error
    assert reward_model.usable
    heldout = reward_model.metrics["heldout"]
    assert heldout["n"] == 16
    assert 0 <= heldout["text_to_music_r1"] <= 1
    assert heldout["chance_r1"] < 0.2
    # Both adherence rewards are measured on the same held-out corpus.
    assert reward_model.metrics["attribute_match"]["n"] == 16
    assert any("heldout_r1" in point for point in reward_model.curve)
    track = rendered_track(prompt=PromptFactory(text="slow sad piano ballad"), duration_seconds=3)
    [score] = reward_scores(reward_model=reward_model, tracks=[track])
    assert -1.0 <= score <= 1.0


def test_the_attribute_match_is_a_named_reward_that_needs_no_training():
    reward_model = reward_model_create(
        name="exact", kind="adherence", method="attribute_match", steps=1, queue=False,
        settings=SMALL_CORPUS,
    )  # fmt: skip

    reward_model = reward_model_execute(reward_model_id=reward_model.pk)

    assert reward_model.status == RewardModel.Status.FINISHED, reward_model.error
    assert reward_model.usable
    heldout = reward_model.metrics["heldout"]
    assert heldout["text_to_music_r1"] > 3 * heldout["chance_r1"]
    ballad = rendered_track(prompt=PromptFactory(text="slow sad piano ballad"), seed=1)
    techno = rendered_track(prompt=PromptFactory(text="fast techno with drums"), seed=2)
    ballad_score, techno_score = reward_scores(reward_model=reward_model, tracks=[ballad, techno])
    assert ballad_score > 0.7 and techno_score > 0.7  # each follows its own prompt


def test_scoring_refuses_a_model_that_has_not_finished():
    reward_model = RewardModel.objects.create(name="queued", kind="preference", steps=5)
    with pytest.raises(ValueError, match="not usable"):
        reward_scores(reward_model=reward_model, tracks=[])
