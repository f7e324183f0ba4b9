"""With MEDIA_STORAGE=s3 a finished snapshot lives in the bucket under `snapshots/`: the worker
builds it in a local folder, uploads every file (the manifest last) and removes the folder;
downloads and export_dataset read the objects. django-storages' S3Storage runs against moto's
in-process mock of S3, as in test_media_storage.py; tests/faults/test_multi_host.py runs the
same flow across hosts with a real S3 server."""

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.core.files.storage import storages
from django.core.management import call_command
from moto import mock_aws

from config.settings import _snapshot_storage
from ratings.dataset import DataFilters
from ratings.models import DatasetSnapshot, Role, Vote
from ratings.snapshots import snapshot_build, snapshot_create, writing
from tests.factories import PairFactory, RaterFactory, vote_on

# Transactional: a snapshot build reads through a second connection (ADBC's reader).
pytestmark = pytest.mark.django_db(transaction=True)
BUCKET = "musicpref-snapshots-test"
S3_OPTIONS = {"bucket_name": BUCKET, "region_name": "us-east-1", "access_key": "test",
              "secret_key": "test", "location": "", "default_acl": None,
              "file_overwrite": False}  # fmt: skip


@pytest.fixture
def bucket(settings, tmp_path: Path) -> Iterator[Any]:
    """Media and snapshots in one bucket, as MEDIA_STORAGE=s3 configures them; yields the
    bucket (boto3) and leaves SNAPSHOT_DIR pointing at a folder that must end up empty."""
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        media = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": S3_OPTIONS}
        settings.STORAGES = {
            **settings.STORAGES, "default": media, "snapshots": _snapshot_storage(media)
        }  # fmt: skip
        settings.SNAPSHOT_DIR = tmp_path / "snapshots"
        yield boto3.resource("s3", region_name="us-east-1").Bucket(BUCKET)


@pytest.fixture
def votes() -> list[Vote]:
    pairs = [PairFactory() for _ in range(2)]
    return [vote_on(pair, RaterFactory(), Vote.Choice.A) for pair in pairs]


def build(**kwargs: Any) -> DatasetSnapshot:
    kwargs = {"filters": DataFilters(), "formats": ["jsonl", "csv"]} | kwargs
    snapshot = snapshot_create(queue=False, **kwargs)
    return snapshot_build(snapshot_id=snapshot.pk)


def objects(bucket: Any) -> dict[str, bytes]:
    return {o.key: o.get()["Body"].read() for o in bucket.objects.all()}


def snapshot_objects(bucket: Any, snapshot: DatasetSnapshot) -> dict[str, bytes]:
    prefix = f"snapshots/snapshot-{snapshot.pk}/"
    return {
        key.removeprefix(prefix): body
        for key, body in objects(bucket).items()
        if key.startswith(prefix)
    }


