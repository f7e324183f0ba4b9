"""Fine-tuning runs on the Django side: validation stores nothing on bad input; an RLOO run
(here RU, two stages) and a DPO run each register a candidate version whose parent is the
base; a finished run turns into an evaluation campaign on its held-out prompts."""

from pathlib import Path

import numpy as np
import pytest
from django.core.files.storage import default_storage

from generation.models import GeneratorVersion
from generation.music.backends import SHIPPED_GENERATOR
from generation.services import SHIPPED_VERSION_NAME, track_generate
from ratings.dataset import DataFilters
from ratings.models import Campaign
from reward import finetune, finetune_data, finetune_results
from reward.learning.measured import FEATURE_NAMES, MeasuredPreferenceModel
from reward.models import FineTuneRun, RewardModel
from tests.factories import (
    CampaignFactory,
    GeneratorVersionFactory,
    PairFactory,
    PromptFactory,
    RaterFactory,
    vote_on,
)

pytestmark = pytest.mark.django_db

QUICK = {
    "prompts_per_step": 2, "samples_per_prompt": 2, "checkpoint_every": 2, "eval_every": 2,
    "train_prompts": 12, "held_out_prompts": 4, "clip_seconds": 2.0,
}  # fmt: skip


@pytest.fixture
def learned_base():
    return GeneratorVersion.objects.create(
        name=SHIPPED_VERSION_NAME, backend="symbolic", checkpoint=SHIPPED_GENERATOR,
        status=GeneratorVersion.Status.ACTIVE,
    )  # fmt: skip


@pytest.fixture
def attribute_match():
    """A finished exact-attribute adherence reward (no training needed to score)."""
    return RewardModel.objects.create(
        name="exact", kind="adherence", method="attribute_match", steps=1, status="finished",
        metrics={"heldout": {"text_to_music_r1": 0.9}},
    )  # fmt: skip


def test_bad_runs_are_refused_and_store_nothing(learned_base, attribute_match):
    procedural = GeneratorVersionFactory()
    unfinished = RewardModel.objects.create(name="half", kind="preference", steps=5)
    attempts = [
        {"base_version": procedural, "reward_weights": {attribute_match.pk: 1.0}},
        {"base_version": learned_base, "reward_weights": {unfinished.pk: 1.0}},
        {"base_version": learned_base, "reward_weights": {}},
        {"base_version": learned_base, "preset": "U"},  # no usable preference model
        {"base_version": learned_base, "reward_weights": {attribute_match.pk: 1.0},
         "settings": {"samples_per_prompt": 1}},
        {"base_version": learned_base, "reward_weights": {attribute_match.pk: 1.0},
         "settings": {"guard_action": "panic"}},
        {"base_version": learned_base, "reward_weights": {attribute_match.pk: 1.0},
         "settings": {"kl_loss": -0.5}},
        {"base_version": learned_base, "reward_weights": {attribute_match.pk: 1.0},
         "settings": {"train_prompts": 0}},
        {"base_version": learned_base, "reward_weights": {attribute_match.pk: 1.0},
         "settings": {"held_out_prompts": 2.5}},
        {"base_version": learned_base, "reward_weights": {attribute_match.pk: 1.0},
         "settings": {"num_threads": 0}},
        {"base_version": learned_base, "reward_weights": {attribute_match.pk: 1.0},
         "settings": {"planner_lr_scale": -1}},
        {"base_version": learned_base, "reward_weights": {attribute_match.pk: 1.0},
         "settings": {"estimator": "ppo"}},
        {"base_version": learned_base, "reward_weights": {attribute_match.pk: 1.0},
         "settings": {"plan_steps": 1.5}},
        {"base_version": learned_base, "reward_weights": {attribute_match.pk: 1.0},
         "settings": {"plan_samples_per_prompt": 1}},
    ]  # fmt: skip
    for attempt in attempts:
        with pytest.raises(finetune.FineTuneError):
            finetune.finetune_run_create(
                name="bad", algorithm="rloo", steps=3, queue=False, **attempt
            )
    assert not FineTuneRun.objects.exists()


