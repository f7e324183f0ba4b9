"""Every URL states the lowest role it admits; this walks the whole matrix of URLs and roles.
A new URL without a row here fails the first test, so none can be added unguarded."""

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import URLPattern, URLResolver, get_resolver

from ratings.dataset import DataFilters
from ratings.models import Campaign, Role
from ratings.roles import ANONYMOUS
from ratings.snapshots import snapshot_create
from reward.finetune_settings import DEFAULT_SETTINGS
from reward.models import Evaluation, FineTuneRun, RewardModel
from tests.factories import (
    CampaignFactory,
    GeneratorVersionFactory,
    PairFactory,
    RaterFactory,
    vote_on,
)

ROLES = [ANONYMOUS, Role.RATER, Role.RESEARCHER, Role.ADMIN]
RANK = {role: index for index, role in enumerate(ROLES)}

# name -> (method, path template, lowest role admitted, is an API endpoint)
MATRIX = {
    "healthz": ("get", "/healthz", ANONYMOUS, False),
    "login": ("get", "/accounts/login/", ANONYMOUS, False),
    "logout": ("post", "/accounts/logout/", ANONYMOUS, False),
    "home": ("get", "/", Role.RATER, False),
    "rate": ("get", "/rate/{campaign}/", Role.RATER, False),
    # Anonymous visitors too when PLAYGROUND_ALLOW_ANONYMOUS is on (off by default).
    "playground": ("get", "/play/", Role.RATER, False),
    "join": (
        "get",
        "/join/{campaign}/?PROLIFIC_PID=p1&STUDY_ID=s1&SESSION_ID=x1",
        ANONYMOUS,
        False,
    ),
    "join-complete": ("get", "/join/{campaign}/complete/", Role.RATER, False),
    "quality": ("get", "/manage/quality/", Role.ADMIN, False),
    "clip": ("get", "/clips/{track}", Role.RATER, True),
    "campaign-list": ("get", "/manage/campaigns/", Role.RESEARCHER, False),
    "campaign-detail": ("get", "/manage/campaigns/{campaign}/", Role.RESEARCHER, False),
    "campaign-create": ("get", "/manage/campaigns/new/", Role.ADMIN, False),
    "api-assignment-next": (
        "get",
        "/api/v1/assignments/next/?campaign={campaign}",
        Role.RATER,
        True,
    ),
    "api-votes": ("post", "/api/v1/votes/", Role.RATER, True),
    # Anonymous visitors are admitted only while PLAYGROUND_ALLOW_ANONYMOUS is on (off here).
    "api-playground-requests": ("post", "/api/v1/playground/requests/", Role.RATER, True),
    "api-playground-request": ("get", "/api/v1/playground/requests/1/", Role.RATER, True),
    "api-playground-retry": ("post", "/api/v1/playground/requests/1/retry/", Role.RATER, True),
    "api-playground-download": (
        "get",
        "/api/v1/playground/requests/1/download/",
        Role.RATER,
        True,
    ),
    "api-playground-examples": ("get", "/api/v1/playground/examples/", Role.RATER, True),
    "admin-index": ("get", "/admin/", Role.ADMIN, False),
    "reward-model-list": ("get", "/manage/rewards/", Role.RESEARCHER, False),
    "reward-model-detail": ("get", "/manage/rewards/{reward_model}/", Role.RESEARCHER, False),
    "reward-model-create": ("get", "/manage/rewards/new/", Role.ADMIN, False),
    "reward-model-cancel": ("post", "/manage/rewards/{reward_model}/cancel/", Role.ADMIN, False),
    "api-reward-models": ("get", "/api/v1/reward-models/", Role.RESEARCHER, True),
    "api-reward-model": ("get", "/api/v1/reward-models/{reward_model}/", Role.RESEARCHER, True),
    "finetune-list": ("get", "/manage/finetune/", Role.RESEARCHER, False),
    "finetune-detail": ("get", "/manage/finetune/{run}/", Role.RESEARCHER, False),
    "finetune-create": ("get", "/manage/finetune/new/", Role.ADMIN, False),
    "finetune-cancel": ("post", "/manage/finetune/{run}/cancel/", Role.ADMIN, False),
    "finetune-evaluate": ("post", "/manage/finetune/{run}/evaluate/", Role.ADMIN, False),
    "finetune-sample": ("get", "/manage/finetune/{run}/samples/0", Role.RESEARCHER, False),
    "api-finetune-run": ("get", "/api/v1/finetune-runs/{run}/", Role.RESEARCHER, True),
    "api-reward-model-cancel": (
        "post",
        "/api/v1/reward-models/{reward_model}/cancel/",
        Role.ADMIN,
        True,
    ),
    "evaluation-list": ("get", "/manage/evaluations/", Role.RESEARCHER, False),
    "evaluation-detail": ("get", "/manage/evaluations/{evaluation}/", Role.RESEARCHER, False),
    "evaluation-promote": ("post", "/manage/evaluations/{evaluation}/promote/", Role.ADMIN, False),
    "evaluation-retire": ("post", "/manage/evaluations/{evaluation}/retire/", Role.ADMIN, False),
    "research": ("get", "/research/", Role.RESEARCHER, False),
    "leaderboard": ("get", "/leaderboard/{campaign}/", Role.RESEARCHER, False),
    "api-leaderboard": ("get", "/api/v1/leaderboard/?campaign={campaign}", Role.RESEARCHER, True),
    "api-schema": ("get", "/api/schema/", Role.RESEARCHER, True),
    "api-docs": ("get", "/api/docs/", Role.RESEARCHER, True),
    "research-vote-list": ("get", "/api/v1/research/votes/", Role.RESEARCHER, True),
    "research-vote-detail": ("get", "/api/v1/research/votes/{vote}/", Role.RESEARCHER, True),
    "research-rating-list": ("get", "/api/v1/research/ratings/", Role.RESEARCHER, True),
    "research-rating-detail": ("get", "/api/v1/research/ratings/{rating}/", Role.RESEARCHER, True),
    "research-prompt-list": ("get", "/api/v1/research/prompts/", Role.RESEARCHER, True),
    "research-prompt-detail": ("get", "/api/v1/research/prompts/{prompt}/", Role.RESEARCHER, True),
    "research-track-list": ("get", "/api/v1/research/tracks/", Role.RESEARCHER, True),
    "research-track-detail": ("get", "/api/v1/research/tracks/{track_id}/", Role.RESEARCHER, True),
    "research-campaign-list": ("get", "/api/v1/research/campaigns/", Role.RESEARCHER, True),
    "research-campaign-detail": (
        "get",
        "/api/v1/research/campaigns/{campaign}/",
        Role.RESEARCHER,
        True,
    ),
    "research-snapshot-list": ("get", "/api/v1/research/snapshots/", Role.RESEARCHER, True),
    "research-snapshot-detail": (
        "get",
        "/api/v1/research/snapshots/{snapshot}/",
        Role.RESEARCHER,
        True,
    ),
    "research-snapshot-file": (
        "get",
        "/api/v1/research/snapshots/{snapshot}/files/manifest.json",
        Role.RESEARCHER,
        True,
    ),
}


