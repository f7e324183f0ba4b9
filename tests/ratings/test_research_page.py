"""The researcher page summarises campaigns (votes, raters, Krippendorff's alpha of the
choices), lists dataset snapshots with their downloads, and requests new ones; bad requests
are shown back with status 400 and store nothing."""

import krippendorff
import numpy as np
import pytest

from ratings.dataset import DataFilters
from ratings.models import Campaign, DatasetSnapshot, Role
from ratings.selectors import choice_agreement
from ratings.snapshots import snapshot_build, snapshot_create
from tests.factories import CampaignFactory, PairFactory, vote_on

pytestmark = pytest.mark.django_db
PAGE = "/research/"


@pytest.fixture
def researcher(client, make_rater):
    client.force_login(make_rater(role=Role.RESEARCHER).user)
    return client


@pytest.fixture(autouse=True)
def _snapshots_in_tmp(settings, tmp_path):
    settings.SNAPSHOT_DIR = tmp_path / "snapshots"


def test_agreement_is_krippendorffs_alpha_over_pairs_as_units(make_rater):
    campaign = CampaignFactory()
    pairs = [PairFactory(campaign=campaign) for _ in range(3)]
    raters = [make_rater() for _ in range(3)]
    choices = [["a", "a", "b"], ["b", "b", "b"], ["tie", "a", None]]
    for pair, row in zip(pairs, choices, strict=True):
        for rater, choice in zip(raters, row, strict=True):
            if choice:
                vote_on(pair, rater, choice)
    code = {"a": 0, "b": 1, "tie": 2}
    by_rater = [[code[row[r]] if row[r] else np.nan for row in choices] for r in range(3)]
    expected = krippendorff.alpha(reliability_data=by_rater, level_of_measurement="nominal")

    assert choice_agreement([campaign.pk])[campaign.pk] == pytest.approx(expected)


def test_agreement_is_undefined_without_overlap_or_without_variety(make_rater):
    alone, unanimous = CampaignFactory(), CampaignFactory()
    vote_on(PairFactory(campaign=alone), make_rater(), "a")
    pair = PairFactory(campaign=unanimous)
    vote_on(pair, make_rater(), "a")
    vote_on(pair, make_rater(), "a")

    assert choice_agreement([alone.pk, unanimous.pk]) == {alone.pk: None, unanimous.pk: None}


@pytest.mark.django_db(transaction=True)  # the snapshot build reads on a second connection
def test_the_page_shows_campaign_summaries_and_snapshots(researcher, make_rater):
    agreeing = CampaignFactory(name="agreeing campaign")
    scored = CampaignFactory(name="scored campaign", protocol=Campaign.Protocol.MOS)
    for choice in ("a", "b"):
        pair = PairFactory(campaign=agreeing)
        vote_on(pair, make_rater(), choice)
        vote_on(pair, make_rater(), choice)
    vote_on(PairFactory(campaign=scored, track_b=None), make_rater(), scores=(4,))
    built = snapshot_build(
        snapshot_id=snapshot_create(filters=DataFilters(), formats=["csv"], queue=False).pk
    )
    snapshot_create(filters=DataFilters(), formats=["jsonl"], name="waiting", queue=False)

    page = researcher.get(PAGE)

    assert page.status_code == 200
    html = page.content.decode()
    rows = {row["campaign"].name: row for row in page.context["summaries"]}
    assert (rows["agreeing campaign"]["votes"], rows["agreeing campaign"]["raters"]) == (4, 4)
    assert rows["agreeing campaign"]["alpha"] == pytest.approx(1.0)
    assert rows["scored campaign"]["alpha"] is None
    assert '<td class="alpha">1.000</td>' in html and '<td class="alpha">&mdash;</td>' in html
    assert built.manifest["sha256"] in html
    assert f"/api/v1/research/snapshots/{built.pk}/files/votes.csv" in html
    assert "waiting" in html and "queued" in html
    assert 'id="snapshot-form"' in html and "Research" in html


def test_the_form_requests_a_snapshot(researcher):
    campaign = CampaignFactory()

    response = researcher.post(
        PAGE,
        {
            "name": "from the page",
            "campaigns": [campaign.pk],
            "protocols": ["preference"],
            "since": "2026-01-01T00:00",
            "formats": ["csv", "parquet"],
            "include_ties": "on",
        },
    )

    assert response.status_code == 302
    snapshot = DatasetSnapshot.objects.get()
    assert snapshot.name == "from the page" and snapshot.status == "queued"
    assert snapshot.filters["campaign_ids"] == [campaign.pk]
    assert snapshot.filters["include_ties"] is True
    assert snapshot.filters["include_both_bad"] is False  # an unticked box
    assert snapshot.filters["since"].startswith("2026-01-01T00:00:00")


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "This field is required"),
        ({"formats": ["xlsx"]}, "Select a valid choice"),
        ({"formats": ["csv"], "min_rater_reliability": "2"}, "less than or equal to 1"),
        ({"formats": ["csv"], "campaigns": ["999999"]}, "Select a valid choice"),
        (
            {"formats": ["csv"], "since": "2026-02-01T00:00", "until": "2026-01-01T00:00"},
            "since must be before until",  # refused by the service, not the form
        ),
    ],
)
def test_the_form_refuses_bad_input_with_400_and_stores_nothing(researcher, data, message):
    response = researcher.post(PAGE, data)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not DatasetSnapshot.objects.exists()


def test_a_rater_cannot_see_the_page_or_request_a_snapshot(client, make_rater):
    client.force_login(make_rater().user)

    assert client.get(PAGE).status_code == 403
    assert client.post(PAGE, {"formats": ["csv"]}).status_code == 403
    assert not DatasetSnapshot.objects.exists()


def test_researchers_see_the_research_link_and_raters_do_not(client, make_rater):
    researcher = make_rater(role=Role.RESEARCHER)
    client.force_login(researcher.user)
    assert f'href="{PAGE}"' in client.get(PAGE).content.decode()

    client.force_login(make_rater().user)
    assert f'href="{PAGE}"' not in client.get("/").content.decode()
