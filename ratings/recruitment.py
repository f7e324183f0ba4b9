"""Crowd recruitment: raters arrive from Prolific (PROLIFIC_PID, STUDY_ID, SESSION_ID), MTurk
(workerId, assignmentId, hitId, turkSubmitTo) or self-registration, get one rater account per
external id, consent, rate within their quotas, and leave with the campaign's completion code.

One sitting is a RaterSession. It completes when it reached the campaign's votes_per_session,
when nothing is left for the rater, or when a quota or cap stops them; only then does the
completion page show the code (or send MTurk its form).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from ratings.errors import RatingError
from ratings.models import Assignment, Campaign, Rater, RaterSession, Role, Vote

PROLIFIC_PARAMS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")
MTURK_PARAMS = ("workerId", "assignmentId", "hitId", "turkSubmitTo")
MTURK_PREVIEW_ASSIGNMENT = "ASSIGNMENT_ID_NOT_AVAILABLE"
CROWD_SOURCES = (Rater.Source.PROLIFIC, Rater.Source.MTURK)
# Prolific ids are 24 hex digits and MTurk's upper-case alphanumerics; this admits both and
# nothing that could smuggle markup or path segments into a username or URL.
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class InvalidEntry(RatingError):
    code = "invalid_entry"


class EntryRefused(RatingError):
    status_code = 409
    code = "entry_refused"


@dataclass(frozen=True)
class Entry:
    """What a recruitment link says about who arrives."""

    source: str
    external_id: str = ""  # Prolific participant / MTurk worker; "" for self-registration
    session_id: str = ""  # Prolific SESSION_ID / MTurk assignmentId
    study_id: str = ""  # Prolific STUDY_ID / MTurk hitId
    submit_to: str = ""  # MTurk turkSubmitTo
    preview: bool = False  # an MTurk worker looking at the HIT before accepting it

    def params(self) -> dict[str, str]:
        """The link's parameters again, for the consent form to carry to its POST."""
        if self.source == Rater.Source.PROLIFIC:
            values = (self.external_id, self.study_id, self.session_id)
            return dict(zip(PROLIFIC_PARAMS, values, strict=True))
        if self.source == Rater.Source.MTURK:
            values = (self.external_id, self.session_id, self.study_id, self.submit_to)
            return dict(zip(MTURK_PARAMS, values, strict=True))
        return {}


