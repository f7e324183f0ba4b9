from django.contrib import admin

from reward.models import RewardModel, TrackReward


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
