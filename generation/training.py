"""Pretraining the learned generator and registering the result as a GeneratorVersion.

torch is imported inside the functions that train: this module is imported by the web process
(to queue runs), which must never load torch.
"""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Callable
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from generation.models import GeneratorVersion, PretrainingRun

ProgressCallback = Callable[[int, int, dict[str, float]], None]
# Writing progress to the database on every step would cost more than a tiny model's step.
PROGRESS_EVERY_STEPS = 10


def pretraining_run_create(*, size: str, steps: int, queue: bool) -> PretrainingRun:
    """Record a run; with queue=True a worker on the `train` queue executes it."""
    from generation import tasks

    with transaction.atomic():
        run = PretrainingRun.objects.create(size=size, steps=steps)
        if queue:
            tasks.pretrain_generator.delay_on_commit(run.pk)
    return run


def pretraining_run_execute(
    *, run_id: int, on_progress: ProgressCallback | None = None
) -> GeneratorVersion:
    """Train (resuming from the run's last checkpoint if there is one), evaluate, and
    register the result as an active GeneratorVersion. Safe to call again after a crash."""
    from generation.music.pretrain import TrainConfig, train

    run = PretrainingRun.objects.get(pk=run_id)
    existing = run.versions.first()
    if run.status == PretrainingRun.Status.FINISHED and existing is not None:
        return existing
    PretrainingRun.objects.filter(pk=run.pk).update(status=PretrainingRun.Status.RUNNING)
    try:
        result = train(
            TrainConfig(size=run.size),
            steps=run.steps,
            checkpoint_dir=run.directory,
            progress_callback=_progress_recorder(run, on_progress),
        )
    except Exception:
        PretrainingRun.objects.filter(pk=run.pk).update(
            status=PretrainingRun.Status.FAILED, error=traceback.format_exc()[-4000:]
        )
        raise
    return _register_version(run, result.metrics, result.generator_path)


def _progress_recorder(run: PretrainingRun, on_progress: ProgressCallback | None):
    curve: list[list[float]] = list(run.loss_curve)

    def record(step: int, total: int, entry: dict[str, float]) -> None:
        if on_progress:
            on_progress(step, total, entry)
        if step % PROGRESS_EVERY_STEPS == 0 or step == total:
            curve.append([step, round(entry["loss"], 4)])
            PretrainingRun.objects.filter(pk=run.pk).update(step=step, loss_curve=curve)

    return record


def _register_version(run: PretrainingRun, metrics: dict, generator_path: Path) -> GeneratorVersion:
    summary = {key: value for key, value in metrics.items() if key != "loss_curve"}
    with transaction.atomic():
        version = GeneratorVersion.objects.create(
            name=f"symbolic-{run.size}-run{run.pk}",
            backend="symbolic",
            checkpoint=str(generator_path),
            status=GeneratorVersion.Status.ACTIVE,
            pretraining_run=run,
            metrics=summary,
        )
        PretrainingRun.objects.filter(pk=run.pk).update(
            status=PretrainingRun.Status.FINISHED, metrics=summary, finished_at=timezone.now()
        )
    return version


def generator_export(*, version: GeneratorVersion, destination: Path) -> Path:
    """Copy a version's generator file, e.g. into the repository as the shipped default."""
    source = Path(version.backend_config()["checkpoint"])
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    return destination
