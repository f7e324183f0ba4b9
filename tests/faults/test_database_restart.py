"""PostgreSQL restarted as a crash would (`pg_ctl restart -m immediate`: no shutdown
checkpoint, recovery from the WAL) while raters vote. The cluster is the test's own: initdb
on a temporary directory and a free port, loaded with a dump of the test database; the shared
server is never touched. During the outage the API answers 503 and the raters resend, with
their idempotency keys. Afterwards every acknowledged vote is stored, none twice."""

import subprocess
import time

import psycopg
import pytest

from tests.faults.servers import PG_BIN, PrivateCluster
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
