from celery import shared_task
from django.conf import settings


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
