"""A clip's admin page: generation's own fields, plus what reward adds (its reward values
and the action that scores clips), which generation's admin does not know about."""

import pytest
from django.urls import reverse

from reward import tasks
from reward.models import RewardModel, TrackReward
from tests.factories import TrackFactory

pytestmark = pytest.mark.django_db


def reward_model(name: str, status=RewardModel.Status.FINISHED) -> RewardModel:
    return RewardModel.objects.create(
        name=name, kind=RewardModel.Kind.PREFERENCE, steps=1, checkpoint=f"{name}.pt",
        status=status, metrics={"heldout": {"accuracy": 0.7}},
    )  # fmt: skip


def test_the_clip_page_lists_its_reward_values(site_admin_client):
    track = TrackFactory()
    TrackReward.objects.create(reward_model=reward_model("prefs"), track=track, value=1.25)

    page = site_admin_client.get(reverse("admin:generation_track_change", args=[track.pk]))

    assert page.status_code == 200
    assert b"Reward values" in page.content and b"1.25" in page.content


def test_the_scoring_action_queues_every_usable_model_and_no_other(site_admin_client, monkeypatch):
    tracks = [TrackFactory(), TrackFactory()]
    usable = reward_model("usable")
    reward_model("failed", status=RewardModel.Status.FAILED)  # not usable: never scores
    queued: list[tuple[int, list[int]]] = []
    monkeypatch.setattr(tasks.score_tracks, "delay", lambda *args: queued.append(args))

    response = site_admin_client.post(
        reverse("admin:generation_track_changelist"),
        {"action": "score_with_reward_models", "_selected_action": [t.pk for t in tracks]},
    )

    assert response.status_code == 302
    assert [(model_id, sorted(ids)) for model_id, ids in queued] == [
        (usable.pk, sorted(t.pk for t in tracks))
    ]
