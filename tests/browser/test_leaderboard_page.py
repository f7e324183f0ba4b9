"""The leaderboard page in a real browser: the stored table and its interval chart."""

import random

import pytest
from playwright.sync_api import expect

from ratings.leaderboards import leaderboard_refresh
from ratings.models import Role
from tests.factories import CampaignFactory, GeneratorVersionFactory, RaterFactory
from tests.ratings.test_leaderboard import cast, versus

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_page_ranks_the_versions_in_a_table_and_a_chart(
    page, live_server, log_in, artifacts_dir, settings
):
    settings.LEADERBOARD_BOOTSTRAP_ROUNDS = 200
    settings.LEADERBOARD_MIN_VOTES = 5
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    versions = [GeneratorVersionFactory(name=name) for name in ("v-strong", "v-mid", "v-weak")]
    campaign = CampaignFactory(
        purpose="evaluate", version_a=versions[0], version_b=versions[2], votes_per_item=50
    )
    # Strength falls with the index: the first version wins most of its comparisons.
    rng = random.Random(0)
    for first, second, p_first in ((0, 1, 0.75), (1, 2, 0.75), (0, 2, 0.9)):
        choices = ["a" if rng.random() < p_first else "b" for _ in range(12)]
        cast(versus(campaign, versions[first], versions[second]), choices)
    leaderboard_refresh(campaign_id=campaign.pk)
    log_in(page, RaterFactory(role=Role.RESEARCHER))

    page.goto(f"{live_server.url}/leaderboard/{campaign.pk}/")

    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("v-strong")
    expect(rows.last).to_contain_text("v-weak")
    expect(page.locator("svg")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "leaderboard_page.png"), full_page=True)
