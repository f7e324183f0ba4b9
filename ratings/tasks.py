from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from ratings import campaigns, leasing


@shared_task(
    acks_late=True,  # idempotent: tracks are keyed by (prompt, version, seed), pairs by track
    reject_on_worker_lost=True,
    soft_time_limit=300,
    time_limit=330,
)
def generate_campaign_prompts(campaign_id: int, prompt_ids: list[int]) -> None:
    try:
        campaigns.campaign_generate_prompts(campaign_id=campaign_id, prompt_ids=prompt_ids)
    except Exception as exc:
        # The admin's campaign page shows this; re-queueing the campaign resumes it.
        campaigns.campaign_record_generation_failure(
            campaign_id=campaign_id, error=f"prompts {prompt_ids}: {exc!r}"
        )
        raise


@shared_task(
    # Not acks_late: a request whose worker died is failed by the stale check on the next
    # status read and the visitor retries, rather than a redelivery hours later.
    soft_time_limit=settings.PLAYGROUND_TIMEOUT_SECONDS,
    time_limit=settings.PLAYGROUND_TIMEOUT_SECONDS + 30,
)
def generate_playground_request(request_id: int) -> str:
    from ratings import playground  # it queues this task: imported when run

    return playground.playground_request_generate(request_id=request_id)


@shared_task(ignore_result=True, soft_time_limit=60)
def requeue_stalled_generation(stale_seconds: float | None = None) -> dict[int, list[int]]:
    """Beat, every minute: generating campaigns whose worker died are queued again."""
    return campaigns.campaigns_requeue_stalled(stale_seconds=stale_seconds)


@worker_ready.connect
def _requeue_generation_on_worker_start(sender=None, **kwargs) -> None:
    # A worker that starts after a crash queues every unfinished campaign's missing prompts
    # at once, stale or not: the dead worker's prompt would otherwise wait for the stale
    # interval after the rest of the queue, whose prompts keep the heartbeat fresh. Prompts
    # still queued or running elsewhere are sent twice, which costs a lookup: each is
    # idempotent.
    requeue_stalled_generation.delay(stale_seconds=0)


@shared_task(ignore_result=True, soft_time_limit=60)
def expire_leases() -> int:
    return leasing.assignments_expire()


@shared_task(ignore_result=True, soft_time_limit=600, time_limit=660)
def refresh_leaderboards() -> int:
    from ratings import leaderboards

    return leaderboards.leaderboards_refresh_all()


@shared_task(ignore_result=True, soft_time_limit=600, time_limit=660)
def refresh_reliability() -> int:
    from ratings import quality

    return quality.reliability_refresh()


@shared_task(ignore_result=True, soft_time_limit=300, time_limit=360)
def refresh_leaderboard(campaign_id: int) -> None:
    from ratings import leaderboards

    leaderboards.leaderboard_refresh(campaign_id=campaign_id, force=True)


@shared_task(ignore_result=True, soft_time_limit=3 * 3600, time_limit=3 * 3600 + 60)
def build_snapshot(snapshot_id: int) -> None:
    from ratings import snapshots

    snapshots.snapshot_build(snapshot_id=snapshot_id)
