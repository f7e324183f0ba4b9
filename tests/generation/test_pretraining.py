"""Pretraining from the platform: the command trains, evaluates and registers an active
learned version, a crashed run resumes from its checkpoint, and the campaign generation job
renders clips with the learned generator. Tiny models keep it to seconds."""

import io

import pytest
import soundfile
from django.core.management import call_command

from generation.models import GeneratorVersion, PretrainingRun
from generation.services import track_generate
from tests.factories import PromptFactory

pytestmark = pytest.mark.django_db


def test_train_generator_registers_an_evaluated_active_learned_version(tmp_path):
    out = io.StringIO()
    call_command("train_generator", "--size", "tiny", "--steps", "4", stdout=out)

    run = PretrainingRun.objects.get()
    version = GeneratorVersion.objects.get(pretraining_run=run)
    assert (run.status, run.step) == (PretrainingRun.Status.FINISHED, 4)
    assert run.loss_curve[-1][0] == 4
    assert (version.backend, version.status) == ("symbolic", GeneratorVersion.Status.ACTIVE)
    assert version.metrics["eval"]["token_loss"] > 0
    assert 0 <= version.metrics["eval"]["valid_share"] <= 1
    assert "Registered active generator version" in out.getvalue()
    assert "       4  " in out.getvalue()  # the loss curve's last step is printed


def test_the_generation_job_renders_clips_with_the_learned_generator():
    call_command("train_generator", "--size", "tiny", "--steps", "2", stdout=io.StringIO())
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
    from generation.music.model import MusicGPT
    from generation.music.pretrain import TrainConfig, load_checkpoint, make_optimizer, train

    run = PretrainingRun.objects.create(size="tiny", steps=6, status=PretrainingRun.Status.FAILED)
    config = TrainConfig(size="tiny", checkpoint_every=1)
    train(config, steps=3, checkpoint_dir=run.directory, evaluate_after=False)  # then "crash"

    call_command("train_generator", "--resume", str(run.pk), stdout=io.StringIO())

    run.refresh_from_db()
    assert (run.status, run.step) == (PretrainingRun.Status.FINISHED, 6)
    model = MusicGPT(config.model_config())
    step, history = load_checkpoint(
        run.directory / "checkpoint.pt", model, make_optimizer(model, config)
    )
    assert step == 6
    assert [entry["step"] for entry in history] == [1, 2, 3, 4, 5, 6]