def test_an_ru_run_registers_a_candidate_whose_parent_is_the_base(learned_base, attribute_match):
    run = finetune.finetune_run_create(
        name="ru", base_version=learned_base, algorithm="rloo", preset="RU", steps=2,
        stage_rewards=[{attribute_match.pk: 1.0}, {attribute_match.pk: 1.0}],
        settings=QUICK | {"estimator": "best_of_group"}, queue=False,
    )  # fmt: skip

    run = finetune.finetune_run_execute(run_id=run.pk)

    assert run.status == FineTuneRun.Status.FINISHED, run.error
    assert run.steps == run.step == 4  # two stages of two steps
    candidate = run.result_version
    assert candidate.parent == learned_base
    assert candidate.status == GeneratorVersion.Status.CANDIDATE
    assert candidate.backend == "symbolic"
    assert Path(candidate.backend_config()["checkpoint"]).exists()
    assert {"stage_0", "stage_1"} <= set(run.metrics)
    # One continuous curve over both stages, with the reward and the KL at every step.
    assert [point["step"] for point in run.curve] == list(range(1, 5))
    assert all("reward_exact" in point and "kl" in point for point in run.curve)
    assert {point["stage"] for point in run.curve} == {0, 1}
    assert run.samples and all(default_storage.exists(s["file"]) for s in run.samples)
    # The pools the settings asked for, and no prompt on both sides.
    assert run.data_summary["train_prompts"] == 12
    assert len(run.data_summary["held_out_prompts"]) == 4
    train, held_out = finetune_data.prompt_pool(run.settings)
    assert held_out == run.data_summary["held_out_prompts"] and not set(train) & set(held_out)


def test_a_run_out_of_time_stops_keeping_what_it_learned_and_says_why(
    learned_base, attribute_match
):
    """`max_seconds`, which the closed loop sets to keep to its wall time: the run stops
    after the step during which its time ran out, and registers that step's candidate."""
    run = finetune.finetune_run_create(
        name="hurried", base_version=learned_base, algorithm="rloo", steps=5,
        reward_weights={attribute_match.pk: 1.0}, settings=QUICK | {"max_seconds": 0.001},
        queue=False,
    )  # fmt: skip

    run = finetune.finetune_run_execute(run_id=run.pk)

    assert run.status == FineTuneRun.Status.FINISHED, run.error
    assert [point["step"] for point in run.curve] == [1]  # of 5
    assert (run.step, run.steps) == (1, 5)  # how far it got, not what it was asked for
    assert run.metrics["stage_0"]["stopped_reason"] == "time_budget"
    assert run.metrics["stage_0"]["steps"] == 1
    assert run.metrics["stage_0"]["seconds"] > 0 and run.metrics["stage_0"]["part"] == "all"
    assert run.result_version.parent == learned_base
    assert Path(run.result_version.backend_config()["checkpoint"]).exists()


def test_a_finished_run_becomes_an_evaluation_on_its_held_out_prompts(
    learned_base, attribute_match
):
    run = finetune.finetune_run_create(
        name="u", base_version=learned_base, algorithm="rloo", steps=2,
        reward_weights={attribute_match.pk: 1.0}, settings=QUICK, queue=False,
    )  # fmt: skip
    run = finetune.finetune_run_execute(run_id=run.pk)
    assert run.step == run.steps == 2

    evaluation = finetune_results.evaluation_for_run(run=run, queue=False)

    campaign = evaluation.campaign
    assert campaign.purpose == Campaign.Purpose.EVALUATE
    assert campaign.protocol == Campaign.Protocol.SIDE_BY_SIDE
    assert (campaign.version_a, campaign.version_b) == (run.result_version, learned_base)
    held_out = set(run.data_summary["held_out_prompts"])
    assert set(campaign.prompts.values_list("text", flat=True)) == held_out
    assert finetune_results.evaluation_for_run(run=run) == evaluation  # made once


