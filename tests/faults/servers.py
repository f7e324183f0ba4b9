"""Private servers for the fault tests: a PostgreSQL cluster and a Redis that belong to one
test, so it may crash, empty or move them without touching the machine's shared servers.
Each listens on a given address; `wrap` (e.g. `ip netns exec <namespace>`) starts it inside
a network namespace, as another host would run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from tests.faults.web import free_port

PG_BIN = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             check=True).stdout.strip())  # fmt: skip


def as_cluster_owner(command: list[str]) -> list[str]:
    # initdb refuses to run as root; CI runs as root, so the cluster belongs to postgres.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivateCluster:
    """initdb on a temporary directory, trust authentication, started with pg_ctl. `clients`
    is a subnet (CIDR) whose hosts may connect besides the local ones; fsync=False only for a
    test that never crashes the cluster (it makes migrating a fresh database faster)."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int | None = None, wrap: Sequence[str] = (),
        clients: str | None = None, fsync: bool = True,
    ) -> None:  # fmt: skip
        self.directory = Path(tempfile.mkdtemp(prefix="musicpref-pg-"))
        self.host = host
        self.port = port or free_port()
        self.wrap = list(wrap)
        self.clients = clients
        self.fsync = fsync
        self.data = self.directory / "data"
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")

    def run(self, *command: str) -> None:
        subprocess.run(as_cluster_owner(list(command)), check=True, capture_output=True)

    def start(self) -> None:
        self.run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                 "-E", "UTF8", "--no-sync")  # fmt: skip
        if self.clients:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.clients} trust\n")
        self.pg_ctl("start")

    def pg_ctl(self, action: str, *extra: str) -> None:
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses={self.host}"
                   f" -c fsync={'on' if self.fsync else 'off'}")  # fmt: skip
        command = [str(PG_BIN / "pg_ctl"), action, "-D", str(self.data), "-w", "-t", "60",
                   "-o", options, "-l", str(self.directory / "server.log"), *extra]  # fmt: skip
        subprocess.run([*self.wrap, *as_cluster_owner(command)], check=True, capture_output=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@{self.host}:{self.port}/{database}"

    def remove(self) -> None:
        subprocess.run(as_cluster_owner([str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.data),
                                         "-m", "immediate"]), capture_output=True)  # fmt: skip
        shutil.rmtree(self.directory, ignore_errors=True)


class PrivateRedis:
    """A Redis without persistence: killed, it comes back empty, as a lost broker would."""

    def __init__(
        self, directory: Path, *, host: str = "127.0.0.1", port: int | None = None,
        wrap: Sequence[str] = (), password: str | None = None,
    ) -> None:  # fmt: skip
        self.directory = directory
        self.host = host
        self.port = port or free_port()
        self.wrap = list(wrap)
        self.password = password
        self.process: subprocess.Popen | None = None

    def url_of(self, database: int) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_of(0)

    def start(self) -> None:
        auth = ["--requirepass", self.password] if self.password else []
        self.process = subprocess.Popen(
            [*self.wrap, shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", self.host, "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), *auth],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("the private Redis did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
