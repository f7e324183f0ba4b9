from django.contrib import admin

from ratings.models import Assignment, Campaign, MosRating, Pair, Prompt, Rater, Vote


@admin.register(Rater)
class RaterAdmin(admin.ModelAdmin):
    list_display = ("user", "role", "source", "external_id", "created_at")
    list_filter = ("role", "source")
    search_fields = ("user__username", "external_id")


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("text", "source", "created_at")
    list_filter = ("source",)
    search_fields = ("text",)


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ("name", "purpose", "protocol", "status", "generation_done", "generation_total")
    list_filter = ("purpose", "protocol", "status")
    filter_horizontal = ("prompts",)
    readonly_fields = ("generation_done", "generation_total", "generation_error", "created_at")


@admin.register(Pair)
class PairAdmin(admin.ModelAdmin):
    list_display = ("id", "campaign", "prompt", "vote_count", "slots_taken", "votes_wanted")
    list_filter = ("campaign",)
    raw_id_fields = ("prompt", "track_a", "track_b")


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
    list_display = ("id", "campaign", "pair", "rater", "choice", "listen_ms_a", "listen_ms_b")
    list_filter = ("campaign", "choice")
    raw_id_fields = ("assignment", "pair", "rater")
    inlines = [MosRatingInline]


@admin.register(MosRating)
class MosRatingAdmin(admin.ModelAdmin):
    list_display = ("id", "campaign", "track", "rater", "score", "listen_ms")
    list_filter = ("campaign", "score")
    raw_id_fields = ("vote", "track", "rater")
