"""Anti-abuse on the vote path: rate limits answer 429 and store nothing, IPs are kept only as
salted hashes, suspicious votes are flagged (kept, left out of statistics and exports until an
admin clears them), and an unavailable check records "unverified", never a failure."""

import uuid
from datetime import timedelta

import pytest
from django.db import DatabaseError
from django.utils import timezone
from rest_framework.exceptions import Throttled

from ratings import abuse, quality, selectors
from ratings.dataset import DataFilters, filtered_votes
from ratings.models import Assignment, Campaign, MosRating, Rater, RaterSession, Vote
from tests.factories import CampaignFactory, PairFactory, RaterFactory, served_seconds_ago, vote_on

pytestmark = pytest.mark.django_db

NEXT = "/api/v1/assignments/next/"
VOTES = "/api/v1/votes/"


@pytest.fixture
def campaign() -> Campaign:
    campaign = CampaignFactory(min_listen_seconds=5.0, votes_per_item=5)
    PairFactory.create_batch(4, campaign=campaign)
    return campaign


def crowd_rater(campaign: Campaign, n: int = 1) -> Rater:
    """A Prolific rater inside an active session of the campaign, as the join page leaves it."""
    rater = RaterFactory(source=Rater.Source.PROLIFIC, external_id=f"pid{n}")
    RaterSession.objects.create(
        rater=rater, campaign=campaign, source=rater.source, consented_at=timezone.now()
    )
    return rater


def cast(client, campaign, *, seconds_ago: float = 12, ip: str = "198.51.100.7", lease=None):
    """Lease an item, let `seconds_ago` pass on the server's clock, and vote on it."""
    lease = lease or client.get(NEXT, {"campaign": campaign.pk}).json()
    served_seconds_ago(Assignment.objects.get(pk=lease["assignment"]), seconds_ago)
    body = {
        "assignment": lease["assignment"],
        "idempotency_key": str(uuid.uuid4()),
        "listen_ms": {clip["slot"]: min(6000, int(seconds_ago * 500)) for clip in lease["clips"]},
        "choice": "A",
    }
    return client.post(VOTES, body, format="json", REMOTE_ADDR=ip)


def test_ip_hashes_are_salted_hmacs_and_never_the_address(settings):
    first = abuse.ip_hash("198.51.100.7")
    assert len(first) == 64 and "198" not in first
    assert first == abuse.ip_hash("198.51.100.7") != abuse.ip_hash("198.51.100.8")
    settings.IP_HASH_SALT = "another salt"
    assert abuse.ip_hash("198.51.100.7") != first
    assert abuse.ip_hash("") == ""


def test_the_client_address_comes_from_trusted_proxies_only(rf, settings):
    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5")
    assert abuse.client_ip(request) == "10.0.0.1"
    settings.TRUSTED_PROXY_COUNT = 1
    assert abuse.client_ip(request) == "203.0.113.5"  # not the client's own claim on the left


def test_a_vote_stores_the_ip_hash_its_session_and_verified(campaign, api_client_for):
    rater = crowd_rater(campaign)
    session = RaterSession.objects.get(rater=rater)
    client = api_client_for(rater)

    assert cast(client, campaign).status_code == 201

    vote = Vote.objects.get()
    assert vote.ip_hash == abuse.ip_hash("198.51.100.7")
    assert "198.51.100.7" not in str(Vote.objects.values().get())
    assert (vote.session, vote.status, vote.verification) == (session, "counted", "verified")


