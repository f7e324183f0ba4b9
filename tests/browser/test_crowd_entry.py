"""Crowd entry in a real browser: a Prolific participant consents, rates and gets the study's
completion code and link back; an MTurk preview shows the task with no way to start and makes
no account; an accepted MTurk assignment rates and is submitted to MTurk by an auto-posting
form (MTurk itself is stood in for by Playwright's route interception)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import pytest
from playwright.sync_api import Page, Request, Route, expect

from ratings.models import Campaign, Rater, RaterSession, Vote
from tests.factories import CampaignFactory
from tests.rendering import rendered_pair

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HEARD_ENOUGH = re.compile(r"\bheard-enough\b")
MTURK_SUBMIT = "https://workersandbox.mturk.com/mturk/externalSubmit"


def crowd_campaign(**fields) -> Campaign:
    campaign = CampaignFactory(
        min_listen_seconds=1.5, clip_seconds=4.0, votes_per_item=1, votes_per_session=1, **fields
    )
    rendered_pair(campaign=campaign)
    return campaign


def join_url(live_server, campaign: Campaign, params: dict[str, str]) -> str:
    return f"{live_server.url}/join/{campaign.pk}/?{urlencode(params)}"


def listen_and_vote(page: Page) -> None:
    expect(page.locator("#clips .clip").first).to_be_visible()
    for slot in ("A", "B"):
        page.keyboard.press(slot.lower())
        expect(page.locator(f'#clips .clip[data-slot="{slot}"]')).to_have_class(
            HEARD_ENOUGH, timeout=15_000
        )
    page.keyboard.press("1")


def test_a_prolific_participant_consents_rates_and_gets_the_completion_code(
    page: Page, live_server, artifacts_dir: Path
) -> None:
    campaign = crowd_campaign(
        consent_text="Your answers are stored without your name. You may stop at any time.",
        instructions="Pick the clip that sounds better.",
        completion_code="PROLIFIC-OK-7",
        completion_url="https://app.prolific.com/submissions/complete?cc={code}",
    )
    params = {"PROLIFIC_PID": "5f1e2d3c4b5a69788796a5b4", "STUDY_ID": "st1", "SESSION_ID": "se1"}
    returned: list[str] = []

    def prolific(route: Route, request: Request) -> None:
        returned.append(request.url)
        route.fulfill(status=200, content_type="text/html", body="<p>Prolific</p>")

    page.route("https://app.prolific.com/**", prolific)
    page.goto(join_url(live_server, campaign, params))
    expect(page.locator("#consent-text")).to_contain_text("stored without your name")
    expect(page.locator(".instructions")).to_contain_text("Pick the clip")
    page.screenshot(path=str(artifacts_dir / "crowd_consent.png"), full_page=True)
    page.click("#start")  # the consent box is required: the browser does not submit
    expect(page).to_have_url(re.compile(r"/join/\d+/\?"))
    page.check("input[name=consent]")
    page.click("#start")

    expect(page).to_have_url(re.compile(rf"/rate/{campaign.pk}/$"))
    expect(page.locator(".progress")).to_contain_text("of 1 in this session")
    listen_and_vote(page)

    expect(page).to_have_url(re.compile(rf"/join/{campaign.pk}/complete/$"))
    expect(page.locator("#completion-code")).to_have_text("PROLIFIC-OK-7")
    page.screenshot(path=str(artifacts_dir / "crowd_complete.png"), full_page=True)
    page.click("#completion-link")
    expect(page.locator("p")).to_have_text("Prolific")
    assert parse_qs(returned[0].split("?", 1)[1]) == {"cc": ["PROLIFIC-OK-7"]}
    session = RaterSession.objects.select_related("rater").get()
    assert (session.rater.source, session.rater.external_id) == ("prolific", params["PROLIFIC_PID"])
    assert (session.status, Vote.objects.get().session_id) == ("completed", session.pk)


def test_an_mturk_preview_shows_the_task_without_a_start_and_makes_no_account(
    page: Page, live_server
) -> None:
    campaign = CampaignFactory(instructions="Rate short music clips.")
    preview = {
        "assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE",
        "hitId": "3HIT7ABC",
        "turkSubmitTo": "https://workersandbox.mturk.com",
    }

    page.goto(join_url(live_server, campaign, preview))

    expect(page.locator(".instructions")).to_contain_text("Rate short music clips.")
    expect(page.locator("#preview-notice")).to_be_visible()
    expect(page.locator("#start")).to_be_disabled()
    assert page.locator("form#join-form").count() == 0
    assert not Rater.objects.exists() and not RaterSession.objects.exists()


def test_an_accepted_mturk_assignment_rates_and_is_submitted_to_turk_submit_to(
    page: Page, live_server
) -> None:
    campaign = crowd_campaign(completion_code="MT-DONE")
    params = {
        "workerId": "A1B2C3D4E5",
        "assignmentId": "3ASSIGN9XYZ",
        "hitId": "3HIT7ABC",
        "turkSubmitTo": "https://workersandbox.mturk.com",
    }
    submitted: list[tuple[str, str | None]] = []

    def mturk(route: Route, request: Request) -> None:
        submitted.append((request.method, request.post_data))
        route.fulfill(status=200, content_type="text/html", body="<p>HIT submitted</p>")

    page.route(MTURK_SUBMIT, mturk)
    page.goto(join_url(live_server, campaign, params))
    page.click("#start")
    expect(page).to_have_url(re.compile(rf"/rate/{campaign.pk}/$"))
    listen_and_vote(page)

    expect(page).to_have_url(MTURK_SUBMIT)  # the completion page posted itself
    expect(page.locator("p")).to_have_text("HIT submitted")
    [(method, body)] = submitted
    assert method == "POST"
    assert parse_qs(body or "") == {"assignmentId": ["3ASSIGN9XYZ"], "completionCode": ["MT-DONE"]}
    assert RaterSession.objects.get().status == "completed"
