"""The researcher API: read-only votes, ratings, prompts, tracks and campaigns (researcher and
above). Rows name generator versions, so no rater may reach them; raters appear only as
pseudonyms."""

from django.http import FileResponse, Http404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from ratings import selectors, snapshots
from ratings.api import research_filters as filters
from ratings.api import research_serializers as serializers
from ratings.models import DatasetSnapshot
from ratings.permissions import IsResearcher


class IdCursorPagination(CursorPagination):
    """Cursor pages in id order: stable while new votes arrive, and a client can resume from
    the last cursor it saw. No COUNT(*) over millions of votes per page either."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class ResearchViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [IsResearcher]
    pagination_class = IdCursorPagination
    filter_backends = [DjangoFilterBackend]


@extend_schema_view(
    list=extend_schema(summary="List votes", tags=["research"]),
    retrieve=extend_schema(summary="One vote", tags=["research"]),
)
class VoteViewSet(ResearchViewSet):
    """Votes with both sides' generator versions, any 1-5 scores and a rater pseudonym."""

    serializer_class = serializers.ResearchVoteSerializer
    filterset_class = filters.VoteFilter
    queryset = selectors.research_votes()


@extend_schema_view(
    list=extend_schema(summary="List 1-5 ratings", tags=["research"]),
    retrieve=extend_schema(summary="One 1-5 rating", tags=["research"]),
)
class RatingViewSet(ResearchViewSet):
    """1-5 ratings of single clips (side-by-side and MOS protocols)."""

    serializer_class = serializers.ResearchRatingSerializer
    filterset_class = filters.RatingFilter
    queryset = selectors.research_ratings()


@extend_schema_view(
    list=extend_schema(summary="List prompts", tags=["research"]),
    retrieve=extend_schema(summary="One prompt", tags=["research"]),
)
class PromptViewSet(ResearchViewSet):
    serializer_class = serializers.ResearchPromptSerializer
    filterset_class = filters.PromptFilter
    queryset = selectors.research_prompts()


@extend_schema_view(
    list=extend_schema(summary="List tracks", tags=["research"]),
    retrieve=extend_schema(summary="One track", tags=["research"]),
)
class TrackViewSet(ResearchViewSet):
    """Generated clips with their generator version; the audio is at `audio_url`."""

    serializer_class = serializers.ResearchTrackSerializer
    filterset_class = filters.TrackFilter
    queryset = selectors.research_tracks()


@extend_schema_view(
    list=extend_schema(summary="List campaigns", tags=["research"]),
    retrieve=extend_schema(summary="One campaign", tags=["research"]),
)
class CampaignViewSet(ResearchViewSet):
    """Campaigns with their versions and counts of items, votes and ratings."""

    serializer_class = serializers.ResearchCampaignSerializer
    filterset_class = filters.CampaignFilter
    queryset = selectors.research_campaigns()


@extend_schema_view(
    list=extend_schema(summary="List dataset snapshots", tags=["research"]),
    retrieve=extend_schema(summary="One dataset snapshot with its manifest", tags=["research"]),
    create=extend_schema(
        summary="Request a dataset snapshot",
        tags=["research"],
        request=serializers.SnapshotCreateSerializer,
        responses={201: serializers.SnapshotDetailSerializer},
        description="A worker builds it; poll the snapshot until its status is finished.",
    ),
)
class SnapshotViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Dataset snapshots: files of votes, ratings and tracks written once by a worker, with a
    manifest of hashes, so a model trained on one can be traced to its exact rows."""

    permission_classes = [IsResearcher]
    pagination_class = IdCursorPagination
    queryset = DatasetSnapshot.objects.all()

    def get_serializer_class(self) -> type:
        if self.action == "list":
            return serializers.SnapshotSerializer
        return serializers.SnapshotDetailSerializer

    def create(self, request: Request) -> Response:
        body = serializers.SnapshotCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            snapshot = snapshots.snapshot_create(
                filters=body.to_filters(), formats=data["formats"],
                include_audio=data["include_audio"], stable_rater_ids=data["stable_rater_ids"],
                name=data["name"], created_by=request.user,
            )  # fmt: skip
        except snapshots.SnapshotError as error:
            return Response(
                {"error": "invalid", "detail": str(error)}, status=status.HTTP_400_BAD_REQUEST
            )
        body = serializers.SnapshotDetailSerializer(snapshot)
        return Response(body.data, status=status.HTTP_201_CREATED)


class SnapshotFileView(GenericAPIView):
    """GET one file of a finished snapshot as a download (researcher and above)."""

    permission_classes = [IsResearcher]
    queryset = DatasetSnapshot.objects.all()

    @extend_schema(
        summary="Download one file of a finished snapshot",
        tags=["research"],
        parameters=[
            OpenApiParameter(
                "relative", str, OpenApiParameter.PATH,
                description="A path the manifest lists, e.g. votes.parquet or audio/12.ogg.",
            ),
        ],
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            404: OpenApiResponse(description="Not a file of a finished snapshot."),
        },
    )  # fmt: skip
    def get(self, request: Request, pk: int, relative: str) -> FileResponse:
        snapshot = self.get_object()
        try:
            file = snapshots.snapshot_file(snapshot, relative)
        except snapshots.SnapshotError as error:
            raise Http404(str(error)) from error
        # Streamed from the snapshots storage (a folder or the bucket) in blocks: a snapshot's
        # tables can be far larger than memory.
        name = f"snapshot-{snapshot.pk}-{relative.replace('/', '-')}"
        return FileResponse(file, as_attachment=True, filename=name)