def named_routes(patterns, namespace: str = "") -> set[str]:
    names: set[str] = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace == "admin":
                names.add("admin-index")  # the admin's own views share its staff check
                continue
            names |= named_routes(pattern.url_patterns, pattern.namespace or namespace)
        elif isinstance(pattern, URLPattern):
            names.add(pattern.name)
    return names


def test_every_url_has_a_row_in_the_role_matrix():
    assert named_routes(get_resolver().url_patterns) == set(MATRIX)


@pytest.fixture
def world(db):
    pair = PairFactory(campaign=CampaignFactory())
    vote = vote_on(pair, RaterFactory(), "a", scores=(3, 4))
    snapshot = snapshot_create(filters=DataFilters(), formats=["jsonl"], queue=False)
    reward_model = RewardModel.objects.create(name="matrix", kind="preference", steps=10)
    candidate, baseline = GeneratorVersionFactory(), GeneratorVersionFactory()
    evaluate = CampaignFactory(
        purpose=Campaign.Purpose.EVALUATE, version_a=candidate, version_b=baseline
    )
    evaluation = Evaluation.objects.create(
        campaign=evaluate, candidate=candidate, baseline=baseline
    )
    sample = default_storage.save("finetune/matrix.ogg", ContentFile(b"OggS placeholder"))
    run = FineTuneRun.objects.create(
        name="matrix", base_version=baseline, algorithm="rloo", steps=1, status="finished",
        settings=DEFAULT_SETTINGS, result_version=GeneratorVersionFactory(parent=baseline),
        data_summary={"held_out_prompts": ["calm piano"]},
        samples=[{"step": 1, "prompt": "calm piano", "file": sample}],
    )  # fmt: skip
    return {
        "campaign": pair.campaign_id,
        "track": pair.track_a.public_id,
        "track_id": pair.track_a_id,
        "prompt": pair.prompt_id,
        "vote": vote.pk,
        "rating": vote.ratings.first().pk,
        "snapshot": snapshot.pk,
        "reward_model": reward_model.pk,
        "evaluation": evaluation.pk,
        "run": run.pk,
    }


def client_as(role, client, make_rater):
    if role != ANONYMOUS:
        rater = make_rater(role=role)
        if role == Role.ADMIN:
            rater.user.is_staff = True
            rater.user.save()
        client.force_login(rater.user)
    return client


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(MATRIX))
def test_each_url_admits_exactly_the_roles_it_states(name, role, world, client, make_rater):
    method, template, lowest, is_api = MATRIX[name]
    client = client_as(role, client, make_rater)
    path = template.format(**world)
    body = {"content_type": "application/json", "data": {}} if is_api and method == "post" else {}
    response = getattr(client, method)(path, **body)

    if RANK[role] >= RANK[lowest]:
        assert response.status_code not in (401, 403), response.content[:200]
        if response.status_code == 302 and name != "logout":  # logout lands on login by design
            assert "/login/" not in response["Location"]
    elif is_api:
        assert response.status_code in (401, 403)
    elif role == ANONYMOUS or name == "admin-index":
        assert response.status_code == 302
        assert "login" in response["Location"]
    else:
        assert response.status_code == 403
