"""Prompts now belong to generation (generation 0006 takes over the `ratings_prompt` table):
ratings' foreign keys point at generation.Prompt and ratings forgets its own model. State
only, so no row moves; the content type is renamed, so admin history and permissions
granted on prompts carry over."""

import django.db.models.deletion
from django.db import migrations, models


def rename_content_type(apps, schema_editor, old: str, new: str) -> None:
    content_type = apps.get_model("contenttypes", "ContentType")
    if not content_type.objects.filter(app_label=new, model="prompt").exists():
        content_type.objects.filter(app_label=old, model="prompt").update(app_label=new)


def forwards(apps, schema_editor) -> None:
    rename_content_type(apps, schema_editor, "ratings", "generation")


def backwards(apps, schema_editor) -> None:
    rename_content_type(apps, schema_editor, "generation", "ratings")


def prompt_key(related_name: str) -> models.ForeignKey:
    return models.ForeignKey(
        on_delete=django.db.models.deletion.PROTECT,
        related_name=related_name,
        to="generation.prompt",
    )


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("generation", "0006_prompt_from_ratings"),
        ("ratings", "0009_campaign_crowd_study_ids"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="campaign",
                    name="prompts",
                    field=models.ManyToManyField(
                        related_name="campaigns", to="generation.prompt"
                    ),
                ),
                migrations.AlterField(model_name="pair", name="prompt", field=prompt_key("+")),
                migrations.AlterField(
                    model_name="playgroundrequest", name="prompt", field=prompt_key("+")
                ),
                migrations.DeleteModel(name="Prompt"),
            ],
            database_operations=[],
        ),
        migrations.RunPython(forwards, backwards),
    ]
