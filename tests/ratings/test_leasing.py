"""Leasing hands each pair to at most votes_wanted raters, never twice to one rater, and gives
expired slots back. The race test runs on real PostgreSQL with concurrent connections."""

import threading
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from ratings import campaigns, errors, leasing
from ratings.models import Assignment, Pair, Rater, RaterSession, Vote
from tests.factories import CampaignFactory, PairFactory, RaterFactory


@pytest.mark.django_db
def test_a_reload_returns_the_same_lease_instead_of_a_new_one(make_rater):
    campaign = CampaignFactory()
    PairFactory.create_batch(3, campaign=campaign)
    rater = make_rater()

    first = leasing.assignment_lease_next(rater=rater, campaign=campaign)
    second = leasing.assignment_lease_next(rater=rater, campaign=campaign)

    assert first == second
    assert Pair.objects.filter(slots_taken=1).count() == 1


@pytest.mark.django_db
def test_a_rater_is_never_served_the_same_pair_twice(make_rater):
    campaign = CampaignFactory(votes_per_item=5)
    PairFactory.create_batch(2, campaign=campaign)
    rater = make_rater()
    served = []
    for _ in range(3):
        lease = leasing.assignment_lease_next(rater=rater, campaign=campaign)
        if lease is None:
            break
        assignment = Assignment.objects.get(pk=lease.assignment_id)
        served.append(assignment.pair_id)
        Assignment.objects.filter(pk=assignment.pk).update(status=Assignment.Status.VOTED)

    assert len(served) == 2
    assert len(set(served)) == 2


@pytest.mark.django_db
def test_expired_leases_give_their_slots_back(make_rater, settings):
    campaign = CampaignFactory(votes_per_item=1)
    pair = PairFactory(campaign=campaign)
    slow, waiting = make_rater(), make_rater()
    assert leasing.assignment_lease_next(rater=slow, campaign=campaign) is not None
    assert leasing.assignment_lease_next(rater=waiting, campaign=campaign) is None

    later = timezone.now() + timezone.timedelta(seconds=settings.RATING_LEASE_SECONDS + 1)
    freed = leasing.assignment_lease_next(rater=waiting, campaign=campaign, now=later)

    assert freed is not None
    assert Assignment.objects.get(pk=freed.assignment_id).pair_id == pair.pk
    assert Assignment.objects.get(rater=slow).status == Assignment.Status.EXPIRED
    pair.refresh_from_db()
    assert pair.slots_taken == 1


@pytest.mark.django_db
def test_the_periodic_sweep_expires_overdue_leases(make_rater, settings):
    campaign = CampaignFactory()
    PairFactory(campaign=campaign)
    leasing.assignment_lease_next(rater=make_rater(), campaign=campaign)
    later = timezone.now() + timezone.timedelta(seconds=settings.RATING_LEASE_SECONDS + 1)

    assert leasing.assignments_expire(now=later) == 1
    assert Pair.objects.get().slots_taken == 0


def run_at_once(action, arguments: list) -> list:
    """Run action(argument) in one thread per argument, all released at the same instant,
    each on its own database connection; returns the results."""
    start = threading.Barrier(len(arguments))
    results: list = []

    def run(argument) -> None:
        try:
            start.wait()
            results.append(action(argument))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(argument,)) for argument in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.django_db(transaction=True)
def test_ten_raters_racing_for_a_pair_that_wants_three_votes_store_exactly_three(
    api_client_for,
):
    assert connection.vendor == "postgresql", "the race is only meaningful on PostgreSQL"
    campaign = CampaignFactory(votes_per_item=3, min_listen_seconds=0)
    pair = PairFactory(campaign=campaign)
    clients = [api_client_for(RaterFactory()) for _ in range(10)]

    def rate(client) -> str:
        leased = client.get("/api/v1/assignments/next/", {"campaign": campaign.pk})
        if leased.status_code == 204:
            return "nothing left"
        body = {
            "assignment": leased.json()["assignment"],
            "idempotency_key": str(uuid.uuid4()),
            "listen_ms": {"A": 0, "B": 0},
            "choice": "A",
        }
        voted = client.post("/api/v1/votes/", body, format="json")
        return "voted" if voted.status_code == 201 else str(voted.status_code)

    outcomes = run_at_once(rate, clients)

    assert sorted(outcomes) == ["nothing left"] * 7 + ["voted"] * 3
    assert Vote.objects.filter(pair=pair).count() == 3
    pair.refresh_from_db()
    assert (pair.vote_count, pair.slots_taken) == (3, 3)


