"""The admin's vote-quality page in a real browser: flagged votes and the counted-share alert."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from ratings.models import Role, Vote
from tests.factories import CampaignFactory, PairFactory, RaterFactory, vote_on

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_admin_sees_flagged_votes_and_the_alert_when_counted_votes_drop(
    page, live_server, log_in, artifacts_dir, settings
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.COUNTED_SHARE_ALERT_MIN_VOTES = 4
    campaign = CampaignFactory(name="Spring study", votes_per_item=50)
    pair = PairFactory(campaign=campaign)
    earlier = [vote_on(pair, RaterFactory(), "a") for _ in range(6)]
    Vote.objects.filter(pk__in=[v.pk for v in earlier]).update(
        created_at=timezone.now() - timedelta(days=2)
    )
    recent = [vote_on(pair, RaterFactory(), "b") for _ in range(4)]
    Vote.objects.filter(pk__in=[v.pk for v in recent[:3]]).update(
        status=Vote.Status.FLAGGED, flags=["too_fast", "shared_ip"]
    )
    log_in(page, RaterFactory(role=Role.ADMIN))

    page.goto(f"{live_server.url}/manage/quality/")

    expect(page.get_by_text("Spring study").first).to_be_visible()
    expect(page.get_by_text("dropped")).to_be_visible()
    expect(page.get_by_text("too_fast").first).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "quality_page.png"), full_page=True)
