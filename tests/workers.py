"""A real Celery worker process for tests: the project's own worker command against the test
database and the Redis broker, which a test can start, kill (as a crash would) and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def database_url_of_test_db() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def flush_broker() -> None:
    import redis

    broker = settings.CELERY_BROKER_URL
    assert broker.startswith("redis://"), "worker tests run on the real Redis broker"
    redis.Redis.from_url(broker).flushdb()  # no stale jobs from earlier runs


class WorkerProcess:
    def __init__(
        self, log_dir: Path, *, queues: str = "generate,train,default",
        wrap: Sequence[str] = (), base_env: Mapping[str, str] | None = None, **env: str,
    ) -> None:  # fmt: skip
        """By default the worker shares this process's test database and media folders.
        `base_env` replaces that whole environment (a worker on another host, configured
        only by what it is given); `wrap` prefixes the command (`ip netns exec <ns>`)."""
        if base_env is None:
            assert connection.vendor == "postgresql"
            base_env = {
                **os.environ,
                "DATABASE_URL": database_url_of_test_db(),
                "MEDIA_ROOT": str(settings.MEDIA_ROOT),
                "GENERATOR_DIR": str(settings.GENERATOR_DIR),
                "REWARD_DIR": str(settings.REWARD_DIR),
            }
        self.log_path = log_dir / "worker.log"
        self.queues = queues
        self.wrap = list(wrap)
        self.env = {**base_env, "DATA_DIR": str(log_dir), **env}
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> WorkerProcess:
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()/kill()
        self.process = subprocess.Popen(
            [
                *self.wrap, sys.executable, "-m", "celery", "-A", "config", "worker",
                "--queues", self.queues, "--pool", "solo", "--without-gossip",
                "--without-mingle", "--loglevel", "INFO",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no acks, exactly what a crash or OOM kill does."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._close_log()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def wait_until(condition, *, timeout: float, worker: WorkerProcess, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{worker.log()[-6000:]}")
