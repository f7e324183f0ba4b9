"""Pages of crowd recruitment: the entry from a Prolific or MTurk link (or self-registration),
its consent, the completion page with the code, and the admin's abuse overview."""

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from ratings import abuse, recruitment, services
from ratings.errors import RatingError
from ratings.models import Campaign, Rater, RaterSession, Role
from ratings.recruitment import Entry, EntryRefused, InvalidEntry, framable_by_mturk
from ratings.views import role_required

_BACKEND = "django.contrib.auth.backends.ModelBackend"


@require_http_methods(["GET", "POST"])
@framable_by_mturk
def join(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Anyone: GET shows the study's instructions and consent (an MTurk preview shows them
    with the start disabled and creates nothing); POST consents, binds or creates the rater
    account, logs it in, starts the session and goes to the rating page."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    params = request.GET if request.method == "GET" else request.POST
    context = {"campaign": campaign, "entry": None, "form": None}
    try:
        entry = recruitment.entry_from_params(params)
        context["entry"] = entry
        _check_open(request, campaign, entry)
    except RatingError as error:
        return _refuse(request, context, error)
    anonymous_signup = entry.source == Rater.Source.LOCAL and not request.user.is_authenticated
    if anonymous_signup:
        context["form"] = UserCreationForm(request.POST or None)
    if request.method == "GET":
        return render(request, "ratings/join.html", context)
    if campaign.consent_text and not request.POST.get("consent"):
        return _refuse(request, context, InvalidEntry("Tick the box to give your consent."))
    if anonymous_signup and not context["form"].is_valid():
        return render(request, "ratings/join.html", context, status=400)
    try:
        session = _start(request, campaign, entry, context["form"] if anonymous_signup else None)
    except RatingError as error:
        return _refuse(request, context, error)
    if session.status != RaterSession.Status.ACTIVE:
        return redirect("join-complete", campaign_id=campaign.pk)
    return redirect("rate", campaign_id=campaign.pk)


def _check_open(request: HttpRequest, campaign: Campaign, entry: Entry) -> None:
    if campaign.status != Campaign.Status.ACTIVE:
        raise EntryRefused("This study is not open right now.")
    if entry.preview and request.method == "POST":
        raise InvalidEntry("Accept the HIT on MTurk before starting.")
    recruitment.entry_check_study(campaign=campaign, entry=entry)
    local = entry.source == Rater.Source.LOCAL
    if local and not request.user.is_authenticated and not settings.SELF_REGISTRATION:
        raise InvalidEntry(
            "Open this study from your Prolific or MTurk link: the link carries your "
            "participant id (PROLIFIC_PID, STUDY_ID and SESSION_ID, or MTurk's workerId, "
            "assignmentId, hitId and turkSubmitTo)."
        )


def _start(
    request: HttpRequest, campaign: Campaign, entry: Entry, form: UserCreationForm | None
) -> RaterSession:
    # One transaction: a refused entry leaves no account or session behind.
    with transaction.atomic():
        if entry.source != Rater.Source.LOCAL:
            rater = recruitment.rater_for_entry(entry=entry)
        elif form is not None:
            rater = recruitment.rater_self_register(user=form.save())
        else:
            rater = services.rater_for_user(user=request.user)
            if rater.source in recruitment.CROWD_SOURCES:
                raise EntryRefused(recruitment.STOP_MESSAGES[recruitment.NO_SESSION])
        session = recruitment.session_for_entry(
            rater=rater, campaign=campaign, entry=entry, ip_hash=abuse.request_ip_hash(request)
        )
    if request.user != rater.user:
        login(request, rater.user, backend=_BACKEND)
    return session


def _refuse(request: HttpRequest, context: dict, error: RatingError) -> HttpResponse:
    return render(
        request, "ratings/join.html", {**context, "error": error.message}, status=error.status_code
    )


@require_GET
@role_required(Role.RATER)
@framable_by_mturk
def join_complete(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Rater and above, about their own session: once it is over, the completion code, the
    way back to Prolific, or MTurk's auto-submitting form. An active session is sent back to
    rating, so the code is never shown before the work is done."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    rater = services.rater_for_user(user=request.user)
    session = recruitment.latest_session(rater=rater, campaign=campaign)
    if session is None or session.status == RaterSession.Status.ACTIVE:
        return redirect("rate", campaign_id=campaign.pk)
    completion = None
    if session.status == RaterSession.Status.COMPLETED:
        completion = recruitment.completion_for(session=session, campaign=campaign)
    context = {"campaign": campaign, "session": session, "completion": completion}
    return render(request, "ratings/complete.html", context)


@require_GET
@role_required(Role.ADMIN)
def quality(request: HttpRequest) -> HttpResponse:
    """Admin: the share of counted votes per campaign (with an alert when it drops) and the
    latest flagged votes, which the admin clears in the admin's vote list."""
    context = {
        "shares": abuse.counted_share_by_campaign(),
        "flagged": abuse.flagged_votes_recent(),
    }
    return render(request, "ratings/quality.html", context)
