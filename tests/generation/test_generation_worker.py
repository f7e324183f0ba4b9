"""A campaign's generation job runs on a real Celery worker process (Redis broker, the test
PostgreSQL database) and produces playable audio."""

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from django.conf import settings
from django.db import connection

from generation import training
from generation.models import GeneratorVersion, PretrainingRun
from ratings.models import Campaign, Pair
from ratings.services import campaign_create
from tests.factories import GeneratorVersionFactory

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def database_url_of_test_db() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def celery_worker(tmp_path):
    assert connection.vendor == "postgresql"
    import redis

    broker = settings.CELERY_BROKER_URL
    assert broker.startswith("redis://"), "the worker test runs on the real Redis broker"
    redis.Redis.from_url(broker).flushdb()  # no stale jobs from earlier runs
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_test_db(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "GENERATOR_DIR": str(settings.GENERATOR_DIR),
        "DATA_DIR": str(tmp_path),
    }
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed in the teardown
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--queues",
            "generate,train,default",
            "--pool",
            "solo",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield tmp_path / "worker.log"
    worker.terminate()
    worker.wait(timeout=30)
    log.close()


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
    run = training.pretraining_run_create(size="tiny", steps=3, queue=True)

    status = wait_for_status(run, {"queued", "running"}, celery_worker, timeout=300)

    assert status == PretrainingRun.Status.FINISHED, run.error
    version = GeneratorVersion.objects.get(pretraining_run=run)
    assert version.status == GeneratorVersion.Status.ACTIVE
    assert Path(version.checkpoint).exists()
    assert run.step == 3
