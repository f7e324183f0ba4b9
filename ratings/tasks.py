from celery import shared_task

from ratings import services


@shared_task(ignore_result=True, soft_time_limit=60)
def expire_leases() -> int:
    return services.assignments_expire()


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
