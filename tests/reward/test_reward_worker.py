"""A reward-model job on a real Celery worker: it reports progress while it trains, and when
the worker is killed mid-run (SIGKILL, as a crash or the OOM killer would) a restarted worker
picks the job up and finishes it from its last checkpoint instead of starting over."""

import time

import pytest

from ratings.dataset import DataFilters
from reward import jobs
from reward.models import RewardModel
from reward.training import reward_model_create
from tests.factories import RaterFactory
from tests.reward.conftest import vote_with_a_known_preference
from tests.workers import WorkerProcess, flush_broker, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

STEPS = 120
CHECKPOINT_EVERY = 20
# The worker treats a job as orphaned after this long without a heartbeat.
WORKER_ENV = {"TRAINING_STALE_SECONDS": "4", "TRAINING_HEARTBEAT_SECONDS": "0.5"}


def test_a_killed_worker_s_job_resumes_from_its_checkpoint_on_a_new_worker(
    tmp_path, rendered_campaign
):
    campaign = rendered_campaign(prompts=16, votes_per_item=3)
    vote_with_a_known_preference(campaign, RaterFactory.create_batch(3))
    flush_broker()
    worker = WorkerProcess(tmp_path, **WORKER_ENV).start()
    try:
        job = reward_model_create(
            name="crash-test", kind="preference", steps=STEPS,
            filters=DataFilters(campaign_ids=(campaign.pk,)),
            settings={"checkpoint_every": CHECKPOINT_EVERY, "eval_every": 40,
                      "batch_size": 16, "test_share": 0.25},
        )  # fmt: skip

        def progressed_past_a_checkpoint() -> bool:
            job.refresh_from_db()
            return job.step >= 3 * CHECKPOINT_EVERY

        wait_until(progressed_past_a_checkpoint, timeout=240, worker=worker, what="progress")
        assert job.status == RewardModel.Status.RUNNING
        assert job.curve and job.curve[-1]["step"] == job.step  # live curve on the page
        worker.kill()
        killed_at = RewardModel.objects.get(pk=job.pk).step
        assert killed_at < STEPS, "the job finished before the worker could be killed"
        # What the dead worker left on disk. The row's step can be behind it: the row is
        # written at most every TRAINING_HEARTBEAT_SECONDS, a checkpoint on its step (a CI
        # run saw the row at 71 and the checkpoint at 80).
        checkpointed_at = jobs.resume_step(job.directory)
        time.sleep(5)  # the dead worker's heartbeat goes stale

        worker = WorkerProcess(tmp_path, **WORKER_ENV).start()

        def over() -> bool:
            job.refresh_from_db()
            return job.status not in RewardModel.ACTIVE_STATUSES

        wait_until(over, timeout=300, worker=worker, what="the resumed job to finish")
    finally:
        worker.stop()

    assert job.status == RewardModel.Status.FINISHED, job.error
    assert job.attempts == 2
    [resumed_from] = job.resumed_from_steps
    # It resumed from the checkpoint the killed worker left, not from the start.
    assert 0 < resumed_from == checkpointed_at < STEPS
    assert resumed_from % CHECKPOINT_EVERY == 0
    steps = [point["step"] for point in job.curve]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS
    assert job.usable
    assert job.scores.count() == 2 * 16  # every clip the model saw has its reward stored
