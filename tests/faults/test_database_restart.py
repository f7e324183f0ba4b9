"""PostgreSQL restarted as a crash would (`pg_ctl restart -m immediate`: no shutdown
checkpoint, recovery from the WAL) while raters vote. The cluster is the test's own: initdb
on a temporary directory and a free port, loaded with a dump of the test database; the shared
server is never touched. During the outage the API answers 503 and the raters resend, with
their idempotency keys. Afterwards every acknowledged vote is stored, none twice."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

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

RATERS, VOTES_EACH = 6, 12
PG_BIN = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             check=True).stdout.strip())  # fmt: skip


def as_cluster_owner(command: list[str]) -> list[str]:
    # initdb refuses to run as root; CI runs as root, so the cluster belongs to postgres.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivateCluster:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="musicpref-pg-"))
        self.port = free_port()
        self.data = self.directory / "data"
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")

    def run(self, *command: str) -> None:
        subprocess.run(as_cluster_owner(list(command)), check=True, capture_output=True)

    def start(self) -> None:
        self.run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                 "-E", "UTF8", "--no-sync")  # fmt: skip
        self.pg_ctl("start")

    def pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=on"
        self.run(str(PG_BIN / "pg_ctl"), action, "-D", str(self.data), "-w", "-t", "60",
                 "-o", options, "-l", str(self.directory / "server.log"), *extra)  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        subprocess.run(as_cluster_owner([str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.data),
                                         "-m", "immediate"]), capture_output=True)  # fmt: skip
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def cluster():
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def copy_test_database(cluster: PrivateCluster) -> str:
    """The test database, schema and rows, as the private cluster's `faults` database."""
    with psycopg.connect(cluster.url(), autocommit=True) as connection:
        connection.execute("CREATE DATABASE faults")
    dump = subprocess.run(
        [str(PG_BIN / "pg_dump"), "--no-owner", "--no-privileges", database_url_of_test_db()],
        capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(
        [str(PG_BIN / "psql"), "-q", "-v", "ON_ERROR_STOP=1", cluster.url("faults")],
        input=dump.stdout, capture_output=True, check=True,
    )  # fmt: skip
    return cluster.url("faults")


def test_votes_survive_a_database_crash_and_restart(tmp_path, cluster):
    campaign, tokens = voting_campaign(RATERS, VOTES_EACH)
    database_url = copy_test_database(cluster)
    port = free_port()
    server = gunicorn_start(tmp_path, port, database_url)
    restarted_after: list[int] = []

    def crash_and_restart(acknowledged: dict[str, int]) -> None:
        while len(acknowledged) < RATERS * VOTES_EACH // 3:
            time.sleep(0.05)
        restarted_after.append(len(acknowledged))
        cluster.pg_ctl("restart", "-m", "immediate")

    try:
        acknowledged = rate_in_threads(
            f"http://127.0.0.1:{port}", tokens, campaign.pk, VOTES_EACH, crash_and_restart
        )
    finally:
        gunicorn_stop(server)

    with psycopg.connect(database_url) as connection:
        stored = {row[0] for row in connection.execute(
            "SELECT id FROM ratings_vote WHERE campaign_id = %s", (campaign.pk,))}  # fmt: skip
        doubled = connection.execute(
            "SELECT count(*) FROM (SELECT assignment_id FROM ratings_vote"
            " GROUP BY assignment_id HAVING count(*) > 1) AS twice"
        ).fetchone()[0]
    assert len(acknowledged) == RATERS * VOTES_EACH
    assert restarted_after and restarted_after[0] < len(acknowledged)  # the crash came mid-way
    assert stored == set(acknowledged.values())  # none lost, none stored unacknowledged
    assert doubled == 0
    # The raters met the outage, as 503s (or connections refused while it restarted), and
    # never a 500.
    assert FAILED_TRIES["503"] + FAILED_TRIES["dropped"] > 0 and FAILED_TRIES["500"] == 0
