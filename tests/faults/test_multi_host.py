"""The platform across hosts, as platform/Procfile.web, platform/Procfile.worker and the
examples in platform/env/ lay it out: web, worker and data on three network namespaces of
this machine (tests/faults/netns.py), each with its own loopback and its own disk folder.

- data (.1): a private PostgreSQL, a private Redis (the broker and the cache, with a
  password) and a local S3 server (moto), each listening on the data host's address only;
- web (.2): gunicorn, migrated and with static files collected as an operator would;
- worker (.3): a Celery worker on the generate and default queues.

Web and worker are configured by their environment alone (not this test process's), which
names no localhost, and each has an empty DATA_DIR of its own. Over the LAN, an admin
creates a campaign through the web's form, the worker generates its clips into the bucket,
a rater fetches a clip through the web (the bytes of the bucket's object) and votes through
the API, and the vote is in the data host's database. A researcher then asks the web for a
dataset snapshot, the worker builds it into the bucket, and the researcher downloads its files
through the web, each hashing to the manifest's sha256. No clip and no snapshot file stays on
either disk.
Needs root and `ip netns`; skipped otherwise."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import psycopg
import pytest

from tests.faults.netns import Lan, netns_unavailable
from tests.faults.servers import PrivateCluster, PrivateRedis
from tests.faults.web import gunicorn_start, gunicorn_stop
from tests.workers import ROOT, WorkerProcess

UNAVAILABLE = netns_unavailable()
pytestmark = [pytest.mark.worker, pytest.mark.skipif(UNAVAILABLE is not None,
                                                     reason=UNAVAILABLE or "")]  # fmt: skip

# The standard ports: each host is a namespace of its own, so nothing else holds them.
POSTGRES_PORT, REDIS_PORT, S3_PORT, WEB_PORT = 5432, 6379, 9000, 8000
BUCKET = "musicpref-media"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "multihost-media", "AWS_SECRET_ACCESS_KEY": "multihost-secret"}
ADMIN_PASSWORD = "multi-host-admin-password"
PROMPTS = ["calm ambient pad", "fast techno with drums"]
AUDIO_SUFFIXES = {".ogg", ".opus", ".mp3", ".wav", ".flac"}

SETUP = f"""
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from generation.models import GeneratorVersion
from ratings.models import Rater, Role
User = get_user_model()
admin = User.objects.create_superuser("admin", password="{ADMIN_PASSWORD}")
Rater.objects.create(user=admin, role=Role.ADMIN)
rater = Rater.objects.create(user=User.objects.create_user("rater"), role=Role.RATER)
researcher = Rater.objects.create(
    user=User.objects.create_user("researcher"), role=Role.RESEARCHER)
version = GeneratorVersion.objects.create(
    name="procedural-v1", backend="procedural", status=GeneratorVersion.Status.ACTIVE)
print(json.dumps({{"version": version.pk, "token": Token.objects.create(user=rater.user).key,
                  "researcher": Token.objects.create(user=researcher.user).key}}))
