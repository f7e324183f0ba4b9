"""The vote API enforces the rating rules on the server: lease, listening time, ownership,
uniqueness and input validation. Nothing is stored by a refused request."""

import uuid

import pytest

from ratings.models import Assignment, Campaign, MosRating, Pair, Vote
from tests.factories import (
    CampaignFactory,
    GeneratorVersionFactory,
    PairFactory,
    served_seconds_ago,
)

NEXT = "/api/v1/assignments/next/"
VOTES = "/api/v1/votes/"

pytestmark = pytest.mark.django_db


def lease(client, campaign):
    response = client.get(NEXT, {"campaign": campaign.pk})
    assert response.status_code == 200, response.content
    return response.json()


def vote_body(payload, **overrides):
    body = {
        "assignment": payload["assignment"],
        "idempotency_key": str(uuid.uuid4()),
        "listen_ms": {clip["slot"]: 6000 for clip in payload["clips"]},
        "choice": "A",
    }
    body.update(overrides)
    return body


def nothing_stored():
    return Vote.objects.count() == 0 and MosRating.objects.count() == 0


@pytest.fixture
def campaign():
    return CampaignFactory(min_listen_seconds=5.0)


@pytest.fixture
def pair(campaign):
    return PairFactory(campaign=campaign)


def test_a_rater_who_listened_long_enough_can_vote(make_rater, api_client_for, pair):
    client = api_client_for(make_rater())
    payload = lease(client, pair.campaign)
    assert payload["prompt"] == pair.prompt.text
    served_seconds_ago(Assignment.objects.get(pk=payload["assignment"]), 12)

    response = client.post(VOTES, vote_body(payload), format="json")

    assert response.status_code == 201, response.content
    vote = Vote.objects.get()
    assert (vote.listen_ms_a, vote.listen_ms_b) == (6000, 6000)
    assert vote.elapsed_ms >= 12000
    pair.refresh_from_db()
    assert (pair.vote_count, pair.slots_taken) == (1, 1)
    assert Assignment.objects.get().status == Assignment.Status.VOTED


def test_voting_before_the_listen_time_has_passed_is_refused(make_rater, api_client_for, pair):
    client = api_client_for(make_rater())
    payload = lease(client, pair.campaign)
    served_seconds_ago(Assignment.objects.get(pk=payload["assignment"]), 3)

    # The browser claims enough listening, but the server's clock says 3 s have passed.
    response = client.post(VOTES, vote_body(payload), format="json")

    assert response.status_code == 422
    assert response.json()["error"] == "listening_too_short"
    assert nothing_stored()
    assert Pair.objects.get().vote_count == 0


def test_a_clip_reported_as_heard_too_briefly_is_refused(make_rater, api_client_for, pair):
    client = api_client_for(make_rater())
    payload = lease(client, pair.campaign)
    served_seconds_ago(Assignment.objects.get(pk=payload["assignment"]), 30)

    response = client.post(
        VOTES, vote_body(payload, listen_ms={"A": 6000, "B": 1200}), format="json"
    )

    assert response.status_code == 422
    assert "1.2 s" in response.json()["detail"]
    assert nothing_stored()


def test_reported_listening_longer_than_the_time_since_serving_is_refused(
    make_rater, api_client_for, pair
):
    client = api_client_for(make_rater())
    payload = lease(client, pair.campaign)
    served_seconds_ago(Assignment.objects.get(pk=payload["assignment"]), 11)

    response = client.post(
        VOTES, vote_body(payload, listen_ms={"A": 9000, "B": 9000}), format="json"
    )

    assert response.status_code == 422
    assert nothing_stored()


def test_voting_on_someone_elses_assignment_is_refused(make_rater, api_client_for, pair):
    owner_payload = lease(api_client_for(make_rater()), pair.campaign)
    served_seconds_ago(Assignment.objects.get(pk=owner_payload["assignment"]), 30)
    intruder = api_client_for(make_rater())

    response = intruder.post(VOTES, vote_body(owner_payload), format="json")

    assert response.status_code == 404
    assert response.json()["error"] == "assignment_not_found"
    assert nothing_stored()


