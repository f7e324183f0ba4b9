"""Admins start and cancel reward-model training from the browser or the API; researchers read
progress and metrics; bad input is refused with a 4xx and stores nothing."""

import pytest
from django.urls import reverse

from ratings.models import Role
from reward.models import RewardModel
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db

FORM = {
    "name": "pref-1",
    "kind": "preference",
    "method": "learned",
    "steps": "50",
    "learning_rate": "0.001",
    "batch_size": "16",
    "test_share": "0.2",
}


def logged_in(client, make_rater, role):
    client.force_login(make_rater(role=role).user)
    return client


def test_an_admin_starts_training_from_the_form_with_filters(client, make_rater):
    campaign = CampaignFactory()
    client = logged_in(client, make_rater, Role.ADMIN)

    response = client.post(
        reverse("reward-model-create"), {**FORM, "campaigns": [campaign.pk], "protocols": ["mos"]}
    )

    reward_model = RewardModel.objects.get(name="pref-1")
    assert response.status_code == 302
    assert response["Location"] == reverse("reward-model-detail", args=[reward_model.pk])
    assert reward_model.status == RewardModel.Status.QUEUED
    assert reward_model.steps == 50
    assert reward_model.data_filters["campaign_ids"] == [campaign.pk]
    assert reward_model.data_filters["protocols"] == ["mos"]
    assert reward_model.config["batch_size"] == 16
    assert reward_model.config["test_share"] == 0.2


@pytest.mark.parametrize(
    ("field", "value"),
    [("steps", "0"), ("test_share", "1.5"), ("kind", "vibes"), ("method", "attribute_match")],
)
def test_bad_form_input_is_a_400_and_stores_nothing(client, make_rater, field, value):
    client = logged_in(client, make_rater, Role.ADMIN)

    response = client.post(reverse("reward-model-create"), {**FORM, field: value})

    assert response.status_code == 400
    assert not RewardModel.objects.exists()


def test_a_researcher_cannot_start_training_from_the_form_or_the_api(client, make_rater):
    client = logged_in(client, make_rater, Role.RESEARCHER)

    page = client.post(reverse("reward-model-create"), FORM)
    api = client.post(
        reverse("api-reward-models"),
        {"name": "x", "kind": "preference", "steps": 10},
        content_type="application/json",
    )

    assert page.status_code == 403
    assert api.status_code == 403
    assert not RewardModel.objects.exists()


def test_an_admin_starts_training_over_the_api_and_bad_settings_are_refused(
    make_rater, api_client_for
):
    api = api_client_for(make_rater(role=Role.ADMIN))
    url = reverse("api-reward-models")

    created = api.post(
        url, {"name": "q", "kind": "quality", "steps": 20, "settings": {"seed": 3}}, format="json"
    )
    unknown = api.post(
        url, {"name": "u", "kind": "quality", "steps": 20, "settings": {"magic": 1}}, format="json"
    )
    duplicate = api.post(url, {"name": "q", "kind": "quality", "steps": 20}, format="json")

    assert created.status_code == 201, created.content
    assert created.json()["status"] == "queued"
    assert unknown.status_code == 400
    assert "magic" in unknown.json()["detail"]
    assert duplicate.status_code == 400
    assert list(RewardModel.objects.values_list("name", flat=True)) == ["q"]


def test_a_researcher_reads_metrics_and_the_curve_but_cannot_cancel(make_rater, api_client_for):
    reward_model = RewardModel.objects.create(
        name="done", kind="preference", steps=10, step=10, status="finished",
        curve=[{"step": 10, "loss": 0.6}],
        metrics={"heldout": {"accuracy": 0.7, "accuracy_ci": [0.6, 0.8], "n": 100}},
    )  # fmt: skip
    api = api_client_for(make_rater(role=Role.RESEARCHER))

    detail = api.get(reverse("api-reward-model", args=[reward_model.pk]))
    cancel = api.post(reverse("api-reward-model-cancel", args=[reward_model.pk]))

    assert detail.status_code == 200
    assert detail.json()["metrics"]["heldout"]["accuracy"] == 0.7
    assert detail.json()["headline"] == {
        "label": "held-out pairwise accuracy", "value": 0.7, "low": 0.6, "high": 0.8,
    }  # fmt: skip
    assert detail.json()["curve"] == [{"step": 10, "loss": 0.6}]
    assert cancel.status_code == 403


def test_the_detail_page_shows_the_accuracy_next_to_the_noise_ceiling(client, make_rater):
    reward_model = RewardModel.objects.create(
        name="shown", kind="preference", steps=10, status="finished",
        metrics={
            "heldout": {"accuracy": 0.712, "accuracy_ci": [0.65, 0.77], "n": 300},
            "noise_ceiling": {"heldout": {"accuracy": 0.804, "low": 0.75, "high": 0.85,
                                          "n_pairs": 40}},
        },
    )  # fmt: skip
    client = logged_in(client, make_rater, Role.RESEARCHER)

    page = client.get(reverse("reward-model-detail", args=[reward_model.pk])).content.decode()

    assert "0.712" in page and "[0.650, 0.770]" in page
    assert "0.804" in page and "noise ceiling" in page
    assert "Cancel training" not in page  # researchers cannot cancel


def test_an_admin_cancels_a_queued_job_at_once(client, make_rater):
    reward_model = RewardModel.objects.create(name="queued", kind="quality", steps=10)
    client = logged_in(client, make_rater, Role.ADMIN)

    response = client.post(reverse("reward-model-cancel", args=[reward_model.pk]))

    reward_model.refresh_from_db()
    assert response.status_code == 302
    assert reward_model.status == RewardModel.Status.CANCELLED
    assert reward_model.cancel_requested
