from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from ratings import campaigns, quality
from ratings.models import (
    Assignment,
    Campaign,
    MosRating,
    Pair,
    PlaygroundRequest,
    PromptRejection,
    Qualification,
    Rater,
    RaterSession,
    Vote,
)


@admin.register(Rater)
class RaterAdmin(admin.ModelAdmin):
    list_display = (
        "user", "role", "source", "external_id", "gold_accuracy", "majority_agreement",
        "score_correlation", "created_at",
    )  # fmt: skip
    list_filter = ("role", "source")
    search_fields = ("user__username", "external_id")
    readonly_fields = (
        "gold_accuracy", "majority_agreement", "score_correlation", "reliability_updated_at",
    )  # fmt: skip


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = (
        "name", "purpose", "protocol", "status", "quality_policy", "pair_selection",
        "generation_done", "generation_total",
    )  # fmt: skip
    list_filter = ("purpose", "protocol", "status", "quality_policy", "pair_selection")
    filter_horizontal = ("prompts",)
    readonly_fields = (
        "generation_done", "generation_total", "generation_error", "generation_heartbeat_at",
        "created_at",
    )  # fmt: skip
    actions = ["requeue_generation"]

    @admin.action(description="Re-queue the generation of what the selected campaigns lack")
    def requeue_generation(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        queued = campaigns.campaigns_requeue(queryset)
        self.message_user(
            request,
            f"{queued} generating or failed campaign(s) queued again; others left as they are.",
            messages.SUCCESS,
        )


def _mark_action(kind: str, expected: str, description: str):
    @admin.action(description=description)
    def action(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
        changed = quality.pairs_mark(pairs=queryset, kind=kind, expected_choice=expected)
        modeladmin.message_user(request, f"{changed} item(s) changed.", messages.SUCCESS)

    action.__name__ = f"mark_{kind}_{expected or 'none'}"
    return action


@admin.register(Pair)
class PairAdmin(admin.ModelAdmin):
    list_display = (
        "id", "campaign", "prompt", "kind", "expected_choice", "vote_count", "slots_taken",
        "votes_wanted",
    )  # fmt: skip
    list_filter = ("campaign", "kind")
    raw_id_fields = ("prompt", "track_a", "track_b")
    actions = [
        _mark_action(Pair.Kind.GOLD, "a", "Mark as gold: track A is the better one"),
        _mark_action(Pair.Kind.GOLD, "b", "Mark as gold: track B is the better one"),
        _mark_action(Pair.Kind.TRAP, "a", "Mark as trap: the right answer is track A"),
        _mark_action(Pair.Kind.TRAP, "b", "Mark as trap: the right answer is track B"),
        _mark_action(Pair.Kind.QUALIFICATION, "a", "Mark as qualification: answer track A"),
        _mark_action(Pair.Kind.QUALIFICATION, "b", "Mark as qualification: answer track B"),
        _mark_action(Pair.Kind.REGULAR, "", "Make a rating item again (no known answer)"),
    ]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("id", "pair", "rater", "status", "left_is_a", "served_at", "expires_at")
    list_filter = ("status", "campaign")
    raw_id_fields = ("pair", "rater")


class MosRatingInline(admin.TabularInline):
    model = MosRating
    extra = 0
    raw_id_fields = ("track",)
    fields = ("track", "score", "listen_ms")


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
    list_display = (
        "id", "campaign", "pair", "rater", "choice", "status", "check_passed", "listen_ms_a",
        "listen_ms_b",
    )  # fmt: skip
    list_filter = ("campaign", "status", "choice", "pair__kind")
    raw_id_fields = ("assignment", "pair", "rater", "session")
    readonly_fields = ("status", "flags", "check_passed")
    inlines = [MosRatingInline]
    actions = ["clear_votes", "reject_votes"]

    @admin.action(description="Clear: count the selected flagged or rejected votes")
    def clear_votes(self, request: HttpRequest, queryset: QuerySet[Vote]) -> None:
        cleared = quality.votes_clear(votes=queryset)
        self.message_user(request, f"{cleared} vote(s) now counted.", messages.SUCCESS)

    @admin.action(description="Reject the selected votes (kept, never counted)")
    def reject_votes(self, request: HttpRequest, queryset: QuerySet[Vote]) -> None:
        rejected = quality.votes_reject(votes=queryset, reason="admin")
        self.message_user(request, f"{rejected} vote(s) rejected.", messages.SUCCESS)


@admin.register(MosRating)
class MosRatingAdmin(admin.ModelAdmin):
    list_display = ("id", "campaign", "track", "rater", "score", "listen_ms")
    list_filter = ("campaign", "score")
    raw_id_fields = ("vote", "track", "rater")


@admin.register(RaterSession)
class RaterSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "rater", "campaign", "source", "status", "failed_checks", "started_at")
    list_filter = ("status", "source", "campaign")
    raw_id_fields = ("rater",)
    readonly_fields = ("failed_checks", "rejection_reasons")
    actions = ["reject_sessions"]

    @admin.action(description="Reject the selected sessions and all their votes")
    def reject_sessions(self, request: HttpRequest, queryset: QuerySet[RaterSession]) -> None:
        votes = sum(quality.session_reject(session=s, reasons=["admin"]) for s in queryset)
        self.message_user(request, f"{votes} vote(s) rejected.", messages.SUCCESS)


@admin.register(Qualification)
class QualificationAdmin(admin.ModelAdmin):
    list_display = ("id", "rater", "campaign", "passed", "correct", "total", "expires_at")
    list_filter = ("passed", "campaign")
    raw_id_fields = ("rater",)


@admin.register(PlaygroundRequest)
class PlaygroundRequestAdmin(admin.ModelAdmin):
    list_display = ("id", "rater", "prompt", "mode", "status", "clips_done", "created_at")
    list_filter = ("status", "mode")
    raw_id_fields = ("rater", "prompt", "pair", "assignment")
    readonly_fields = ("created_at", "started_at", "finished_at")


@admin.register(PromptRejection)
class PromptRejectionAdmin(admin.ModelAdmin):
    """The playground's moderation log: read-only."""

    list_display = ("created_at", "reason", "text", "rater")
    list_filter = ("reason",)
    search_fields = ("text",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
