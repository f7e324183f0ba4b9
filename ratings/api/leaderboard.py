"""GET /api/v1/leaderboard/?campaign=<id>: a campaign's stored version leaderboard."""

from django.http import Http404
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import fields
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ratings.models import Leaderboard
from ratings.permissions import IsResearcher

LEADERBOARD_SCHEMA = inline_serializer(
    "Leaderboard",
    {
        "campaign": fields.IntegerField(),
        "computed_at": fields.DateTimeField(),
        "vote_count": fields.IntegerField(help_text="Counted votes between different versions."),
        "bootstrap_rounds": fields.IntegerField(),
        "settings": fields.DictField(),
        "rows": inline_serializer(
            "LeaderboardRow",
            {
                "rank": fields.IntegerField(),
                "version": fields.IntegerField(),
                "name": fields.CharField(),
                "rating": fields.FloatField(help_text="Elo scale; the versions' mean is 1000."),
                "ci_low": fields.FloatField(),
                "ci_high": fields.FloatField(),
                "votes": fields.IntegerField(),
                "wins": fields.IntegerField(),
                "ties": fields.IntegerField(),
                "losses": fields.IntegerField(),
            },
            many=True,
        ),
    },
)


class LeaderboardView(APIView):
    """GET ?campaign=<id> (roles: researcher and above, since it names the versions, which
    raters must never learn). Serves the row the periodic job stored; never computes one."""

    permission_classes = [IsResearcher]

    @extend_schema(
        summary="A campaign's version leaderboard (Bradley-Terry, 95% bootstrap intervals)",
        parameters=[OpenApiParameter("campaign", int, required=True)],
        responses={
            200: LEADERBOARD_SCHEMA,
            404: OpenApiResponse(description="No leaderboard has been computed yet."),
        },
    )
    def get(self, request: Request) -> Response:
        raw_campaign = request.query_params.get("campaign", "")
        # isascii: "²".isdigit() is true, but int() rejects it.
        if not (raw_campaign.isascii() and raw_campaign.isdigit()) or len(raw_campaign) > 18:
            raise ValidationError({"campaign": "Give the campaign id as ?campaign=<number>."})
        board = Leaderboard.objects.filter(campaign_id=int(raw_campaign)).first()
        if board is None:
            raise Http404("No leaderboard has been computed for this campaign yet.")
        return Response(
            {
                "campaign": board.campaign_id,
                "computed_at": board.computed_at,
                "vote_count": board.vote_count,
                "bootstrap_rounds": board.bootstrap_rounds,
                "settings": {k: v for k, v in board.settings.items() if k != "fingerprint"},
                "rows": board.rows,
            }
        )
