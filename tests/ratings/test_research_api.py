"""The researcher API lists votes, ratings, prompts, tracks and campaigns with both sides'
generator versions, names raters only by pseudonym, filters, pages by cursor in id order, and
costs a fixed number of queries per page. Its OpenAPI schema and docs page are served too."""

import hashlib
import json
from datetime import timedelta

import pytest
import yaml
from django.utils import timezone
from drf_spectacular.validation import validate_schema

from ratings.dataset import DataFilters
from ratings.models import Campaign, DatasetSnapshot, Role, Vote
from ratings.pseudonyms import Pseudonyms, rater_pseudonym, stable_salt
from ratings.snapshots import snapshot_build, snapshot_create
from tests.factories import CampaignFactory, GeneratorVersionFactory, PairFactory, vote_on

VOTES = "/api/v1/research/votes/"
RATINGS = "/api/v1/research/ratings/"

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher_client(make_rater, api_client_for):
    return api_client_for(make_rater(role=Role.RESEARCHER))


@pytest.fixture
def evaluation():
    """An evaluate campaign (two versions) with three raters' votes on two pairs."""
    candidate = GeneratorVersionFactory(name="candidate-v2")
    baseline = GeneratorVersionFactory(name="baseline-v1")
    campaign = CampaignFactory(
        purpose=Campaign.Purpose.EVALUATE, version_a=baseline, version_b=candidate
    )
    pairs = [
        PairFactory(
            campaign=campaign,
            track_a__generator_version=baseline,
            track_b__generator_version=candidate,
        )
        for _ in range(2)
    ]
    return campaign, pairs


def results(response) -> list[dict]:
    assert response.status_code == 200, response.content[:300]
    return response.json()["results"]


def test_vote_rows_name_both_versions_and_a_pseudonym_instead_of_the_rater(
    researcher_client, make_rater, evaluation
):
    _, (pair, _) = evaluation
    rater = make_rater()
    vote = vote_on(pair, rater, "b")

    [row] = results(researcher_client.get(VOTES))

    assert row["id"] == vote.pk
    assert row["version_a"]["name"] == "baseline-v1"
    assert row["version_b"]["name"] == "candidate-v2"
    assert row["choice"] == "b" and row["protocol"] == "preference"
    assert row["prompt"]["text"] == pair.prompt.text
    assert row["rater"] == rater_pseudonym(rater.pk)
    assert len(row["rater"]) == 16
    assert rater.user.username not in str(row)
    assert "user" not in row and "rater_id" not in row


def test_a_pseudonym_is_stable_and_differs_between_raters_and_keys(settings):
    assert rater_pseudonym(7) == rater_pseudonym(7)
    assert rater_pseudonym(7) != rater_pseudonym(8)
    first = rater_pseudonym(7)
    settings.SECRET_KEY = "another key"
    assert rater_pseudonym(7) != first


def test_votes_filter_by_campaign_version_choice_and_rater(
    researcher_client, make_rater, evaluation
):
    campaign, (first, second) = evaluation
    alice, bob = make_rater(), make_rater()
    a_vote = vote_on(first, alice, "a")
    b_vote = vote_on(second, bob, "tie")
    other = vote_on(PairFactory(), alice, "a")  # another campaign and version
    baseline = campaign.version_a_id

    def ids(**params) -> set[int]:
        return {row["id"] for row in results(researcher_client.get(VOTES, params))}

    assert ids(campaign=campaign.pk) == {a_vote.pk, b_vote.pk}
    assert ids(campaign=f"{campaign.pk},{other.campaign_id}") == {a_vote.pk, b_vote.pk, other.pk}
    assert ids(generator_version=baseline) == {a_vote.pk, b_vote.pk}
    assert ids(choice="tie") == {b_vote.pk}
    assert ids(rater=rater_pseudonym(alice.pk)) == {a_vote.pk, other.pk}
    assert ids(rater="0" * 16) == set()
    assert ids(protocol="mos") == set()


def test_votes_filter_by_creation_time(researcher_client, make_rater, evaluation):
    _, (first, second) = evaluation
    old, new = vote_on(first, make_rater(), "a"), vote_on(second, make_rater(), "b")
    Vote.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    since = (timezone.now() - timedelta(days=1)).isoformat()

    rows = results(researcher_client.get(VOTES, {"created_at_after": since}))

    assert [row["id"] for row in rows] == [new.pk]


