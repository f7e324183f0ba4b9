from django.contrib import admin

from generation.admin import TrackAdmin
from generation.models import Track
from reward.models import Evaluation, FineTuneRun, RewardModel, TrackReward


@admin.register(RewardModel)
class RewardModelAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "method", "status", "step", "steps", "created_at")
    list_filter = ("kind", "method", "status")
    search_fields = ("name",)
    readonly_fields = (
        "status", "step", "phase", "curve", "metrics", "data_summary", "checkpoint", "error",
        "heartbeat_at", "worker", "attempts", "resumed_from_steps", "started_at", "finished_at",
    )  # fmt: skip


@admin.register(TrackReward)
class TrackRewardAdmin(admin.ModelAdmin):
    list_display = ("track", "reward_model", "value", "created_at")
    list_filter = ("reward_model",)
    raw_id_fields = ("track",)


@admin.register(FineTuneRun)
class FineTuneRunAdmin(admin.ModelAdmin):
    list_display = ("name", "base_version", "algorithm", "preset", "status", "step", "steps",
                    "result_version", "created_at")  # fmt: skip
    list_filter = ("algorithm", "preset", "status")
    search_fields = ("name",)
    readonly_fields = (
        "status", "step", "phase", "stage", "curve", "metrics", "warnings", "samples",
        "data_summary", "error", "heartbeat_at", "worker", "attempts", "resumed_from_steps",
        "result_version", "started_at", "finished_at",
    )  # fmt: skip


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "campaign", "fine_tune_run", "computed_at")
    readonly_fields = ("report", "computed_at")


class TrackRewardInline(admin.TabularInline):
    model = TrackReward
    fields = ("reward_model", "value", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "Reward values"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


# A clip's rewards belong to reward, which knows clips; generation's admin knows no rewards,
# so the clip's page is extended here (this app comes after generation in INSTALLED_APPS).
admin.site.unregister(Track)


@admin.register(Track)
class TrackWithRewardsAdmin(TrackAdmin):
    inlines = [*TrackAdmin.inlines, TrackRewardInline]
    actions = [*TrackAdmin.actions, "score_with_reward_models"]

    @admin.action(description="Score with every usable reward model (on the train queue)")
    def score_with_reward_models(self, request, queryset) -> None:
        from reward.tasks import score_tracks

        track_ids = list(queryset.values_list("pk", flat=True))
        usable = [model for model in RewardModel.objects.all() if model.usable]
        for reward_model in usable:
            score_tracks.delay(reward_model.pk, track_ids)
        self.message_user(
            request, f"Queued scoring of {len(track_ids)} tracks by {len(usable)} reward models."
        )
