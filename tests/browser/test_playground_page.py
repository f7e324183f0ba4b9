"""The playground in a real browser: a typed prompt is generated on a real Celery worker, the
pair appears whole once it is ready, is played and voted on like a rating item (with a
comment), and the vote is stored once with its playground prompt; a failed request shows its
error and a Retry button, never a player."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from generation.models import Prompt
from ratings.models import Campaign, PlaygroundRequest, Rater, Vote
from tests.factories import (
    CampaignFactory,
    GeneratorVersionFactory,
    PromptFactory,
    RaterFactory,
)
from tests.workers import WorkerProcess, flush_broker

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CLIP_SECONDS = 3.0
MIN_LISTEN_MS = 1500
# The worker process starts, imports Django and renders two clips: generous on a busy machine.
GENERATION_TIMEOUT_MS = 180_000
HEARD_ENOUGH = re.compile(r"\bheard-enough\b")
PROMPT = "a slow dreamy synth melody over soft drums"
EXAMPLE = "an upbeat folk song with banjo"
COMMENT = "B had the nicer drums; 1 and 2 and a b are just words here"
LogIn = Callable[[Page, Rater], None]

# Counts the clips on stage each time they change: a half pair would show up as a 1.
RECORD_CLIP_COUNTS = """
window.clipCounts = [];
new MutationObserver(() => {
  window.clipCounts.push(document.querySelectorAll('#clips .clip').length);
}).observe(document.getElementById('clips'), {childList: true});
"""


@pytest.fixture
def rater() -> Rater:
    return RaterFactory()


@pytest.fixture
def short_playground(settings) -> Campaign:
    """An active procedural version and the playground campaign made in advance with a short
    listening gate (the page would otherwise create it on the first request)."""
    settings.PLAYGROUND_CLIP_SECONDS = CLIP_SECONDS
    version = GeneratorVersionFactory(name="procedural-playground-1")
    PromptFactory(text=EXAMPLE, source=Prompt.Source.CURATED)
    PromptFactory(text="a calm piano piece for a rainy evening", source=Prompt.Source.CURATED)
    return CampaignFactory(
        name="Playground",
        purpose=Campaign.Purpose.PLAYGROUND,
        status=Campaign.Status.PAUSED,
        version_a=version,
        votes_per_item=1,
        min_listen_seconds=MIN_LISTEN_MS / 1000,
        clip_seconds=CLIP_SECONDS,
    )


@pytest.fixture
def generate_worker(tmp_path) -> Iterator[WorkerProcess]:
    flush_broker()
    worker = WorkerProcess(
        tmp_path, queues="generate", PLAYGROUND_CLIP_SECONDS=str(CLIP_SECONDS)
    ).start()
    yield worker
    worker.stop()


def clip(page: Page, slot: str):
    return page.locator(f'#clips .clip[data-slot="{slot}"]')


def listen_to(page: Page, slot: str) -> None:
    page.keyboard.press(slot.lower())
    expect(clip(page, slot)).to_have_class(HEARD_ENOUGH, timeout=15_000)


@pytest.mark.worker
def test_a_rater_types_a_prompt_listens_to_the_generated_pair_and_votes_with_a_comment(
    page: Page,
    live_server,
    log_in_with_form: LogIn,
    rater: Rater,
    short_playground: Campaign,
    generate_worker: WorkerProcess,
    artifacts_dir: Path,
) -> None:
    log_in_with_form(page, rater)
    page.get_by_role("link", name="Playground").click()
    expect(page).to_have_url(re.compile(r"/play/$"))
    expect(page.locator("#prompt-form")).to_be_visible()
    expect(page.locator("#stage")).to_be_hidden()
    page.evaluate(RECORD_CLIP_COUNTS)

    chip = page.locator("#examples .chip", has_text=EXAMPLE)
    chip.click()  # an example fills the box; the rater then writes their own instead
    expect(page.locator("#prompt-input")).to_have_value(EXAMPLE)
    page.locator("#prompt-input").fill("")
    page.locator("#prompt-input").press_sequentially(PROMPT)
    expect(page.locator("#prompt-count")).to_have_text(str(len(PROMPT)))
    page.screenshot(path=str(artifacts_dir / "playground_prompt.png"), full_page=True)
    page.get_by_role("button", name="Make two clips").click()

    expect(page.locator("#progress")).to_be_visible()
    expect(page.locator("#progress-text")).to_contain_text(re.compile(r"Queued|Generating"))
    expect(page).to_have_url(re.compile(r"/play/\?request=\d+$"))
    page.screenshot(path=str(artifacts_dir / "playground_progress.png"), full_page=True)

    expect(page.locator("#clips .clip")).to_have_count(2, timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#progress")).to_be_hidden()
    expect(page.locator("#stage .request-prompt")).to_have_text(PROMPT)
    assert page.evaluate("window.clipCounts") == [2]  # the pair arrived whole, once
    for button in page.locator("[data-choice]").all():
        expect(button).to_be_disabled()

    listen_to(page, "A")
    listen_to(page, "B")
    expect(page.locator("#gate")).to_have_text("Voting is unlocked.")
    page.keyboard.press(" ")  # pause B
    # Typing the comment must not play clips or vote, although it contains a, b, 1 and 2.
    page.locator("#comment").press_sequentially(COMMENT)
    page.wait_for_timeout(500)
    assert Vote.objects.count() == 0
    assert page.locator("#clips audio").evaluate_all("as => as.every(a => a.paused)")
    expect(page.locator("#stage")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "playground_pair.png"), full_page=True)

    page.locator("#comment").blur()
    page.keyboard.press("2")  # "B is better"

    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#result")).to_contain_text("Thank you for your vote!")
    expect(page.locator("#result-choice")).to_have_text("You preferred clip B.")
    expect(page.locator("#reveal")).to_contain_text("procedural-playground-1")
    download = page.get_by_role("link", name="Download the one you preferred")
    expect(download).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "playground_voted.png"), full_page=True)

    vote = Vote.objects.select_related("pair__prompt", "campaign").get()
    assert vote.campaign.purpose == Campaign.Purpose.PLAYGROUND
    assert vote.pair.campaign_id == short_playground.pk
    assert vote.pair.prompt.source == Prompt.Source.PLAYGROUND
    assert vote.pair.prompt.text == PROMPT
    assert vote.comment == COMMENT
    assert vote.listen_ms_a >= MIN_LISTEN_MS and vote.listen_ms_b >= MIN_LISTEN_MS
    preferred = vote.pair.track_b if vote.left_is_a else vote.pair.track_a  # B as shown
    assert vote.choice == ("b" if vote.left_is_a else "a")
    response = page.request.get(download.evaluate("a => a.href"))
    assert response.ok
    assert response.headers["content-type"].startswith("audio/")
    with preferred.audio.open("rb") as handle:
        assert response.body() == handle.read()

    page.get_by_role("button", name="New prompt").click()
    expect(page.locator("#prompt-form")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/play/$"))
    assert Vote.objects.count() == 1


def test_a_failed_request_shows_its_error_and_a_retry_button_and_no_player(
    page: Page,
    live_server,
    log_in: LogIn,
    rater: Rater,
    short_playground: Campaign,
    artifacts_dir: Path,
) -> None:
    version = short_playground.version_a
    failed = PlaygroundRequest.objects.create(
        rater=rater,
        prompt=Prompt.objects.create(text="solo cello in a cave", source=Prompt.Source.PLAYGROUND),
        version_a=version,
        version_b=version,
        clip_seconds=CLIP_SECONDS,
        status=PlaygroundRequest.Status.FAILED,
        clips_done=1,
        error="Clip B could not be made. Try again.",
    )
    log_in(page, rater)

    page.goto(f"{live_server.url}/play/?request={failed.pk}")

    expect(page.locator("#failed")).to_be_visible()
    expect(page.locator("#failed-text")).to_have_text("Clip B could not be made. Try again.")
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    expect(page.locator("#stage")).to_be_hidden()
    expect(page.locator("#clips .clip")).to_have_count(0)
    page.screenshot(path=str(artifacts_dir / "playground_failed.png"), full_page=True)

    page.get_by_role("button", name="Retry").click()

    expect(page.locator("#progress")).to_be_visible()  # no worker runs here: it stays queued
    expect(page.locator("#progress-text")).to_contain_text("Queued")
    expect(page.locator("#clips .clip")).to_have_count(0)
    failed.refresh_from_db()
    assert failed.status == PlaygroundRequest.Status.QUEUED


def test_an_anonymous_visitor_may_play_only_when_an_admin_allows_it(
    page: Page, live_server, settings, short_playground: Campaign
) -> None:
    page.goto(f"{live_server.url}/play/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/play/"))

    settings.PLAYGROUND_ALLOW_ANONYMOUS = True
    page.goto(f"{live_server.url}/play/")
    page.locator("#prompt-input").fill("guest prompt one")
    page.keyboard.press("Enter")  # Enter sends the prompt
    expect(page.locator("#progress")).to_be_visible()
    # The first prompt made this visitor a guest, which rotated their CSRF token: the next
    # prompt is sent with the new one, without reloading the page.
    page.get_by_role("button", name="New prompt").click()
    page.locator("#prompt-input").fill("guest prompt two")
    page.get_by_role("button", name="Make two clips").click()
    expect(page.locator("#progress .request-prompt")).to_have_text("guest prompt two")
    guest = Rater.objects.get()
    assert guest.source == Rater.Source.GUEST
    assert guest.playground_requests.count() == 2

    page.goto(f"{live_server.url}/play/")  # reopening the page resumes the latest request
    expect(page.locator("#progress .request-prompt")).to_have_text("guest prompt two")
    expect(page).to_have_url(re.compile(r"/play/$"))
