"""Version leaderboards: computed from counted votes only by the periodic job, stored, and
served as stored by the API (researchers and admins) and the page."""

import pytest

from generation.models import Prompt
from ratings import bradley_terry, tasks
from ratings.leaderboards import campaign_outcome_counts, leaderboard_refresh
from ratings.models import Campaign, Leaderboard, Pair, Role, Vote
from tests.factories import (
    CampaignFactory,
    GeneratorVersionFactory,
    PairFactory,
    PromptFactory,
    RaterFactory,
    TrackFactory,
    vote_on,
)

pytestmark = pytest.mark.django_db
API = "/api/v1/leaderboard/"


@pytest.fixture(autouse=True)
def _small_fits(settings):
    settings.LEADERBOARD_BOOTSTRAP_ROUNDS = 200
    settings.LEADERBOARD_MIN_VOTES = 5
    # Every vote needs its own rater; the default hasher would spend seconds on their passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def versus(campaign: Campaign, version_a, version_b, **pair_fields) -> Pair:
    prompt = pair_fields.pop("prompt", None) or PromptFactory()
    return PairFactory(
        campaign=campaign, prompt=prompt,
        track_a=TrackFactory(prompt=prompt, generator_version=version_a),
        track_b=TrackFactory(prompt=prompt, generator_version=version_b), **pair_fields,
    )  # fmt: skip


def cast(pair: Pair, choices: list[str | None], **vote_fields) -> list[Vote]:
    return [vote_on(pair, RaterFactory(), choice, **vote_fields) for choice in choices]


@pytest.fixture
def evaluate():
    """An evaluate campaign where version A beats B 6-2, with one tie and one both-bad."""
    a, b = GeneratorVersionFactory(name="alpha"), GeneratorVersionFactory(name="beta")
    campaign = CampaignFactory(purpose="evaluate", version_a=a, version_b=b, votes_per_item=20)
    cast(versus(campaign, a, b), ["a"] * 4 + ["b", "tie"])
    cast(versus(campaign, b, a), ["b", "b", "a", "both_bad"])  # A on the right this time
    return campaign


def test_the_table_matches_a_fit_of_the_hand_counted_outcomes(evaluate):
    board = leaderboard_refresh(campaign_id=evaluate.pk)

    by_name = {row["name"]: row for row in board.rows}
    alpha, beta = by_name["alpha"], by_name["beta"]
    assert (alpha["wins"], alpha["ties"], alpha["losses"], alpha["votes"]) == (6, 2, 2, 10)
    assert (beta["wins"], beta["ties"], beta["losses"]) == (2, 2, 6)
    assert board.vote_count == 10 and board.bootstrap_rounds == 200
    expected = bradley_terry.to_elo(
        bradley_terry.fit_strengths(bradley_terry.OutcomeTable.from_counts(2, [(0, 1, 6, 2, 2)]))
    )
    assert alpha["rating"] == pytest.approx(expected[0], abs=0.01)
    assert beta["rating"] == pytest.approx(expected[1], abs=0.01)
    assert alpha["ci_low"] < alpha["rating"] < alpha["ci_high"]
    assert alpha["rank"] == 1 and board.rows[0]["name"] == "alpha"


def test_uncounted_votes_check_pairs_playground_prompts_and_same_version_pairs_are_left_out(
    evaluate,
):
    before = leaderboard_refresh(campaign_id=evaluate.pk).rows
    a, b = evaluate.version_a, evaluate.version_b
    flagged, rejected = cast(versus(evaluate, b, a), ["b", "b"])
    Vote.objects.filter(pk=flagged.pk).update(status=Vote.Status.FLAGGED)
    Vote.objects.filter(pk=rejected.pk).update(status=Vote.Status.REJECTED)
    cast(versus(evaluate, b, a, kind=Pair.Kind.GOLD, expected_choice="a"), ["a", "a"])
    cast(versus(evaluate, b, a, prompt=PromptFactory(source=Prompt.Source.PLAYGROUND)), ["a"])
    cast(versus(evaluate, b, b), ["a", "a"])

    after = leaderboard_refresh(campaign_id=evaluate.pk, force=True)

    assert after.rows == before
    assert after.vote_count == 10


def test_side_by_side_outcomes_come_from_the_two_scores():
    a, b = GeneratorVersionFactory(), GeneratorVersionFactory()
    campaign = CampaignFactory(
        purpose="evaluate", protocol="side_by_side", version_a=a, version_b=b, votes_per_item=9
    )
    pair = versus(campaign, a, b)
    for scores in [(4, 2), (5, 1), (3, 3), (1, 5)]:
        vote_on(pair, RaterFactory(), None, scores=scores)

    (counts,) = campaign_outcome_counts(campaign=campaign)

    assert (counts.version_a, counts.version_b) == (a.pk, b.pk)
    assert (counts.a_wins, counts.ties, counts.b_wins) == (2, 1, 1)


