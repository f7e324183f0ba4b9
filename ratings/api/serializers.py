from rest_framework import serializers

from ratings.leasing import Lease
from ratings.models import Campaign

_MAX_LISTEN_MS = 6 * 60 * 60 * 1000
MAX_COMMENT_CHARS = 2000  # Vote.comment's max_length
# What a comment may add to a vote's body: browsers send JSON as raw UTF-8, which is at most
# 3 bytes per character outside the astral planes (CJK included).
MAX_COMMENT_BODY_BYTES = 3 * MAX_COMMENT_CHARS


class VoteSerializer(serializers.Serializer):
    """A vote in screen terms: slot A is the left clip and slot B the right one."""

    assignment = serializers.IntegerField(min_value=1)
    idempotency_key = serializers.UUIDField()
    choice = serializers.ChoiceField(
        choices=["A", "B", "tie", "both_bad"], required=False, allow_null=True
    )
    scores = serializers.DictField(
        child=serializers.IntegerField(min_value=1, max_value=5), required=False, allow_null=True
    )
    listen_ms = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=_MAX_LISTEN_MS)
    )
    comment = serializers.CharField(
        required=False, allow_blank=True, max_length=MAX_COMMENT_CHARS, default=""
    )

    def validate(self, attrs: dict) -> dict:
        for field in ("scores", "listen_ms"):
            unknown = set(attrs.get(field) or {}) - {"A", "B"}
            if unknown:
                raise serializers.ValidationError(
                    {field: f"Unknown slot(s) {sorted(unknown)}; use A and B."}
                )
        return attrs


def lease_payload(lease: Lease, campaign: Campaign, clip_url) -> dict:
    """What the rater's page needs, and nothing that tells versions apart: opaque clip URLs,
    the shown order, durations (equal within a pair by construction) and listening needs."""
    clips = [
        {
            "slot": slot,
            "url": clip_url(clip.public_id),
            "duration_ms": int(clip.duration_seconds * 1000),
            "required_listen_ms": campaign.required_listen_ms(clip.duration_seconds),
        }
        for slot, clip in zip("AB", lease.shown_clips(), strict=False)
    ]
    payload = {
        "assignment": lease.assignment_id,
        "campaign": campaign.pk,
        "protocol": campaign.protocol,
        # Both clips answer the same prompt, so showing it reveals nothing about versions.
        # For a qualification item the prompt is its question ("Which clip has drums?").
        "prompt": lease.prompt_text,
        "expires_at": lease.expires_at.isoformat(),
        "clips": clips,
    }
    if lease.qualification:
        # The listening check before real items, which the page may announce. Gold and trap
        # items are never marked: they must look exactly like rating items.
        payload["phase"] = "qualification"
    return payload
