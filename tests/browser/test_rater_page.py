"""The rater page in a real browser: real rendered clips are played, the listening gate
unlocks the vote, the keyboard drives every protocol, a lost response is resent once, and
nothing on the page tells the versions apart."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db.models import QuerySet
from playwright.sync_api import Page, Request, Route, expect

from ratings.models import Assignment, Campaign, MosRating, Pair, Rater, Vote
from tests.factories import CampaignFactory, GeneratorVersionFactory, PromptFactory, RaterFactory
from tests.rendering import rendered_pair

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MIN_LISTEN_MS = 1500
VOTE_URL_PATTERN = "**/api/v1/votes/"
HEARD_ENOUGH = re.compile(r"\bheard-enough\b")
LogIn = Callable[[Page, Rater], None]


def short_campaign(protocol: str = Campaign.Protocol.PREFERENCE, **fields) -> Campaign:
    return CampaignFactory(
        protocol=protocol,
        min_listen_seconds=MIN_LISTEN_MS / 1000,
        clip_seconds=4.0,
        votes_per_item=1,
        **fields,
    )


def open_rater_page(page: Page, live_server, campaign: Campaign) -> None:
    page.goto(f"{live_server.url}/rate/{campaign.pk}/")
    expect(page.locator("#clips .clip").first).to_be_visible()


def clip(page: Page, slot: str):
    return page.locator(f'#clips .clip[data-slot="{slot}"]')


def listen_to(page: Page, slot: str) -> None:
    """Start the clip with its key and wait until the page counts it as heard enough."""
    page.keyboard.press(slot.lower())
    expect(clip(page, slot)).to_have_class(HEARD_ENOUGH, timeout=15_000)


def played_ms(page: Page, slot: str) -> int:
    return (
        clip(page, slot)
        .locator("audio")
        .evaluate(
            "audio => Math.round(Array.from({length: audio.played.length},"
            " (_, i) => audio.played.end(i) - audio.played.start(i))"
            ".reduce((a, b) => a + b, 0) * 1000)"
        )
    )


def clip_urls(page: Page) -> list[str]:
    return page.locator("#clips audio").evaluate_all("audios => audios.map(a => a.src)")


def wait_for_rows(page: Page, rows: QuerySet, count: int, timeout_ms: int = 15_000) -> None:
    """Poll the database while letting Playwright run (route handlers need the loop)."""
    for _ in range(timeout_ms // 100):
        if rows.count() == count:
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"expected {count} rows, found {rows.count()}")


def expect_thank_you(page: Page) -> None:
    expect(page.locator("#done")).to_be_visible()
    expect(page.locator("#done")).to_contain_text("Thank you!")
    expect(page.locator("#done")).to_contain_text("nothing left for you to rate")
    expect(page.locator("#stage")).to_be_hidden()


@pytest.fixture
def rater() -> Rater:
    return RaterFactory()


def test_a_rater_logs_in_listens_to_both_clips_with_the_keyboard_and_their_vote_is_stored(
    page: Page, live_server, log_in_with_form: LogIn, rater: Rater, artifacts_dir: Path
) -> None:
    campaign = short_campaign(instructions="Which clip sounds better to you?")
    pair = rendered_pair(campaign=campaign)
    log_in_with_form(page, rater)

    open_rater_page(page, live_server, campaign)
    choices = page.locator("[data-choice]")
    expect(choices).to_have_count(4)
    for button in choices.all():
        expect(button).to_be_disabled()

    listen_to(page, "A")
    assert played_ms(page, "A") >= MIN_LISTEN_MS  # the media clock advanced in Chromium
    for button in choices.all():
        expect(button).to_be_disabled()  # one clip heard is not enough
    listen_to(page, "B")
    for button in choices.all():
        expect(button).to_be_enabled()
    expect(page.locator("#gate")).to_have_text("Voting is unlocked.")
    left_url = clip_urls(page)[0]
    page.screenshot(path=str(artifacts_dir / "rater_page.png"), full_page=True)

    page.keyboard.press("1")  # "A is better": the clip shown on the left

    wait_for_rows(page, Vote.objects.all(), 1)
    vote = Vote.objects.select_related("pair__track_a", "pair__track_b").get()
    assert vote.pair_id == pair.pk
    assert vote.listen_ms_a >= MIN_LISTEN_MS
    assert vote.listen_ms_b >= MIN_LISTEN_MS
    assert vote.choice == ("a" if vote.left_is_a else "b")
    chosen = vote.pair.track_a if vote.choice == "a" else vote.pair.track_b
    assert chosen.public_id.hex in left_url.replace("-", "")
    expect_thank_you(page)


def test_a_vote_whose_response_is_lost_is_resent_with_the_same_key_and_stored_once(
    page: Page, live_server, log_in: LogIn, rater: Rater
) -> None:
    campaign = short_campaign()
    rendered_pair(campaign=campaign)
    sent_bodies: list[str | None] = []

    def lose_the_first_response(route: Route, request: Request) -> None:
        sent_bodies.append(request.post_data)
        if len(sent_bodies) == 1:
            route.fetch()  # the server receives and stores the vote...
            route.abort("connectionreset")  # ...but the browser never hears back
        else:
            route.continue_()

    page.route(VOTE_URL_PATTERN, lose_the_first_response)
    log_in(page, rater)
    open_rater_page(page, live_server, campaign)
    listen_to(page, "A")
    listen_to(page, "B")

    page.keyboard.press("2")

    expect_thank_you(page)
    assert len(sent_bodies) == 2
    first, retry = (json.loads(body or "{}") for body in sent_bodies)
    assert first == retry
    assert first["choice"] == "B"
    vote = Vote.objects.get()
    assert str(vote.idempotency_key) == first["idempotency_key"]
    assert Pair.objects.get().vote_count == 1


def test_side_by_side_scores_are_given_per_clip_with_number_keys_tab_and_enter(
    page: Page, live_server, log_in: LogIn, rater: Rater, artifacts_dir: Path
) -> None:
    campaign = short_campaign(Campaign.Protocol.SIDE_BY_SIDE)
    pair = rendered_pair(campaign=campaign)
    log_in(page, rater)
    open_rater_page(page, live_server, campaign)
    submit = page.locator("#submit-scores")
    expect(submit).to_be_disabled()

    listen_to(page, "A")
    listen_to(page, "B")  # playing B also selects it
    page.keyboard.press("2")  # B gets 2
    expect(submit).to_be_disabled()  # A has no score yet
    page.keyboard.press("Tab")
    expect(clip(page, "A")).to_have_class(re.compile(r"\bselected\b"))
    expect(clip(page, "B")).not_to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("5")  # A gets 5
    expect(page.locator('input[name="score-A"][value="5"]')).to_be_checked()
    expect(page.locator('input[name="score-B"][value="2"]')).to_be_checked()
    expect(submit).to_be_enabled()
    page.screenshot(path=str(artifacts_dir / "rater_page_side_by_side.png"), full_page=True)
    page.keyboard.press("Enter")

    expect_thank_you(page)
    shown_swapped = not Assignment.objects.get().left_is_a
    left, right = (pair.track_b, pair.track_a) if shown_swapped else (pair.track_a, pair.track_b)
    scores = dict(MosRating.objects.filter(vote__pair=pair).values_list("track_id", "score"))
    assert scores == {left.pk: 5, right.pk: 2}
    assert Vote.objects.get().choice is None


def test_a_mos_clip_is_scored_with_a_number_key_and_submitted_with_enter(
    page: Page, live_server, log_in: LogIn, rater: Rater
) -> None:
    campaign = short_campaign(Campaign.Protocol.MOS)
    pair = rendered_pair(campaign=campaign)
    log_in(page, rater)
    open_rater_page(page, live_server, campaign)
    expect(page.locator("#clips .clip")).to_have_count(1)

    listen_to(page, "A")
    page.keyboard.press("4")
    expect(page.locator("#submit-scores")).to_be_enabled()
    page.keyboard.press("Enter")

    expect_thank_you(page)
    rating = MosRating.objects.get()
    assert (rating.track_id, rating.score) == (pair.track_a_id, 4)
    assert rating.listen_ms >= MIN_LISTEN_MS


def test_the_page_shows_the_shared_prompt_but_nothing_that_reveals_a_version(
    page: Page, live_server, log_in: LogIn, rater: Rater
) -> None:
    campaign = short_campaign(
        purpose=Campaign.Purpose.EVALUATE,
        version_a=GeneratorVersionFactory(name="baseline-alpha-7"),
        version_b=GeneratorVersionFactory(name="candidate-omega-9"),
    )
    pair = rendered_pair(campaign=campaign, prompt=PromptFactory(text="sad jazz trio at 70 bpm"))
    # The prompt is shared by both clips, so it is shown; the captions are per-clip
    # generation metadata and, like version names, must stay hidden.
    secrets = {
        "baseline-alpha-7",
        "candidate-omega-9",
        pair.track_a.caption,
        pair.track_b.caption,
    }
    assert all(secrets), "every clip was rendered with a caption"
    log_in(page, rater)

    with page.expect_response("**/api/v1/assignments/next/**") as lease:
        open_rater_page(page, live_server, campaign)
    html = page.content()
    lease_json = lease.value.text()
    urls = clip_urls(page)

    assert len(urls) == 2
    expect(page.locator("#prompt-text")).to_have_text(pair.prompt.text)
    for secret in secrets:
        assert secret.lower() not in html.lower()
        assert secret.lower() not in lease_json.lower()
        assert all(secret.lower() not in url.lower() for url in urls)
    for url in urls:
        response = page.request.get(url)
        assert response.ok
        assert response.headers["content-type"].startswith("audio/")
        assert "content-disposition" not in response.headers
        assert "last-modified" not in response.headers
        body = response.body()
        for secret in secrets:
            assert secret.encode() not in body  # no tags in the Ogg stream name the source


def test_after_the_last_item_the_page_thanks_the_rater_even_after_a_reload(
    page: Page, live_server, log_in: LogIn, rater: Rater
) -> None:
    campaign = short_campaign(Campaign.Protocol.MOS)
    rendered_pair(campaign=campaign, seed=1)
    rendered_pair(campaign=campaign, seed=3)
    log_in(page, rater)
    open_rater_page(page, live_server, campaign)
    expect(page.locator("#voted")).to_have_text("0")

    first_url = clip_urls(page)[0]
    listen_to(page, "A")
    page.keyboard.press("3")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "first => { const audio = document.querySelector('#clips audio');"
        " return audio !== null && audio.src !== first; }",
        arg=first_url,
    )
    expect(page.locator("#voted")).to_have_text("1")
    expect(page.locator("#submit-scores")).to_be_disabled()  # the gate closes again
    listen_to(page, "A")
    page.keyboard.press("4")
    page.keyboard.press("Enter")

    expect_thank_you(page)
    expect(page.locator("#voted")).to_have_text("2")
    assert sorted(MosRating.objects.values_list("score", flat=True)) == [3, 4]
    page.reload()
    expect_thank_you(page)