def test_a_malformed_filter_is_refused_with_400(researcher_client):
    assert researcher_client.get(VOTES, {"campaign": "one"}).status_code == 400
    assert researcher_client.get(VOTES, {"choice": "maybe"}).status_code == 400
    assert researcher_client.get(VOTES, {"created_at_after": "yesterday"}).status_code == 400


@pytest.mark.parametrize(
    "query",
    [
        {"score": "99999999999999999999"},  # past PostgreSQL's smallint: was a 500
        {"score": "6"},
        {"score": "2.5"},
        {"vote": str(2**63)},  # past bigint
        {"campaign": "1,-3"},
        {"campaign": "1e30"},
    ],
)
def test_a_number_outside_its_column_s_range_is_a_400_not_a_server_error(researcher_client, query):
    response = researcher_client.get(RATINGS, query)

    assert response.status_code == 400, response.content
    assert set(query) <= set(response.json())  # the error names the filter


def test_pages_follow_the_cursor_in_id_order_and_cap_the_page_size(
    researcher_client, make_rater, settings
):
    pair = PairFactory(votes_wanted=10)
    votes = [vote_on(pair, make_rater(), "a").pk for _ in range(5)]

    first = researcher_client.get(VOTES, {"page_size": 2}).json()
    second = researcher_client.get(first["next"]).json()
    third = researcher_client.get(second["next"]).json()

    seen = [row["id"] for page in (first, second, third) for row in page["results"]]
    assert seen == sorted(votes)
    assert third["next"] is None and first["previous"] is None
    huge = researcher_client.get(VOTES, {"page_size": 10_000})
    assert huge.status_code == 200 and len(huge.json()["results"]) == 5


@pytest.mark.parametrize("page_size", [2, 20])
def test_a_page_of_votes_costs_the_same_queries_however_long(
    researcher_client, make_rater, django_assert_max_num_queries, page_size
):
    campaign = CampaignFactory(
        protocol=Campaign.Protocol.SIDE_BY_SIDE, votes_per_item=30, version_a__name="v-scored"
    )
    pairs = [PairFactory(campaign=campaign) for _ in range(4)]
    for index in range(20):
        vote_on(pairs[index % 4], make_rater(), scores=(3, 4))

    # Token + user lookup, the page's votes, and their prefetched ratings.
    with django_assert_max_num_queries(4):
        rows = results(researcher_client.get(VOTES, {"page_size": page_size}))

    assert len(rows) == page_size
    assert {(row["score_a"], row["score_b"]) for row in rows} == {(3, 4)}
    assert {row["version_a"]["name"] for row in rows} == {"v-scored"}


def test_rating_rows_name_the_clip_version_and_a_pseudonym(
    researcher_client, make_rater, django_assert_max_num_queries
):
    campaign = CampaignFactory(protocol=Campaign.Protocol.MOS, version_a__name="v-mos")
    rater = make_rater()
    for _ in range(3):
        vote_on(PairFactory(campaign=campaign, track_b=None), rater, scores=(5,))

    with django_assert_max_num_queries(3):
        rows = results(researcher_client.get(RATINGS, {"campaign": campaign.pk, "score": "5"}))

    assert len(rows) == 3
    assert {row["version"]["name"] for row in rows} == {"v-mos"}
    assert {row["rater"] for row in rows} == {rater_pseudonym(rater.pk)}
    assert results(researcher_client.get(RATINGS, {"score": "1,2"})) == []


def test_prompts_tracks_and_campaigns_are_listed_with_their_links(
    researcher_client, make_rater, evaluation
):
    campaign, (pair, _) = evaluation
    campaign.prompts.add(pair.prompt)
    vote_on(pair, make_rater(), "a")

    [prompt] = results(
        researcher_client.get("/api/v1/research/prompts/", {"campaign": campaign.pk})
    )
    tracks = results(researcher_client.get("/api/v1/research/tracks/", {"campaign": campaign.pk}))
    [row] = results(
        researcher_client.get(
            "/api/v1/research/campaigns/", {"generator_version": campaign.version_b_id}
        )
    )

    assert prompt["text"] == pair.prompt.text and prompt["campaigns"] == [campaign.pk]
    assert len(tracks) == 4
    assert {track["generator_version"]["name"] for track in tracks} == {
        "baseline-v1",
        "candidate-v2",
    }
    assert all(track["audio_url"].startswith("/clips/") for track in tracks)
    assert (row["item_count"], row["vote_count"], row["rating_count"]) == (2, 1, 0)
    assert row["version_b"]["name"] == "candidate-v2"
    detail = researcher_client.get(f"/api/v1/research/campaigns/{campaign.pk}/")
    assert detail.json()["name"] == campaign.name