def test_the_periodic_task_computes_boards_and_skips_unchanged_ones(evaluate):
    mos = CampaignFactory(protocol="mos")
    vote_on(PairFactory(campaign=mos, track_b=None), RaterFactory(), None, scores=(4,))

    assert tasks.refresh_leaderboards() == 1
    assert Leaderboard.objects.filter(campaign=evaluate).exists()
    assert not Leaderboard.objects.filter(campaign=mos).exists()
    assert tasks.refresh_leaderboards() == 0  # same outcomes: no refit

    cast(versus(evaluate, evaluate.version_a, evaluate.version_b), ["a"])
    assert tasks.refresh_leaderboards() == 1
    assert Leaderboard.objects.get(campaign=evaluate).vote_count == 11


def test_the_api_serves_the_stored_board_to_researchers(evaluate, make_rater, api_client_for):
    client = api_client_for(make_rater(role=Role.RESEARCHER))
    assert client.get(API, {"campaign": evaluate.pk}).status_code == 404

    board = leaderboard_refresh(campaign_id=evaluate.pk)
    response = client.get(API, {"campaign": evaluate.pk})

    assert response.status_code == 200
    body = response.json()
    assert body["rows"] == board.rows and body["campaign"] == evaluate.pk
    assert body["vote_count"] == 10 and "fingerprint" not in body["settings"]
    assert client.get(API, {"campaign": "x1"}).status_code == 400
    assert client.get(API).status_code == 400


def test_the_api_never_shows_version_names_to_raters_or_anonymous_users(
    evaluate, make_rater, api_client_for, client
):
    leaderboard_refresh(campaign_id=evaluate.pk)

    rater = api_client_for(make_rater(role=Role.RATER))
    assert rater.get(API, {"campaign": evaluate.pk}).status_code == 403
    assert client.get(API, {"campaign": evaluate.pk}).status_code in (401, 403)


def test_the_page_shows_the_table_and_chart_to_researchers(evaluate, client, make_rater):
    page = f"/leaderboard/{evaluate.pk}/"
    client.force_login(make_rater(role=Role.RESEARCHER).user)
    assert b"No leaderboard has been computed yet" in client.get(page).content

    leaderboard_refresh(campaign_id=evaluate.pk)
    response = client.get(page)

    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="leaderboard"' in html and 'id="leaderboard-chart"' in html
    assert "alpha" in html and "6 / 2 / 2" in html
    assert "Refresh now" not in html
    assert client.post(page).status_code == 403


def test_an_admin_can_queue_a_refresh_from_the_page(evaluate, client, make_rater, monkeypatch):
    queued = []
    monkeypatch.setattr(tasks.refresh_leaderboard, "delay_on_commit", queued.append)
    client.force_login(make_rater(role=Role.ADMIN).user)

    response = client.post(f"/leaderboard/{evaluate.pk}/")

    assert response.status_code == 302 and queued == [evaluate.pk]


def test_raters_cannot_open_the_page(evaluate, client, make_rater):
    client.force_login(make_rater(role=Role.RATER).user)

    assert client.get(f"/leaderboard/{evaluate.pk}/").status_code == 403


def test_in_the_playground_a_curated_prompt_counts_once_per_rater_and_the_arena_is_ranked():
    from ratings.leaderboards import leaderboards_refresh_all

    a, b = GeneratorVersionFactory(name="arena-a"), GeneratorVersionFactory(name="arena-b")
    arena = CampaignFactory(purpose=Campaign.Purpose.PLAYGROUND, version_a=a, votes_per_item=1)
    stacker, other = RaterFactory(), RaterFactory()
    curated = PromptFactory(source=Prompt.Source.CURATED)
    for _ in range(3):  # the same example prompt, asked for and won by "a" three times
        vote_on(versus(arena, a, b, prompt=curated), stacker, "a")
    vote_on(versus(arena, b, a, prompt=curated), other, "a")
    vote_on(versus(arena, a, b, prompt=PromptFactory()), stacker, "b")
    vote_on(versus(arena, a, b, prompt=PromptFactory(source=Prompt.Source.PLAYGROUND)), other, "a")

    counts = campaign_outcome_counts(campaign=arena)

    by_order = {(c.version_a, c.version_b): (c.a_wins, c.ties, c.b_wins) for c in counts}
    # stacker: once on the curated prompt (version a won) and once on another (b won); other:
    # once (track a, version b's, won); the typed prompt is left out.
    assert by_order == {(a.pk, b.pk): (1, 0, 1), (b.pk, a.pk): (1, 0, 0)}
    assert leaderboards_refresh_all() == 1
    assert Leaderboard.objects.get(campaign=arena).vote_count == 3