@pytest.mark.django_db(transaction=True)
def test_the_same_vote_sent_twice_at_once_is_stored_once(api_client_for):
    campaign = CampaignFactory(min_listen_seconds=0)
    pair = PairFactory(campaign=campaign)
    rater = RaterFactory()
    leased = api_client_for(rater).get("/api/v1/assignments/next/", {"campaign": campaign.pk})
    body = {
        "assignment": leased.json()["assignment"],
        "idempotency_key": str(uuid.uuid4()),
        "listen_ms": {"A": 0, "B": 0},
        "choice": "B",
    }
    clients = [api_client_for(rater) for _ in range(4)]

    statuses = run_at_once(
        lambda client: client.post("/api/v1/votes/", body, format="json").status_code, clients
    )

    assert sorted(statuses) == [200, 200, 200, 201]
    assert Vote.objects.filter(pair=pair).count() == 1
    pair.refresh_from_db()
    assert pair.vote_count == 1


@pytest.mark.django_db
def test_a_campaign_asked_for_more_votes_serves_its_full_pairs_again(make_rater):
    campaign = CampaignFactory(votes_per_item=1)
    pair = PairFactory(campaign=campaign, votes_wanted=1)
    first, second = make_rater(), make_rater()
    lease = leasing.assignment_lease_next(rater=first, campaign=campaign)
    Assignment.objects.filter(pk=lease.assignment_id).update(status=Assignment.Status.VOTED)
    Pair.objects.filter(pk=pair.pk).update(vote_count=1)
    assert leasing.assignment_lease_next(rater=second, campaign=campaign) is None  # full

    campaigns.campaign_votes_extend(campaign=campaign, extra_per_item=2)

    pair.refresh_from_db()
    assert (campaign.votes_per_item, pair.votes_wanted) == (3, 3)
    assert leasing.assignment_lease_next(rater=second, campaign=campaign) is not None
    for bad in (0, 998):
        with pytest.raises(errors.InvalidVote):
            campaigns.campaign_votes_extend(campaign=campaign, extra_per_item=bad)
    pair.refresh_from_db()
    assert pair.votes_wanted == 3  # a refused request changes nothing


@pytest.mark.django_db(transaction=True)
def test_one_crowd_rater_s_burst_of_lease_requests_gets_one_lease_and_keeps_the_session(
    api_client_for,
):
    """A double-click, a reload storm or a script: ten requests of one session at once. Each
    used to race for a pair of its own: one hit the unique (pair, rater) rule (a 500), others
    found "nothing left" and ended a Prolific session that had not cast a vote."""
    campaign = CampaignFactory(votes_per_item=3, min_listen_seconds=0)
    PairFactory.create_batch(3, campaign=campaign)
    rater = RaterFactory(source=Rater.Source.PROLIFIC, external_id="pid-burst")
    session = RaterSession.objects.create(
        rater=rater, campaign=campaign, source=rater.source, consented_at=timezone.now()
    )
    clients = [api_client_for(rater) for _ in range(10)]

    responses = run_at_once(
        lambda client: client.get("/api/v1/assignments/next/", {"campaign": campaign.pk}),
        clients,
    )

    assert sorted(response.status_code for response in responses) == [200] * 10
    assert len({response.json()["assignment"] for response in responses}) == 1
    assert Assignment.objects.filter(rater=rater).count() == 1
    session.refresh_from_db()
    assert session.status == RaterSession.Status.ACTIVE


def test_the_lease_and_vote_statements_carry_statuses_as_constants() -> None:
    """Written in from the enums, not bound: psycopg prepares a statement run often, and the
    generic plan of a prepared statement cannot see which status a parameter holds
    (vote_throughput at 16 clients: 175 lease+vote cycles/s with constants, 54 with
    parameters)."""
    import re

    from ratings import raw_sql
    from ratings.models import Assignment, Pair, RaterSession

    statements = [raw_sql.LEASE_SKIP_LOCKED, raw_sql.LEASE_WAIT,
                  *raw_sql.VOTE_BY_RATED_CLIPS.values()]  # fmt: skip
    for sql in statements:
        assert "{" not in sql and "}" not in sql
        assert not set(re.findall(r"%\((\w+)\)s", sql)) & {"regular", "live", "voted", "active"}
    assert f"p.kind = '{Pair.Kind.REGULAR.value}'" in raw_sql.LEASE_WAIT
    assert f"'{Assignment.Status.LIVE.value}'" in raw_sql.LEASE_WAIT
    for sql in raw_sql.VOTE_BY_RATED_CLIPS.values():
        assert f"SET status = '{Assignment.Status.VOTED.value}'" in sql
        assert f"s.status = '{RaterSession.Status.ACTIVE.value}'" in sql
