"""gunicorn workers killed (SIGKILL, as the OOM killer would) while raters vote: a request in
flight on a killed worker gets no answer, so its client sends it again with the same
idempotency key, as the rating page does. Afterwards every vote a client saw acknowledged is
stored, and none is stored twice. The server is the project's gunicorn configuration on the
test database; the raters are threads with their own HTTP clients."""

import os
import signal
import time
from pathlib import Path

import pytest
from django.db.models import Count

from ratings.models import Campaign, Vote
from tests.faults.web import (
    FAILED_TRIES,
    free_port,
    gunicorn_start,
    gunicorn_stop,
    rate_in_threads,
    voting_campaign,
)
from tests.workers import database_url_of_test_db

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

RATERS, VOTES_EACH = 8, 12


def workers_of(master: int) -> list[int]:
    children = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == master:
            children.append(int(pid))
    return children


def test_votes_survive_killed_web_workers(tmp_path):
    campaign, tokens = voting_campaign(RATERS, VOTES_EACH)
    port = free_port()
    server = gunicorn_start(tmp_path, port, database_url_of_test_db())
    kills = 0

    def kill_workers(acknowledged: dict[str, int]) -> None:
        nonlocal kills
        while len(acknowledged) < RATERS * VOTES_EACH and kills < 40:
            time.sleep(0.4)
            victims = workers_of(server.pid)
            if victims:
                os.kill(victims[0], signal.SIGKILL)
                kills += 1

    try:
        acknowledged = rate_in_threads(
            f"http://127.0.0.1:{port}", tokens, campaign.pk, VOTES_EACH, kill_workers
        )
    finally:
        gunicorn_stop(server)

    stored = Vote.objects.filter(campaign=campaign)
    assert len(acknowledged) == RATERS * VOTES_EACH
    assert set(stored.values_list("pk", flat=True)) == set(acknowledged.values())  # none lost
    assert not stored.values("assignment").annotate(n=Count("pk")).filter(n__gt=1).exists()
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.ACTIVE
    assert kills >= 3, "the run was over before workers were killed"
    assert FAILED_TRIES["500"] == 0
