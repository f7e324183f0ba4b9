"""Server-rendered pages. Each view states the lowest role it admits."""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django.views.defaults import page_not_found
from django.views.defaults import server_error as default_server_error

from ratings import campaigns, recruitment, selectors, services
from ratings.forms import CampaignForm
from ratings.models import Campaign, MosRating, Rater, RaterSession, Role
from ratings.roles import has_role, role_of


def role_required(minimum: str) -> Callable:
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, minimum):
                raise PermissionDenied("Your role does not allow this page.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Anyone: liveness for the process manager."""
    return JsonResponse({"ok": True})


# Paths whose clients are programs: their errors are JSON in the API's one error shape
# (ratings.api.errors), also when Django itself answers, before any view runs.
API_PATH_PREFIXES = ("/api/", "/clips/")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: a URL that matches no route (`/api/v1/research/votes/abc/`)."""
    if request.path.startswith(API_PATH_PREFIXES):
        return JsonResponse({"error": "not_found", "detail": "No such URL."}, status=404)
    return page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500."""
    if request.path.startswith(API_PATH_PREFIXES):
        return JsonResponse({"error": "server_error", "detail": "Server error."}, status=500)
    return default_server_error(request)


@require_GET
@role_required(Role.RATER)
def home(request: HttpRequest) -> HttpResponse:
    """Rater and above: the campaigns open for rating."""
    rater = services.rater_for_user(user=request.user)
    if rater.source == Rater.Source.GUEST:
        return redirect("playground")  # anonymous playground visitors rate nothing else
    campaigns = [
        (campaign, selectors.rater_progress(rater=rater, campaign=campaign))
        for campaign in selectors.campaigns_open_for_rating()
    ]
    return render(
        request, "ratings/home.html", {"campaigns": campaigns, "role": role_of(request.user)}
    )


@require_GET
@role_required(Role.RATER)
@recruitment.framable_by_mturk
def rate(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Rater and above: the rating page of one campaign. A campaign with consent text is
    rated only after consenting; a crowd rater whose session is over sees its end page."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    rater = services.rater_for_user(user=request.user)
    if rater.source == Rater.Source.GUEST:
        raise PermissionDenied("Guests of the playground cannot rate campaigns.")
    if campaign.consent_text and not recruitment.has_consented(rater=rater, campaign=campaign):
        return redirect("join", campaign_id=campaign.pk)
    session = recruitment.latest_session(rater=rater, campaign=campaign)
    over = session is not None and session.status != RaterSession.Status.ACTIVE
    if over and rater.source in recruitment.CROWD_SOURCES:
        return redirect("join-complete", campaign_id=campaign.pk)
    progress = selectors.rater_progress(rater=rater, campaign=campaign)
    if session is not None and not over and campaign.votes_per_session:
        progress = {"voted": session.votes.count(), "items": campaign.votes_per_session}
        progress["in_session"] = True
    context = {
        "campaign": campaign,
        "progress": progress,
        "acr_scale": MosRating.Score.choices,
        # Where the page goes when the server says the session is over.
        "complete_url": reverse("join-complete", args=[campaign.pk]) if session else "",
    }
    return render(request, "ratings/rate.html", context)


@require_GET
@role_required(Role.RESEARCHER)
def campaign_list(request: HttpRequest) -> HttpResponse:
    """Researcher and above: every campaign with its progress."""
    campaigns = (
        Campaign.objects.select_related("version_a", "version_b")
        .exclude(purpose=Campaign.Purpose.PLAYGROUND)  # not a campaign anyone runs
        .order_by("-created_at")
    )
    return render(
        request,
        "ratings/campaign_list.html",
        {"campaigns": campaigns, "can_create": has_role(request.user, Role.ADMIN)},
    )


@require_GET
@role_required(Role.RESEARCHER)
def campaign_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Researcher and above: a campaign's generation and voting progress."""
    campaign = get_object_or_404(
        Campaign.objects.select_related("version_a", "version_b"), pk=campaign_id
    )
    context = {"campaign": campaign, "progress": selectors.campaign_progress(campaign=campaign)}
    return render(request, "ratings/campaign_detail.html", context)


@require_http_methods(["GET", "POST"])
@role_required(Role.ADMIN)
def campaign_create(request: HttpRequest) -> HttpResponse:
    """Admin: create a campaign; its clips are generated by a job on the generate queue."""
    form = CampaignForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        campaign = campaigns.campaign_create(
            name=data["name"],
            purpose=data["purpose"],
            protocol=data["protocol"],
            prompt_texts=data["prompts"],
            version_a=data["version_a"],
            version_b=data["version_b"],
            votes_per_item=data["votes_per_item"],
            min_listen_seconds=data["min_listen_seconds"],
            listen_to_end=data["listen_to_end"],
            clip_seconds=data["clip_seconds"],
            instructions=data["instructions"],
            created_by=request.user,
            **form.campaign_settings(),
        )
        return redirect("campaign-detail", campaign_id=campaign.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "ratings/campaign_form.html", {"form": form}, status=status)
