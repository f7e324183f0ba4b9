"""Reward-model jobs: create, run (on a worker), cancel. Running a job hands it to the trainer
of its kind and method (reward/trainers.py) and turns whatever stops the trainer into the
job's status.

Nothing here imports torch: the web process imports this module (to create and cancel jobs).
"""

from __future__ import annotations

import traceback
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from ratings.dataset import DataFilters
from reward import jobs
from reward.models import RewardModel, TrainingJob
from reward.trainers import TRAINERS
from reward.training_settings import RewardModelError, reward_settings


def reward_model_create(
    *,
    name: str,
    kind: str,
    steps: int,
    method: str = RewardModel.Method.LEARNED,
    filters: DataFilters | None = None,
    settings: dict[str, Any] | None = None,
    created_by: AbstractBaseUser | None = None,
    queue: bool = True,
) -> RewardModel:
    """Record a reward model to train; with queue=True a worker on `train` runs it."""
    from reward import tasks

    config = reward_settings(kind, settings)
    if method not in RewardModel.Method.values:
        raise RewardModelError(f"method must be one of {', '.join(RewardModel.Method.values)}")
    if not RewardModel.method_fits_kind(method, kind):
        raise RewardModelError(f"the {method} method is not for {kind} models")
    if steps < 1:
        raise RewardModelError("steps must be at least 1")
    if not name.strip():
        raise RewardModelError("a reward model needs a name")
    if RewardModel.objects.filter(name=name).exists():
        raise RewardModelError(f"a reward model named {name!r} exists already")
    with transaction.atomic():
        reward_model = RewardModel.objects.create(
            name=name,
            kind=kind,
            method=method,
            steps=steps,
            data_filters=(filters or DataFilters()).to_json(),
            config=config,
            created_by=created_by,
        )
        if queue:
            tasks.train_reward_model.delay_on_commit(reward_model.pk)
    return reward_model


def reward_model_cancel(*, reward_model: RewardModel) -> RewardModel:
    jobs.job_cancel(reward_model)
    return reward_model


def reward_model_execute(
    *, reward_model_id: int, on_progress: jobs.ProgressFn | None = None
) -> RewardModel | None:
    """Train (resuming from the last checkpoint if there is one), evaluate, save the scorer and
    score the tracks the model saw. Returns None when another worker has the job or it is
    over already, so a duplicate or late delivery of the task does nothing."""
    if not jobs.job_claim(RewardModel, reward_model_id):
        return None
    reward_model = RewardModel.objects.get(pk=reward_model_id)
    heartbeat = jobs.Heartbeat(RewardModel, reward_model.pk, curve=reward_model.curve,
                               on_step=on_progress)  # fmt: skip
    try:
        trainer = TRAINERS[(reward_model.kind, reward_model.method)]
        trainer(reward_model, heartbeat)
    except jobs.JobLost:
        return None
    except jobs.JobCancelled:
        jobs.job_stop(RewardModel, reward_model.pk, status=TrainingJob.Status.CANCELLED)
    except Exception:
        jobs.job_stop(
            RewardModel, reward_model.pk, status=TrainingJob.Status.FAILED,
            error=traceback.format_exc(),
        )  # fmt: skip
        raise
    reward_model.refresh_from_db()
    return reward_model
