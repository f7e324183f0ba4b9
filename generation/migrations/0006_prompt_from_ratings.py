"""Prompts move from ratings to generation, which generates for them (design.md §1: ratings
depends on generation, never the reverse). State only: the table keeps its name
(`ratings_prompt`) and every foreign key its column, so no row moves."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("generation", "0005_pretraining_settings"),
        ("ratings", "0009_campaign_crowd_study_ids"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Prompt",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("text", models.CharField(max_length=500)),
                        ("attributes", models.JSONField(blank=True, default=dict)),
                        ("tags", models.JSONField(blank=True, default=list)),
                        (
                            "source",
                            models.CharField(
                                choices=[
                                    ("curated", "Curated"),
                                    ("user", "User"),
                                    ("playground", "Playground"),
                                ],
                                default="curated",
                                max_length=16,
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                    ],
                    options={
                        "db_table": "ratings_prompt",
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("text", ""), _negated=True),
                                name="prompt_text_not_empty",
                            )
                        ],
                    },
                ),
                migrations.AlterField(
                    model_name="track",
                    name="prompt",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="tracks",
                        to="generation.prompt",
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