def test_over_the_per_rater_limit_a_vote_gets_429_and_nothing_is_stored(
    campaign, api_client_for, settings
):
    settings.VOTE_RATE_LIMIT_PER_MINUTE = 1
    client = api_client_for(crowd_rater(campaign))
    assert cast(client, campaign).status_code == 201
    lease = client.get(NEXT, {"campaign": campaign.pk}).json()

    response = cast(client, campaign, lease=lease)

    assert response.status_code == 429
    assert response.json()["error"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert Vote.objects.count() == 1 and MosRating.objects.count() == 0
    assert Assignment.objects.get(pk=lease["assignment"]).status == Assignment.Status.LIVE


def test_over_the_per_ip_limit_votes_of_other_raters_get_429_and_store_nothing(
    campaign, api_client_for, settings
):
    settings.VOTE_RATE_LIMIT_PER_IP_PER_MINUTE = 1
    assert cast(api_client_for(crowd_rater(campaign, 1)), campaign).status_code == 201

    response = cast(api_client_for(crowd_rater(campaign, 2)), campaign)
    elsewhere = cast(api_client_for(crowd_rater(campaign, 3)), campaign, ip="192.0.2.1")

    assert response.status_code == 429
    assert elsewhere.status_code == 201
    assert Vote.objects.count() == 2


def test_the_limit_holds_across_a_minute_boundary(settings):
    """A fixed window would let the second vote through a tenth of a second after the first,
    because it falls in the next minute; the sliding window still counts the first."""
    settings.VOTE_RATE_LIMIT_PER_MINUTE = 1
    minute = 60 * 29_000_000  # a window no other test uses
    assert abuse.vote_rate_check(rater_id=7, ip_hash="", now=minute - 0.1) == "verified"

    with pytest.raises(Throttled):
        abuse.vote_rate_check(rater_id=7, ip_hash="", now=minute + 0.1)
    # Once a full minute has passed since both, the rater may vote again.
    assert abuse.vote_rate_check(rater_id=7, ip_hash="", now=minute + 120.2) == "verified"


def test_the_sliding_count_weighs_the_previous_window_by_its_overlap():
    hour = 3600 * 7_000_000
    for _ in range(4):
        abuse.sliding_count("test-sliding", window_seconds=3600, now=hour - 10)
    # Three quarters into the next window a quarter of the previous one still overlaps.
    count = abuse.sliding_count("test-sliding", window_seconds=3600, now=hour + 2700)
    assert count == pytest.approx(1 + 4 * 0.25)


class BrokenCache:
    def incr(self, *args, **kwargs):
        raise ConnectionError("cache is down")

    add = get = incr


def test_with_the_rate_limiter_down_the_vote_is_kept_unverified_not_failed(
    campaign, api_client_for, monkeypatch
):
    monkeypatch.setattr(abuse, "cache", BrokenCache())

    response = cast(api_client_for(crowd_rater(campaign)), campaign)

    assert response.status_code == 201
    vote = Vote.objects.get()
    assert (vote.status, vote.verification, vote.flags) == ("counted", "unverified", [])
    assert Vote.objects.counted().filter(pk=vote.pk).exists()


def test_with_a_flag_check_failing_the_vote_is_kept_unverified_not_failed(
    campaign, api_client_for, monkeypatch
):
    def broken(**kwargs):
        raise DatabaseError("statement timeout")

    monkeypatch.setattr(abuse, "vote_flags", broken)

    assert cast(api_client_for(crowd_rater(campaign)), campaign).status_code == 201
    vote = Vote.objects.get()
    assert (vote.status, vote.verification, vote.flags) == ("counted", "unverified", [])


def test_a_vote_faster_than_the_clips_could_be_heard_is_flagged(api_client_for):
    # The campaign asks for no listening; the server's check then lets a 1 s vote through.
    campaign = CampaignFactory(min_listen_seconds=0.0)
    PairFactory(campaign=campaign)

    assert cast(api_client_for(crowd_rater(campaign)), campaign, seconds_ago=1).status_code == 201

    vote = Vote.objects.get()
    assert (vote.status, vote.flags) == ("flagged", ["too_fast"])


def test_accounts_an_admin_made_are_never_flagged(api_client_for):
    campaign = CampaignFactory(min_listen_seconds=0.0)
    PairFactory(campaign=campaign)

    cast(api_client_for(RaterFactory()), campaign, seconds_ago=1)

    assert Vote.objects.get().status == "counted"


def test_a_burst_of_votes_is_flagged(campaign, api_client_for, settings):
    settings.VOTE_BURST_MAX = 1
    client = api_client_for(crowd_rater(campaign))

    cast(client, campaign)
    cast(client, campaign)

    assert list(Vote.objects.order_by("id").values_list("flags", flat=True)) == [[], ["burst"]]


def test_many_accounts_from_one_ip_hash_are_flagged(campaign, api_client_for, settings):
    settings.SHARED_IP_MAX_RATERS = 2
    # An account that only joined from that address.
    RaterSession.objects.filter(rater=crowd_rater(campaign, 9)).update(
        ip_hash=abuse.ip_hash("198.51.100.7")
    )

    cast(api_client_for(crowd_rater(campaign, 1)), campaign)
    cast(api_client_for(crowd_rater(campaign, 2)), campaign)
    cast(api_client_for(crowd_rater(campaign, 3)), campaign, ip="192.0.2.1")

    flags = list(Vote.objects.order_by("id").values_list("flags", flat=True))
    assert flags == [[], ["shared_ip"], []]


def test_flagged_votes_are_excluded_from_statistics_and_exports_until_cleared(campaign):
    honest, suspect = campaign.pairs.all()[:2]
    kept = vote_on(honest, RaterFactory(), "a")
    flagged = vote_on(suspect, RaterFactory(), "b")
    Vote.objects.filter(pk=flagged.pk).update(status="flagged", flags=["burst"])

    assert list(Vote.objects.counted()) == [kept]
    assert list(filtered_votes(DataFilters())) == [kept]
    assert selectors.campaign_progress(campaign=campaign)["votes"] == 1

    assert quality.votes_clear(votes=Vote.objects.all()) == 1

    flagged.refresh_from_db()
    assert (flagged.status, flagged.flags) == ("counted", ["burst"])  # the reason stays
    assert filtered_votes(DataFilters()).count() == 2


def test_flags_never_overwrite_a_rejection_or_earlier_reasons(campaign):
    vote = vote_on(campaign.pairs.first(), crowd_rater(campaign), "a")
    Vote.objects.filter(pk=vote.pk).update(status="rejected", flags=["check_failed"])
    vote.elapsed_ms = 1

    abuse.vote_screen(vote=vote, rater=vote.rater, ip_hash="", verification="verified")

    vote.refresh_from_db()
    assert (vote.status, vote.flags) == ("rejected", ["check_failed", "too_fast"])


def test_admins_clear_flagged_votes_with_an_admin_action(client, campaign, make_rater):
    vote = vote_on(campaign.pairs.first(), crowd_rater(campaign), "a")
    Vote.objects.filter(pk=vote.pk).update(status="flagged", flags=["shared_ip"])
    admin = make_rater(role="admin")
    admin.user.is_staff = admin.user.is_superuser = True
    admin.user.save()
    client.force_login(admin.user)

    response = client.post(
        "/admin/ratings/vote/",
        {"action": "clear_votes", "_selected_action": [vote.pk]},
    )

    assert response.status_code == 302
    assert (Vote.objects.get().status, Vote.objects.get().flags) == ("counted", ["shared_ip"])


def test_the_quality_page_alerts_admins_when_the_counted_share_drops(client, make_rater, settings):
    settings.COUNTED_SHARE_ALERT_MIN_VOTES = 2
    campaign = CampaignFactory(name="Drop campaign")
    pairs = PairFactory.create_batch(4, campaign=campaign)
    votes = [vote_on(pair, RaterFactory(), "a") for pair in pairs]
    earlier = timezone.now() - timedelta(days=2)
    Vote.objects.filter(pk__in=[votes[0].pk, votes[1].pk]).update(created_at=earlier)
    Vote.objects.filter(pk__in=[votes[2].pk, votes[3].pk]).update(
        status="flagged", flags=["burst"], verification="unverified"
    )
    client.force_login(make_rater(role="admin").user)

    page = client.get("/manage/quality/").content.decode()

    [share] = abuse.counted_share_by_campaign()
    assert (share.recent_share, share.earlier_share, share.alert) == (0.0, 1.0, True)
    assert "Alert: the share of counted votes dropped" in page
    assert "2 of Drop campaign" in page  # unverified votes are pointed out
    assert "burst" in page
