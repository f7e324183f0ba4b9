from django.conf import settings
from django.shortcuts import get_object_or_404
from django.urls import reverse
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from ratings import services
from ratings.api.serializers import VoteSerializer, assignment_payload
from ratings.errors import CampaignNotOpen
from ratings.models import Campaign
from ratings.permissions import IsRater


def _clip_url(public_id) -> str:
    return reverse("clip", args=[public_id])


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
        assignment = services.assignment_lease_next(rater=rater, campaign=campaign)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(assignment_payload(assignment, campaign, _clip_url))


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
