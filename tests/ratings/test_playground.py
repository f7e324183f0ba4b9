"""The playground: moderation before anything is queued, a bounded and deduplicated queue per
rater, pairs that appear whole or not at all, votes in the ordinary tables, guests only when
enabled, and arena draws that favour under-tested versions. Clips are real (procedural backend
and FluidSynth) and 1 s long."""

import random
import uuid
from collections import Counter

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from rest_framework.test import APIClient

from generation import services as generation_services
from generation.models import Prompt
from generation.music.backends import get_backend
from ratings import leasing, moderation, playground, selectors, tasks
from ratings.dataset import DataFilters, filtered_votes
from ratings.models import (
    Assignment,
    Campaign,
    Pair,
    PlaygroundRequest,
    PromptRejection,
    Rater,
    Vote,
)
from tests.factories import (
    CampaignFactory,
    GeneratorVersionFactory,
    PairFactory,
    PromptFactory,
    RaterFactory,
    TrackFactory,
    served_seconds_ago,
    vote_on,
)

pytestmark = pytest.mark.django_db
REQUESTS = "/api/v1/playground/requests/"
VOTES = "/api/v1/votes/"


def reject_jazz(text: str) -> str | None:
    """A moderation hook, named by its dotted path in the settings."""
    return "no jazz today" if "jazz" in text.lower() else None


@pytest.fixture(autouse=True)
def _playground_settings(settings):
    settings.PLAYGROUND_CLIP_SECONDS = 1.0
    settings.PLAYGROUND_BLOCKLIST = ["forbidden", "ass"]
    settings.PLAYGROUND_MODERATION_HOOK = "tests.ratings.test_playground.reject_jazz"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def version():
    return GeneratorVersionFactory(name="composer-v1")


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """The generation jobs queued, instead of sending them to a broker."""
    jobs: list[int] = []
    monkeypatch.setattr(tasks.generate_playground_request, "delay_on_commit", jobs.append)
    return jobs


@pytest.fixture
def rater():
    return RaterFactory()


@pytest.fixture
def client(rater, api_client_for):
    return api_client_for(rater)


def submit(client, prompt: str):
    return client.post(REQUESTS, {"prompt": prompt}, format="json")


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        ("Forbidden techno", "blocklist:forbidden"),
        ("x" * 301, "too_long"),
        ("hi", "too_short"),
        ("smooth JAZZ trio", "hook:no jazz today"),
    ],
)
def test_a_refused_prompt_is_logged_and_never_reaches_the_generator(
    prompt, reason, client, rater, version, queued
):
    response = submit(client, prompt)

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "prompt_rejected" and body["error"] == body["detail"]
    assert PromptRejection.objects.get().reason == reason
    assert PromptRejection.objects.get().rater == rater
    assert queued == []
    assert not PlaygroundRequest.objects.exists()
    assert not Prompt.objects.filter(source=Prompt.Source.PLAYGROUND).exists()


def test_the_blocklist_matches_whole_words_in_any_case(rater):
    assert moderation.prompt_moderate(text="  slap  bass and  classical ", rater=rater) == (
        "slap bass and classical"
    )
    with pytest.raises(moderation.PromptRejected):
        moderation.prompt_moderate(text="kick ASS drums", rater=rater)


def test_a_fourth_pending_request_is_refused_with_429_and_nothing_is_stored(
    client, version, queued
):
    for text in ("calm piano", "fast techno", "sad strings"):
        assert submit(client, text).status_code == 201

    response = submit(client, "epic brass")

    assert response.status_code == 429
    assert response.json()["code"] == "too_many_pending"
    assert PlaygroundRequest.objects.count() == 3 and len(queued) == 3
    assert not Prompt.objects.filter(text="epic brass").exists()


def test_the_same_prompt_while_pending_returns_the_same_request(client, version, queued):
    first = submit(client, "calm piano")
    again = submit(client, "  calm   piano ")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert first.json()["url"] == f"{REQUESTS}{first.json()['id']}/"
    assert first.json()["clips_total"] == 2 and first.json()["status"] == "queued"
    assert PlaygroundRequest.objects.count() == 1 and queued == [first.json()["id"]]


