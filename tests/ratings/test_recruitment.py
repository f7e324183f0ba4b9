"""Crowd recruitment: Prolific and MTurk links bind one rater account per external id, consent
starts a session, quotas and caps stop leasing, and only a finished session shows its code."""

import uuid

import pytest
from django.contrib.auth import get_user_model

from ratings import abuse
from ratings.models import Assignment, Campaign, Rater, RaterSession, Role, Vote
from tests.factories import CampaignFactory, PairFactory, RaterFactory, served_seconds_ago, vote_on

pytestmark = pytest.mark.django_db

PROLIFIC = {"PROLIFIC_PID": "5f1e2d3c4b5a69788796a5b4", "STUDY_ID": "study1", "SESSION_ID": "s1"}
MTURK = {
    "workerId": "A1B2C3D4E5",
    "assignmentId": "3ASSIGN9XYZ",
    "hitId": "3HIT7ABC",
    "turkSubmitTo": "https://workersandbox.mturk.com",
}
NEXT = "/api/v1/assignments/next/"
VOTES = "/api/v1/votes/"


@pytest.fixture
def campaign() -> Campaign:
    campaign = CampaignFactory(
        min_listen_seconds=5.0,
        consent_text="I agree to take part.",
        completion_code="C0DE42",
        completion_url="https://app.prolific.com/submissions/complete?cc={code}",
        votes_per_session=2,
    )
    PairFactory.create_batch(3, campaign=campaign)
    return campaign


def join_url(campaign: Campaign) -> str:
    return f"/join/{campaign.pk}/"


def consent(client, campaign, params, fields=None, **extra):
    return client.post(join_url(campaign), {**params, "consent": "yes", **(fields or {})}, **extra)


def nothing_created() -> bool:
    return not Rater.objects.exists() and not RaterSession.objects.exists()


def lease_and_vote(client, campaign) -> None:
    payload = client.get(NEXT, {"campaign": campaign.pk}).json()
    served_seconds_ago(Assignment.objects.get(pk=payload["assignment"]), 12)
    body = {
        "assignment": payload["assignment"],
        "idempotency_key": str(uuid.uuid4()),
        "listen_ms": {clip["slot"]: 6000 for clip in payload["clips"]},
        "choice": "A",
    }
    response = client.post(VOTES, body, content_type="application/json")
    assert response.status_code == 201, response.content


def test_a_prolific_link_shows_instructions_and_consent_and_creates_nothing(client, campaign):
    response = client.get(join_url(campaign), PROLIFIC)

    assert response.status_code == 200
    assert b"I agree to take part." in response.content
    assert b'name="PROLIFIC_PID"' in response.content
    assert nothing_created()


def test_consenting_binds_a_rater_to_the_prolific_id_logs_in_and_starts_a_session(client, campaign):
    response = consent(client, campaign, PROLIFIC, REMOTE_ADDR="203.0.113.9")

    assert response.status_code == 302
    assert response["Location"] == f"/rate/{campaign.pk}/"
    rater = Rater.objects.get()
    assert (rater.source, rater.external_id, rater.role) == (
        "prolific",
        PROLIFIC["PROLIFIC_PID"],
        "rater",
    )
    assert not rater.user.has_usable_password()
    session = RaterSession.objects.get()
    assert (session.rater, session.campaign, session.status) == (rater, campaign, "active")
    assert (session.external_session_id, session.external_study_id) == ("s1", "study1")
    assert session.consented_at is not None
    assert session.ip_hash == abuse.ip_hash("203.0.113.9") != "203.0.113.9"
    assert client.get(f"/rate/{campaign.pk}/").status_code == 200  # logged in as that rater


def test_one_account_per_external_id_across_sessions_and_repeated_consent(client, campaign):
    consent(client, campaign, PROLIFIC)
    consent(client, campaign, PROLIFIC)  # the same submission again: the same session
    consent(client, campaign, {**PROLIFIC, "SESSION_ID": "s2"})

    assert Rater.objects.count() == 1
    assert get_user_model().objects.count() == 1
    assert sorted(RaterSession.objects.values_list("external_session_id", flat=True)) == [
        "s1",
        "s2",
    ]


def test_another_participant_cannot_take_over_a_study_session(client, campaign):
    consent(client, campaign, PROLIFIC)
    client.logout()

    response = consent(client, campaign, {**PROLIFIC, "PROLIFIC_PID": "someoneelse"})

    assert response.status_code == 409
    assert RaterSession.objects.count() == 1


@pytest.mark.parametrize(
    "params",
    [
        {"PROLIFIC_PID": "abc", "STUDY_ID": "s"},  # SESSION_ID missing
        {**PROLIFIC, "PROLIFIC_PID": "<script>"},
        {**PROLIFIC, "SESSION_ID": "x" * 65},
        {**MTURK, "workerId": ""},
        {**MTURK, "turkSubmitTo": "https://evil.example.com"},
        {**MTURK, "turkSubmitTo": "http://workersandbox.mturk.com"},
    ],
)
def test_a_broken_link_gets_a_400_with_a_message_and_creates_nothing(client, campaign, params):
    for response in (client.get(join_url(campaign), params), consent(client, campaign, params)):
        assert response.status_code == 400
        assert b'class="error"' in response.content
    assert nothing_created()


