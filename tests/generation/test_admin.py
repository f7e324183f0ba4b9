"""The admin shows generator versions as a tree: each version's lineage and its children."""

import pytest

from ratings.models import Role
from tests.factories import GeneratorVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, make_rater):
    rater = make_rater(role=Role.ADMIN)
    rater.user.is_staff = rater.user.is_superuser = True
    rater.user.save()
    client.force_login(rater.user)
    return client


def test_the_version_admin_shows_lineage_and_children(admin_client):
    base = GeneratorVersionFactory(name="base-model")
    tuned = GeneratorVersionFactory(name="tuned-once", parent=base)
    GeneratorVersionFactory(name="tuned-twice", parent=tuned)

    listing = admin_client.get("/admin/generation/generatorversion/")
    page = admin_client.get(f"/admin/generation/generatorversion/{tuned.pk}/change/")

    assert listing.status_code == page.status_code == 200
    assert "tuned-twice ← tuned-once ← base-model" in listing.content.decode()
    assert "tuned-twice" in page.content.decode()  # shown as a child of tuned-once


def test_the_pretraining_run_admin_lists_runs(admin_client):
    response = admin_client.get("/admin/generation/pretrainingrun/")
    assert response.status_code == 200
