"""The playground page: a prompt box, the progress of its two clips, and the blind pair.
Everything after the first render goes through the playground API (ratings.api.playground)."""

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from ratings import services
from ratings.models import Assignment, PlaygroundRequest, Rater, Role
from ratings.roles import has_role

# What reopening the page brings back: a request still being made, or a pair not yet voted on.
Status = PlaygroundRequest.Status
RESUMABLE = (Status.QUEUED, Status.GENERATING, Status.READY)


@require_GET
def playground(request: HttpRequest) -> HttpResponse:
    """Rater and above; anonymous visitors too when PLAYGROUND_ALLOW_ANONYMOUS is on (the API
    gives them a guest rater on their first prompt). `?request=<id>` reopens one request."""
    if not request.user.is_authenticated:
        if not settings.PLAYGROUND_ALLOW_ANONYMOUS:
            return redirect_to_login(request.get_full_path())
        rater = None
    elif has_role(request.user, Role.RATER):
        rater = services.rater_for_user(user=request.user)
    else:
        raise PermissionDenied("Your role does not allow this page.")
    resume = _request_to_resume(rater, request.GET.get("request", ""))
    context = {
        "max_chars": settings.PLAYGROUND_MAX_PROMPT_CHARS,
        "examples_url": reverse("api-playground-examples"),
        "requests_url": reverse("api-playground-requests"),
        "resume_url": reverse("api-playground-request", args=[resume.pk]) if resume else "",
        "csrf_cookie_name": settings.CSRF_COOKIE_NAME,
    }
    return render(request, "ratings/playground.html", context)


def _request_to_resume(rater: Rater | None, wanted: str) -> PlaygroundRequest | None:
    """The request named in the URL (only the visitor's own), else the visitor's latest one
    that is still being made or waits for their vote."""
    if rater is None:
        return None
    own = PlaygroundRequest.objects.filter(rater=rater)
    if wanted:
        if not wanted.isdigit():
            raise Http404("No such playground request.")
        try:
            return own.get(pk=int(wanted))
        except PlaygroundRequest.DoesNotExist:
            raise Http404("No such playground request.") from None
    latest = own.order_by("-created_at", "-pk").first()
    if latest is None or latest.status not in RESUMABLE:
        return None
    if latest.status == Status.READY and not _waits_for_vote(latest):
        return None
    return latest


def _waits_for_vote(request: PlaygroundRequest) -> bool:
    live = Assignment.objects.live(timezone.now())
    return live.filter(pk=request.assignment_id).exists()
