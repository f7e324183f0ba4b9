"""A Celery worker killed (SIGKILL, as a crash or the OOM killer would) in the middle of a
campaign's generation: the task it held is never acknowledged, and Redis would redeliver it
only after its visibility timeout (an hour). The next worker's start re-queues what the
unfinished campaign lacks, and the campaign finishes with every clip counted once."""

import re

import pytest

from ratings.campaigns import campaign_create
from ratings.models import Campaign, Pair
from tests.factories import GeneratorVersionFactory
from tests.workers import WorkerProcess, flush_broker, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PROMPTS = ["fast techno with drums", "calm ambient pad", "sad piano ballad", "jazz trio",
           "epic orchestral battle", "lofi hip hop beat"]  # fmt: skip


def test_generation_finishes_after_its_worker_is_killed(tmp_path):
    flush_broker()
    worker = WorkerProcess(tmp_path / "first", queues="generate,default")
    (tmp_path / "first").mkdir()
    worker.start()
    try:
        campaign = campaign_create(
            name="killed", purpose="collect", protocol="preference", prompt_texts=PROMPTS,
            version_a=GeneratorVersionFactory(), clip_seconds=2.0,
        )  # fmt: skip

        def progress() -> int:
            campaign.refresh_from_db()
            return campaign.generation_done

        wait_until(lambda: progress() >= 2, timeout=120, worker=worker, what="a first prompt")
        worker.kill()  # mid-way: the prompt it held is unacknowledged and lost for an hour
    finally:
        worker.stop()
    assert campaign.status == Campaign.Status.GENERATING and progress() < 2 * len(PROMPTS)

    (tmp_path / "second").mkdir()
    restarted = WorkerProcess(tmp_path / "second", queues="generate,default").start()
    try:
        wait_until(
            lambda: progress() == 2 * len(PROMPTS) and campaign.status == "active",
            timeout=120, worker=restarted, what="the campaign to finish",
        )  # fmt: skip
    finally:
        restarted.stop()
    assert Pair.objects.filter(campaign=campaign).count() == len(PROMPTS)
    # The new worker's start queued this campaign's unfinished prompts again: Celery logs the
    # task's result, {campaign: [prompts]}.
    assert re.search(
        rf"requeue_stalled_generation\[.*succeeded.*{{{campaign.pk}: \[\d", restarted.log()
    )
