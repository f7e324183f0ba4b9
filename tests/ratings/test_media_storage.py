"""Clip audio is written and read through Django's storage API alone: on a storage that has no
local files (an object store, MEDIA_STORAGE=s3), clips are generated, streamed to raters and
copied into snapshots as on the default folder. Here django-storages' S3Storage runs against
moto's in-process mock of S3; tests/faults/test_multi_host.py runs the same flow across hosts
with a real S3 server."""

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from django.core.files.storage import default_storage
from moto import mock_aws

from generation.models import Track
from ratings import tasks
from ratings.dataset import DataFilters
from ratings.models import Campaign, Pair, Vote
from ratings.snapshots import snapshot_build, snapshot_create
from tests.factories import CampaignFactory, PairFactory, PromptFactory, RaterFactory, vote_on

# Transactional: a snapshot build reads through a second connection (ADBC's reader).
pytestmark = pytest.mark.django_db(transaction=True)
BUCKET = "musicpref-media-test"


@pytest.fixture
def media_without_local_paths(settings, tmp_path: Path) -> Iterator[Path]:
    """The media storage is a bucket (as MEDIA_STORAGE=s3 configures it); yields the
    MEDIA_ROOT that must stay empty."""
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {"bucket_name": BUCKET, "region_name": "us-east-1",
                            "access_key": "test", "secret_key": "test"},
            },
        }  # fmt: skip
        settings.SNAPSHOT_DIR = tmp_path / "snapshots"
        with pytest.raises(NotImplementedError):
            default_storage.path("audio/x.ogg")
        yield Path(settings.MEDIA_ROOT)


def no_media_files(media_root: Path) -> bool:
    return not media_root.exists() or not any(p.is_file() for p in media_root.rglob("*"))


def test_a_campaign_s_clips_are_generated_into_the_storage(media_without_local_paths):
    campaign = CampaignFactory(status=Campaign.Status.GENERATING, clip_seconds=1.0)
    prompt = PromptFactory(text="calm ambient pad")
    campaign.prompts.add(prompt)

    tasks.generate_campaign_prompts(campaign.pk, [prompt.pk])

    tracks = list(Track.objects.all())
    assert len(tracks) == 2 and Pair.objects.filter(campaign=campaign).count() == 1
    for track in tracks:
        with default_storage.open(track.audio.name, "rb") as stored:
            assert stored.read(4) == b"OggS"
    assert no_media_files(media_without_local_paths)


def test_a_rater_hears_a_clip_streamed_from_the_storage(
    media_without_local_paths, make_rater, api_client_for
):
    pair = PairFactory()

    response = api_client_for(make_rater()).get(f"/clips/{pair.track_a.public_id}")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"OggS placeholder"
    assert "Content-Disposition" not in response  # blindness: no stored name leaks
    assert no_media_files(media_without_local_paths)


def test_a_snapshot_copies_audio_it_cannot_hard_link(media_without_local_paths):
    pair = PairFactory()
    vote_on(pair, RaterFactory(), Vote.Choice.A)

    snapshot = snapshot_create(
        queue=False, filters=DataFilters(), formats=["jsonl"], include_audio=True
    )
    snapshot = snapshot_build(snapshot_id=snapshot.pk)

    assert snapshot.status == snapshot.Status.FINISHED, snapshot.error
    for track in (pair.track_a, pair.track_b):
        copied = snapshot.directory / f"audio/{track.pk}.ogg"
        assert copied.read_bytes() == b"OggS placeholder"
