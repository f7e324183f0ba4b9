"""Pretraining from the platform: the command trains, evaluates and registers an active
learned version, a crashed run resumes from its checkpoint, and the campaign generation job
renders clips with the learned generator. Tiny models keep it to seconds."""

import io
from pathlib import Path

import pytest
import soundfile
from django.core.management import call_command
from django.core.management.base import CommandError

from generation.models import GeneratorVersion, PretrainingRun
from generation.services import track_generate
from tests.factories import PromptFactory

pytestmark = pytest.mark.django_db


def test_train_generator_registers_an_evaluated_active_learned_version(tmp_path):
    out = io.StringIO()
    call_command(
        "train_generator", "--size", "tiny", "--steps", "4", "--set", "eval_prompts=8",
        "--set", "data_workers=0", stdout=out,
    )  # fmt: skip

    run = PretrainingRun.objects.get()
    version = GeneratorVersion.objects.get(pretraining_run=run)
    assert (run.status, run.step) == (PretrainingRun.Status.FINISHED, 4)
    assert run.loss_curve[-1][0] == 4
    assert (version.backend, version.status) == ("symbolic", GeneratorVersion.Status.ACTIVE)
    evaluation = version.metrics["eval"]
    assert evaluation["token_loss"] > 0 and evaluation["plan_token_loss"] > 0
    assert 0 <= evaluation["well_formed"] <= 1 and 0 <= evaluation["mean_fit"] <= 1
    assert set(evaluation["plan_agreement"]) >= {"instruments", "key", "mode", "mean"}
    assert len(run.loss_curve[-1]) == 3  # step, loss of pieces, loss of plans
    assert "Registered active generator version" in out.getvalue()
    assert "       4  " in out.getvalue()  # the loss curve's last step is printed


def test_the_generation_job_renders_clips_with_the_learned_generator():
    call_command(
        "train_generator", "--size", "tiny", "--steps", "2",
        "--set", "eval_prompts=4", "--set", "data_workers=0",
        stdout=io.StringIO(),
    )  # fmt: skip
    version = GeneratorVersion.objects.get(backend="symbolic")

    track, created = track_generate(
        prompt=PromptFactory(text="fast techno with drums"),
        version=version,
        seed=3,
        duration_seconds=3.0,
    )

    assert created
    assert track.events and track.events[0].startswith("Tempo_")
    with track.audio.open("rb") as handle:
        audio, sample_rate = soundfile.read(io.BytesIO(handle.read()))
    assert abs(len(audio) / sample_rate - 3.0) < 0.05


def test_a_crashed_run_resumes_from_its_last_checkpoint():
    from generation.music.planned import PlannedMusicGPT
    from generation.music.pretrain import TrainConfig, load_checkpoint, make_optimizer, train

    run = PretrainingRun.objects.create(
        size="tiny",
        steps=6,
        status=PretrainingRun.Status.FAILED,
        settings={"eval_prompts": 4, "data_workers": 0},
    )
    config = TrainConfig(size="tiny", checkpoint_every=1, eval_prompts=4, data_workers=0)
    train(config, steps=3, checkpoint_dir=run.directory, evaluate_after=False)  # then "crash"

    call_command("train_generator", "--resume", str(run.pk), stdout=io.StringIO())

    run.refresh_from_db()
    assert (run.status, run.step) == (PretrainingRun.Status.FINISHED, 6)
    model = PlannedMusicGPT(config.model_config())
    step, history = load_checkpoint(
        run.directory / "checkpoint.pt", model, make_optimizer(model, config)
    )
    assert step == 6
    assert [entry["step"] for entry in history] == [1, 2, 3, 4, 5, 6]


def test_the_shipped_planned_generator_is_registered_once_with_its_parent_and_evaluation():
    from generation.services import (
        PARENT_VERSION_NAME,
        SHIPPED_LINEAGE,
        SHIPPED_VERSION_NAME,
        shipped_version_register,
    )

    version = shipped_version_register()
    again = shipped_version_register()

    assert again == version and GeneratorVersion.objects.count() == len(SHIPPED_LINEAGE) == 4
    assert (version.name, version.status) == (SHIPPED_VERSION_NAME, "active")
    assert (version.parent.name, version.parent.status) == (PARENT_VERSION_NAME, "retired")
    assert [v.name for v in version.lineage()] == [name for name, _ in SHIPPED_LINEAGE][::-1]
    first = version.lineage()[-1]
    assert (first.name, first.status, first.parent) == (SHIPPED_LINEAGE[0][0], "retired", None)
    assert version.metrics["eval"] != version.parent.metrics["eval"]  # each its own file's
    evaluation = version.metrics["eval"]
    assert evaluation["prompts"] >= 200 and evaluation["mean_fit"] > 0.8