@pytest.mark.parametrize("path", [VOTES, RATINGS, "/api/v1/research/campaigns/", "/api/schema/"])
def test_raters_and_anonymous_callers_are_refused(path, make_rater, api_client_for, client):
    assert api_client_for(make_rater()).get(path).status_code == 403
    assert client.get(path).status_code in (401, 403)


def test_the_schema_is_valid_openapi_3_in_json_and_yaml(researcher_client):
    as_json = researcher_client.get("/api/schema/", {"format": "json"})
    as_yaml = researcher_client.get("/api/schema/")

    assert as_json.status_code == 200 and as_yaml.status_code == 200
    schema = as_json.json()
    validate_schema(schema)  # raises on anything that is not OpenAPI 3
    assert schema["openapi"].startswith("3.")
    assert yaml.safe_load(as_yaml.content)["paths"].keys() == schema["paths"].keys()
    vote_row = schema["components"]["schemas"]["ResearchVote"]["properties"]
    assert {"version_a", "version_b", "rater"} <= vote_row.keys()
    parameters = {p["name"] for p in schema["paths"][VOTES]["get"]["parameters"]}
    assert {"cursor", "page_size", "campaign", "generator_version", "rater"} <= parameters


def test_the_docs_page_serves_swagger_ui_from_this_site(make_rater, client):
    client.force_login(make_rater(role=Role.RESEARCHER).user)

    page = client.get("/api/docs/")
    # The start-up script is a file of its own, so the Content-Security-Policy can refuse
    # every inline script.
    script = client.get("/api/docs/", {"script": ""})

    assert page.status_code == script.status_code == 200
    html, start_up = page.content.decode(), script.content.decode()
    assert "swagger-ui" in html and '<script src="/api/docs/?script=">' in html
    assert "/api/schema/" in start_up and "SwaggerUIBundle" in start_up
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn." not in html + start_up and "unpkg" not in html + start_up


# --- dataset snapshots -------------------------------------------------------------------------

SNAPSHOTS = "/api/v1/research/snapshots/"


@pytest.fixture
def snapshot_dir(settings, tmp_path):
    settings.SNAPSHOT_DIR = tmp_path / "snapshots"
    return settings.SNAPSHOT_DIR


def finished_snapshot(**kwargs) -> DatasetSnapshot:
    kwargs.setdefault("filters", DataFilters())
    kwargs.setdefault("formats", ["jsonl", "csv"])
    snapshot = snapshot_create(queue=False, **kwargs)
    return snapshot_build(snapshot_id=snapshot.pk)


def test_a_snapshot_request_is_stored_and_queued(researcher_client, evaluation):
    campaign, _ = evaluation
    body = {
        "name": "first look",
        "campaign_ids": [campaign.pk],
        "protocols": ["preference"],
        "since": "2026-01-01T00:00:00Z",
        "include_ties": False,
        "formats": ["parquet", "jsonl"],
        "vote_statuses": ["counted", "flagged"],
        "min_gold_accuracy": 0.8,
    }

    response = researcher_client.post(SNAPSHOTS, body, format="json")

    assert response.status_code == 201, response.content
    snapshot = DatasetSnapshot.objects.get()
    assert response.json()["id"] == snapshot.pk and response.json()["status"] == "queued"
    assert snapshot.filters["campaign_ids"] == [campaign.pk]
    assert snapshot.filters["include_ties"] is False
    assert set(snapshot.filters["vote_statuses"]) == {"counted", "flagged"}
    assert snapshot.filters["min_gold_accuracy"] == 0.8
    assert set(snapshot.formats) == {"parquet", "jsonl"}


