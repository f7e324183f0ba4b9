"""Rows of the researcher API. These reveal which generator version made each clip, so they
must never be served to raters; raters themselves appear only under a keyed pseudonym."""

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from generation.models import GeneratorVersion, Prompt, Track
from ratings.dataset import DataFilters
from ratings.models import Campaign, DatasetSnapshot, MosRating, Vote
from ratings.pseudonyms import rater_pseudonym
from ratings.selectors import snapshot_data_files, snapshot_file_url
from ratings.snapshots import FORMATS
from ratings.vote_fields import vote_layout


class VersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = GeneratorVersion
        fields = ["id", "name"]
        read_only_fields = fields


class PromptRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Prompt
        fields = ["id", "text"]
        read_only_fields = fields


@extend_schema_field(OpenApiTypes.STR)
class PseudonymField(serializers.Field):
    """The rater as a 16-hex-character keyed hash of its id: stable across requests, and the
    same as in snapshots built with stable rater ids, so the two can be joined."""

    def __init__(self, **kwargs) -> None:
        super().__init__(source="rater_id", read_only=True, **kwargs)

    def to_representation(self, value: int) -> str:
        return rater_pseudonym(value)


# The API's names for the shared vote fields (ratings.vote_fields) where they differ: DRF's
# names for related rows, and one nested prompt object for the prompt's id and text.
VOTE_API_NAMES = {
    "vote_id": "id", "campaign_id": "campaign", "prompt_id": "prompt", "prompt_text": "prompt",
    "track_a_id": "track_a", "track_b_id": "track_b",
}  # fmt: skip


def _vote_api_fields() -> list[str]:
    """The shared vote fields under the API's names, with the API's own: the pair and the
    rater's pseudonym."""
    names = vote_layout(
        lambda field: VOTE_API_NAMES.get(field.name, field.name),
        after={"protocol": ["pair"], "score_b": ["rater"]},
    )
    return list(dict.fromkeys(names))


class ResearchVoteSerializer(serializers.ModelSerializer):
    protocol = serializers.CharField(source="campaign.protocol", read_only=True)
    prompt = PromptRefSerializer(source="pair.prompt", read_only=True)
    track_a = serializers.IntegerField(source="pair.track_a_id", read_only=True)
    track_b = serializers.IntegerField(source="pair.track_b_id", read_only=True, allow_null=True)
    version_a = VersionSerializer(source="pair.track_a.generator_version", read_only=True)
    version_b = VersionSerializer(
        source="pair.track_b.generator_version", read_only=True, allow_null=True
    )
    score_a = serializers.SerializerMethodField(help_text="1-5 score of track A, if asked.")
    score_b = serializers.SerializerMethodField(help_text="1-5 score of track B, if asked.")
    rater = PseudonymField()

    class Meta:
        model = Vote
        fields = _vote_api_fields()
        read_only_fields = fields

    def _score(self, vote: Vote, track_id: int | None) -> int | None:
        # Reads the prefetched ratings: filtering vote.ratings would query once per row.
        return next((r.score for r in vote.ratings.all() if r.track_id == track_id), None)

    def get_score_a(self, vote: Vote) -> int | None:
        return self._score(vote, vote.pair.track_a_id)

    def get_score_b(self, vote: Vote) -> int | None:
        return self._score(vote, vote.pair.track_b_id) if vote.pair.track_b_id else None


