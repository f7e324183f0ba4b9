"""Fixtures for tests that drive Debian's headless Chromium against a live Django server.

Chromium comes from the system package (/usr/bin/chromium); Playwright only drives it, so
no browser is ever downloaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ratings.models import Rater
from tests.factories import PASSWORD

CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Clips may start without an earlier user gesture. With no audio device in the container
    # Chromium still advances the media clock, so `audio.played` grows as in a real browser.
    "--autoplay-policy=no-user-gesture-required",
]
UI_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser(django_db_setup) -> Iterator[Browser]:
    # The test database is created first: Django refuses to touch it once Playwright's
    # event loop is open in this thread, and test-database set-up is outside our control.
    if not Path(CHROMIUM_PATH).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM_PATH}: apt-get install chromium")
    # Playwright's sync API keeps an event loop open in this thread. The tests (and the
    # per-test database flush) query the database meanwhile, which Django's async-safety
    # guard would refuse although nothing runs concurrently. Module scope keeps both the
    # loop and the permission away from every other test.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    script_errors: list[str] = []
    failed_responses: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    # A script or style the Content-Security-Policy blocks is reported on the console only.
    page.on(
        "console",
        lambda message: (
            script_errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    page.on(
        "response",
        lambda response: (
            failed_responses.append(f"{response.status} {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico")
            else None
        ),
    )
    yield page
    context.close()
    assert not script_errors, f"the page raised JavaScript errors: {script_errors}"
    # Catches a stylesheet or script that 404s, which the functional checks would not see.
    assert not failed_responses, f"requests failed: {failed_responses}"


@pytest.fixture
def artifacts_dir() -> Path:
    default = Path(django_settings.BASE_DIR) / "test-artifacts"
    path = Path(os.environ.get("TEST_ARTIFACTS_DIR") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def log_in_with_form(live_server) -> Callable[[Page, Rater], None]:
    """Log a rater in through the real login form, as a person would."""

    def log_in(page: Page, rater: Rater) -> None:
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("input[name=username]", rater.user.get_username())
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        expect(page).not_to_have_url(re.compile(r"/accounts/login/"))

    return log_in


@pytest.fixture
def log_in(live_server) -> Callable[[Page, Rater], None]:
    """Give the browser a logged-in session directly, for tests about other things than the
    login form (so that a broken form fails one test, not all of them)."""

    def log_in(page: Page, rater: Rater) -> None:
        client = Client()
        client.force_login(rater.user)
        session = client.cookies[django_settings.SESSION_COOKIE_NAME]
        page.context.add_cookies(
            [{"name": session.key, "value": session.value, "url": live_server.url}]
        )

    return log_in
