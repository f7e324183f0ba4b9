"""What a finished fine-tuning run leaves: its tuned generator registered as a candidate
version whose parent is the base, and the evaluation campaign that sets the two side by side.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from django.conf import settings as django_settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from generation.models import GeneratorVersion
from generation.services import generator_version_register
from reward import jobs
from reward.finetune_data import prompt_pool
from reward.models import FineTuneRun


def finetune_run_register_candidate(*, run: FineTuneRun, generator_path: Path) -> GeneratorVersion:
    """The tuned generator as a candidate version whose parent is the base."""
    base = run.base_version
    checkpoint = generator_path
    # A path inside the project is stored relative to it, as the shipped generator's is.
    with contextlib.suppress(ValueError):
        checkpoint = generator_path.relative_to(django_settings.BASE_DIR)
    config = {key: value for key, value in base.config.items() if key != "checkpoint"}
    with transaction.atomic():
        version = generator_version_register(
            name=f"{base.name}-{run.algorithm}{run.pk}",
            backend=base.backend,
            config=config,
            checkpoint=str(checkpoint),
            parent=base,
            status=GeneratorVersion.Status.CANDIDATE,
            metrics={"fine_tune_run": run.pk, "preset": run.preset},
        )
        # The step stays the last one the heartbeat wrote: a run stopped early (its time,
        # a guard) says how far it got, not the steps it was asked for.
        jobs.job_finish(FineTuneRun, run.pk, result_version=version)
    return version


def evaluation_for_run(
    *,
    run: FineTuneRun,
    created_by: AbstractBaseUser | None = None,
    votes_per_item: int = 3,
    min_listen_seconds: float = 5.0,
    queue: bool = True,
):
    """The run's evaluate campaign (created once): its candidate against its parent on the
    run's held-out prompts, side by side, as MusicRL compared its models."""
    from reward.evaluations import evaluation_create

    existing = run.evaluations.order_by("pk").first()
    if existing is not None:
        return existing
    prompts = run.data_summary.get("held_out_prompts") or prompt_pool(run.settings)[1]
    return evaluation_create(
        candidate=run.result_version,
        baseline=run.base_version,
        prompt_texts=prompts,
        fine_tune_run=run,
        votes_per_item=votes_per_item,
        clip_seconds=float(run.settings["clip_seconds"]),
        min_listen_seconds=min_listen_seconds,
        created_by=created_by,
        queue=queue,
    )