def _external_id(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not _EXTERNAL_ID.fullmatch(value):
        raise InvalidEntry(
            f"The link's {name} is missing or malformed: open the study from its link again."
        )
    return value


def _submit_to(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme != "https" or parts.hostname not in settings.MTURK_SUBMIT_HOSTS:
        raise InvalidEntry("turkSubmitTo must be an https address of MTurk.")
    return f"https://{parts.netloc}"


def entry_from_params(params: Mapping[str, str]) -> Entry:
    """The entry a link describes: Prolific, MTurk (or its preview), or self-registration
    for a link without either platform's parameters. Raises InvalidEntry for a broken link."""
    if any(name in params for name in PROLIFIC_PARAMS):
        pid, study, session = (_external_id(params, name) for name in PROLIFIC_PARAMS)
        return Entry(Rater.Source.PROLIFIC, pid, session_id=session, study_id=study)
    if any(name in params for name in MTURK_PARAMS):
        if params.get("assignmentId") == MTURK_PREVIEW_ASSIGNMENT:
            return Entry(Rater.Source.MTURK, preview=True)
        worker, assignment, hit = (_external_id(params, name) for name in MTURK_PARAMS[:3])
        return Entry(
            Rater.Source.MTURK, worker, session_id=assignment, study_id=hit,
            submit_to=_submit_to(params.get("turkSubmitTo", "")),
        )  # fmt: skip
    return Entry(Rater.Source.LOCAL)


def entry_check_study(*, campaign: Campaign, entry: Entry) -> None:
    """A campaign that names its studies (crowd_study_ids) takes links of those only: without
    it, a participant id from any study, or made up, opens a session of this campaign."""
    allowed = campaign.crowd_study_ids
    crowd_link = entry.source in CROWD_SOURCES and not entry.preview
    if allowed and crowd_link and entry.study_id not in allowed:
        raise EntryRefused(
            "This link belongs to another study. Open the study from the link its own"
            " Prolific or MTurk page gives you."
        )


# --- Accounts and sessions ------------------------------------------------------------------


def rater_for_entry(*, entry: Entry) -> Rater:
    """The one rater account bound to this external id, created on first arrival."""
    rater = _bound_rater(entry)
    if rater is None:
        try:
            with transaction.atomic():
                user = get_user_model().objects.create_user(
                    username=f"{entry.source}-{entry.external_id}"
                )  # no password: the account is entered through its platform's link only
                rater = Rater.objects.create(
                    user=user, source=entry.source, external_id=entry.external_id
                )
        except IntegrityError:  # the same participant arrived twice at once
            rater = _bound_rater(entry)
            if rater is None:
                raise EntryRefused("This participant id is already in use.") from None
    if rater.role != Role.RATER or rater.user.is_superuser or not rater.user.is_active:
        # A link must never log anyone into an account with more than a rater's rights.
        raise EntryRefused("This participant id cannot be used to rate.")
    return rater


def _bound_rater(entry: Entry) -> Rater | None:
    return (
        Rater.objects.select_related("user")
        .filter(source=entry.source, external_id=entry.external_id)
        .first()
    )


def rater_self_register(*, user: AbstractBaseUser) -> Rater:
    """The rater of a self-registered user. Its external id marks the account as one its owner
    made, so the anti-abuse flags apply to it as to crowd accounts."""
    return Rater.objects.create(user=user, source=Rater.Source.LOCAL, external_id=f"self-{user.pk}")


def session_for_entry(
    *, rater: Rater, campaign: Campaign, entry: Entry, ip_hash: str, now: datetime | None = None
) -> RaterSession:
    """Start (or, for the same platform session arriving again, resume) a consented session."""
    now = now or timezone.now()
    if entry.session_id:
        existing = RaterSession.objects.filter(
            campaign=campaign, source=entry.source, external_session_id=entry.session_id
        ).first()
        if existing is not None:
            if existing.rater_id != rater.pk:
                raise EntryRefused("This study session belongs to another participant.")
            return existing
    else:
        existing = active_session(rater=rater, campaign=campaign)
        if existing is not None:
            return existing
    reason = lease_stop_reason(rater=rater, campaign=campaign, session=None)
    if reason in (QUOTA, CAMPAIGN_CAP):
        raise EntryRefused(STOP_MESSAGES[reason] + " Please return the study.")
    try:
        with transaction.atomic():
            return RaterSession.objects.create(
                rater=rater, campaign=campaign, source=entry.source,
                external_session_id=entry.session_id, external_study_id=entry.study_id,
                submit_to=entry.submit_to, ip_hash=ip_hash, consented_at=now,
            )  # fmt: skip
    except IntegrityError:  # the same session's consent was sent twice at once
        return RaterSession.objects.get(
            campaign=campaign, source=entry.source, external_session_id=entry.session_id
        )


def _entry_sessions(rater: Rater, campaign: Campaign) -> QuerySet[RaterSession]:
    """Sessions begun by an entry (a crowd link, self-registration or consent). Only these
    end with a completion page; the quality checks also open sessions for raters who vote
    without an entry, and those run on without an end."""
    return RaterSession.objects.filter(
        rater=rater, campaign=campaign, consented_at__isnull=False
    ).order_by("-started_at", "-pk")


def sessions_matter(*, rater: Rater, campaign: Campaign) -> bool:
    """Whether a session can change what this rater is served here: crowd and self-registered
    accounts, and campaigns with sessions of a set length or a consent step. For the others
    (accounts an admin made, in a plain campaign) the lookup, a query on every lease, would
    always end in "no limit", so it is skipped."""
    return (
        bool(rater.external_id)
        or rater.source in CROWD_SOURCES
        or campaign.votes_per_session is not None
        or bool(campaign.consent_text)
    )


def active_session(*, rater: Rater, campaign: Campaign) -> RaterSession | None:
    return _entry_sessions(rater, campaign).filter(status=RaterSession.Status.ACTIVE).first()


def latest_session(*, rater: Rater, campaign: Campaign) -> RaterSession | None:
    return _entry_sessions(rater, campaign).first()


def has_consented(*, rater: Rater, campaign: Campaign) -> bool:
    return RaterSession.objects.filter(
        rater=rater, campaign=campaign, consented_at__isnull=False
    ).exists()


# --- Quotas, caps and completion ------------------------------------------------------------

QUOTA = "quota"
CAMPAIGN_CAP = "campaign_cap"
SESSION_COMPLETE = "session_complete"
NO_SESSION = "no_session"
NOTHING_LEFT = "nothing_left"
STOP_MESSAGES = {
    QUOTA: "You have cast as many votes as your account allows.",
    CAMPAIGN_CAP: "You have rated as many items as this campaign allows per rater.",
    SESSION_COMPLETE: "You have finished this session.",
    NO_SESSION: "Open this study from your Prolific or MTurk link to continue.",
    NOTHING_LEFT: "There is nothing left for you to rate in this campaign right now.",
}
SESSION_OVER_HEADER = "Rating-Session"


def lease_stop_reason(
    *, rater: Rater, campaign: Campaign, session: RaterSession | None
) -> str | None:
    """Why this rater may not be given another item here, or None when they may."""
    quota, cap = rater.vote_quota, campaign.max_votes_per_rater
    if quota is not None and Vote.objects.filter(rater=rater).count() >= quota:
        return QUOTA
    if cap is not None and Vote.objects.filter(rater=rater, campaign=campaign).count() >= cap:
        return CAMPAIGN_CAP
    if session is None:
        # A crowd account rates only inside a session its platform paid for.
        return NO_SESSION if rater.source in CROWD_SOURCES else None
    per_session = campaign.votes_per_session
    if per_session is not None and Vote.objects.filter(session=session).count() >= per_session:
        return SESSION_COMPLETE
    return None


def may_lease(*, rater: Rater, campaign: Campaign) -> bool:
    session = active_session(rater=rater, campaign=campaign)
    return lease_stop_reason(rater=rater, campaign=campaign, session=session) is None


def session_complete(*, session: RaterSession, now: datetime | None = None) -> bool:
    """Mark an active session completed; False when it was no longer active (completed by a
    concurrent request, or rejected by the quality checks)."""
    now = now or timezone.now()
    done = RaterSession.objects.filter(pk=session.pk, status=RaterSession.Status.ACTIVE).update(
        status=RaterSession.Status.COMPLETED, completed_at=now
    )
    if done:
        session.status, session.completed_at = RaterSession.Status.COMPLETED, now
        # A lease still live belongs to the completed session: a vote on it would be stored
        # outside any session, so it is closed (and its slot given back) instead.
        Assignment.objects.filter(
            rater_id=session.rater_id, campaign_id=session.campaign_id
        ).close()
    return bool(done)


def session_after_vote(*, rater_id: int, campaign_id: int) -> None:
    """Complete the rater's session once it holds the campaign's votes_per_session."""
    session = (
        RaterSession.objects.filter(
            rater_id=rater_id,
            campaign_id=campaign_id,
            status=RaterSession.Status.ACTIVE,
            consented_at__isnull=False,
            campaign__votes_per_session__isnull=False,
        )
        .select_related("campaign")
        .order_by("-started_at", "-pk")
        .first()
    )
    if session is not None and session.votes.count() >= session.campaign.votes_per_session:
        session_complete(session=session)


def lease_end(
    *, rater: Rater, campaign: Campaign, session: RaterSession | None, reason: str
) -> bool:
    """Nothing more is leased to the rater: end their session unless the campaign is only
    paused. Returns whether the rater's sitting is over (the page then shows its end)."""
    if session is not None:
        if campaign.status == Campaign.Status.PAUSED and reason == NOTHING_LEFT:
            return False
        session_complete(session=session)
        return True
    latest = latest_session(rater=rater, campaign=campaign)
    return latest is not None and rater.source in CROWD_SOURCES


@dataclass(frozen=True)
class Completion:
    """What a finished session's page shows: the code, where to go, or MTurk's form."""

    code: str
    redirect_url: str
    mturk_submit_url: str
    assignment_id: str


def completion_for(*, session: RaterSession, campaign: Campaign) -> Completion:
    code = campaign.completion_code
    redirect_url = campaign.completion_url.replace("{code}", quote(code, safe=""))
    mturk_submit_url = ""
    if session.source == Rater.Source.MTURK and session.submit_to:
        mturk_submit_url = f"{session.submit_to.rstrip('/')}/mturk/externalSubmit"
        redirect_url = ""  # MTurk takes the form post, not a redirect
    return Completion(code, redirect_url, mturk_submit_url, session.external_session_id)


def framable_by_mturk(view: Callable) -> Callable:
    """MTurk shows an external HIT in an iframe on its own site: these pages may be framed
    there (and by this site), and nowhere else."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = view(request, *args, **kwargs)
        hosts = " ".join(f"https://{host}" for host in settings.MTURK_SUBMIT_HOSTS)
        response["Content-Security-Policy"] = f"frame-ancestors 'self' {hosts}"
        response.xframe_options_exempt = True
        return response

    return wrapped
