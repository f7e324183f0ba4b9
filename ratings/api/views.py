from django.conf import settings
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import fields, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from generation.models import Track
from ratings import abuse, leasing, recruitment, services, voting
from ratings.api.serializers import MAX_COMMENT_BODY_BYTES, VoteSerializer, lease_payload
from ratings.errors import CampaignNotOpen
from ratings.models import Campaign, Rater
from ratings.permissions import IsRater


def _clip_url(public_id) -> str:
    return reverse("clip", args=[public_id])


# Response bodies for the OpenAPI schema: these views build their payloads by hand.
LEASE_SCHEMA = inline_serializer(
    "Lease",
    {
        "assignment": fields.IntegerField(),
        "campaign": fields.IntegerField(),
        "protocol": fields.ChoiceField(choices=Campaign.Protocol.choices),
        "prompt": fields.CharField(),
        "expires_at": fields.DateTimeField(),
        "clips": inline_serializer(
            "LeaseClip",
            {
                "slot": fields.ChoiceField(choices=["A", "B"]),
                "url": fields.CharField(),
                "duration_ms": fields.IntegerField(),
                "required_listen_ms": fields.IntegerField(),
            },
            many=True,
        ),
    },
)
VOTE_RECEIPT_SCHEMA = inline_serializer(
    "VoteReceipt",
    {
        "vote": fields.IntegerField(),
        "assignment": fields.IntegerField(),
        "created": fields.BooleanField(),
    },
)


class ClipView(APIView):
    """GET one clip's audio under its opaque id (roles: rater and above). An API view, so a
    script can fetch the clip URLs the lease returns with the same token it leased with."""

    permission_classes = [IsRater]

    @extend_schema(
        summary="A clip's audio",
        responses={
            (200, "audio/*"): OpenApiResponse(OpenApiTypes.BINARY, description="The audio bytes.")
        },
    )
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
    # Django answers HEAD with GET unless told otherwise, and a GET here takes a lease: a link
    # checker or a prefetching proxy would hold pairs that no rater is listening to.
    http_method_names = ["get", "options"]

    @extend_schema(
        summary="Lease the next pair to rate",
        parameters=[OpenApiParameter("campaign", int, required=True)],
        responses={
            200: LEASE_SCHEMA,
            204: OpenApiResponse(
                description=(
                    "Nothing more for this rater. The Rating-Done header says why (nothing_left,"
                    " quota, campaign_cap, session_complete, no_session); Rating-Session:"
                    " completed means their crowd session is over and its completion page"
                    " shows the code."
                )
            ),
        },
    )
    def get(self, request: Request) -> Response:
        raw_campaign = request.query_params.get("campaign", "")
        if not (raw_campaign.isascii() and raw_campaign.isdigit()):
            raise ValidationError({"campaign": "Give the campaign id as ?campaign=<number>."})
        campaign = get_object_or_404(Campaign, pk=int(raw_campaign))
        if campaign.status == Campaign.Status.GENERATING:
            raise CampaignNotOpen("This campaign's clips are still being generated.")
        rater = services.rater_for_user(user=request.user)
        if rater.source == Rater.Source.GUEST:
            # Anonymous playground visitors vote on their own playground pairs only.
            raise PermissionDenied("Guests of the playground cannot rate campaigns.")
        session = (
            recruitment.active_session(rater=rater, campaign=campaign)
            if recruitment.sessions_matter(rater=rater, campaign=campaign)
            else None
        )
        reason = recruitment.lease_stop_reason(rater=rater, campaign=campaign, session=session)
        if reason is None:
            lease = leasing.assignment_lease_next(rater=rater, campaign=campaign)
            if lease is not None:
                return Response(lease_payload(lease, campaign, _clip_url))
            reason = recruitment.NOTHING_LEFT
        over = recruitment.lease_end(rater=rater, campaign=campaign, session=session, reason=reason)
        headers = {"Rating-Done": reason}
        if over:
            headers[recruitment.SESSION_OVER_HEADER] = "completed"
        return Response(status=status.HTTP_204_NO_CONTENT, headers=headers)


class VoteView(APIView):
    """POST a vote on a leased pair (roles: rater and above). Rate limits per rater and per
    IP hash answer 429 before anything is stored; abuse flags are set on the stored vote."""

    permission_classes = [IsRater]

    @extend_schema(
        summary="Cast a vote on a leased pair",
        request=VoteSerializer,
        responses={201: VOTE_RECEIPT_SCHEMA, 200: VOTE_RECEIPT_SCHEMA},
        description="200 when the idempotency key was seen before: the first vote stands.",
    )
    def post(self, request: Request) -> Response:
        rater = services.rater_for_user(user=request.user)
        ip_hash = abuse.request_ip_hash(request)
        verification = abuse.vote_rate_check(rater_id=rater.pk, ip_hash=ip_hash)
        # A comment may add its own length to the size of any valid vote.
        if len(request.body) > settings.RATING_MAX_VOTE_BODY_BYTES + MAX_COMMENT_BODY_BYTES:
            raise ValidationError({"body": "The vote is larger than any valid vote."})
        serializer = VoteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        vote_input = voting.VoteInput(
            assignment_id=data["assignment"],
            idempotency_key=data["idempotency_key"],
            listen_ms=data["listen_ms"],
            choice=data.get("choice"),
            scores=data.get("scores"),
            comment=data.get("comment", ""),
            ip_hash=ip_hash,
            verification=verification,
        )
        vote, created = voting.vote_record(rater=rater, vote_input=vote_input)
        if created:
            abuse.vote_screen(vote=vote, rater=rater, ip_hash=ip_hash, verification=verification)
            if vote.session_id is not None:
                recruitment.session_after_vote(rater_id=rater.pk, campaign_id=vote.campaign_id)
        return Response(
            {"vote": vote.pk, "assignment": vote.assignment_id, "created": created},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
