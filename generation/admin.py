from django.contrib import admin
from django.utils.html import format_html, format_html_join

from generation.models import GeneratorVersion, PretrainingRun, Prompt, Track


class ChildVersionInline(admin.TabularInline):
    model = GeneratorVersion
    fk_name = "parent"
    fields = ("name", "backend", "status", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "Versions derived from this one"


@admin.register(GeneratorVersion)
class GeneratorVersionAdmin(admin.ModelAdmin):
    list_display = (
        "name", "backend", "status", "arena_enabled", "lineage_path", "pretraining_run",
        "created_at",
    )  # fmt: skip
    list_filter = ("backend", "status")
    search_fields = ("name",)
    readonly_fields = ("lineage_path", "held_out_evaluation", "metrics", "created_at")
    inlines = [ChildVersionInline]

    @admin.display(description="Lineage (newest first)")
    def lineage_path(self, version: GeneratorVersion) -> str:
        return " ← ".join(v.name for v in version.lineage())

    @admin.display(description="Held-out evaluation")
    def held_out_evaluation(self, version: GeneratorVersion) -> str:
        """The pretraining evaluation on prompts never trained on, as a table."""
        evaluation = version.metrics.get("eval")
        if not evaluation:
            return "No held-out evaluation recorded."
        rows = [("prompts (held out)", evaluation.get("prompts"))]
        rows.append(("mean attribute fit", evaluation.get("mean_fit")))
        rows += [(f"fit: {k}", v) for k, v in evaluation.get("fit", {}).items()]
        rows.append(("well-formed share", evaluation.get("well_formed")))
        rows += [(f"plan fit: {k}", v) for k, v in evaluation.get("plan_fit", {}).items()]
        agreement = evaluation.get("plan_agreement", {})
        rows += [(f"plays its plan: {k}", v) for k, v in agreement.items()]
        rows.append(("token loss", evaluation.get("token_loss")))
        body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        return format_html("<table>{}</table>", body)


@admin.register(PretrainingRun)
class PretrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "size", "status", "step", "steps", "created_at", "finished_at")
    list_filter = ("status", "size")
    readonly_fields = ("step", "loss_curve", "metrics", "error", "created_at", "finished_at")


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("text", "source", "created_at")
    list_filter = ("source",)
    search_fields = ("text",)


@admin.register(Track)
class TrackAdmin(admin.ModelAdmin):
    list_display = ("public_id", "prompt", "generator_version", "seed", "duration_seconds")
    list_filter = ("generator_version",)
    search_fields = ("caption", "prompt__text")
    raw_id_fields = ("prompt",)
    readonly_fields = ("public_id", "events", "attributes")
    # reward/admin.py adds the clip's reward values and the action that scores clips
