"""The fine-tuning run page draws one line per reward model, the KL and the diversity, lets a
researcher listen to checkpoint samples, and the evaluation page shows the MusicRL-style table."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from playwright.sync_api import Page, expect

from generation.models import GeneratorVersion
from ratings.models import Campaign, Role
from reward.evaluations import evaluation_refresh
from reward.models import Evaluation, FineTuneRun
from tests.factories import CampaignFactory, PairFactory, RaterFactory, vote_on
from tests.rendering import rendered_track

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def curve(steps: range) -> list[dict]:
    return [
        {"step": s, "loss": 1 / s, "reward_pref-v1": 0.1 * s**0.5, "reward_exact": 0.5 + 0.01 * s,
         "kl": 0.2 * s, "diversity": 0.9 - 0.002 * s, "stage": 0, "fit_tempo": 0.5 + 0.01 * s}
        | ({"heldout_reward_total": 0.05 * s, "heldout_kl": 0.2 * s,
            "heldout_fit_tempo": 0.4 + 0.01 * s} if s % 10 == 0 else {})
        for s in steps
    ]  # fmt: skip


def test_the_run_page_shows_reward_kl_and_diversity_curves_and_samples(
    page: Page, live_server, log_in, artifacts_dir
):
    base = GeneratorVersion.objects.create(name="symbolic-small-v1", backend="symbolic")
    clip = rendered_track(duration_seconds=2)
    with clip.audio.open("rb") as handle:
        sample = default_storage.save("finetune/1/step-10-0.ogg", ContentFile(handle.read()))
    run = FineTuneRun.objects.create(
        name="ru-demo", base_version=base, algorithm="rloo", preset="RU", steps=60, step=40,
        status="running", phase="stage 1/2: RLOO", curve=curve(range(1, 41)),
        stages=[{"rewards": {}, "steps": 30}, {"rewards": {}, "steps": 30}],
        samples=[{"step": 10, "prompt": "slow sad piano ballad", "file": sample}],
        warnings=[{"step": 35, "kind": "kl_limit", "value": 7.0, "limit": 6.0}],
    )  # fmt: skip
    log_in(page, RaterFactory(role=Role.RESEARCHER))

    page.goto(f"{live_server.url}/manage/finetune/{run.pk}/")

    expect(page.locator("polyline[data-series='reward_pref-v1']")).to_have_count(1)
    expect(page.locator("polyline[data-series=reward_exact]")).to_have_count(1)
    expect(page.locator("#chart-kl polyline[data-series=kl]")).to_have_count(1)
    tempo_chart = page.locator("svg[aria-label='tempo adherence curve']")
    expect(tempo_chart.locator("polyline[data-series=fit_tempo]")).to_have_count(1)
    expect(tempo_chart.locator("polyline[data-series=heldout_fit_tempo]")).to_have_count(1)
    expect(page.locator("svg[aria-label='key adherence curve']")).to_contain_text("no points")
    expect(page.get_by_text("kl_limit")).to_be_visible()
    audio = page.locator("audio").first
    audio.evaluate("a => a.play()")
    page.wait_for_function("() => document.querySelector('audio').currentTime > 0.2")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)  # researchers
    page.screenshot(path=str(artifacts_dir / "finetune_run.png"), full_page=True)


def test_the_evaluation_page_shows_the_musicrl_table(
    page: Page, live_server, log_in, artifacts_dir
):
    baseline = GeneratorVersion.objects.create(name="base", backend="symbolic")
    candidate = GeneratorVersion.objects.create(
        name="base-rloo1", backend="symbolic", parent=baseline
    )
    campaign = CampaignFactory(
        purpose=Campaign.Purpose.EVALUATE,
        protocol="side_by_side",
        version_a=candidate,
        version_b=baseline,
        votes_per_item=5,
    )
    scores = [(5, 3), (4, 2), (4, 4), (2, 3), (5, 1), (3, 3), (4, 3), (5, 4)]
    raters = RaterFactory.create_batch(4)
    for index, (a, b) in enumerate(scores):
        pair = PairFactory(
            campaign=campaign,
            track_a__generator_version=candidate,
            track_b__generator_version=baseline,
        )
        vote_on(pair, raters[index % 4], scores=(a, b))
    evaluation = Evaluation.objects.create(
        campaign=campaign, candidate=candidate, baseline=baseline
    )
    evaluation_refresh(evaluation)
    log_in(page, RaterFactory(role=Role.ADMIN))

    page.goto(f"{live_server.url}/manage/evaluations/{evaluation.pk}/")

    expect(page.get_by_text("Wilcoxon").first).to_be_visible()
    expect(page.get_by_role("button", name="Promote candidate to active")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "evaluation_report.png"), full_page=True)
