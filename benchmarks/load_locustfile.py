"""The raters of benchmarks/load.py, for Locust: each takes one rater's API token and goes
through what the rating page does, over and over: lease the next pair, fetch both clips,
vote with a fresh idempotency key. One vote in twenty is sent a second time with the same
key, as a browser does when a response is lost, and must be answered 200 and stored once.

Configured from the environment by load.py: LOAD_TOKENS (comma-separated), LOAD_CAMPAIGN,
LOAD_RESULT (where the acknowledged votes are written when the run stops)."""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid

from locust import HttpUser, between, events, task

TOKENS = itertools.cycle(os.environ["LOAD_TOKENS"].split(","))
CAMPAIGN = os.environ["LOAD_CAMPAIGN"]
ACKNOWLEDGED: dict[str, int] = {}  # idempotency key -> vote id the server acknowledged
REPLAYS = {"sent": 0, "same_vote": 0}
SERVER_ERRORS: dict[str, int] = {}  # endpoint -> 5xx answers


@events.request.add_listener
def _count_server_errors(name, response, **kwargs) -> None:
    if response is not None and response.status_code >= 500:
        SERVER_ERRORS[name] = SERVER_ERRORS.get(name, 0) + 1


class Rater(HttpUser):
    wait_time = between(0.05, 0.2)  # a rater's own pace between requests

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Token {next(TOKENS)}"
        self.rng = random.Random(uuid.uuid4().int)

    @task
    def rate_one(self) -> None:
        with self.client.get(
            "/api/v1/assignments/next/", params={"campaign": CAMPAIGN},
            name="GET next", catch_response=True,
        ) as leased:  # fmt: skip
            if leased.status_code == 204:
                leased.success()  # nothing left for this rater: not an error
                return
            if leased.status_code != 200:
                leased.failure(f"lease {leased.status_code}")
                return
        lease, leased_at = leased.json(), time.monotonic()
        for clip in lease["clips"]:
            self.client.get(clip["url"], name="GET clip")
        # The page reports how long each clip played; the server refuses more than the time
        # since the lease, so report what really passed, shared between the clips.
        heard_ms = int(1000 * (time.monotonic() - leased_at) / len(lease["clips"]))
        body = {
            "assignment": lease["assignment"],
            "idempotency_key": str(uuid.uuid4()),
            "listen_ms": {clip["slot"]: heard_ms for clip in lease["clips"]},
            "choice": self.rng.choice(["A", "B", "tie"]),
        }
        self._vote(body, expect=201)
        if self.rng.random() < 0.05:
            REPLAYS["sent"] += 1
            self._vote(body, expect=200)

    def _vote(self, body: dict, expect: int) -> None:
        with self.client.post(
            "/api/v1/votes/", json=body, name="POST vote", catch_response=True
        ) as voted:
            if voted.status_code != expect:
                voted.failure(f"vote {voted.status_code}, expected {expect}")
                return
            vote_id = voted.json()["vote"]
            key = body["idempotency_key"]
            if expect == 200:
                REPLAYS["same_vote"] += int(ACKNOWLEDGED.get(key) == vote_id)
            else:
                ACKNOWLEDGED[key] = vote_id


@events.test_stop.add_listener
def _write_result(environment, **kwargs) -> None:
    with open(os.environ["LOAD_RESULT"], "w") as handle:
        json.dump(
            {"acknowledged": ACKNOWLEDGED, "replays": REPLAYS, "server_errors": SERVER_ERRORS},
            handle,
        )
