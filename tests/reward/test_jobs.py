"""A training job belongs to one worker at a time; a dead worker's job can be taken over and
re-queued; an admin's cancel reaches the running loop through its heartbeat."""

from datetime import timedelta

import pytest
from django.utils import timezone

from reward import jobs
from reward.models import RewardModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def job():
    return RewardModel.objects.create(name="job", kind="preference", steps=100)


def age_heartbeat(job, seconds):
    RewardModel.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_a_queued_job_is_claimed_once(job):
    assert jobs.job_claim(RewardModel, job.pk)
    assert not jobs.job_claim(RewardModel, job.pk)  # a duplicate delivery does nothing

    job.refresh_from_db()
    assert job.status == RewardModel.Status.RUNNING
    assert job.attempts == 1
    assert job.worker == jobs.worker_name()


def test_a_running_job_with_a_stale_heartbeat_can_be_claimed_again(job, settings):
    settings.TRAINING_STALE_SECONDS = 30
    jobs.job_claim(RewardModel, job.pk)
    age_heartbeat(job, 10)
    assert not jobs.job_claim(RewardModel, job.pk)  # its worker is alive

    age_heartbeat(job, 31)
    assert jobs.job_claim(RewardModel, job.pk)
    job.refresh_from_db()
    assert job.attempts == 2


@pytest.mark.parametrize("status", ["finished", "failed", "cancelled"])
def test_a_job_that_is_over_is_never_claimed(job, status):
    RewardModel.objects.filter(pk=job.pk).update(status=status)
    assert not jobs.job_claim(RewardModel, job.pk)


def test_the_heartbeat_writes_progress_and_raises_once_cancel_is_requested(job, settings):
    settings.TRAINING_HEARTBEAT_SECONDS = 0
    jobs.job_claim(RewardModel, job.pk)
    heartbeat = jobs.Heartbeat(RewardModel, job.pk)

    heartbeat(1, 100, {"step": 1, "loss": 0.69})
    heartbeat(2, 100, {"step": 2, "loss": 0.6})
    job.refresh_from_db()
    assert job.step == 2
    assert [point["loss"] for point in job.curve] == [0.69, 0.6]

    jobs.job_cancel(job)
    job.refresh_from_db()
    assert job.status == RewardModel.Status.RUNNING  # a live worker stops it, not the view
    with pytest.raises(jobs.JobCancelled):
        heartbeat(3, 100, {"step": 3, "loss": 0.5})


def test_a_worker_whose_job_was_taken_over_stops_without_writing(job, settings):
    settings.TRAINING_HEARTBEAT_SECONDS = 0
    jobs.job_claim(RewardModel, job.pk)
    slow = jobs.Heartbeat(RewardModel, job.pk)
    RewardModel.objects.filter(pk=job.pk).update(worker="other-host:1", step=40)

    with pytest.raises(jobs.JobLost):
        slow(50, 100, {"step": 50, "loss": 0.1})
    job.refresh_from_db()
    assert job.step == 40


def test_stalled_and_lost_jobs_are_requeued_once_per_interval(settings):
    settings.TRAINING_STALE_SECONDS = 60
    alive = RewardModel.objects.create(name="alive", kind="quality", steps=5)
    dead = RewardModel.objects.create(name="dead", kind="quality", steps=5)
    lost = RewardModel.objects.create(name="lost", kind="quality", steps=5)
    for job in (alive, dead):
        jobs.job_claim(RewardModel, job.pk)
    age_heartbeat(dead, 120)
    RewardModel.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(hours=1))

    first = jobs.jobs_requeue_stalled(RewardModel)
    again = jobs.jobs_requeue_stalled(RewardModel)

    assert sorted(first) == sorted([dead.pk, lost.pk])
    assert again == []
    dead.refresh_from_db()
    assert dead.status == RewardModel.Status.QUEUED
    assert jobs.job_claim(RewardModel, dead.pk)  # and the next delivery resumes it


def test_cancelling_a_job_whose_worker_died_ends_it_at_once(job, settings):
    settings.TRAINING_STALE_SECONDS = 30
    jobs.job_claim(RewardModel, job.pk)
    age_heartbeat(job, 60)

    jobs.job_cancel(job)

    assert job.status == RewardModel.Status.CANCELLED
