"""Settings come from the environment and fail loudly; the embedded SQLite default holds up
with two processes writing at once."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, env_overrides: dict[str, str | None], cwd: Path = ROOT):
    env = {k: v for k, v in os.environ.items() if k not in env_overrides}
    env.update({k: v for k, v in env_overrides.items() if v is not None})
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_malformed_integer_names_the_variable(monkeypatch):
    monkeypatch.setenv("SOME_LIMIT", "lots")
    with pytest.raises(ImproperlyConfigured, match="SOME_LIMIT"):
        env_int("SOME_LIMIT", 3)


def test_a_malformed_boolean_names_the_variable(monkeypatch):
    monkeypatch.setenv("SOME_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="SOME_FLAG"):
        env_bool("SOME_FLAG", False)


def test_lists_are_comma_separated(monkeypatch):
    monkeypatch.setenv("SOME_HOSTS", "a.example, b.example,,")
    assert env_list("SOME_HOSTS", []) == ["a.example", "b.example"]


def test_start_up_without_a_secret_key_fails_when_debug_is_off(tmp_path):
    result = run_python(
        "import django; django.setup()",
        {"SECRET_KEY": None, "DEBUG": "false", "DATA_DIR": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_the_default_database_is_sqlite_in_wal_mode_with_immediate_transactions(tmp_path):
    code = (
        "import django; django.setup()\n"
        "from django.db import connection\n"
        "with connection.cursor() as c:\n"
        "    c.execute('PRAGMA journal_mode'); print(c.fetchone()[0])\n"
        "print(connection.vendor, connection.settings_dict['OPTIONS']['transaction_mode'])\n"
    )
    result = run_python(code, {"DATABASE_URL": None, "DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wal", "sqlite", "IMMEDIATE"]
    assert (tmp_path / "db.sqlite3").exists()


WRITER = """
import sys, django
django.setup()
from django.db import transaction
from generation.models import Prompt
for i in range(150):
    with transaction.atomic():
        Prompt.objects.create(text=f"{sys.argv[1]} {i}")
        Prompt.objects.filter(text=f"{sys.argv[1]} {i}").update(tags=["written"])
print("ok")
"""


def test_two_processes_writing_to_the_default_sqlite_never_hit_database_is_locked(tmp_path):
    env = {"DATABASE_URL": None, "DATA_DIR": str(tmp_path)}
    migrate = run_python(
        "from django.core.management import execute_from_command_line as m;"
        "m(['manage.py', 'migrate', '-v0'])",
        env,
    )
    assert migrate.returncode == 0, migrate.stderr
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings")
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("web", "worker")
    ]
    outputs = [writer.communicate(timeout=180) for writer in writers]
    for writer, (stdout, stderr) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, stderr
        assert "database is locked" not in stderr
        assert stdout.strip() == "ok"
    count = run_python(
        "import django; django.setup(); from generation.models import Prompt;"
        "print(Prompt.objects.filter(tags=['written']).count())",
        env,
    )
    assert count.stdout.strip() == "300"


SQLITE_RATING_LOOP = """
import uuid, django
django.setup()
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from generation.models import GeneratorVersion, Prompt, Track
from ratings import services
from ratings import leasing
from ratings import voting
from ratings.models import Campaign, Pair, Rater, Vote
version = GeneratorVersion.objects.create(name="v", backend="procedural")
prompt = Prompt.objects.create(text="calm piano")
campaign = Campaign.objects.create(name="c", purpose="collect", protocol="preference",
    version_a=version, votes_per_item=2, min_listen_seconds=0, status="active")
tracks = []
for seed in (1, 2):
    track = Track(prompt=prompt, generator_version=version, seed=seed, duration_seconds=4,
                  sample_rate=48000)
    track.audio.save("clip.ogg", ContentFile(b"OggS"), save=True)
    tracks.append(track)
Pair.objects.create(campaign=campaign, prompt=prompt, track_a=tracks[0], track_b=tracks[1],
    votes_wanted=2)
outcomes = []
for name in ("r1", "r2", "r3"):
    rater = Rater.objects.create(user=User.objects.create(username=name))
    lease = leasing.assignment_lease_next(rater=rater, campaign=campaign)
    if lease is None:
        outcomes.append("none")
        continue
    assert lease.prompt_text == "calm piano" and len(lease.clips) == 2
    vote_input = voting.VoteInput(assignment_id=lease.assignment_id,
        idempotency_key=uuid.uuid4(), listen_ms={"A": 0, "B": 0}, choice="B")
    voting.vote_record(rater=rater, vote_input=vote_input)
    outcomes.append("voted")
