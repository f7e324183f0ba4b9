"""A researcher asks for a dataset snapshot from the research page, and once a worker built it
downloads its Parquet file from the same page; the campaign table shows the raters' agreement."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest
from playwright.sync_api import Page, expect

from ratings.models import DatasetSnapshot, Role, Vote
from ratings.snapshots import snapshot_build
from tests.factories import CampaignFactory, PairFactory, RaterFactory, vote_on

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_researcher_builds_and_downloads_a_snapshot(
    page: Page, live_server, log_in, artifacts_dir
):
    campaign = CampaignFactory(name="Autumn study")
    raters = RaterFactory.create_batch(3)
    for pair in PairFactory.create_batch(4, campaign=campaign):
        for rater in raters:
            vote_on(pair, rater, Vote.Choice.A)
    log_in(page, RaterFactory(role=Role.RESEARCHER))

    page.goto(f"{live_server.url}/research/")
    row = page.locator("#campaign-summaries tr", has_text="Autumn study")
    expect(row).to_contain_text("12")  # votes
    page.fill("input[name=name]", "autumn-parquet")
    page.get_by_label("parquet").check()
    page.get_by_role("button", name="Build snapshot").click()

    snapshots = page.locator("#snapshots")
    expect(snapshots).to_contain_text("autumn-parquet")
    expect(snapshots).to_contain_text("queued")
    snapshot = DatasetSnapshot.objects.get(name="autumn-parquet")
    assert "parquet" in snapshot.formats and snapshot.created_by.rater.role == Role.RESEARCHER
    page.locator("body").click()  # the page waits while the form has the focus
    snapshot_build(snapshot_id=snapshot.pk)  # what the worker does

    # The page notices by itself, without a reload by the researcher.
    expect(snapshots).to_contain_text("finished", timeout=15_000)
    expect(snapshots).to_contain_text("12 /")
    page.screenshot(path=str(artifacts_dir / "research_page.png"), full_page=True)
    link = snapshots.get_by_role("link", name="votes.parquet")
    response = page.request.get(live_server.url + link.get_attribute("href"))
    assert response.status == 200
    table = pq.read_table(io.BytesIO(response.body()))
    assert table.num_rows == 12
    assert set(table.column("choice").to_pylist()) == {"a"}


def test_the_api_docs_render_under_the_content_security_policy(
    page: Page, live_server, log_in, artifacts_dir
):
    """Swagger UI's start-up script is served as a file (the split view), so the policy,
    which runs no inline script without the page's nonce, lets it draw the operations."""
    log_in(page, RaterFactory(role=Role.RESEARCHER))

    page.goto(f"{live_server.url}/api/docs/")

    operation = page.locator(".opblock-summary-path", has_text="/api/v1/research/votes/")
    expect(operation.first).to_be_visible()
    page.screenshot(path=artifacts_dir / "api-docs.png")
