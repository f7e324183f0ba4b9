"""The admin shows generator versions as a tree: each version's lineage and its children."""

import pytest

from tests.factories import GeneratorVersionFactory

pytestmark = pytest.mark.django_db


def test_the_version_admin_shows_lineage_and_children(site_admin_client):
    base = GeneratorVersionFactory(name="base-model")
    tuned = GeneratorVersionFactory(name="tuned-once", parent=base)
    GeneratorVersionFactory(name="tuned-twice", parent=tuned)

    listing = site_admin_client.get("/admin/generation/generatorversion/")
    page = site_admin_client.get(f"/admin/generation/generatorversion/{tuned.pk}/change/")

    assert listing.status_code == page.status_code == 200
    assert "tuned-twice ← tuned-once ← base-model" in listing.content.decode()
    assert "tuned-twice" in page.content.decode()  # shown as a child of tuned-once


def test_the_pretraining_run_admin_lists_runs(site_admin_client):
    response = site_admin_client.get("/admin/generation/pretrainingrun/")
    assert response.status_code == 200


def test_the_shipped_version_s_page_shows_its_held_out_evaluation_as_a_table(site_admin_client):
    from generation.services import SHIPPED_VERSION_NAME, shipped_version_register

    version = shipped_version_register()
    evaluation = version.metrics["eval"]

    page = site_admin_client.get(f"/admin/generation/generatorversion/{version.pk}/change/")

    content = page.content.decode()
    assert page.status_code == 200
    assert "<th>mean attribute fit</th>" in content
    assert f"<td>{evaluation['mean_fit']}</td>" in content
    assert "<th>plays its plan: mode</th>" in content
    parent = site_admin_client.get(
        f"/admin/generation/generatorversion/{version.parent.pk}/change/"
    )
    assert SHIPPED_VERSION_NAME in parent.content.decode()  # the child, under its parent
