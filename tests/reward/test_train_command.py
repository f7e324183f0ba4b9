"""`manage.py train_reward_model` trains in the foreground with a progress bar (or queues), and
refuses bad settings before storing anything."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from reward.models import RewardModel

pytestmark = pytest.mark.django_db


def test_the_command_trains_an_attribute_match_model_and_prints_its_metrics():
    out = io.StringIO()

    call_command(
        "train_reward_model", "--kind", "adherence", "--method", "attribute_match",
        "--name", "exact", "--steps", "1", "--set", "held_out_size=8",
        "--set", "clip_seconds=2", stdout=out, stderr=io.StringIO(),
    )  # fmt: skip

    reward_model = RewardModel.objects.get(name="exact")
    assert reward_model.status == RewardModel.Status.FINISHED
    assert reward_model.config["held_out_size"] == 8
    assert "text_to_music_r1" in out.getvalue()
    assert "is ready" in out.getvalue()


def test_the_command_queues_on_request():
    out = io.StringIO()

    call_command("train_reward_model", "--kind", "quality", "--name", "q", "--queue", stdout=out)

    assert RewardModel.objects.get(name="q").status == RewardModel.Status.QUEUED
    assert "Queued reward model" in out.getvalue()


@pytest.mark.parametrize(
    "arguments",
    [
        ["--kind", "quality", "--set", "magic=1"],
        ["--kind", "quality", "--set", "learning_rate=fast"],
        ["--kind", "quality", "--steps", "0"],
        ["--kind", "preference", "--method", "attribute_match"],
        ["--resume", "999"],
        [],
    ],
)
def test_bad_arguments_fail_clearly_and_store_nothing(arguments):
    with pytest.raises(CommandError):
        call_command("train_reward_model", *arguments, "--queue", stdout=io.StringIO())
    assert not RewardModel.objects.exists()
