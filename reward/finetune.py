"""Fine-tuning runs: RLOO from reward models (presets R, U, RU after MusicRL) or DPO from stored
preference pairs, as resumable jobs that end by registering a candidate generator version.
Create, run (on a worker) and cancel; the stages that train are reward/finetune_stages.py and
what a finished run leaves is reward/finetune_results.py.

Nothing here imports torch: the web process imports this module (to create and cancel runs).
"""

from __future__ import annotations

import traceback
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from generation.models import GeneratorVersion
from ratings.dataset import DataFilters
from reward import jobs
from reward.finetune_results import finetune_run_register_candidate
from reward.finetune_settings import FineTuneError, finetune_run_settings
from reward.finetune_stages import run_dpo, run_rloo_stages
from reward.models import FineTuneRun, RewardModel, TrainingJob

# Which reward kinds each MusicRL preset optimises, stage by stage.
PRESET_STAGES: dict[str, list[list[str]]] = {
    FineTuneRun.Preset.R: [[RewardModel.Kind.ADHERENCE, RewardModel.Kind.QUALITY]],
    FineTuneRun.Preset.U: [[RewardModel.Kind.PREFERENCE]],
    FineTuneRun.Preset.RU: [
        [RewardModel.Kind.ADHERENCE, RewardModel.Kind.QUALITY],
        [RewardModel.Kind.PREFERENCE],
    ],
}


def latest_usable(kind: str) -> RewardModel | None:
    for reward_model in RewardModel.objects.filter(kind=kind, status="finished").order_by(
        "-finished_at"
    ):
        if reward_model.usable:
            return reward_model
    return None


def preset_stages(preset: str, steps: int) -> list[dict[str, Any]]:
    """The stages of a preset, each with the newest usable reward model of every kind."""
    stages = []
    for kinds in PRESET_STAGES[preset]:
        rewards = {}
        for kind in kinds:
            reward_model = latest_usable(kind)
            if reward_model is None:
                raise FineTuneError(f"preset {preset} needs a usable {kind} reward model")
            rewards[str(reward_model.pk)] = 1.0
        stages.append({"rewards": rewards, "steps": steps})
    return stages


def custom_stage(weights: dict[int, float], steps: int) -> list[dict[str, Any]]:
    if not weights:
        raise FineTuneError("a custom reward mix needs at least one reward model")
    models = RewardModel.objects.in_bulk(list(weights))
    for reward_model_id in weights:
        reward_model = models.get(int(reward_model_id))
        if reward_model is None or not reward_model.usable:
            raise FineTuneError(f"reward model {reward_model_id} is not usable")
    return [{"rewards": {str(k): float(w) for k, w in weights.items()}, "steps": steps}]


def with_plan_stages(stages: list[dict[str, Any]], plan_steps: int) -> list[dict[str, Any]]:
    """Each stage preceded by `plan_steps` steps on the plan alone, with the same rewards."""
    expanded = []
    for stage in stages:
        expanded += [{**stage, "steps": plan_steps, "part": "plan"}, {**stage, "part": "all"}]
    return expanded


def finetune_run_create(
    *,
    name: str,
    base_version: GeneratorVersion,
    algorithm: str,
    steps: int,
    preset: str = FineTuneRun.Preset.CUSTOM,
    reward_weights: dict[int, float] | None = None,
    stage_rewards: list[dict[int, float]] | None = None,
    filters: DataFilters | None = None,
    settings: dict[str, Any] | None = None,
    created_by: AbstractBaseUser | None = None,
    queue: bool = True,
) -> FineTuneRun:
    """Record a run (validated: nothing is stored on bad input); with queue=True a worker on
    the `train` queue runs it. RLOO rewards come from a preset (the newest usable model of
    each kind), from `reward_weights` (one custom stage), or from `stage_rewards` (named
    models per stage, e.g. the R and U models of an RU run)."""
    from reward import tasks

    config = finetune_run_settings(settings)
    if not name.strip():
        raise FineTuneError("a run needs a name")
    if FineTuneRun.objects.filter(name=name).exists():
        raise FineTuneError(f"a run named {name!r} exists already")
    if base_version.backend != "symbolic" or not base_version.checkpoint:
        raise FineTuneError("fine-tuning needs a learned (symbolic) version with a checkpoint")
    if steps < 1:
        raise FineTuneError("steps must be at least 1")
    if algorithm == FineTuneRun.Algorithm.RLOO:
        if stage_rewards:
            stages = [custom_stage(weights, steps)[0] for weights in stage_rewards]
        elif preset == FineTuneRun.Preset.CUSTOM:
            stages = custom_stage(reward_weights or {}, steps)
        elif preset in PRESET_STAGES:
            stages = preset_stages(preset, steps)
        else:
            raise FineTuneError(f"unknown preset {preset!r}")
        if config["plan_steps"]:
            stages = with_plan_stages(stages, int(config["plan_steps"]))
    elif algorithm == FineTuneRun.Algorithm.DPO:
        stages = [{"steps": steps}]
    else:
        raise FineTuneError(f"algorithm must be one of {', '.join(FineTuneRun.Algorithm.values)}")
    with transaction.atomic():
        run = FineTuneRun.objects.create(
            name=name,
            base_version=base_version,
            algorithm=algorithm,
            preset=preset if algorithm == FineTuneRun.Algorithm.RLOO else "custom",
            stages=stages,
            steps=sum(stage["steps"] for stage in stages),
            settings=config,
            data_filters=(filters or DataFilters()).to_json(),
            created_by=created_by,
        )
        if queue:
            tasks.finetune_generator.delay_on_commit(run.pk)
    return run


def finetune_run_cancel(*, run: FineTuneRun) -> FineTuneRun:
    jobs.job_cancel(run)
    return run


def finetune_run_execute(
    *, run_id: int, on_progress: jobs.ProgressFn | None = None
) -> FineTuneRun | None:
    """Run every remaining stage (resuming inside a stage from its checkpoint), then register
    the candidate version. None when another worker has the run or it is over already."""
    if not jobs.job_claim(FineTuneRun, run_id):
        return None
    run = FineTuneRun.objects.select_related("base_version").get(pk=run_id)
    heartbeat = jobs.Heartbeat(FineTuneRun, run.pk, curve=run.curve, on_step=on_progress)
    try:
        if run.algorithm == FineTuneRun.Algorithm.DPO:
            final = run_dpo(run, heartbeat)
        else:
            final = run_rloo_stages(run, heartbeat)
        finetune_run_register_candidate(run=run, generator_path=final)
    except jobs.JobLost:
        return None
    except jobs.JobCancelled:
        jobs.job_stop(FineTuneRun, run.pk, status=TrainingJob.Status.CANCELLED)
    except Exception:
        jobs.job_stop(FineTuneRun, run.pk, status=TrainingJob.Status.FAILED,
                      error=traceback.format_exc())  # fmt: skip
        raise
    run.refresh_from_db()
    return run
