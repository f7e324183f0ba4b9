"""Admins create campaigns from a page and follow their progress; bad input stores nothing."""

import pytest

from generation.models import Prompt
from ratings.models import Campaign, Role
from tests.factories import CampaignFactory, GeneratorVersionFactory, PairFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, make_rater):
    rater = make_rater(role=Role.ADMIN)
    client.force_login(rater.user)
    return client


def form_data(**overrides):
    data = {
        "name": "Pilot",
        "purpose": "collect",
        "protocol": "preference",
        "version_a": GeneratorVersionFactory().pk,
        "prompts": "slow sad piano ballad\n\nfast techno with drums\nslow sad piano ballad\n",
        "votes_per_item": 3,
        "min_listen_seconds": 5,
        "clip_seconds": 10,
        "instructions": "Pick the one you like.",
    }
    data.update(overrides)
    return data


def test_an_admin_creates_a_campaign_with_its_prompts_parsed(admin_client):
    response = admin_client.post("/manage/campaigns/new/", form_data())

    campaign = Campaign.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/manage/campaigns/{campaign.pk}/"
    assert campaign.status == Campaign.Status.GENERATING
    assert sorted(campaign.prompts.values_list("text", flat=True)) == [
        "fast techno with drums",
        "slow sad piano ballad",
    ]
    assert campaign.generation_total == 4
    ballad = Prompt.objects.get(text="slow sad piano ballad")
    assert ballad.attributes["mode"] == "minor"


def test_the_crowd_and_quality_settings_of_the_form_are_stored(admin_client):
    settings = {
        "qualification_required": "on", "qualification_valid_hours": "12", "check_rate": "0.1",
        "quality_policy": "p808", "pair_selection": "active", "consent_text": "I agree.",
        "completion_code": "C0DE42", "votes_per_session": "20", "max_votes_per_rater": "60",
        "completion_url": "https://app.prolific.com/submissions/complete?cc={code}",
    }  # fmt: skip

    response = admin_client.post("/manage/campaigns/new/", form_data(**settings))

    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert campaign.qualification_required and campaign.qualification_valid_hours == 12
    assert (campaign.check_rate, campaign.quality_policy) == (0.1, "p808")
    assert campaign.pair_selection == "active"
    assert (campaign.consent_text, campaign.completion_code) == ("I agree.", "C0DE42")
    assert campaign.completion_url.endswith("cc={code}")
    assert (campaign.votes_per_session, campaign.max_votes_per_rater) == (20, 60)


def test_left_empty_the_crowd_settings_keep_their_defaults(admin_client):
    admin_client.post("/manage/campaigns/new/", form_data())

    campaign = Campaign.objects.get()
    assert not campaign.qualification_required and campaign.check_rate == 0
    assert campaign.quality_policy == "none" and campaign.pair_selection == "uniform"
    assert campaign.votes_per_session is None and campaign.completion_code == ""


def test_an_evaluate_campaign_without_a_challenger_is_refused_and_nothing_stored(admin_client):
    response = admin_client.post("/manage/campaigns/new/", form_data(purpose="evaluate"))

    assert response.status_code == 400
    assert b"needs a challenger version" in response.content
    assert Campaign.objects.count() == 0
    assert Prompt.objects.count() == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"prompts": "   \n "},
        {"votes_per_item": 0},
        {"min_listen_seconds": -1},
        {"name": ""},
        {"check_rate": "0.9"},
        {"quality_policy": "lenient"},
        {"completion_url": "not a url"},
        {"variant_axes": ["timbre"]},
        {"variant_axes": ["tempo"], "protocol": "mos"},
        {"variant_axes": ["tempo"], "variant_share": "1.5"},
    ],
)
def test_invalid_campaign_forms_store_nothing(admin_client, overrides):
    response = admin_client.post("/manage/campaigns/new/", form_data(**overrides))
    assert response.status_code == 400
    assert Campaign.objects.count() == 0


def test_a_collect_campaign_that_teaches_stores_its_variant_axes(admin_client):
    data = form_data(variant_axes=["tempo", "drums"], variant_share="0.75")
    response = admin_client.post("/manage/campaigns/new/", data)

    campaign = Campaign.objects.get()
    assert response.status_code == 302
    assert (campaign.variant_axes, campaign.variant_share) == (["tempo", "drums"], 0.75)
    page = admin_client.get(f"/manage/campaigns/{campaign.pk}/").content.decode()
    assert "75% of the pairs set a clip against a variant changed in one of: tempo, drums" in page
    plain = admin_client.post("/manage/campaigns/new/", form_data(name="plain"))
    assert plain.status_code == 302
    assert Campaign.objects.get(name="plain").variant_axes == []


def test_the_campaign_page_shows_generation_and_vote_progress(admin_client):
    campaign = CampaignFactory(votes_per_item=2, generation_total=4, generation_done=3)
    PairFactory.create_batch(2, campaign=campaign)

    response = admin_client.get(f"/manage/campaigns/{campaign.pk}/")

    assert response.status_code == 200
    progress = response.context["progress"]
    assert progress["items"] == 2
    assert progress["votes_wanted"] == 4
    assert progress["votes_per_item"] == [
        {"votes": 0, "items": 2},
        {"votes": 1, "items": 0},
        {"votes": 2, "items": 0},
    ]
    assert b"3 / 4" in response.content


def test_raters_see_the_task_not_a_campaign_name_that_names_the_versions(client, make_rater):
    """An evaluation's name says which versions it compares ("Evaluation: v2 vs v1"); the
    pages raters see must not, or the comparison is not blind."""
    candidate = GeneratorVersionFactory(name="candidate-rloo7")
    parent = GeneratorVersionFactory(name="planned-parent")
    campaign = CampaignFactory(
        name=f"Evaluation: {candidate.name} vs {parent.name}",
        purpose=Campaign.Purpose.EVALUATE,
        version_a=candidate,
        version_b=parent,
        status=Campaign.Status.ACTIVE,
    )
    PairFactory(campaign=campaign)
    client.force_login(make_rater().user)

    pages = [client.get(url) for url in ("/", f"/rate/{campaign.pk}/", f"/join/{campaign.pk}/")]

    for page in pages:
        assert page.status_code == 200
        html = page.content.decode()
        assert campaign.title_for_raters in html
        assert candidate.name not in html and parent.name not in html and "Evaluation" not in html


def test_an_admin_s_rater_title_is_what_raters_see(admin_client):
    response = admin_client.post(
        "/manage/campaigns/new/", form_data(name="v2 vs v1, pilot", rater_title="Film music")
    )

    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert (campaign.name, campaign.title_for_raters) == ("v2 vs v1, pilot", "Film music")
    assert CampaignFactory(protocol="mos").title_for_raters == "Rate the sound of each clip"