def test_a_dpo_run_learns_from_votes_on_two_clips_of_the_base(learned_base):
    campaign = CampaignFactory(version_a=learned_base, votes_per_item=2, clip_seconds=2.0)
    raters = RaterFactory.create_batch(2)
    for index in range(6):
        prompt = PromptFactory(text=f"slow sad piano ballad number {index}")
        tracks = [
            track_generate(prompt=prompt, version=learned_base, seed=seed, duration_seconds=2)[0]
            for seed in (1, 2)
        ]
        pair = PairFactory(campaign=campaign, prompt=prompt, track_a=tracks[0],
                           track_b=tracks[1], votes_wanted=2)  # fmt: skip
        for rater in raters:
            vote_on(pair, rater, "a")
    run = finetune.finetune_run_create(
        name="dpo", base_version=learned_base, algorithm="dpo", steps=3, queue=False,
        filters=DataFilters(campaign_ids=(campaign.pk,)),
        settings={"test_share": 0.3, "dpo_batch_size": 4, "checkpoint_every": 2},
    )  # fmt: skip

    run = finetune.finetune_run_execute(run_id=run.pk)

    assert run.status == FineTuneRun.Status.FINISHED, run.error
    assert run.data_summary["decisive_votes"] == 12
    assert run.data_summary["train_pairs"] + run.data_summary["held_out"] == 12
    assert run.result_version.parent == learned_base
    assert all("loss" in point for point in run.curve)


def test_a_u_run_optimises_a_measured_preference_model_on_plans_then_on_whole_samples(
    learned_base, tmp_path
):
    """The measured model scores RL samples from their notes: here a taste for fast music, so
    the reward each step records is the weighted, standardised tempo of its samples. With
    plan_steps, a stage on plans alone (each heard as the composer plays it) comes first."""
    weights = np.zeros(len(FEATURE_NAMES))
    weights[FEATURE_NAMES.index("tempo_bpm")] = 1.0
    scorer = MeasuredPreferenceModel(
        FEATURE_NAMES, np.full(len(FEATURE_NAMES), 100.0), np.full(len(FEATURE_NAMES), 20.0),
        weights,
    )  # fmt: skip
    taste = RewardModel.objects.create(
        name="fast-taste", kind="preference", method="measured", steps=1, status="finished",
        metrics={"heldout": {"accuracy": 0.8}}, checkpoint=str(scorer.save(tmp_path / "m.json")),
    )  # fmt: skip
    run = finetune.finetune_run_create(
        name="u-measured", base_version=learned_base, algorithm="rloo", preset="U", steps=2,
        stage_rewards=[{taste.pk: 1.0}], queue=False,
        settings=QUICK | {"plan_steps": 2, "plan_prompts_per_step": 2,
                          "plan_samples_per_prompt": 3},
    )  # fmt: skip
    assert [(stage.get("part"), stage["steps"]) for stage in run.stages] == [
        ("plan", 2), ("all", 2)
    ]  # fmt: skip

    run = finetune.finetune_run_execute(run_id=run.pk)

    assert run.status == FineTuneRun.Status.FINISHED, run.error
    assert [(point["step"], point["stage"]) for point in run.curve] == [
        (1, 0), (2, 0), (3, 1), (4, 1)
    ]  # fmt: skip
    # The plan stage's samples are plans (a dozen tokens); the next stage's are pieces.
    assert all(point["length"] < 20 for point in run.curve[:2])
    assert all(point["length"] > 40 for point in run.curve[2:])
    rewards = [point["reward_fast-taste"] for point in run.curve]
    assert len(rewards) == 4 and all(np.isfinite(rewards))
    # The raw reward is (tempo - 100) / 20, so tempos of 40-240 bpm keep it in [-3, 7].
    assert all(-3.0 <= value <= 7.0 for value in rewards)
    assert run.result_version.parent == learned_base