def nothing_under(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def test_a_snapshot_s_files_are_objects_that_hash_to_its_manifest(bucket, votes, settings):
    snapshot = build(formats=["jsonl", "csv", "parquet", "audiofolder"], include_audio=True)

    assert snapshot.status == DatasetSnapshot.Status.FINISHED, snapshot.error
    stored = snapshot_objects(bucket, snapshot)
    assert set(stored) == set(snapshot.files())
    assert {name: hashlib.sha256(body).hexdigest() for name, body in stored.items()} == {
        **snapshot.manifest["files"],
        "manifest.json": hashlib.sha256(stored["manifest.json"]).hexdigest(),
    }
    assert json.loads(stored["manifest.json"]) == snapshot.manifest
    assert nothing_under(Path(settings.SNAPSHOT_DIR))  # the local build folder is gone
    with pytest.raises(NotImplementedError):
        snapshot.directory  # noqa: B018 - no folder on any host


def test_the_manifest_is_uploaded_last(bucket, votes, monkeypatch):
    storage = storages["snapshots"]
    save = storage.save
    saved: list[str] = []

    def record(name: str, content: Any, **kwargs: Any) -> str:
        saved.append(name)
        return save(name, content, **kwargs)

    monkeypatch.setattr(storage, "save", record)

    snapshot = build(formats=["jsonl", "parquet"])

    assert snapshot.status == DatasetSnapshot.Status.FINISHED, snapshot.error
    assert saved[-1] == f"snapshot-{snapshot.pk}/manifest.json"
    assert len(saved) == len(snapshot.files())


def test_a_researcher_downloads_the_object_s_bytes(bucket, votes, api_client_for):
    snapshot = build(formats=["jsonl", "parquet"])
    client = api_client_for(RaterFactory(role=Role.RESEARCHER))
    stored = snapshot_objects(bucket, snapshot)

    for relative in ("votes.parquet", "manifest.json"):
        response = client.get(f"/api/v1/research/snapshots/{snapshot.pk}/files/{relative}")

        assert response.status_code == 200
        assert response.streaming and response["Content-Disposition"].startswith("attachment;")
        assert b"".join(response.streaming_content) == stored[relative]
    sha = hashlib.sha256(stored["votes.parquet"]).hexdigest()
    assert sha == snapshot.manifest["files"]["votes.parquet"]


@pytest.mark.parametrize(
    "relative", ["votes.csv", "secret.txt", "../snapshot-1/votes.jsonl", "%2Fetc%2Fpasswd"]
)
def test_a_file_the_manifest_does_not_list_is_refused(bucket, votes, api_client_for, relative):
    snapshot = build(formats=["jsonl"])
    bucket.put_object(Key=f"snapshots/snapshot-{snapshot.pk}/secret.txt", Body=b"no")
    client = api_client_for(RaterFactory(role=Role.RESEARCHER))

    response = client.get(f"/api/v1/research/snapshots/{snapshot.pk}/files/{relative}")

    assert response.status_code == 404


def test_a_rebuild_leaves_exactly_the_new_files(bucket, votes):
    snapshot = build(formats=["jsonl", "csv", "audiofolder"], include_audio=True)
    DatasetSnapshot.objects.filter(pk=snapshot.pk).update(formats=["parquet"], include_audio=False)

    rebuilt = snapshot_build(snapshot_id=snapshot.pk)

    assert rebuilt.status == DatasetSnapshot.Status.FINISHED, rebuilt.error
    stored = snapshot_objects(bucket, rebuilt)
    assert set(stored) == set(rebuilt.files()) == {
        "votes.parquet", "ratings.parquet", "tracks.parquet", "manifest.json"
    }  # fmt: skip
    for relative, sha in rebuilt.manifest["files"].items():
        assert hashlib.sha256(stored[relative]).hexdigest() == sha


def test_a_failed_build_leaves_no_objects_and_no_local_files(bucket, votes, settings, monkeypatch):
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(writing, "_write_parquet", explode)

    snapshot = build(formats=["jsonl", "parquet"], include_audio=True)

    assert snapshot.status == DatasetSnapshot.Status.FAILED
    assert "disk full" in snapshot.error
    assert not [key for key in objects(bucket) if key.startswith("snapshots/")]
    assert nothing_under(Path(settings.SNAPSHOT_DIR))


def test_a_build_that_fails_mid_upload_leaves_no_objects(bucket, votes, settings, monkeypatch):
    """Some files are in the bucket when the manifest's upload fails (the store went away, say):
    they are deleted, so no object of an unfinished snapshot stays."""
    storage = storages["snapshots"]
    save = storage.save

    def fail_on_the_manifest(name: str, content: Any, **kwargs: Any) -> str:
        if name.endswith("/manifest.json"):
            raise ConnectionError("store unreachable")
        return save(name, content, **kwargs)

    monkeypatch.setattr(storage, "save", fail_on_the_manifest)

    snapshot = build(formats=["jsonl", "csv"])

    assert snapshot.status == DatasetSnapshot.Status.FAILED
    assert "store unreachable" in snapshot.error
    assert not [key for key in objects(bucket) if key.startswith("snapshots/")]
    assert nothing_under(Path(settings.SNAPSHOT_DIR))


def test_export_dataset_copies_the_objects_to_a_local_folder(bucket, votes, tmp_path, settings):
    out = tmp_path / "export"

    call_command(
        "export_dataset", "--format", "parquet,jsonl", "--audio", "--out", str(out),
        "--no-progress",
    )  # fmt: skip

    snapshot = DatasetSnapshot.objects.get()
    stored = snapshot_objects(bucket, snapshot)
    copied = {
        path.relative_to(out).as_posix(): path.read_bytes()
        for path in out.rglob("*")
        if path.is_file()
    }
    assert copied == stored and set(copied) == set(snapshot.files())
    assert any(name.startswith("audio/") for name in copied)
    assert nothing_under(Path(settings.SNAPSHOT_DIR))
