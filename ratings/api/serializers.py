from rest_framework import serializers

from ratings.models import Campaign
from ratings.services import Lease

_MAX_LISTEN_MS = 6 * 60 * 60 * 1000


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
    return {
        "assignment": lease.assignment_id,
        "campaign": campaign.pk,
        "protocol": campaign.protocol,
        # Both clips answer the same prompt, so showing it reveals nothing about versions.
        "prompt": lease.prompt_text,
        "expires_at": lease.expires_at.isoformat(),
        "clips": clips,
    }
