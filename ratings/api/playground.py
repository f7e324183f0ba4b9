"""The playground's API: submit a prompt, poll the request until its pair is ready, vote through
the ordinary vote API, then see the reveal and download the preferred clip.

Signed-in raters and above may use it; anonymous visitors only when PLAYGROUND_ALLOW_ANONYMOUS
is on, as a guest rater bound to their session on their first POST."""

from django.conf import settings
from django.http import FileResponse
from django.middleware.csrf import get_token
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import fields, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ratings import abuse, playground, services
from ratings.api.errors import exception_handler
from ratings.api.serializers import lease_payload
from ratings.api.views import LEASE_SCHEMA, _clip_url
from ratings.models import PlaygroundRequest, Rater, Role
from ratings.roles import has_role

# Longer than any allowed prompt, so that a too-long prompt is refused (and logged) by the
# moderation rather than by the serializer.
_MAX_SUBMITTED_CHARS = 5000


def _exception_handler(exc: Exception, context: dict) -> Response | None:
    """The project's handler, with the readable message under "error" (what the page shows)
    and the machine-readable one under "code": {"error", "code", "detail"}."""
    response = exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict):
        detail = response.data.get("detail")
        if isinstance(detail, str):
            response.data = {**response.data, "code": response.data.get("error"), "error": detail}
    return response


class IsPlaygroundUser(BasePermission):
    """Raters and above; anonymous visitors too while PLAYGROUND_ALLOW_ANONYMOUS is on."""

    message = "Sign in to use the playground."

    def has_permission(self, request, view) -> bool:
        if has_role(request.user, Role.RATER):
            return True
        return settings.PLAYGROUND_ALLOW_ANONYMOUS and not request.user.is_authenticated


class PlaygroundView(APIView):
    permission_classes = [IsPlaygroundUser]

    def get_exception_handler(self):
        return _exception_handler


class PlaygroundSubmitSerializer(serializers.Serializer):
    prompt = serializers.CharField(
        required=False, max_length=_MAX_SUBMITTED_CHARS, trim_whitespace=False, allow_blank=True
    )
    example = serializers.IntegerField(required=False, min_value=1)

    def validate(self, attrs: dict) -> dict:
        if ("prompt" in attrs) == ("example" in attrs):
            raise serializers.ValidationError("Send either a prompt or an example id.")
        return attrs


REQUEST_SCHEMA = inline_serializer(
    "PlaygroundRequest",
    {
        "id": fields.IntegerField(),
        "status": fields.ChoiceField(choices=PlaygroundRequest.Status.choices),
        "clips_done": fields.IntegerField(),
        "clips_total": fields.IntegerField(),
        "url": fields.CharField(),
        "error": fields.CharField(),
        "prompt": fields.CharField(),
        "lease": LEASE_SCHEMA,
        "voted": fields.BooleanField(),
        "reveal": inline_serializer(
            "PlaygroundReveal",
            {
                "A": fields.CharField(allow_null=True),
                "B": fields.CharField(allow_null=True),
                "choice": fields.ChoiceField(choices=["A", "B", "tie", "both_bad"]),
                "download_url": fields.CharField(allow_null=True),
            },
            allow_null=True,
        ),
    },
)
EXAMPLES_SCHEMA = inline_serializer(
    "PlaygroundExample", {"id": fields.IntegerField(), "text": fields.CharField()}, many=True
)


def _status_url(request_id: int) -> str:
    return reverse("api-playground-request", args=[request_id])


def request_payload(request: PlaygroundRequest) -> dict:
    """What the page polls: progress, then the lease (the rating page's payload, so the same
    player plays it), then after the vote the reveal and the download link."""
    lease = playground.playground_lease(request)
    vote = playground.playground_vote(request)
    reveal = playground.playground_reveal(request, vote)
    payload = {
        "id": request.pk,
        "status": request.status,
        "clips_done": request.clips_done,
        "clips_total": playground.CLIPS_TOTAL,
        "url": _status_url(request.pk),
        "error": request.error,
        "prompt": request.prompt.text,
        "lease": None,
        "voted": vote is not None,
        "reveal": None,
    }
    if lease is not None:
        payload["lease"] = lease_payload(lease, playground.playground_campaign(), _clip_url)
    if reveal is not None:
        download = reveal.preferred is not None
        payload["reveal"] = {
            **reveal.names,
            "choice": reveal.choice,
            "download_url": (
                reverse("api-playground-download", args=[request.pk]) if download else None
            ),
        }
    return payload