def test_unknown_pretraining_settings_are_refused_before_a_run_is_recorded():
    with pytest.raises(CommandError, match="unknown settings"):
        call_command("train_generator", "--size", "tiny", "--steps", "2", "--set", "lr=1")
    with pytest.raises(CommandError, match="KEY=NUMBER"):
        call_command("train_generator", "--size", "tiny", "--steps", "2", "--set", "seed=x")

    assert not PretrainingRun.objects.exists()


def test_a_finished_run_trained_further_registers_a_child_version_with_its_own_file():
    call_command(
        "train_generator", "--size", "tiny", "--steps", "2",
        "--set", "eval_prompts=4", "--set", "data_workers=0",
        stdout=io.StringIO(),
    )  # fmt: skip
    run = PretrainingRun.objects.get()
    first = GeneratorVersion.objects.get()
    first_file = first.backend_config()["checkpoint"]
    before = Path(first_file).read_bytes()

    call_command("train_generator", "--resume", str(run.pk), "--steps", "4", stdout=io.StringIO())

    run.refresh_from_db()
    second = GeneratorVersion.objects.exclude(pk=first.pk).get()
    assert (run.status, run.step, run.loss_curve[-1][0]) == ("finished", 4, 4)
    assert second.parent == first and second.name == f"{first.name}-step4"
    assert second.backend_config()["checkpoint"] != first_file
    assert Path(first_file).read_bytes() == before  # the first version's model is unchanged
    with pytest.raises(CommandError, match="ask for more"):
        call_command("train_generator", "--resume", str(run.pk), "--steps", "3")


def _state(version: GeneratorVersion) -> dict:
    import torch

    path = version.backend_config()["checkpoint"]
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_a_run_started_from_a_version_trains_its_weights_and_registers_its_child():
    import torch

    tiny = ("--size", "tiny", "--set", "eval_prompts=4", "--set", "data_workers=0")
    call_command("train_generator", *tiny, "--steps", "2", "--set", "warmup_steps=1",
                 stdout=io.StringIO())  # fmt: skip
    first = GeneratorVersion.objects.get()
    # A step far too small to move a weight by 1e-5, so the child holds the first's weights;
    # a fresh model of the same seed differs from them by the first run's two full steps.
    call_command("train_generator", *tiny, "--steps", "1", "--from", first.name,
                 "--set", "learning_rate=1e-7", "--set", "min_learning_rate=1e-8",
                 stdout=io.StringIO())  # fmt: skip

    run = PretrainingRun.objects.get(starts_from=first)
    child = GeneratorVersion.objects.get(pretraining_run=run)
    assert (child.parent, run.status, run.step) == (first, "finished", 1)
    parent_state, child_state = _state(first), _state(child)
    moved = max((child_state[name] - weights).abs().max() for name, weights in parent_state.items())
    assert moved < 1e-5
    from generation.music.planned import SIZES, PlannedMusicGPT

    torch.manual_seed(0)
    fresh = PlannedMusicGPT(SIZES["tiny"]).state_dict()
    assert max((fresh[name] - parent_state[name]).abs().max() for name in fresh) > 1e-3


def test_a_warm_start_from_a_version_that_cannot_start_the_run_is_refused_before_recording():
    call_command(
        "train_generator", "--size", "tiny", "--steps", "1",
        "--set", "eval_prompts=4", "--set", "data_workers=0", stdout=io.StringIO(),
    )  # fmt: skip
    tiny = GeneratorVersion.objects.get()
    procedural = GeneratorVersion.objects.create(name="procedural-x", backend="procedural")

    with pytest.raises(CommandError, match="different model than size small"):
        call_command("train_generator", "--size", "small", "--from", tiny.name)
    with pytest.raises(CommandError, match="no symbolic generator file"):
        call_command("train_generator", "--size", "tiny", "--from", procedural.name)
    with pytest.raises(CommandError, match="No generator version named"):
        call_command("train_generator", "--size", "tiny", "--from", "no-such-version")
    with pytest.raises(CommandError, match="pick one"):
        call_command("train_generator", "--resume", "1", "--from", tiny.name)

    assert PretrainingRun.objects.count() == 1  # only the first run