def test_a_replay_with_the_same_key_returns_the_original_vote(make_rater, api_client_for, pair):
    client = api_client_for(make_rater())
    payload = lease(client, pair.campaign)
    served_seconds_ago(Assignment.objects.get(pk=payload["assignment"]), 12)
    body = vote_body(payload)

    first = client.post(VOTES, body, format="json")
    replay = client.post(VOTES, body, format="json")

    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json()["vote"] == first.json()["vote"]
    assert replay.json()["created"] is False
    assert Vote.objects.count() == 1
    assert Pair.objects.get().vote_count == 1


def test_a_second_vote_on_the_same_pair_with_a_new_key_is_refused(make_rater, api_client_for, pair):
    client = api_client_for(make_rater())
    payload = lease(client, pair.campaign)
    served_seconds_ago(Assignment.objects.get(pk=payload["assignment"]), 12)
    assert client.post(VOTES, vote_body(payload), format="json").status_code == 201

    again = client.post(VOTES, vote_body(payload, choice="B"), format="json")

    assert again.status_code == 409
    assert Vote.objects.get().choice in {"a", "b"}
    assert Vote.objects.count() == 1


def test_a_vote_on_an_expired_lease_is_refused(make_rater, api_client_for, pair, settings):
    client = api_client_for(make_rater())
    payload = lease(client, pair.campaign)
    served_seconds_ago(
        Assignment.objects.get(pk=payload["assignment"]), settings.RATING_LEASE_SECONDS + 5
    )

    response = client.post(VOTES, vote_body(payload), format="json")

    assert response.status_code == 409
    assert response.json()["error"] == "lease_expired"
    assert nothing_stored()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"assignment": "seven"},
        {"assignment": 1, "idempotency_key": "not-a-uuid", "listen_ms": {"A": 1}},
        {"assignment": 1, "idempotency_key": str(uuid.uuid4()), "listen_ms": "lots"},
        {"assignment": 1, "idempotency_key": str(uuid.uuid4()), "listen_ms": {"A": -5}},
        {"assignment": 1, "idempotency_key": str(uuid.uuid4()), "listen_ms": {"C": 5}},
        {"assignment": 1, "idempotency_key": str(uuid.uuid4()), "listen_ms": {}, "choice": "Z"},
        [1, 2, 3],
    ],
)
def test_malformed_vote_bodies_get_a_400_and_store_nothing(make_rater, api_client_for, pair, body):
    client = api_client_for(make_rater())
    lease(client, pair.campaign)

    response = client.post(VOTES, body, format="json")

    assert response.status_code == 400
    assert "error" in response.json()
    assert nothing_stored()


