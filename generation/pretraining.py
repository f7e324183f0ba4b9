"""Pretraining the learned generator and registering the result as a GeneratorVersion.

torch is imported inside the functions that train: this module is imported by the web process
(to queue runs), which must never load torch.
"""

from __future__ import annotations

import json
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from generation.models import GeneratorVersion, PretrainingRun
from generation.services import generator_version_register

ProgressCallback = Callable[[int, int, dict[str, float]], None]
# Writing progress to the database on every step would cost more than a tiny model's step.
PROGRESS_EVERY_STEPS = 10
# The pretraining settings (generation.music.pretrain.TrainConfig fields) a run may set;
# TrainConfig checks their values when the run starts.
RUN_SETTINGS = frozenset({
    "batch_size", "plan_batch_size", "learning_rate", "min_learning_rate", "warmup_steps",
    "seed", "checkpoint_every", "eval_prompts", "held_out_share", "register_shift_share",
    "short_prompt_share", "num_threads", "data_workers",
})  # fmt: skip


class PretrainingSettingsError(ValueError):
    pass


def pretraining_run_create(
    *,
    size: str,
    steps: int,
    queue: bool,
    settings: dict[str, float] | None = None,
    starts_from: GeneratorVersion | None = None,
) -> PretrainingRun:
    """Record a run; with queue=True a worker on the `train` queue executes it. A run that
    `starts_from` a version trains that version's weights further (on the corpus as the
    composer writes it now) instead of a fresh model; the version must be a planned
    generator of the run's size."""
    from generation import tasks

    settings = dict(settings or {})
    unknown = sorted(set(settings) - RUN_SETTINGS)
    if unknown:
        raise PretrainingSettingsError(f"unknown settings {unknown}; known: {sorted(RUN_SETTINGS)}")
    if starts_from is not None:
        _check_warm_start(starts_from, size)
    with transaction.atomic():
        run = PretrainingRun.objects.create(
            size=size, steps=steps, settings=settings, starts_from=starts_from
        )
        if queue:
            tasks.pretrain_generator.delay_on_commit(run.pk)
    return run


def _check_warm_start(version: GeneratorVersion, size: str) -> None:
    from generation.music.pretrain import warm_start_mismatch  # torch: only when asked

    checkpoint = version.backend_config().get("checkpoint")
    if version.backend != "symbolic" or not checkpoint or not Path(checkpoint).exists():
        raise PretrainingSettingsError(f"{version} has no symbolic generator file to start from")
    problem = warm_start_mismatch(Path(checkpoint), size)
    if problem:
        raise PretrainingSettingsError(f"cannot start a {size} run from {version}: {problem}")


def pretraining_run_extend(*, run: PretrainingRun, steps: int) -> PretrainingRun:
    """Train a run further, up to `steps` in all: it resumes from its last checkpoint, its
    learning-rate schedule now decays over the new total (a warm restart when the run had
    finished), and it registers another version, a child of the one it made before."""
    if steps <= run.step:
        raise PretrainingSettingsError(f"run {run.pk} is at step {run.step}: ask for more")
    PretrainingRun.objects.filter(pk=run.pk).update(
        steps=steps, status=PretrainingRun.Status.QUEUED, finished_at=None
    )
    run.refresh_from_db()
    return run


def pretraining_run_execute(
    *, run_id: int, on_progress: ProgressCallback | None = None
) -> GeneratorVersion:
    """Train (resuming from the run's last checkpoint if there is one), evaluate, and
    register the result as an active GeneratorVersion. Safe to call again after a crash."""
    from generation.music.pretrain import TrainConfig, train

    run = PretrainingRun.objects.get(pk=run_id)
    existing = run.versions.order_by("-pk").first()
    if run.status == PretrainingRun.Status.FINISHED and existing is not None:
        return existing
    PretrainingRun.objects.filter(pk=run.pk).update(status=PretrainingRun.Status.RUNNING)
    try:
        result = train(
            TrainConfig(size=run.size, **run.settings),
            steps=run.steps,
            checkpoint_dir=run.directory,
            progress_callback=_progress_recorder(run, on_progress),
            init_from=(
                Path(run.starts_from.backend_config()["checkpoint"]) if run.starts_from else None
            ),
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
            curve.append([step, round(entry["loss"], 4), round(entry["plan_loss"], 4)])
            PretrainingRun.objects.filter(pk=run.pk).update(step=step, loss_curve=curve)

    return record


def _register_version(run: PretrainingRun, metrics: dict, generator_path: Path) -> GeneratorVersion:
    """The run's result as an active version, a child of the version it started from (if
    any); a run trained further (pretraining_run_extend) registers a child of its previous
    version, named by its steps."""
    curves = ("loss_curve", "plan_loss_curve")
    summary = {key: value for key, value in metrics.items() if key not in curves}
    previous = run.versions.order_by("-pk").first()
    name = f"planned-{run.size}-run{run.pk}"
    # Each version keeps a file of its own: training the run further rewrites generator.pt.
    generator_path = Path(
        shutil.copyfile(generator_path, run.directory / f"generator-{run.steps}.pt")
    )
    with transaction.atomic():
        version = generator_version_register(
            name=name if previous is None else f"{name}-step{run.steps}",
            parent=previous or run.starts_from,
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
    """Copy a version's generator file, e.g. into the repository as the shipped default, with
    its metrics (the held-out evaluation) beside it as `<name>.json`, which registering the
    shipped version reads without loading the model."""
    source = Path(version.backend_config()["checkpoint"])
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    sidecar = destination.with_suffix(".json")
    sidecar.write_text(json.dumps(version.metrics, indent=1, sort_keys=True) + "\n")
    return destination