pair = Pair.objects.get()
print(",".join(outcomes), Vote.objects.count(), pair.vote_count, pair.slots_taken)
"""


def test_the_embedded_sqlite_default_runs_the_rating_loop(tmp_path):
    env = {"DATABASE_URL": None, "DATA_DIR": str(tmp_path), "MEDIA_ROOT": str(tmp_path / "m")}
    migrate = run_python(
        "from django.core.management import execute_from_command_line as m;"
        "m(['manage.py', 'migrate', '-v0'])",
        env,
    )
    assert migrate.returncode == 0, migrate.stderr
    result = run_python(SQLITE_RATING_LOOP, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["voted,voted,none", "2", "2", "2"]


def test_without_cache_url_every_process_of_the_machine_counts_against_one_rate_limit(tmp_path):
    """gunicorn's workers are separate processes: a per-process cache would multiply every
    rate limit by their number."""
    code = (
        "import django; django.setup(); from ratings import abuse; "
        "print(abuse.sliding_count('shared', window_seconds=60, now=6000.0))"
    )
    env = {"DATA_DIR": str(tmp_path), "CACHE_URL": None, "SECRET_KEY": "x"}

    counts = [run_python(code, env).stdout.strip() for _ in range(3)]

    assert counts == ["1.0", "2.0", "3.0"]


def test_an_unknown_cache_url_fails_loudly(tmp_path):
    result = run_python("import django; django.setup()", {"CACHE_URL": "memcached://x"})
    assert result.returncode != 0 and "CACHE_URL" in result.stderr


S3_ENV = {
    "MEDIA_STORAGE": "s3",
    "AWS_STORAGE_BUCKET_NAME": "musicpref-media",
    "AWS_S3_ENDPOINT_URL": "http://objects.internal:9000",
    "AWS_S3_REGION_NAME": "us-east-1",
    "AWS_S3_ADDRESSING_STYLE": "path",
    "AWS_ACCESS_KEY_ID": "media-key",
    "AWS_SECRET_ACCESS_KEY": "media-secret",
}


def test_media_goes_to_the_object_store_named_in_the_environment(tmp_path):
    code = (
        "import django; django.setup()\n"
        "from django.core.files.storage import storages\n"
        "s = storages['default']\n"
        "c = s.client_config\n"
        "print(type(s).__name__, s.bucket_name, s.endpoint_url, s.region_name,"
        " c.s3['addressing_style'], s.access_key, s.file_overwrite, s.default_acl)\n"
    )
    result = run_python(code, {**S3_ENV, "DATA_DIR": str(tmp_path), "SECRET_KEY": "x"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "S3Storage", "musicpref-media", "http://objects.internal:9000", "us-east-1", "path",
        "media-key", "False", "None",
    ]  # fmt: skip


def test_the_filesystem_stays_the_default_media_storage(tmp_path):
    code = "import django; django.setup(); from django.conf import settings as s; " + (
        "print(s.STORAGES['default']['BACKEND'])"
    )
    result = run_python(code, {"MEDIA_STORAGE": None, "DATA_DIR": str(tmp_path), "SECRET_KEY": "x"})
    assert result.stdout.strip() == "django.core.files.storage.FileSystemStorage", result.stderr


def test_snapshots_go_to_the_media_bucket_under_their_own_prefix(tmp_path):
    code = (
        "import django; django.setup()\n"
        "from django.core.files.storage import storages\n"
        "s = storages['snapshots']\n"
        "print(type(s).__name__, s.bucket_name, s.endpoint_url, s.location, s.file_overwrite,"
        " s.default_acl, storages['default'].location)\n"
    )
    env = {**S3_ENV, "AWS_LOCATION": "prod/", "DATA_DIR": str(tmp_path), "SECRET_KEY": "x"}
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "S3Storage", "musicpref-media", "http://objects.internal:9000", "prod/snapshots", "True",
        "None", "prod/",
    ]  # fmt: skip


def test_snapshots_stay_in_snapshot_dir_by_default(tmp_path):
    code = (
        "import django; django.setup()\n"
        "from django.core.files.storage import storages\n"
        "print(type(storages['snapshots']).__name__, storages['snapshots'].location)\n"
    )
    env = {"MEDIA_STORAGE": None, "DATA_DIR": str(tmp_path), "SECRET_KEY": "x"}
    result = run_python(code, {**env, "SNAPSHOT_DIR": str(tmp_path / "exports")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SnapshotFolderStorage", str((tmp_path / "exports").resolve())]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"MEDIA_STORAGE": "ftp"}, "MEDIA_STORAGE"),
        ({"AWS_STORAGE_BUCKET_NAME": None}, "AWS_STORAGE_BUCKET_NAME"),
        ({"AWS_S3_ENDPOINT_URL": "objects.internal:9000"}, "AWS_S3_ENDPOINT_URL"),
        ({"AWS_S3_ADDRESSING_STYLE": "dns"}, "AWS_S3_ADDRESSING_STYLE"),
    ],
)
def test_a_media_storage_setting_that_cannot_work_stops_start_up(tmp_path, overrides, named):
    env = {**S3_ENV, "DATA_DIR": str(tmp_path), "SECRET_KEY": "x", **overrides}
    result = run_python("import django; django.setup()", env)
    assert result.returncode != 0 and named in result.stderr
