from celery import shared_task

from ratings import services


@shared_task(ignore_result=True, soft_time_limit=60)
def expire_leases() -> int:
    return services.assignments_expire()