def test_starting_without_ticking_consent_is_refused(client, campaign):
    response = client.post(join_url(campaign), PROLIFIC)

    assert response.status_code == 400
    assert b"consent" in response.content
    assert nothing_created()


def test_a_campaign_that_is_not_open_refuses_entry(client, campaign):
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)

    assert consent(client, campaign, PROLIFIC).status_code == 409
    assert nothing_created()


def test_an_mturk_preview_shows_the_task_with_a_disabled_start_and_creates_nothing(
    client, campaign
):
    preview = {"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "hitId": "3HIT7ABC"}

    response = client.get(join_url(campaign), preview)
    refused = consent(client, campaign, preview)

    assert response.status_code == 200
    assert b'id="start" disabled' in response.content
    assert b"<form" not in response.content.split(b'id="join"')[1]
    assert refused.status_code == 400
    assert nothing_created()


def test_an_accepted_mturk_assignment_binds_the_worker_and_records_where_to_submit(
    client, campaign
):
    assert consent(client, campaign, MTURK).status_code == 302

    rater = Rater.objects.get()
    assert (rater.source, rater.external_id) == ("mturk", "A1B2C3D4E5")
    session = RaterSession.objects.get()
    assert (session.external_session_id, session.external_study_id) == ("3ASSIGN9XYZ", "3HIT7ABC")
    assert session.submit_to == "https://workersandbox.mturk.com"


def test_a_link_never_logs_into_an_account_with_more_than_a_raters_rights(client, campaign):
    RaterFactory(role=Role.ADMIN, source="prolific", external_id=PROLIFIC["PROLIFIC_PID"])

    response = consent(client, campaign, PROLIFIC)

    assert response.status_code == 409
    assert "_auth_user_id" not in client.session
    assert not RaterSession.objects.exists()


def test_self_registration_is_off_unless_enabled(client, campaign, settings):
    assert client.get(join_url(campaign)).status_code == 400

    settings.SELF_REGISTRATION = True
    page = client.get(join_url(campaign))
    password = "a-long pass 981"
    fields = {"username": "newbie", "password1": password, "password2": password}
    response = consent(client, campaign, {}, fields)

    assert page.status_code == 200 and b'name="password1"' in page.content
    assert response.status_code == 302
    rater = Rater.objects.get(user__username="newbie")
    assert (rater.source, rater.external_id) == ("local", f"self-{rater.user_id}")
    assert RaterSession.objects.get().rater == rater


def test_a_bad_self_registration_stores_nothing(client, campaign, settings):
    settings.SELF_REGISTRATION = True

    response = consent(client, campaign, {}, {"username": "x", "password1": "a", "password2": "b"})

    assert response.status_code == 400
    assert not get_user_model().objects.exists()
    assert nothing_created()


def test_the_rating_page_asks_for_consent_first(client, campaign, make_rater):
    rater = make_rater()
    client.force_login(rater.user)

    assert client.get(f"/rate/{campaign.pk}/")["Location"] == join_url(campaign)
    client.post(join_url(campaign), {"consent": "yes"})  # a logged-in rater just consents

    assert RaterSession.objects.get().rater == rater
    assert client.get(f"/rate/{campaign.pk}/").status_code == 200


def test_the_session_completes_at_votes_per_session_and_only_then_shows_the_code(client, campaign):
    consent(client, campaign, PROLIFIC)
    complete_url = f"/join/{campaign.pk}/complete/"
    lease_and_vote(client, campaign)
    assert client.get(complete_url)["Location"] == f"/rate/{campaign.pk}/"  # not done yet

    lease_and_vote(client, campaign)

    session = RaterSession.objects.get()
    assert session.status == "completed" and session.completed_at is not None
    assert set(Vote.objects.values_list("session", flat=True)) == {session.pk}
    done = client.get(NEXT, {"campaign": campaign.pk})
    assert done.status_code == 204
    assert done["Rating-Session"] == "completed"
    page = client.get(complete_url)
    assert b"C0DE42" in page.content
    assert b"https://app.prolific.com/submissions/complete?cc=C0DE42" in page.content
    assert client.get(f"/rate/{campaign.pk}/")["Location"] == complete_url


def test_a_session_with_nothing_left_to_rate_completes(client, campaign):
    Campaign.objects.filter(pk=campaign.pk).update(votes_per_session=None, votes_per_item=1)
    campaign.pairs.update(votes_wanted=1)
    consent(client, campaign, PROLIFIC)
    for _ in range(3):
        lease_and_vote(client, campaign)

    done = client.get(NEXT, {"campaign": campaign.pk})

    assert (done.status_code, done["Rating-Done"]) == (204, "nothing_left")
    assert RaterSession.objects.get().status == "completed"


def test_the_mturk_completion_page_posts_the_assignment_to_turk_submit_to(client, campaign):
    consent(client, campaign, MTURK)
    RaterSession.objects.update(status="completed")

    page = client.get(f"/join/{campaign.pk}/complete/").content.decode()

    assert 'action="https://workersandbox.mturk.com/mturk/externalSubmit"' in page
    assert 'name="assignmentId" value="3ASSIGN9XYZ"' in page
    assert ".submit()" in page
    assert "app.prolific.com" not in page


def test_a_rejected_session_ends_without_the_code(client, campaign):
    consent(client, campaign, PROLIFIC)
    RaterSession.objects.update(status="rejected")

    page = client.get(f"/join/{campaign.pk}/complete/")

    assert page.status_code == 200
    assert b"C0DE42" not in page.content


def test_the_per_campaign_cap_stops_leasing_and_refuses_a_new_entry(client, campaign):
    Campaign.objects.filter(pk=campaign.pk).update(max_votes_per_rater=1, votes_per_session=None)
    consent(client, campaign, PROLIFIC)
    lease_and_vote(client, campaign)

    done = client.get(NEXT, {"campaign": campaign.pk})
    again = consent(client, campaign, {**PROLIFIC, "SESSION_ID": "s2"})

    assert (done.status_code, done["Rating-Done"]) == (204, "campaign_cap")
    assert again.status_code == 409
    assert b"as many items as this campaign allows" in again.content


def test_a_raters_quota_across_campaigns_stops_leasing(client, make_rater):
    other, campaign = PairFactory().campaign, PairFactory().campaign
    rater = make_rater(vote_quota=1)
    vote_on(other.pairs.get(), rater, "a")
    client.force_login(rater.user)

    done = client.get(NEXT, {"campaign": campaign.pk})

    assert (done.status_code, done["Rating-Done"]) == (204, "quota")
    assert not Assignment.objects.filter(campaign=campaign).exists()


def test_a_crowd_account_rates_only_inside_an_active_session(client, campaign):
    consent(client, campaign, PROLIFIC)
    RaterSession.objects.update(status="completed")

    done = client.get(NEXT, {"campaign": campaign.pk})

    assert (done.status_code, done["Rating-Done"]) == (204, "no_session")


def test_crowd_pages_may_be_framed_by_mturk_only_and_other_pages_not_at_all(client, campaign):
    join = client.get(join_url(campaign), PROLIFIC)
    login = client.get("/accounts/login/")

    assert "X-Frame-Options" not in join
    assert join["Content-Security-Policy"] == (
        "frame-ancestors 'self' https://www.mturk.com https://workersandbox.mturk.com"
    )
    assert login["X-Frame-Options"] == "DENY"


def test_a_campaign_that_names_its_studies_refuses_other_studies_links(client, campaign):
    Campaign.objects.filter(pk=campaign.pk).update(crowd_study_ids=["study1", "3HIT7ABC"])
    other_study = {**PROLIFIC, "STUDY_ID": "someone-elses-study"}
    other_hit = {**MTURK, "hitId": "3HITOTHER"}

    assert consent(client, campaign, other_study).status_code == 409
    assert consent(client, campaign, other_hit).status_code == 409
    assert client.get(join_url(campaign), other_study).status_code == 409
    assert nothing_created()

    assert consent(client, campaign, PROLIFIC).status_code == 302
    assert RaterSession.objects.get().external_study_id == "study1"


def test_the_campaign_form_stores_the_study_ids(client, make_rater):
    from generation.models import GeneratorVersion

    client.force_login(make_rater(role=Role.ADMIN).user)
    version = GeneratorVersion.objects.create(name="v", backend="procedural")
    form = {
        "name": "Pilot", "purpose": "collect", "protocol": "preference", "version_a": version.pk,
        "prompts": "calm piano", "votes_per_item": 3, "min_listen_seconds": 5,
        "clip_seconds": 10, "crowd_study_ids": " studyA, 3HITB ,studyA,",
    }  # fmt: skip

    assert client.post("/manage/campaigns/new/", form).status_code == 302
    assert Campaign.objects.get(name="Pilot").crowd_study_ids == ["studyA", "3HITB"]


def test_a_completed_session_closes_its_live_lease_and_a_late_vote_stores_nothing(client, campaign):
    """A session can complete while its rater holds a lease (from another tab, or completed
    by the page when nothing is left); a vote on that lease would be stored outside any
    session. (A vote after the quality checks reject a session is stored as rejected:
    test_quality.py.)"""
    from ratings import recruitment

    consent(client, campaign, PROLIFIC)
    payload = client.get(NEXT, {"campaign": campaign.pk}).json()
    lease = Assignment.objects.get(pk=payload["assignment"])
    served_seconds_ago(lease, 12)

    assert recruitment.session_complete(session=RaterSession.objects.get())

    lease.refresh_from_db()
    assert lease.status == Assignment.Status.EXPIRED
    assert lease.pair.slots_taken == 0  # the slot is free for other raters
    body = {
        "assignment": lease.pk,
        "idempotency_key": str(uuid.uuid4()),
        "listen_ms": {clip["slot"]: 6000 for clip in payload["clips"]},
        "choice": "A",
    }
    late = client.post(VOTES, body, content_type="application/json")
    assert late.status_code == 409, late.content
    assert not Vote.objects.exists()
