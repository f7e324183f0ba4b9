"""Prompts moved from ratings to generation without moving a row: a database migrated before
the move keeps its prompts, the foreign keys that point at them, and the prompts' content
type (so admin history and permissions carry over)."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

CONTENT_TYPES = ("contenttypes", "0002_remove_content_type_name")
BEFORE = [
    CONTENT_TYPES,
    ("generation", "0005_pretraining_settings"),
    ("ratings", "0009_campaign_crowd_study_ids"),
]
AFTER = [
    CONTENT_TYPES,
    ("generation", "0006_prompt_from_ratings"),
    ("ratings", "0010_prompt_moves_to_generation"),
]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_prompts_keep_their_rows_keys_and_content_type_across_the_move():
    old = migrate(BEFORE)
    content_types = old.get_model("contenttypes", "ContentType")
    content_types.objects.filter(model="prompt").delete()
    content_type = content_types.objects.create(app_label="ratings", model="prompt")
    prompt = old.get_model("ratings", "Prompt").objects.create(text="calm harp", source="user")
    version = old.get_model("generation", "GeneratorVersion").objects.create(
        name="v", backend="procedural"
    )
    track = old.get_model("generation", "Track").objects.create(
        prompt=prompt, generator_version=version, seed=1, duration_seconds=1.0, sample_rate=16000
    )

    new = migrate(AFTER)

    moved = new.get_model("generation", "Prompt").objects.get(pk=prompt.pk)
    assert (moved.text, moved.source) == ("calm harp", "user")
    assert new.get_model("generation", "Track").objects.get(pk=track.pk).prompt_id == prompt.pk
    renamed = new.get_model("contenttypes", "ContentType").objects.get(pk=content_type.pk)
    assert (renamed.app_label, renamed.model) == ("generation", "prompt")
    with pytest.raises(LookupError):
        new.get_model("ratings", "Prompt")