"""


@dataclass
class Deployment:
    lan: Lan
    web_url: str
    database_url: str
    s3: object  # a boto3 S3 client, from the test's end of the LAN
    web_dir: Path
    worker_dir: Path
    worker: WorkerProcess
    version_id: int
    rater_token: str
    researcher_token: str


def role_env(lan: Lan, redis: PrivateRedis, data_dir: Path) -> dict[str, str]:
    """What a web or worker host is given (platform/env/*.env.example), and nothing of this
    process's own settings."""
    data = lan["data"].address
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "SECRET_KEY": "multi-host-test-secret-key-not-for-production-use-0123456789",
        "ALLOWED_HOSTS": lan["web"].address,
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": f"postgres://postgres@{data}:{POSTGRES_PORT}/musicpref",
        "CELERY_BROKER_URL": redis.url_of(0),
        "CACHE_URL": redis.url_of(1),
        "MEDIA_STORAGE": "s3",
        "AWS_STORAGE_BUCKET_NAME": BUCKET,
        "AWS_S3_ENDPOINT_URL": f"http://{data}:{S3_PORT}",
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_S3_ADDRESSING_STYLE": "path",
        **S3_KEYS,
    }


def run_on(host_wrap: list[str], env: dict[str, str], *command: str) -> str:
    result = subprocess.run(
        [*host_wrap, sys.executable, "manage.py", *command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, f"manage.py {command[0]}: {result.stderr[-4000:]}"
    return result.stdout


def start_s3(stack: ExitStack, lan: Lan, log_dir: Path):
    data = lan["data"]
    log = stack.enter_context((log_dir / "s3.log").open("ab"))
    server = subprocess.Popen(
        [*data.wrap, sys.executable, "-m", "moto.server", "-H", data.address, "-p", str(S3_PORT)],
        stdout=log, stderr=log,
    )  # fmt: skip
    stack.callback(stop, server)
    s3 = boto3.client(
        "s3", endpoint_url=f"http://{data.address}:{S3_PORT}", region_name="us-east-1",
        aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            s3.create_bucket(Bucket=BUCKET)
            return s3
        except Exception:  # botocore's connection errors while the server starts
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    with ExitStack() as stack:  # undone in reverse, whatever failed half-way
        scratch = Path(tempfile.mkdtemp(prefix="musicpref-hosts-"))
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        web_dir, worker_dir, redis_dir = (scratch / "web", scratch / "worker", scratch / "redis")
        for folder in (web_dir, worker_dir, redis_dir):
            folder.mkdir()

        lan = Lan(["data", "web", "worker"])
        stack.callback(lan.down)
        lan.up()
        data = lan["data"]

        cluster = PrivateCluster(host=data.address, port=POSTGRES_PORT, wrap=data.wrap,
                                 clients=str(lan.subnet), fsync=False)  # fmt: skip
        stack.callback(cluster.remove)
        cluster.start()
        with psycopg.connect(cluster.url(), autocommit=True) as connection:
            connection.execute("CREATE DATABASE musicpref")
        redis = PrivateRedis(redis_dir, host=data.address, port=REDIS_PORT, wrap=data.wrap,
                             password=uuid.uuid4().hex)  # fmt: skip
        stack.callback(redis.kill)
        redis.start()
        s3 = start_s3(stack, lan, scratch)

        web_env, worker_env = role_env(lan, redis, web_dir), role_env(lan, redis, worker_dir)
        for env in (web_env, worker_env):
            assert not re.search(r"127\.0\.0\.1|localhost|::1", json.dumps(env))
        # The web host's release steps: migrate and collect its static files, side by side.
        collect_log = stack.enter_context((scratch / "collectstatic.log").open("w+"))
        collect = subprocess.Popen(
            [*lan["web"].wrap, sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=ROOT, env=web_env, stdout=collect_log, stderr=collect_log,
        )  # fmt: skip
        stack.callback(stop, collect)
        run_on(lan["web"].wrap, web_env, "migrate", "--noinput", "-v0")
        assert collect.wait(timeout=120) == 0, (scratch / "collectstatic.log").read_text()
        made = json.loads(run_on(lan["web"].wrap, web_env, "shell", "-v0", "-c", SETUP))

        worker = WorkerProcess(worker_dir, queues="generate,default", wrap=lan["worker"].wrap,
                               base_env=worker_env)  # fmt: skip
        stack.callback(worker.stop)
        worker.start()
        web_host = lan["web"]
        web = gunicorn_start(web_dir, WEB_PORT, web_env["DATABASE_URL"], host=web_host.address,
                             wrap=web_host.wrap, base_env=web_env)  # fmt: skip
        stack.callback(gunicorn_stop, web)

        yield Deployment(
            lan=lan, web_url=f"http://{lan['web'].address}:{WEB_PORT}",
            database_url=web_env["DATABASE_URL"], s3=s3, web_dir=web_dir,
            worker_dir=worker_dir, worker=worker, version_id=made["version"],
            rater_token=made["token"], researcher_token=made["researcher"],
        )  # fmt: skip


def csrf_token(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text[:2000]
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def admin_creates_campaign(deployment: Deployment) -> int:
    """Through the web's login page and campaign form, as an admin's browser would."""
    with httpx.Client(base_url=deployment.web_url, timeout=30) as admin:
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        token = csrf_token(admin, "/accounts/login/")
        response = admin.post("/accounts/login/", data={**login, "csrfmiddlewaretoken": token})
        assert response.status_code == 302, response.text[:2000]
        form = {
            "name": "across hosts", "purpose": "collect", "protocol": "preference",
            "version_a": deployment.version_id, "prompts": "\n".join(PROMPTS),
            "votes_per_item": 1, "min_listen_seconds": 0, "clip_seconds": 2,
            "csrfmiddlewaretoken": csrf_token(admin, "/manage/campaigns/new/"),
        }  # fmt: skip
        response = admin.post("/manage/campaigns/new/", data=form)
        assert response.status_code == 302, response.text[:2000]
        return int(re.search(r"/manage/campaigns/(\d+)/", response.headers["location"]).group(1))


def wait_for_clips(deployment: Deployment, campaign_id: int) -> None:
    deadline = time.monotonic() + 120
    with psycopg.connect(deployment.database_url, autocommit=True) as connection:
        while time.monotonic() < deadline:
            status, error = connection.execute(
                "SELECT status, generation_error FROM ratings_campaign WHERE id = %s",
                (campaign_id,),
            ).fetchone()
            assert status != "failed", error
            if status == "active":
                return
            time.sleep(0.3)
    raise AssertionError(f"the clips were not made; worker log:\n{deployment.worker.log()[-6000:]}")


def wait_for_snapshot(deployment: Deployment, client: httpx.Client, snapshot_id: int) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/research/snapshots/{snapshot_id}/")
        assert response.status_code == 200, response.text[:2000]
        assert response.json()["status"] != "failed", response.json()
        if response.json()["status"] == "finished":
            return response.json()
        time.sleep(0.3)
    raise AssertionError(f"no snapshot; worker log:\n{deployment.worker.log()[-6000:]}")


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def audio_files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix in AUDIO_SUFFIXES]


def test_web_worker_and_data_on_three_hosts_share_nothing_but_the_network(deployment):
    campaign_id = admin_creates_campaign(deployment)
    wait_for_clips(deployment, campaign_id)

    with psycopg.connect(deployment.database_url) as connection:
        stored = dict(connection.execute(
            "SELECT t.public_id::text, t.audio FROM generation_track t WHERE t.id IN ("
            " SELECT track_a_id FROM ratings_pair WHERE campaign_id = %(c)s UNION"
            " SELECT track_b_id FROM ratings_pair WHERE campaign_id = %(c)s)",
            {"c": campaign_id},
        ).fetchall())  # fmt: skip
    objects = deployment.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    assert len(stored) == 2 * len(PROMPTS)  # two clips per prompt, for a collect campaign
    assert {o["Key"] for o in objects} == set(stored.values())
    assert all(o["Size"] > 1000 for o in objects)
    for data_dir in (deployment.web_dir, deployment.worker_dir):
        assert not (data_dir / "media").exists() and audio_files_under(data_dir) == []

    headers = {"Authorization": f"Token {deployment.rater_token}"}
    with httpx.Client(base_url=deployment.web_url, headers=headers, timeout=30) as rater:
        lease = rater.get("/api/v1/assignments/next/", params={"campaign": campaign_id})
        assert lease.status_code == 200, lease.text
        clip_url = lease.json()["clips"][0]["url"]
        clip = rater.get(clip_url)
        assert clip.status_code == 200, clip.text[:2000]
        public_id = clip_url.rstrip("/").rsplit("/", 1)[-1]
        in_bucket = deployment.s3.get_object(Bucket=BUCKET, Key=stored[public_id])["Body"].read()
        assert clip.content == in_bucket and clip.content.startswith(b"OggS")
        assert BUCKET not in clip_url and "X-Amz" not in clip_url  # served by the web

        vote = rater.post("/api/v1/votes/", json={
            "assignment": lease.json()["assignment"], "idempotency_key": str(uuid.uuid4()),
            "listen_ms": {"A": 0, "B": 0}, "choice": "A",
        })  # fmt: skip
        assert vote.status_code == 201, vote.text

    with psycopg.connect(deployment.database_url) as connection:
        row = connection.execute(
            "SELECT campaign_id, choice FROM ratings_vote WHERE id = %s", (vote.json()["vote"],)
        ).fetchone()
    assert row is not None and row[0] == campaign_id

    # A researcher's snapshot: requested from the web, built by the worker, kept in the bucket.
    headers = {"Authorization": f"Token {deployment.researcher_token}"}
    with httpx.Client(base_url=deployment.web_url, headers=headers, timeout=30) as researcher:
        request = {"campaign_ids": [campaign_id], "formats": ["jsonl", "parquet"],
                   "include_audio": True}  # fmt: skip
        created = researcher.post("/api/v1/research/snapshots/", json=request)
        assert created.status_code == 201, created.text
        snapshot = wait_for_snapshot(deployment, researcher, created.json()["id"])
        manifest = researcher.get(
            f"/api/v1/research/snapshots/{snapshot['id']}/files/manifest.json"
        )
        assert manifest.status_code == 200, manifest.text[:2000]
        files = manifest.json()["files"]
        assert "votes.jsonl" in files and any(name.startswith("audio/") for name in files)
        for relative in ("votes.jsonl", "votes.parquet", min(n for n in files if "audio/" in n)):
            download = researcher.get(
                f"/api/v1/research/snapshots/{snapshot['id']}/files/{relative}"
            )
            assert download.status_code == 200, download.text[:2000]
            assert hashlib.sha256(download.content).hexdigest() == files[relative]
        [exported] = [json.loads(line) for line in researcher.get(
            f"/api/v1/research/snapshots/{snapshot['id']}/files/votes.jsonl"
        ).text.splitlines()]  # fmt: skip
        assert exported["vote_id"] == vote.json()["vote"]

    prefix = f"snapshots/snapshot-{snapshot['id']}/"
    listed = deployment.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    assert {o["Key"].removeprefix(prefix) for o in listed} == {*files, "manifest.json"}
    for data_dir in (deployment.web_dir, deployment.worker_dir):
        assert files_under(data_dir / "snapshots") == [] and audio_files_under(data_dir) == []
