from django.contrib import admin

from generation.models import GeneratorVersion, Track


@admin.register(GeneratorVersion)
class GeneratorVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "backend", "status", "parent", "created_at")
    list_filter = ("backend", "status")


@admin.register(Track)
class TrackAdmin(admin.ModelAdmin):
    list_display = ("public_id", "prompt", "generator_version", "seed", "duration_seconds")
    list_filter = ("generator_version",)
    search_fields = ("caption", "prompt__text")
    raw_id_fields = ("prompt",)
    readonly_fields = ("public_id", "events", "attributes")