def test_a_snapshot_request_holds_counted_votes_unless_asked(researcher_client):
    response = researcher_client.post(SNAPSHOTS, {"formats": ["csv"]}, format="json")

    assert response.status_code == 201, response.content
    assert DatasetSnapshot.objects.get().filters["vote_statuses"] == ["counted"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"formats": []},
        {"formats": ["xlsx"]},
        {"formats": ["csv"], "protocols": ["karaoke"]},
        {"formats": ["csv"], "campaign_ids": [999_999]},
        {"formats": ["csv"], "version_ids": ["latest"]},
        {"formats": ["csv"], "min_rater_reliability": 1.5},
        {"formats": ["csv"], "min_gold_accuracy": -0.1},
        {"formats": ["csv"], "vote_statuses": []},
        {"formats": ["csv"], "vote_statuses": ["deleted"]},
        {"formats": ["csv"], "since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"formats": ["csv"], "name": "x" * 201},
    ],
)
def test_a_bad_snapshot_request_is_refused_with_400_and_stores_nothing(researcher_client, body):
    response = researcher_client.post(SNAPSHOTS, body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error"]
    assert not DatasetSnapshot.objects.exists()


def test_a_rater_cannot_request_a_snapshot(make_rater, api_client_for):
    response = api_client_for(make_rater()).post(SNAPSHOTS, {"formats": ["csv"]}, format="json")

    assert response.status_code == 403
    assert not DatasetSnapshot.objects.exists()


@pytest.mark.django_db(transaction=True)  # the snapshot build reads on a second connection
def test_a_finished_snapshot_lists_its_counts_hash_and_downloads(
    researcher_client, make_rater, evaluation, snapshot_dir
):
    _, (pair, _) = evaluation
    vote_on(pair, make_rater(), "a")
    snapshot = finished_snapshot(name="one vote")

    listed = results(researcher_client.get(SNAPSHOTS))
    detail = researcher_client.get(f"{SNAPSHOTS}{snapshot.pk}/").json()

    assert [row["id"] for row in listed] == [snapshot.pk]
    assert detail["status"] == "finished" and detail["row_counts"]["votes"] == 1
    assert detail["sha256"] == snapshot.manifest["sha256"]
    tables = {f"{t}.{f}" for t in ("votes", "ratings", "tracks") for f in ("jsonl", "csv")}
    assert detail["manifest"]["files"].keys() == tables
    paths = {download["path"] for download in detail["downloads"]}
    assert paths == {*snapshot.manifest["files"], "manifest.json"}
    assert "manifest" not in listed[0]


@pytest.mark.django_db(transaction=True)  # the snapshot build reads on a second connection
def test_a_snapshot_file_downloads_as_a_streamed_attachment(
    researcher_client, make_rater, evaluation, snapshot_dir
):
    _, (pair, _) = evaluation
    vote_on(pair, make_rater(), "b")
    snapshot = finished_snapshot()
    [url] = [
        d["url"]
        for d in researcher_client.get(f"{SNAPSHOTS}{snapshot.pk}/").json()["downloads"]
        if d["path"] == "votes.jsonl"
    ]

    response = researcher_client.get(url)

    assert response.status_code == 200
    assert response.streaming  # a FileResponse read from disk, never built in memory
    assert response["Content-Disposition"].startswith("attachment;")
    body = b"".join(response.streaming_content)
    assert hashlib.sha256(body).hexdigest() == snapshot.manifest["files"]["votes.jsonl"]
    assert json.loads(body.splitlines()[0])["choice"] == "b"


@pytest.mark.parametrize("relative", ["nothing.csv", "../snapshot-1/votes.csv", "%2Fetc%2Fpasswd"])
def test_only_listed_files_of_a_finished_snapshot_can_be_downloaded(
    researcher_client, snapshot_dir, relative
):
    finished = finished_snapshot()
    queued = snapshot_create(filters=DataFilters(), formats=["csv"], queue=False)

    assert researcher_client.get(f"{SNAPSHOTS}{finished.pk}/files/{relative}").status_code == 404
    assert researcher_client.get(f"{SNAPSHOTS}{queued.pk}/files/votes.csv").status_code == 404


@pytest.mark.django_db(transaction=True)  # the snapshot build reads on a second connection
def test_api_pseudonyms_match_the_stable_ids_of_snapshots(
    researcher_client, make_rater, evaluation, snapshot_dir
):
    _, (pair, _) = evaluation
    rater = make_rater()
    vote_on(pair, rater, "a")
    snapshot = finished_snapshot(formats=["jsonl"], stable_rater_ids=True)

    [row] = results(researcher_client.get(VOTES))
    exported = json.loads((snapshot.directory / "votes.jsonl").read_text().splitlines()[0])

    assert row["rater"] == exported["rater"] == Pseudonyms(stable_salt()).of(rater.pk)


def test_an_api_url_that_matches_no_route_is_a_json_404_and_a_page_url_an_html_one(
    researcher_client,
):
    unrouted = researcher_client.get("/api/v1/no-such-endpoint/")
    no_such_vote = researcher_client.get("/api/v1/research/votes/not-a-number/")
    page = researcher_client.get("/no-such-page/")

    assert unrouted.status_code == no_such_vote.status_code == page.status_code == 404
    for response in (unrouted, no_such_vote):
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"] == "not_found"
    assert page["Content-Type"].startswith("text/html")
