from django.conf import settings
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from generation.models import Track
from ratings import services
from ratings.api.serializers import VoteSerializer, lease_payload
from ratings.errors import CampaignNotOpen
from ratings.models import Campaign
from ratings.permissions import IsRater


def _clip_url(public_id) -> str:
    return reverse("clip", args=[public_id])


class ClipView(APIView):
    """GET one clip's audio under its opaque id (roles: rater and above). An API view, so a
    script can fetch the clip URLs the lease returns with the same token it leased with."""

    permission_classes = [IsRater]

    def get(self, request: Request, public_id) -> FileResponse:
        track = get_object_or_404(Track.objects.only("audio", "mime_type"), public_id=public_id)
        response = FileResponse(track.audio.open("rb"), content_type=track.mime_type)
        # Nothing in the headers may tell two clips' origins apart: no file name, no date.
        for header in ("Content-Disposition", "Last-Modified"):
            if header in response:
                del response[header]
        response["Cache-Control"] = "private, max-age=86400"
        return response


class NextAssignmentView(APIView):
    """GET ?campaign=<id>: lease the calling rater's next pair (roles: rater and above)."""

    permission_classes = [IsRater]

    def get(self, request: Request) -> Response:
        raw_campaign = request.query_params.get("campaign", "")
        if not raw_campaign.isdigit():
            raise ValidationError({"campaign": "Give the campaign id as ?campaign=<number>."})
        campaign = get_object_or_404(Campaign, pk=int(raw_campaign))
        if campaign.status == Campaign.Status.GENERATING:
            raise CampaignNotOpen("This campaign's clips are still being generated.")
        rater = services.rater_for_user(user=request.user)
        lease = services.assignment_lease_next(rater=rater, campaign=campaign)
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(lease_payload(lease, campaign, _clip_url))


class VoteView(APIView):
    """POST a vote on a leased pair (roles: rater and above)."""

    permission_classes = [IsRater]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "votes"

    def post(self, request: Request) -> Response:
        if len(request.body) > settings.RATING_MAX_VOTE_BODY_BYTES:
            raise ValidationError({"body": "The vote is larger than any valid vote."})
        serializer = VoteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        vote_input = services.VoteInput(
            assignment_id=data["assignment"],
            idempotency_key=data["idempotency_key"],
            listen_ms=data["listen_ms"],
            choice=data.get("choice"),
            scores=data.get("scores"),
        )
        rater = services.rater_for_user(user=request.user)
        vote, created = services.vote_record(rater=rater, vote_input=vote_input)
        return Response(
            {"vote": vote.pk, "assignment": vote.assignment_id, "created": created},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
