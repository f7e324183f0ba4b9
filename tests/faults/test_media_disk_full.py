"""A full disk on the media path while a campaign's clips are written: the generation task
fails cleanly (the campaign is marked failed with the reason, for an admin to re-queue once
there is room), no track or pair points at a truncated file, and the part written is removed.

The disk is a storage whose writes stop with ENOSPC half-way, as the kernel's would."""

import errno
from pathlib import Path

import pytest
from django.core.files.storage import FileSystemStorage

from generation.models import Track
from ratings import tasks
from ratings.models import Campaign, Pair
from tests.factories import CampaignFactory, PromptFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def full_disk(monkeypatch, settings):
    def write_half_then_fail(self, name, content):
        data = content.read()
        path = Path(self.path(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(FileSystemStorage, "_save", write_half_then_fail)
    return Path(settings.MEDIA_ROOT)


def test_a_full_disk_fails_the_generation_cleanly(full_disk):
    campaign = CampaignFactory(status=Campaign.Status.GENERATING, clip_seconds=2.0)
    prompt = PromptFactory(text="calm ambient pad")
    campaign.prompts.add(prompt)

    with pytest.raises(OSError, match="No space left"):
        tasks.generate_campaign_prompts(campaign.pk, [prompt.pk])

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.FAILED
    assert "No space left on device" in campaign.generation_error
    assert not Track.objects.exists() and not Pair.objects.exists()
    assert [p for p in full_disk.rglob("*") if p.is_file()] == []  # nothing half-written left
