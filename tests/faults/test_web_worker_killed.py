"""gunicorn workers killed (SIGKILL, as the OOM killer would) while raters vote: a request in
flight on a killed worker gets no answer, so its client sends it again with the same
idempotency key, as the rating page does. Afterwards every vote a client saw acknowledged is
stored, and none is stored twice. The server is the project's gunicorn configuration on the
test database; the raters are threads with their own HTTP clients."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest
from django.db.models import Count
from rest_framework.authtoken.models import Token

from ratings.models import Campaign, Vote
from tests.factories import CampaignFactory, PairFactory, RaterFactory
from tests.workers import ROOT, database_url_of_test_db

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

RATERS, VOTES_EACH = 8, 12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_start(tmp_path: Path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_test_db(), "DATA_DIR": str(tmp_path),
        "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "3",
        "VOTE_RATE_LIMIT_PER_MINUTE": "100000", "VOTE_RATE_LIMIT_PER_IP_PER_MINUTE": "100000",
    }  # fmt: skip
    log = (tmp_path / "gunicorn.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "platform/gunicorn.conf.py", "config.wsgi"],
        cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except OSError:
            time.sleep(0.2)
    raise AssertionError("gunicorn did not start: " + (tmp_path / "gunicorn.log").read_text())


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


def send_until_answered(client: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response:
    """Resend until the server answers: a killed worker drops the connection (no answer)."""
    for _ in range(50):
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        if response.status_code < 500:
            return response
        time.sleep(0.05)
    raise AssertionError(f"{method} {url} never answered")


def test_votes_survive_killed_web_workers(tmp_path):
    campaign = CampaignFactory(votes_per_item=RATERS, min_listen_seconds=0)
    PairFactory.create_batch(VOTES_EACH, campaign=campaign)
    tokens = [Token.objects.create(user=RaterFactory().user).key for _ in range(RATERS)]
    port = free_port()
    server = gunicorn_start(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    kills = 0
    acknowledged: dict[str, int] = {}  # idempotency key -> vote id
    done = threading.Event()

    def rate(token: str) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}) as client:
            for _ in range(VOTES_EACH):
                lease = send_until_answered(
                    client, "GET", "/api/v1/assignments/next/", params={"campaign": campaign.pk}
                )
                if lease.status_code == 204:
                    return
                body = {
                    "assignment": lease.json()["assignment"],
                    "idempotency_key": str(uuid.uuid4()),
                    "listen_ms": {"A": 0, "B": 0},
                    "choice": "A",
                }
                voted = send_until_answered(client, "POST", "/api/v1/votes/", json=body)
                assert voted.status_code in (200, 201), voted.text
                acknowledged[body["idempotency_key"]] = voted.json()["vote"]

    def kill_workers() -> None:
        nonlocal kills
        while not done.is_set():
            time.sleep(0.4)
            victims = workers_of(server.pid)
            if victims:
                os.kill(victims[0], signal.SIGKILL)
                kills += 1

    threads = [threading.Thread(target=rate, args=(token,)) for token in tokens]
    killer = threading.Thread(target=kill_workers)
    try:
        killer.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        done.set()
        killer.join()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    stored = Vote.objects.filter(campaign=campaign)
    assert len(acknowledged) == RATERS * VOTES_EACH
    assert set(stored.values_list("pk", flat=True)) == set(acknowledged.values())  # none lost
    assert not stored.values("assignment").annotate(n=Count("pk")).filter(n__gt=1).exists()
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.ACTIVE
    assert kills >= 3, "the run was over before workers were killed"
