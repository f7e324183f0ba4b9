"""A fine-tuning run on a real Celery worker survives the worker being killed (it resumes from
its checkpoint on a new worker), and an admin's cancel stops a running run in a consistent
state: cancelled, with its last checkpoint and curve, and no candidate version."""

import time

import pytest

from generation.models import GeneratorVersion
from generation.music.backends import SHIPPED_GENERATOR
from generation.services import SHIPPED_VERSION_NAME
from reward import finetune
from reward.learning.loop import CHECKPOINT_NAME
from reward.models import FineTuneRun, RewardModel
from tests.workers import WorkerProcess, flush_broker, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

WORKER_ENV = {"TRAINING_STALE_SECONDS": "4", "TRAINING_HEARTBEAT_SECONDS": "0.5"}
SETTINGS = {
    "prompts_per_step": 2, "samples_per_prompt": 2, "checkpoint_every": 4, "eval_every": 8,
    "train_prompts": 12, "held_out_prompts": 4, "clip_seconds": 2.0,
}  # fmt: skip


@pytest.fixture
def run_setup():
    base = GeneratorVersion.objects.create(
        name=SHIPPED_VERSION_NAME, backend="symbolic", checkpoint=SHIPPED_GENERATOR,
        status="active",
    )  # fmt: skip
    exact = RewardModel.objects.create(
        name="exact", kind="adherence", method="attribute_match", steps=1, status="finished",
        metrics={"heldout": {"text_to_music_r1": 0.9}},
    )  # fmt: skip
    return base, exact


def start_run(name, base, exact, steps):
    return finetune.finetune_run_create(
        name=name, base_version=base, algorithm="rloo", steps=steps,
        reward_weights={exact.pk: 1.0}, settings=SETTINGS,
    )  # fmt: skip


def step_of(run) -> int:
    run.refresh_from_db()
    return run.step


def test_a_killed_worker_s_run_resumes_from_its_checkpoint(tmp_path, run_setup):
    flush_broker()
    worker = WorkerProcess(tmp_path, **WORKER_ENV).start()
    try:
        # Killed after its first checkpoint (step 4), with steps left to resume.
        run = start_run("crash", *run_setup, steps=12)
        wait_until(lambda: step_of(run) >= 5, timeout=300, worker=worker, what="progress")
        worker.kill()
        killed_at = step_of(run)
        assert killed_at < 12, "the run finished before the worker could be killed"
        time.sleep(5)  # the heartbeat goes stale
        worker = WorkerProcess(tmp_path, **WORKER_ENV).start()
        wait_until(
            lambda: FineTuneRun.objects.get(pk=run.pk).status not in ("queued", "running"),
            timeout=400, worker=worker, what="the resumed run to finish",
        )  # fmt: skip
    finally:
        worker.stop()

    run.refresh_from_db()
    assert run.status == FineTuneRun.Status.FINISHED, run.error
    assert run.attempts == 2
    [resumed_from] = run.resumed_from_steps
    assert 0 < resumed_from <= killed_at and resumed_from % 4 == 0
    steps = [point["step"] for point in run.curve]
    assert steps == list(range(1, 13))
    assert run.result_version.parent == run.base_version


def test_cancel_stops_a_running_run_in_a_consistent_state(tmp_path, run_setup):
    flush_broker()
    worker = WorkerProcess(tmp_path, **WORKER_ENV).start()
    try:
        run = start_run("cancel-me", *run_setup, steps=200)
        wait_until(lambda: step_of(run) >= 5, timeout=300, worker=worker, what="progress")
        finetune.finetune_run_cancel(run=run)
        wait_until(
            lambda: FineTuneRun.objects.get(pk=run.pk).status == "cancelled",
            timeout=120, worker=worker, what="the run to stop",
        )  # fmt: skip
    finally:
        worker.stop()

    run.refresh_from_db()
    assert run.result_version is None
    assert run.finished_at is not None
    assert 5 <= run.step < 200
    assert (run.directory / "stage-0" / CHECKPOINT_NAME).exists()
    assert [point["step"] for point in run.curve] == list(range(1, len(run.curve) + 1))
    assert not GeneratorVersion.objects.filter(parent=run.base_version).exists()
