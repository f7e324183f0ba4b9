"""A campaign's generation job runs on a real Celery worker process (Redis broker, the test
PostgreSQL database) and produces playable audio."""

import io
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from generation import pretraining
from generation.models import GeneratorVersion, PretrainingRun
from ratings.campaigns import campaign_create
from ratings.models import Campaign, Pair
from tests.factories import GeneratorVersionFactory
from tests.workers import WorkerProcess, flush_broker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def celery_worker(tmp_path):
    flush_broker()
    worker = WorkerProcess(tmp_path).start()
    yield worker.log_path
    worker.stop()


def wait_for_status(row, pending: set[str], worker_log: Path, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row.refresh_from_db()
        if row.status not in pending:
            return row.status
        time.sleep(0.5)
    raise AssertionError(f"the job did not finish; worker log:\n{worker_log.read_text()}")


def test_the_generation_job_produces_playable_audio_for_every_pair(celery_worker):
    version = GeneratorVersionFactory()
    campaign = campaign_create(
        name="worker test",
        purpose="collect",
        protocol="preference",
        prompt_texts=["slow sad piano ballad", "fast techno with drums"],
        version_a=version,
        clip_seconds=4.0,
    )

    assert wait_for_status(campaign, {"generating"}, celery_worker) == Campaign.Status.ACTIVE
    assert campaign.generation_done == 4
    pairs = list(Pair.objects.filter(campaign=campaign).select_related("track_a", "track_b"))
    assert len(pairs) == 2
    for track in [t for pair in pairs for t in (pair.track_a, pair.track_b)]:
        with track.audio.open("rb") as handle:
            audio, sample_rate = soundfile.read(io.BytesIO(handle.read()))
        assert sample_rate == track.sample_rate
        assert abs(len(audio) / sample_rate - 4.0) < 0.05
        assert float(np.sqrt(np.mean(np.square(audio)))) > 0.01, "the clip is silent"


def test_a_pretraining_run_on_the_train_queue_registers_a_learned_version(celery_worker):
    run = pretraining.pretraining_run_create(size="tiny", steps=3, queue=True)

    status = wait_for_status(run, {"queued", "running"}, celery_worker, timeout=300)

    assert status == PretrainingRun.Status.FINISHED, run.error
    version = GeneratorVersion.objects.get(pretraining_run=run)
    assert version.status == GeneratorVersion.Status.ACTIVE
    assert Path(version.checkpoint).exists()
    assert run.step == 3
