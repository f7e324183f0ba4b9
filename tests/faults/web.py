"""What the web fault tests share: the project's gunicorn on a given database, and raters
that resend each request until the server answers, with the same idempotency key, as the
rating page does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx
from rest_framework.authtoken.models import Token

from ratings.models import Campaign
from tests.factories import CampaignFactory, PairFactory, RaterFactory
from tests.workers import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def voting_campaign(raters: int, votes_each: int) -> tuple[Campaign, list[str]]:
    """A campaign with no listening gate, `votes_each` pairs that every rater may vote on,
    and the API tokens of `raters` raters."""
    campaign = CampaignFactory(votes_per_item=raters, min_listen_seconds=0)
    PairFactory.create_batch(votes_each, campaign=campaign)
    tokens = [Token.objects.create(user=RaterFactory().user).key for _ in range(raters)]
    return campaign, tokens


def gunicorn_start(
    log_dir: Path, port: int, database_url: str, *, host: str = "127.0.0.1",
    wrap: Sequence[str] = (), base_env: Mapping[str, str] | None = None,
) -> subprocess.Popen:  # fmt: skip
    """The project's gunicorn on `host`:`port`, its DATA_DIR `log_dir`. `wrap` prefixes the
    command (`ip netns exec <namespace>`: another host); `base_env` replaces this process's
    environment, for a server that must not inherit the test's own settings."""
    env = {
        **(os.environ if base_env is None else base_env),
        "DATABASE_URL": database_url, "DATA_DIR": str(log_dir),
        "HOST": host, "PORT": str(port), "WEB_CONCURRENCY": "3",
        "VOTE_RATE_LIMIT_PER_MINUTE": "100000", "VOTE_RATE_LIMIT_PER_IP_PER_MINUTE": "100000",
    }  # fmt: skip
    log = (log_dir / "gunicorn.log").open("ab")
    process = subprocess.Popen(
        [*wrap, sys.executable, "-m", "gunicorn", "--config", "platform/gunicorn.conf.py",
         "config.wsgi"],
        cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1)
            return process
        except OSError:
            time.sleep(0.2)
    gunicorn_stop(process)
    raise AssertionError("gunicorn did not start: " + (log_dir / "gunicorn.log").read_text())


def gunicorn_stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


# What the raters met before an answer, over a test: "dropped" for a connection that got no
# answer, else the status code.
FAILED_TRIES: Counter[str] = Counter()


def send_until_answered(client: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response:
    """Resend until the server answers below 500: a killed worker drops the connection, a
    database that is down gives 503s, and either is what a client must ride out."""
    for _ in range(200):
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TransportError:
            FAILED_TRIES["dropped"] += 1
            time.sleep(0.05)
            continue
        if response.status_code < 500:
            return response
        FAILED_TRIES[str(response.status_code)] += 1
        time.sleep(0.05)
    raise AssertionError(f"{method} {url} never answered")


def rate_in_threads(
    base_url: str, tokens: list[str], campaign_id: int, votes_each: int,
    during: Callable[[dict[str, int]], None],
) -> dict[str, int]:  # fmt: skip
    """Each token's rater leases and votes `votes_each` times, in its own thread, while
    `during(acknowledged)` runs in this one. Returns {idempotency key: acknowledged vote id}."""
    acknowledged: dict[str, int] = {}
    FAILED_TRIES.clear()

    def rate(token: str) -> None:
        headers = {"Authorization": f"Token {token}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
            for _ in range(votes_each):
                lease = send_until_answered(
                    client, "GET", "/api/v1/assignments/next/", params={"campaign": campaign_id}
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

    threads = [threading.Thread(target=rate, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    try:
        during(acknowledged)
    finally:
        for thread in threads:
            thread.join(timeout=180)
    return acknowledged
