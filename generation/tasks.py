from celery import shared_task


@shared_task(
    acks_late=True,  # resumable: a redelivered run continues from its last checkpoint
    reject_on_worker_lost=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 60,
)
def pretrain_generator(run_id: int) -> None:
    from generation import pretraining

    pretraining.pretraining_run_execute(run_id=run_id)
