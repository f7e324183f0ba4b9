"""Registering a generator version (generation.services.generator_version_register): once per
name, the existing row kept as it is, and linked to the version it was derived from."""

import pytest

from generation.models import GeneratorVersion
from generation.services import generator_version_register

pytestmark = pytest.mark.django_db


def test_registering_a_name_again_returns_the_same_version_unchanged():
    first = generator_version_register(
        name="composer-v1", backend="procedural", config={"humanize": 0.2}, metrics={"eval": 1}
    )

    again = generator_version_register(
        name="composer-v1",
        backend="symbolic",
        config={"humanize": 0.9},
        status=GeneratorVersion.Status.ACTIVE,
        metrics={"eval": 2},
    )

    again.refresh_from_db()
    assert again.pk == first.pk and GeneratorVersion.objects.count() == 1
    assert (again.backend, again.config, again.metrics) == (
        "procedural",
        {"humanize": 0.2},
        {"eval": 1},
    )
    assert again.status == GeneratorVersion.Status.CANDIDATE


def test_a_version_registered_with_a_parent_is_in_its_lineage():
    base = generator_version_register(
        name="base-v1", backend="procedural", status=GeneratorVersion.Status.ACTIVE
    )
    tuned = generator_version_register(
        name="base-v1-rloo7", backend="procedural", parent=base, metrics={"fine_tune_run": 7}
    )
    tuned_further = generator_version_register(
        name="base-v1-rloo7-step2", backend="procedural", parent=tuned
    )

    assert tuned.parent == base and list(base.children.all()) == [tuned]
    assert [v.name for v in tuned_further.lineage()] == [
        "base-v1-rloo7-step2",
        "base-v1-rloo7",
        "base-v1",
    ]
    assert (tuned.status, tuned.metrics) == (
        GeneratorVersion.Status.CANDIDATE,
        {"fine_tune_run": 7},
    )


def test_registering_an_existing_name_under_another_parent_keeps_the_recorded_lineage():
    first_parent = generator_version_register(name="parent-a", backend="procedural")
    other_parent = generator_version_register(name="parent-b", backend="procedural")
    child = generator_version_register(name="child", backend="procedural", parent=first_parent)

    again = generator_version_register(name="child", backend="procedural", parent=other_parent)

    assert again.pk == child.pk and again.parent_id == first_parent.pk
