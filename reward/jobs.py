"""Claiming, heartbeats, cancelling and re-queueing of training jobs (reward models now,
fine-tuning runs later). No torch here: the web process uses these.

A job belongs to the worker that last stamped its heartbeat. Celery's `acks_late` redelivers a
task whose worker died, but only after the broker's visibility timeout (an hour on Redis) and
not at all on the filesystem broker; so a beat task and every worker start also re-queue jobs
whose heartbeat is stale. Duplicates are harmless: only one claim can win.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from reward.models import TrainingJob

# What a job's caller may pass to follow it: (step, total steps, the step's curve entry).
ProgressFn = Callable[[int, int, dict[str, float]], None]


class JobCancelled(Exception):
    """The job's cancel flag was seen by its heartbeat."""


class JobLost(Exception):
    """Another worker took the job over (this one looked dead): stop without writing."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def stale_before() -> Any:
    return timezone.now() - timedelta(seconds=settings.TRAINING_STALE_SECONDS)


def job_claim(model: type[TrainingJob], job_id: int) -> bool:
    """Take the job for this process if it is queued, or running with a stale heartbeat (its
    worker died). False means someone else has it or it is over: do nothing."""
    now = timezone.now()
    claimable = Q(status=TrainingJob.Status.QUEUED) | Q(
        status=TrainingJob.Status.RUNNING, heartbeat_at__lt=stale_before()
    )
    with transaction.atomic():
        job = model.objects.select_for_update().filter(claimable, pk=job_id).first()
        if job is None:
            return False
        if job.cancel_requested:
            model.objects.filter(pk=job_id).update(
                status=TrainingJob.Status.CANCELLED, finished_at=now
            )
            return False
        model.objects.filter(pk=job_id).update(
            status=TrainingJob.Status.RUNNING,
            heartbeat_at=now,
            worker=worker_name(),
            attempts=F("attempts") + 1,
            started_at=job.started_at or now,
        )
    return True


class Heartbeat:
    """Called by a training loop after every step: writes progress and the curve to the row
    at most every TRAINING_HEARTBEAT_SECONDS, and raises JobCancelled once an admin asked."""

    def __init__(
        self,
        model: type[TrainingJob],
        job_id: int,
        *,
        worker: str | None = None,
        curve: list[dict[str, float]] | None = None,
        on_step: ProgressFn | None = None,
    ) -> None:
        self.model = model
        self.job_id = job_id
        self.worker = worker or worker_name()
        self.curve = list(curve or [])
        self.on_step = on_step
        self._written_at = 0.0
        self._step: int | None = None

    def phase(self, text: str) -> None:
        """Say what the job is doing between steps (building data, evaluating); beats too."""
        self._write(phase=text)

    def __call__(self, step: int, total: int, entry: dict[str, float]) -> None:
        if self.on_step:
            self.on_step(step, total, entry)
        self._step = step
        self.curve = [point for point in self.curve if point["step"] < step]
        if _kept_on_curve(step, total, entry):
            self.curve.append({key: _rounded(value) for key, value in entry.items()})
        now = time.monotonic()
        if step == total or now - self._written_at >= settings.TRAINING_HEARTBEAT_SECONDS:
            self._write(step=step, curve=self.curve)

    def flush(self) -> None:
        """Write the progress and the curve now: a run that stopped before its last step
        (a guard, its time) would otherwise lose the steps since the last write."""
        if self._step is not None:
            self._write(step=self._step, curve=self.curve)

    def _write(self, **fields: Any) -> None:
        self._written_at = time.monotonic()
        rows = self.model.objects.filter(
            pk=self.job_id, worker=self.worker, status=TrainingJob.Status.RUNNING
        )
        if not rows.update(heartbeat_at=timezone.now(), **fields):
            raise JobLost()
        if rows.filter(cancel_requested=True).exists():
            raise JobCancelled()


# A page draws at most this many points per curve; longer runs keep every k-th step (and
# every evaluation), so the row stays small however long the run.
CURVE_POINTS = 500


def _kept_on_curve(step: int, total: int, entry: dict[str, float]) -> bool:
    stride = max(1, total // CURVE_POINTS)
    evaluated = any(key.startswith("heldout_") for key in entry)
    return step % stride == 0 or step == total or evaluated


def _rounded(value: float) -> float:
    return round(float(value), 5)


def job_cancel(job: TrainingJob) -> None:
    """Queued (or orphaned) jobs stop at once; a running one stops at its next heartbeat."""
    model = type(job)
    now = timezone.now()
    model.objects.filter(pk=job.pk, status__in=TrainingJob.ACTIVE_STATUSES).update(
        cancel_requested=True
    )
    model.objects.filter(
        Q(status=TrainingJob.Status.QUEUED)
        | Q(status=TrainingJob.Status.RUNNING, heartbeat_at__lt=stale_before()),
        pk=job.pk,
    ).update(status=TrainingJob.Status.CANCELLED, finished_at=now)
    job.refresh_from_db()


def job_note_resume(job_model: type[TrainingJob], job_id: int, step: int) -> None:
    """Record that this attempt resumed from the checkpoint at `step` (0: a fresh start)."""
    if step:
        with transaction.atomic():
            job = job_model.objects.select_for_update().get(pk=job_id)
            job_model.objects.filter(pk=job_id).update(
                resumed_from_steps=[*job.resumed_from_steps, step]
            )


def job_finish(job_model: type[TrainingJob], job_id: int, **fields: Any) -> None:
    job_model.objects.filter(pk=job_id).update(
        status=TrainingJob.Status.FINISHED, finished_at=timezone.now(), phase="", **fields
    )


def job_stop(job_model: type[TrainingJob], job_id: int, *, status: str, error: str = "") -> None:
    job_model.objects.filter(pk=job_id).update(
        status=status, finished_at=timezone.now(), phase="", error=error[-4000:]
    )


def jobs_requeue_stalled(model: type[TrainingJob]) -> list[int]:
    """Put back in the queue the running jobs whose worker vanished (stale heartbeat) and the
    queued jobs nobody picked up for longer than the stale interval (a lost message). Returns
    their ids, for the caller to send a task for each. For a queued job the heartbeat field
    holds when it was last queued, so a job waiting behind a long one is re-sent at most once
    per stale interval."""
    stale = stale_before()
    with transaction.atomic():
        ids = list(
            model.objects.select_for_update(skip_locked=True)
            .filter(
                Q(status=TrainingJob.Status.RUNNING, heartbeat_at__lt=stale)
                | Q(status=TrainingJob.Status.QUEUED)
                & (Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, created_at__lt=stale))
            )
            .values_list("pk", flat=True)
        )
        model.objects.filter(pk__in=ids).update(
            status=TrainingJob.Status.QUEUED, heartbeat_at=timezone.now()
        )
    return ids


def resume_step(directory: Path) -> int:
    """The step of the checkpoint a job in `directory` will resume from (0 for a fresh
    start). Workers only: it reads the checkpoint with torch."""
    from reward.learning.loop import checkpoint_step

    return checkpoint_step(directory)
