"""The broker lost with jobs queued: a private Redis without persistence holds a campaign's
generation tasks and is killed before any worker took them, then comes back empty. The
worker that starts next re-queues what the campaign lacks (its heartbeat says it was queued
and never finished), and the campaign finishes. The shared Redis is never touched."""

import pytest
import redis
from django.utils import timezone

from config.celery_app import app
from ratings import tasks
from ratings.campaigns import campaign_create
from ratings.models import Campaign
from tests.factories import GeneratorVersionFactory
from tests.faults.servers import PrivateRedis
from tests.workers import WorkerProcess, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PROMPTS = ["calm ambient pad", "fast techno with drums", "sad piano ballad"]


@pytest.fixture
def broker(tmp_path):
    private = PrivateRedis(tmp_path)
    private.start()
    yield private
    private.kill()


def test_generation_queued_on_a_lost_broker_finishes_on_the_next_worker(tmp_path, broker):
    campaign = campaign_create(
        name="lost broker", purpose="collect", protocol="preference", prompt_texts=PROMPTS,
        version_a=GeneratorVersionFactory(), clip_seconds=2.0, queue=False,
    )  # fmt: skip
    # Queued as campaign_create would, on the private broker.
    Campaign.objects.filter(pk=campaign.pk).update(generation_heartbeat_at=timezone.now())
    with app.connection_for_write(broker.url) as connection:
        for prompt in campaign.prompts.all():
            tasks.generate_campaign_prompts.apply_async(
                (campaign.pk, [prompt.pk]), connection=connection
            )
    queued = redis.Redis.from_url(broker.url).llen("generate")
    assert queued == len(PROMPTS)

    broker.kill()  # the messages die with it: no persistence
    broker.start()
    assert redis.Redis.from_url(broker.url).llen("generate") == 0

    worker = WorkerProcess(tmp_path, queues="generate,default", CELERY_BROKER_URL=broker.url)
    worker.start()
    try:
        wait_until(
            lambda: Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.ACTIVE,
            timeout=120, worker=worker, what="the campaign to finish",
        )  # fmt: skip
    finally:
        worker.stop()
    campaign.refresh_from_db()
    assert campaign.generation_done == 2 * len(PROMPTS)
