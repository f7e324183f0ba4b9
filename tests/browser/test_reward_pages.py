"""An admin starts a reward model from the browser and watches its curves grow while the job
runs; when it finishes, the page shows the held-out accuracy next to the raters' agreement."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from ratings.models import Role
from reward.models import RewardModel
from tests.factories import CampaignFactory, RaterFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def curve(steps: range) -> list[dict]:
    return [
        {"step": s, "loss": 0.69 - 0.001 * s, "train_accuracy": 0.5 + 0.002 * s}
        | ({"heldout_accuracy": 0.5 + 0.0015 * s} if s % 50 == 0 else {})
        for s in steps
    ]


def test_an_admin_starts_training_from_the_form(page: Page, live_server, log_in):
    campaign = CampaignFactory(name="Spring study")
    admin = RaterFactory(role=Role.ADMIN)
    log_in(page, admin)

    page.goto(f"{live_server.url}/manage/rewards/")
    page.get_by_role("link", name="Train a reward model").click()
    page.fill("input[name=name]", "pref-spring")
    page.select_option("select[name=kind]", "preference")
    page.select_option("select[name=campaigns]", str(campaign.pk))
    page.fill("input[name=steps]", "120")
    page.get_by_role("button", name="Start training").click()

    expect(page.locator("h1")).to_contain_text("pref-spring")
    expect(page.locator("#job-status")).to_have_text("queued")
    reward_model = RewardModel.objects.get(name="pref-spring")
    assert reward_model.data_filters["campaign_ids"] == [campaign.pk]
    assert reward_model.created_by == admin.user


def test_the_curves_grow_live_and_the_finished_model_shows_its_metrics(
    page: Page, live_server, log_in, artifacts_dir
):
    job = RewardModel.objects.create(
        name="pref-live", kind="preference", steps=200, step=60, status="running",
        phase="training", curve=curve(range(1, 61)),
    )  # fmt: skip
    log_in(page, RaterFactory(role=Role.ADMIN))
    page.goto(f"{live_server.url}/manage/rewards/{job.pk}/")
    loss = page.locator("#chart-loss polyline[data-series=loss]")
    expect(loss).to_have_count(1)
    points_before = len(loss.get_attribute("points").split())
    expect(page.get_by_role("button", name="Cancel training")).to_be_visible()

    RewardModel.objects.filter(pk=job.pk).update(step=150, curve=curve(range(1, 151)))

    expect(page.locator("#job-step")).to_have_text("150 / 200", timeout=10_000)
    assert len(loss.get_attribute("points").split()) > points_before
    expect(page.locator("#chart-quality polyline[data-series=heldout_accuracy]")).to_have_count(1)
    page.screenshot(path=str(artifacts_dir / "reward_model_running.png"), full_page=True)

    RewardModel.objects.filter(pk=job.pk).update(
        step=200, status="finished", phase="", curve=curve(range(1, 201)),
        metrics={
            "heldout": {"accuracy": 0.8123, "accuracy_ci": [0.76, 0.86], "votes": 600},
            "noise_ceiling": {"heldout": {"accuracy": 0.79, "low": 0.74, "high": 0.84,
                                          "n_pairs": 120, "n_votes": 600}},
        },
    )  # fmt: skip

    expect(page.locator("text=0.812").first).to_be_visible(timeout=10_000)  # reloaded when over
    expect(page.locator("#job-status")).to_have_text("finished")
    expect(page.get_by_text("noise ceiling")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel training")).to_have_count(0)
    page.screenshot(path=str(artifacts_dir / "reward_model_finished.png"), full_page=True)
