"""seed_demo registers its generator versions once, on every start: the composer's two
versions (the second derived from the first) and the shipped learned generator with its
parent, and the demo campaigns against them."""

import io

import pytest
from django.core.management import call_command

from generation.models import GeneratorVersion
from generation.services import PARENT_VERSION_NAME, SHIPPED_LINEAGE, SHIPPED_VERSION_NAME
from ratings.models import Campaign

pytestmark = pytest.mark.django_db


def test_seeding_twice_registers_each_demo_version_once_with_its_parent(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    for _ in range(2):
        call_command("seed_demo", "--clip-seconds", "2", stdout=io.StringIO())

    versions = {v.name: v for v in GeneratorVersion.objects.select_related("parent")}
    assert set(versions) == {"procedural-v1", "procedural-v2"} | {
        name for name, _ in SHIPPED_LINEAGE
    }
    assert versions["procedural-v2"].parent == versions["procedural-v1"]
    assert versions["procedural-v2"].config == {"humanize": 0.6, "variation": 0.8}
    assert versions["procedural-v1"].status == GeneratorVersion.Status.ACTIVE
    assert versions[SHIPPED_VERSION_NAME].parent == versions[PARENT_VERSION_NAME]
    assert Campaign.objects.count() == 3
    evaluation = Campaign.objects.get(purpose=Campaign.Purpose.EVALUATE)
    assert (evaluation.version_a.name, evaluation.version_b.name) == (
        SHIPPED_VERSION_NAME, "procedural-v1",
    )  # fmt: skip