def _rater_of(request: Request) -> Rater | None:
    if request.user.is_authenticated:
        return services.rater_for_user(user=request.user)
    return None


class PlaygroundRequestListView(PlaygroundView):
    """POST a prompt (or an example's id): two clips are made for it on the generate queue."""

    @extend_schema(
        summary="Ask for a pair of clips for a prompt",
        request=PlaygroundSubmitSerializer,
        responses={
            201: REQUEST_SCHEMA,
            200: OpenApiResponse(REQUEST_SCHEMA, description="The same pending request."),
            400: OpenApiResponse(
                description="Refused prompt: error prompt_rejected, nothing made."
            ),
            429: OpenApiResponse(description="Too many pending requests (or guest requests)."),
        },
        description=(
            "201 with a new request; 200 with the pending one when the same prompt is already "
            "being made. A guest's first POST starts their session and returns csrf_token, the "
            "token the page must send from then on."
        ),
    )
    def post(self, request: Request) -> Response:
        if not request.user.is_authenticated:
            # DRF checks CSRF only for session-authenticated users; a guest's first POST
            # creates a session, so it is checked here too.
            SessionAuthentication().enforce_csrf(request)
        serializer = PlaygroundSubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        ip_hash = abuse.request_ip_hash(request)
        guest_started = not request.user.is_authenticated
        rater = playground.playground_rater(request._request)
        playground.guest_rate_check(rater=rater, ip_hash=ip_hash)
        data = serializer.validated_data
        made, created = playground.playground_request_create(
            rater=rater, text=data.get("prompt"), example_id=data.get("example"), ip_hash=ip_hash
        )
        payload = request_payload(made)
        if guest_started:
            payload["csrf_token"] = get_token(request._request)
        return Response(payload, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class PlaygroundRequestDetailView(PlaygroundView):
    """GET one of the caller's requests: progress, then the lease, then the reveal."""

    @extend_schema(
        summary="A playground request's progress and pair", responses={200: REQUEST_SCHEMA}
    )
    def get(self, request: Request, pk: int) -> Response:
        rater = _rater_of(request)
        if rater is None:
            raise playground.RequestNotFound("No such playground request.")
        made = playground.playground_request_for(rater=rater, request_id=pk)
        return Response(request_payload(made))


class PlaygroundRetryView(PlaygroundView):
    """POST: try a failed request again."""

    @extend_schema(
        summary="Try a failed playground request again",
        request=None,
        responses={200: REQUEST_SCHEMA, 409: OpenApiResponse(description="Not failed.")},
    )
    def post(self, request: Request, pk: int) -> Response:
        rater = _rater_of(request)
        if rater is None:
            raise playground.RequestNotFound("No such playground request.")
        made = playground.playground_request_retry(rater=rater, request_id=pk)
        return Response(request_payload(made))


class PlaygroundDownloadView(PlaygroundView):
    """GET the clip the requester preferred, as a file, after their vote."""

    @extend_schema(
        summary="Download the preferred clip",
        responses={
            (200, "audio/*"): OpenApiResponse(OpenApiTypes.BINARY),
            409: OpenApiResponse(description="Not voted yet, or neither clip was preferred."),
        },
    )
    def get(self, request: Request, pk: int) -> FileResponse:
        rater = _rater_of(request)
        if rater is None:
            raise playground.RequestNotFound("No such playground request.")
        track = playground.playground_download(rater=rater, request_id=pk)
        extension = track.audio.name.rsplit(".", 1)[-1] if "." in track.audio.name else "ogg"
        return FileResponse(
            track.audio.open("rb"),
            content_type=track.mime_type,
            as_attachment=True,
            filename=f"playground-{pk}.{extension}",
        )


class PlaygroundExamplesView(PlaygroundView):
    """GET a few curated prompts to start from."""

    @extend_schema(summary="Example prompts", responses={200: EXAMPLES_SCHEMA})
    def get(self, request: Request) -> Response:
        return Response([{"id": p.pk, "text": p.text} for p in playground.example_prompts()])
