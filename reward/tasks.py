from celery import shared_task
from celery.signals import worker_ready

from reward import jobs
from reward.models import FineTuneRun, RewardModel


@shared_task(
    acks_late=True,  # resumable: a redelivered job continues from its last checkpoint
    reject_on_worker_lost=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 60,
)
def train_reward_model(reward_model_id: int) -> None:
    from reward import training

    training.reward_model_execute(reward_model_id=reward_model_id)


@shared_task(
    acks_late=True,  # resumable: a redelivered run continues from its last checkpoint
    reject_on_worker_lost=True,
    soft_time_limit=12 * 3600,
    time_limit=12 * 3600 + 60,
)
def finetune_generator(run_id: int) -> None:
    from reward import finetune

    finetune.finetune_run_execute(run_id=run_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def score_tracks(reward_model_id: int, track_ids: list[int]) -> None:
    from generation.models import Track
    from reward.track_scoring import reward_scores_store

    reward_model = RewardModel.objects.get(pk=reward_model_id)
    tracks = list(Track.objects.filter(pk__in=track_ids).select_related("prompt"))
    reward_scores_store(reward_model=reward_model, tracks=tracks)


@shared_task
def requeue_stalled_jobs() -> dict[str, list[int]]:
    """Beat, every minute: jobs whose worker died go back in the queue."""
    ids = jobs.jobs_requeue_stalled(RewardModel)
    for reward_model_id in ids:
        train_reward_model.delay(reward_model_id)
    run_ids = jobs.jobs_requeue_stalled(FineTuneRun)
    for run_id in run_ids:
        finetune_generator.delay(run_id)
    return {"reward_models": ids, "fine_tune_runs": run_ids}


@worker_ready.connect
def _requeue_on_worker_start(sender=None, **kwargs) -> None:
    # A worker that starts after a crash picks the dead worker's jobs up at once instead of
    # waiting for the next beat tick.
    requeue_stalled_jobs.delay()