def test_invalid_json_gets_a_400(make_rater, api_client_for, pair):
    client = api_client_for(make_rater())
    response = client.post(VOTES, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert nothing_stored()


def test_an_oversized_body_is_refused(make_rater, api_client_for, pair):
    client = api_client_for(make_rater())
    payload = lease(client, pair.campaign)
    body = vote_body(payload, padding="x" * 10_000)
    response = client.post(VOTES, body, format="json")
    assert response.status_code == 400
    assert nothing_stored()


def test_a_body_over_django_s_upload_limit_gets_a_json_413_and_stores_nothing(
    make_rater, api_client_for, pair
):
    client = api_client_for(make_rater())
    payload = lease(client, pair.campaign)
    body = vote_body(payload, padding="x" * 2_000_000)

    response = client.post(VOTES, body, format="json")

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "too_large"
    assert nothing_stored()


def test_head_on_the_next_pair_takes_no_lease(make_rater, api_client_for, pair):
    client = api_client_for(make_rater())

    response = client.head(NEXT, {"campaign": pair.campaign.pk})

    assert response.status_code == 405
    assert not Assignment.objects.exists()


def test_a_preference_vote_with_scores_is_refused(make_rater, api_client_for, pair):
    client = api_client_for(make_rater())
    payload = lease(client, pair.campaign)
    served_seconds_ago(Assignment.objects.get(pk=payload["assignment"]), 12)
    body = vote_body(payload, scores={"A": 3, "B": 4})
    response = client.post(VOTES, body, format="json")
    assert response.status_code == 400
    assert nothing_stored()


def test_the_choice_is_stored_in_track_terms_whichever_side_was_shown_left(
    make_rater, api_client_for
):
    campaign = CampaignFactory(votes_per_item=1)
    pairs = PairFactory.create_batch(30, campaign=campaign)
    client = api_client_for(make_rater())
    for _ in pairs:
        payload = lease(client, campaign)
        assignment = Assignment.objects.get(pk=payload["assignment"])
        served_seconds_ago(assignment, 12)
        left_url = payload["clips"][0]["url"]
        assert client.post(VOTES, vote_body(payload, choice="A"), format="json").status_code == 201
        vote = Vote.objects.get(assignment=assignment)
        chosen = vote.pair.track_a if vote.choice == "a" else vote.pair.track_b
        assert chosen.public_id.hex in left_url.replace("-", "")
    # The shown order is randomised per assignment: both orders occur.
    assert {True, False} == set(Vote.objects.values_list("left_is_a", flat=True))


def test_side_by_side_votes_store_a_1_to_5_rating_per_clip(make_rater, api_client_for):
    campaign = CampaignFactory(protocol=Campaign.Protocol.SIDE_BY_SIDE)
    pair = PairFactory(campaign=campaign)
    client = api_client_for(make_rater())
    payload = lease(client, campaign)
    assignment = Assignment.objects.get(pk=payload["assignment"])
    served_seconds_ago(assignment, 12)

    body = vote_body(payload, choice=None, scores={"A": 5, "B": 2})
    assert client.post(VOTES, body, format="json").status_code == 201

    left = pair.track_a if assignment.left_is_a else pair.track_b
    right = pair.track_b if assignment.left_is_a else pair.track_a
    assert MosRating.objects.get(track=left).score == 5
    assert MosRating.objects.get(track=right).score == 2


@pytest.mark.parametrize("scores", [{"A": 6, "B": 2}, {"A": 0, "B": 2}, {"A": 3}])
def test_side_by_side_scores_outside_1_to_5_or_missing_are_refused(
    make_rater, api_client_for, scores
):
    campaign = CampaignFactory(protocol=Campaign.Protocol.SIDE_BY_SIDE)
    PairFactory(campaign=campaign)
    client = api_client_for(make_rater())
    payload = lease(client, campaign)
    served_seconds_ago(Assignment.objects.get(pk=payload["assignment"]), 12)

    response = client.post(VOTES, vote_body(payload, choice=None, scores=scores), format="json")

    assert response.status_code == 400
    assert nothing_stored()


def test_a_mos_item_is_one_clip_rated_on_the_acr_scale(make_rater, api_client_for):
    campaign = CampaignFactory(protocol=Campaign.Protocol.MOS)
    pair = PairFactory(campaign=campaign, track_b=None)
    client = api_client_for(make_rater())
    payload = lease(client, campaign)
    assert [clip["slot"] for clip in payload["clips"]] == ["A"]
    served_seconds_ago(Assignment.objects.get(pk=payload["assignment"]), 6)

    body = vote_body(payload, choice=None, scores={"A": 4}, listen_ms={"A": 5500})
    assert client.post(VOTES, body, format="json").status_code == 201

    rating = MosRating.objects.get()
    assert (rating.track_id, rating.score, rating.listen_ms) == (pair.track_a_id, 4, 5500)


def test_the_lease_reveals_nothing_that_tells_the_versions_apart(make_rater, api_client_for):
    campaign = CampaignFactory(purpose="evaluate", version_b=GeneratorVersionFactory())
    pair = PairFactory(
        campaign=campaign,
        track_a__caption="caption of the baseline",
        track_b__generator_version=campaign.version_b,
        track_b__caption="caption of the candidate",
    )
    payload = lease(api_client_for(make_rater()), campaign)

    assert set(payload) == {"assignment", "campaign", "protocol", "prompt", "expires_at", "clips"}
    text = str(payload).lower()
    for secret in (campaign.version_a.name, campaign.version_b.name, "caption", "seed"):
        assert secret.lower() not in text
    for clip in payload["clips"]:
        assert set(clip) == {"slot", "url", "duration_ms", "required_listen_ms"}
    assert {clip["url"] for clip in payload["clips"]} == {
        f"/clips/{pair.track_a.public_id}",
        f"/clips/{pair.track_b.public_id}",
    }


def test_a_script_fetches_the_leased_clips_with_its_api_token(make_rater, api_client_for, pair):
    client = api_client_for(make_rater())
    payload = lease(client, pair.campaign)

    responses = [client.get(clip["url"]) for clip in payload["clips"]]

    assert [response.status_code for response in responses] == [200, 200]
    assert all(response["Content-Type"] == "audio/ogg" for response in responses)
    assert b"".join(responses[0].streaming_content).startswith(b"OggS")
