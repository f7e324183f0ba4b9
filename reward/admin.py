from django.contrib import admin

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