def test_a_side_that_fails_leaves_no_pair_and_a_retry_makes_the_whole_pair(
    client, rater, version, queued, monkeypatch
):
    request_id = submit(client, "calm piano in C major").json()["id"]
    real = generation_services.track_generate
    calls = []

    def fail_on_the_second_clip(**kwargs):
        calls.append(kwargs["seed"])
        if len(calls) == 2:
            raise RuntimeError("synthesizer crashed")
        return real(**kwargs)

    monkeypatch.setattr(generation_services, "track_generate", fail_on_the_second_clip)

    assert playground.playground_request_generate(request_id=request_id) == "failed"

    status = client.get(f"{REQUESTS}{request_id}/").json()
    assert status["status"] == "failed" and "Clip B" in status["error"]
    assert status["lease"] is None and status["voted"] is False
    assert not Pair.objects.exists() and not Assignment.objects.filter(rater=rater).exists()

    monkeypatch.setattr(generation_services, "track_generate", real)
    retried = client.post(f"{REQUESTS}{request_id}/retry/")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert queued == [request_id, request_id]
    assert playground.playground_request_generate(request_id=request_id) == "ready"

    status = client.get(f"{REQUESTS}{request_id}/").json()
    assert status["status"] == "ready" and status["clips_done"] == 2 and status["error"] == ""
    assert len(status["lease"]["clips"]) == 2
    assert Pair.objects.count() == 1 and Assignment.objects.filter(rater=rater).count() == 1
    assert client.post(f"{REQUESTS}{request_id}/retry/").status_code == 409


