from celery import shared_task
from django.conf import settings

from generation import services


@shared_task(
    acks_late=True,  # idempotent: tracks are keyed by (prompt, version, seed), pairs by track
    reject_on_worker_lost=True,
    soft_time_limit=300,
    time_limit=330,
)
def generate_campaign_prompt(campaign_id: int, prompt_id: int) -> None:
    try:
        services.campaign_generate_prompt(campaign_id=campaign_id, prompt_id=prompt_id)
    except Exception as exc:
        # The admin's campaign page shows this; re-queueing the campaign resumes it.
        services.campaign_record_generation_failure(
            campaign_id=campaign_id, error=f"prompt {prompt_id}: {exc!r}"
        )
        raise


@shared_task(
    acks_late=True,  # resumable: a redelivered run continues from its last checkpoint
    reject_on_worker_lost=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 60,
)
def pretrain_generator(run_id: int) -> None:
    from generation import training

    training.pretraining_run_execute(run_id=run_id)


@shared_task(
    # Not acks_late: a request whose worker died is failed by the stale check on the next
    # status read and the visitor retries, rather than a redelivery hours later.
    soft_time_limit=settings.PLAYGROUND_TIMEOUT_SECONDS,
    time_limit=settings.PLAYGROUND_TIMEOUT_SECONDS + 30,
)
def generate_playground_request(request_id: int) -> str:
    from ratings import playground

    return playground.playground_request_generate(request_id=request_id)