class ResearchRatingSerializer(serializers.ModelSerializer):
    protocol = serializers.CharField(source="campaign.protocol", read_only=True)
    prompt = PromptRefSerializer(source="track.prompt", read_only=True)
    version = VersionSerializer(source="track.generator_version", read_only=True)
    rater = PseudonymField()

    class Meta:
        model = MosRating
        fields = [
            "id", "vote", "campaign", "protocol", "track", "prompt", "version", "score",
            "listen_ms", "rater", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class ResearchPromptSerializer(serializers.ModelSerializer):
    campaigns = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = Prompt
        fields = ["id", "text", "attributes", "tags", "source", "campaigns", "created_at"]
        read_only_fields = fields


class ResearchTrackSerializer(serializers.ModelSerializer):
    generator_version = VersionSerializer(read_only=True)
    audio_url = serializers.SerializerMethodField(help_text="The clip's audio (token or session).")

    class Meta:
        model = Track
        fields = [
            "id", "public_id", "prompt", "generator_version", "seed", "duration_seconds",
            "sample_rate", "mime_type", "caption", "attributes", "audio_url", "created_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_audio_url(self, track: Track) -> str:
        return reverse("clip", args=[track.public_id])


class ResearchCampaignSerializer(serializers.ModelSerializer):
    version_a = VersionSerializer(read_only=True)
    version_b = VersionSerializer(read_only=True, allow_null=True)
    item_count = serializers.IntegerField(read_only=True)
    vote_count = serializers.IntegerField(read_only=True)
    rating_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Campaign
        fields = [
            "id", "name", "purpose", "protocol", "status", "instructions", "version_a",
            "version_b", "votes_per_item", "min_listen_seconds", "listen_to_end",
            "clip_seconds", "generation_total", "generation_done", "item_count", "vote_count",
            "rating_count", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class SnapshotCreateSerializer(serializers.Serializer):
    """A snapshot request: DataFilters' fields plus the output options. The service checks
    what needs the database (ids that exist, since before until)."""

    campaign_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), default=list)
    protocols = serializers.ListField(
        child=serializers.ChoiceField(choices=Campaign.Protocol.choices), default=list
    )
    version_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), default=list)
    prompt_sources = serializers.ListField(
        child=serializers.ChoiceField(choices=Prompt.Source.choices),
        default=list,
        help_text="Prompt sources to include (e.g. leave out playground prompts); empty: all.",
    )
    since = serializers.DateTimeField(required=False, allow_null=True, default=None)
    until = serializers.DateTimeField(required=False, allow_null=True, default=None)
    min_rater_reliability = serializers.FloatField(
        min_value=0, max_value=1, required=False, allow_null=True, default=None
    )
    min_gold_accuracy = serializers.FloatField(
        min_value=0, max_value=1, required=False, allow_null=True, default=None
    )
    vote_statuses = serializers.ListField(
        child=serializers.ChoiceField(choices=Vote.Status.choices),
        default=[Vote.Status.COUNTED],
        min_length=1,
        help_text="Which votes: counted only by default; flagged and rejected ones are kept.",
    )
    include_ties = serializers.BooleanField(default=True)
    include_both_bad = serializers.BooleanField(default=True)
    formats = serializers.ListField(
        child=serializers.ChoiceField(choices=FORMATS), min_length=1, max_length=len(FORMATS)
    )
    include_audio = serializers.BooleanField(default=False)
    stable_rater_ids = serializers.BooleanField(
        default=False,
        help_text="Use this installation's fixed pseudonyms (as the API shows) instead of "
        "ones new to this snapshot.",
    )
    name = serializers.CharField(max_length=200, default="", allow_blank=True)

    def to_filters(self) -> DataFilters:
        data = self.validated_data
        return DataFilters(
            campaign_ids=tuple(data["campaign_ids"]),
            protocols=tuple(data["protocols"]),
            version_ids=tuple(data["version_ids"]),
            prompt_sources=tuple(data["prompt_sources"]),
            since=data["since"],
            until=data["until"],
            min_rater_reliability=data["min_rater_reliability"],
            min_gold_accuracy=data["min_gold_accuracy"],
            vote_statuses=tuple(data["vote_statuses"]),
            include_ties=data["include_ties"],
            include_both_bad=data["include_both_bad"],
        )


class SnapshotSerializer(serializers.ModelSerializer):
    sha256 = serializers.SerializerMethodField(help_text="Hash over every file's hash.")
    downloads = serializers.SerializerMethodField(
        help_text="The data files and the manifest; audio files are listed in the manifest."
    )

    class Meta:
        model = DatasetSnapshot
        fields = [
            "id", "name", "status", "error", "filters", "formats", "include_audio",
            "stable_rater_ids", "row_counts", "sha256", "downloads", "created_at", "started_at",
            "finished_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_sha256(self, snapshot: DatasetSnapshot) -> str | None:
        return (snapshot.manifest or {}).get("sha256")

    @extend_schema_field(
        inline_serializer(
            "SnapshotDownload",
            {"path": serializers.CharField(), "url": serializers.CharField()},
            many=True,
        )
    )
    def get_downloads(self, snapshot: DatasetSnapshot) -> list[dict[str, str]]:
        return [
            {"path": path, "url": snapshot_file_url(snapshot.pk, path)}
            for path in snapshot_data_files(snapshot)
        ]


class SnapshotDetailSerializer(SnapshotSerializer):
    class Meta(SnapshotSerializer.Meta):
        fields = [*SnapshotSerializer.Meta.fields, "manifest"]
        read_only_fields = fields