def test_a_time_limit_fails_the_request_with_a_clear_message(version, rater, monkeypatch):
    made, _ = playground.playground_request_create(rater=rater, text="calm piano")

    def too_slow(**kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(generation_services, "track_generate", too_slow)
    playground.playground_request_generate(request_id=made.pk)

    made.refresh_from_db()
    assert made.status == "failed" and "longer than" in made.error and made.pair is None


def test_a_ready_pair_is_voted_on_with_a_comment_then_revealed_and_downloaded(
    client, rater, version, queued, api_client_for
):
    request_id = submit(client, "a calm piano piece in C major").json()["id"]
    playground.playground_request_generate(request_id=request_id)

    status = client.get(f"{REQUESTS}{request_id}/").json()
    lease = status["lease"]
    assert status["status"] == "ready" and status["reveal"] is None
    assert lease["protocol"] == "preference" and [c["slot"] for c in lease["clips"]] == ["A", "B"]
    assert lease["clips"][0]["required_listen_ms"] == 1000
    assert client.get(f"{REQUESTS}{request_id}/download/").status_code == 409

    served_seconds_ago(Assignment.objects.get(pk=lease["assignment"]), 5)
    vote = client.post(
        VOTES,
        {
            "assignment": lease["assignment"], "idempotency_key": str(uuid.uuid4()),
            "choice": "A", "listen_ms": {"A": 1000, "B": 1000}, "comment": "warmer piano",
        },
        format="json",
    )  # fmt: skip
    assert vote.status_code == 201, vote.content

    stored = Vote.objects.get()
    assert stored.comment == "warmer piano"
    assert stored.pair.prompt.source == Prompt.Source.PLAYGROUND
    assert stored.campaign.purpose == Campaign.Purpose.PLAYGROUND
    status = client.get(f"{REQUESTS}{request_id}/").json()
    assert status["voted"] is True and status["lease"] is None
    assert status["reveal"]["A"] == status["reveal"]["B"] == "composer-v1"
    assert status["reveal"]["choice"] == "A"
    download = client.get(status["reveal"]["download_url"])
    assert download.status_code == 200
    assert "attachment" in download["Content-Disposition"]
    left_track = stored.pair.track_a if stored.left_is_a else stored.pair.track_b
    assert b"".join(download.streaming_content) == left_track.audio.open("rb").read()

    stranger = api_client_for(RaterFactory())
    assert stranger.get(f"{REQUESTS}{request_id}/").status_code == 404
    assert stranger.get(f"{REQUESTS}{request_id}/download/").status_code == 404
    # The playground's campaign is paused and listed nowhere: nobody else is leased its pairs.
    campaign = Campaign.objects.get(purpose=Campaign.Purpose.PLAYGROUND)
    assert campaign.status == Campaign.Status.PAUSED
    assert campaign not in selectors.campaigns_open_for_rating()
    assert leasing.assignment_lease_next(rater=RaterFactory(), campaign=campaign) is None


def test_an_example_prompt_uses_the_curated_row_and_reveal_can_be_off(
    client, version, queued, settings
):
    settings.PLAYGROUND_REVEAL_VERSIONS = False
    example = PromptFactory(text="sad strings in D minor")
    assert {"id": example.pk, "text": example.text} in client.get(
        "/api/v1/playground/examples/"
    ).json()

    made = client.post(REQUESTS, {"example": example.pk}, format="json").json()

    request = PlaygroundRequest.objects.get(pk=made["id"])
    assert request.prompt == example and request.mode == "samples"
    playground.playground_request_generate(request_id=request.pk)
    request.refresh_from_db()
    served_seconds_ago(request.assignment, 5)
    tie = {
        "assignment": request.assignment_id, "idempotency_key": str(uuid.uuid4()),
        "choice": "tie", "listen_ms": {"A": 1000, "B": 1000},
    }  # fmt: skip
    assert client.post(VOTES, tie, format="json").status_code == 201
    reveal = client.get(f"{REQUESTS}{request.pk}/").json()["reveal"]
    assert reveal == {"A": None, "B": None, "choice": "tie", "download_url": None}


def test_guests_may_play_only_when_the_admin_allows_it(version, queued, settings):
    example = PromptFactory(text="happy ukulele")
    assert APIClient().post(REQUESTS, {"example": example.pk}, format="json").status_code in (
        401,
        403,
    )

    settings.PLAYGROUND_ALLOW_ANONYMOUS = True
    settings.PLAYGROUND_GUEST_REQUESTS_PER_HOUR = 1
    guest = APIClient()
    made = guest.post(REQUESTS, {"example": example.pk}, format="json")

    assert made.status_code == 201 and made.json()["csrf_token"]
    rater = Rater.objects.get(source=Rater.Source.GUEST)
    assert rater.external_id.startswith("guest-") and rater.role == "rater"
    assert guest.get(made.json()["url"]).status_code == 200  # the session is the guest's
    over = APIClient().post(REQUESTS, {"example": example.pk}, format="json")  # same address
    assert over.status_code == 429


def test_guests_rate_nothing_but_their_playground_pairs(version, queued, settings):
    settings.PLAYGROUND_ALLOW_ANONYMOUS = True
    campaign = CampaignFactory(status=Campaign.Status.ACTIVE)
    guest = APIClient()
    assert guest.post(REQUESTS, {"prompt": "a calm harp"}, format="json").status_code == 201

    leased = guest.get(f"/api/v1/assignments/next/?campaign={campaign.pk}")

    assert leased.status_code == 403
    assert guest.get(f"/rate/{campaign.pk}/").status_code == 403
    assert guest.get("/")["Location"] == "/play/"
    assert not Assignment.objects.filter(campaign=campaign).exists()


def test_arena_draws_favour_versions_with_fewer_votes(rater, queued, settings):
    fresh, tested, veteran = (GeneratorVersionFactory(arena_enabled=True) for _ in range(3))
    arena = CampaignFactory(purpose=Campaign.Purpose.PLAYGROUND, version_a=fresh)
    pair = PairFactory(
        campaign=arena,
        track_a=TrackFactory(generator_version=tested),
        track_b=TrackFactory(generator_version=veteran),
    )
    vote_on(pair, RaterFactory(), "a")
    assert playground.arena_vote_counts([fresh.pk, tested.pk, veteran.pk]) == {
        fresh.pk: 0, tested.pk: 1, veteran.pk: 1,
    }  # fmt: skip

    counts = {fresh.pk: 0, tested.pk: 20, veteran.pk: 100}
    rng = random.Random(7)
    heard = Counter()
    for _ in range(2000):
        for version in playground.arena_draw(
            [fresh, tested, veteran], counts, prior_votes=5, rng=rng
        ):
            heard[version.pk] += 1
    assert heard[fresh.pk] > heard[tested.pk] > heard[veteran.pk]

    settings.PLAYGROUND_ARENA = True
    made, _ = playground.playground_request_create(rater=rater, text="calm piano")
    assert made.mode == "arena" and made.version_a != made.version_b
    assert {made.version_a, made.version_b} <= {fresh, tested, veteran}


def test_exports_can_leave_out_playground_prompts():
    typed = PairFactory(prompt=PromptFactory(source=Prompt.Source.PLAYGROUND))
    curated = PairFactory()
    vote_on(typed, RaterFactory(), "a")
    kept = vote_on(curated, RaterFactory(), "b")
    filters = DataFilters(prompt_sources=("curated",))

    assert list(filtered_votes(filters)) == [kept]
    assert DataFilters.from_json(filters.to_json()) == filters


def test_a_worker_keeps_its_generator_loaded_between_jobs():
    config = {"variation": 0.4}
    assert get_backend("procedural", config) is get_backend("procedural", dict(config))
    assert get_backend("procedural", {"variation": 0.5}) is not get_backend("procedural", config)
