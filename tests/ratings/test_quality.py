"""Crowd quality control: gold and trap checks under the P.808 policy (with Prolific's
two-failure rule), the qualification before real items, and what rejected votes are left out
of. Raters are driven through the real API; clips are factory rows, never rendered."""

import random
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from ratings import leasing, pair_selection, quality, selectors
from ratings.dataset import DataFilters, vote_rows
from ratings.models import Assignment, Campaign, Pair, Qualification, RaterSession, Vote
from ratings.simulation.raters import SimulatedRater
from tests.factories import CampaignFactory, PairFactory, served_seconds_ago, vote_on

NEXT = "/api/v1/assignments/next/"
VOTES = "/api/v1/votes/"

pytestmark = pytest.mark.django_db


def check_pair(campaign, kind=Pair.Kind.GOLD, expected="a", **kwargs):
    return PairFactory(
        campaign=campaign, kind=kind, expected_choice=expected,
        votes_wanted=quality.CHECK_VOTES_WANTED, **kwargs,
    )  # fmt: skip


def lease(client, campaign):
    response = client.get(NEXT, {"campaign": campaign.pk})
    assert response.status_code in (200, 204), response.content
    return response.json() if response.status_code == 200 else None


def vote(client, payload, listen_ms=6000, **answer):
    served_seconds_ago(Assignment.objects.get(pk=payload["assignment"]), 15)
    body = {
        "assignment": payload["assignment"],
        "idempotency_key": str(uuid.uuid4()),
        "listen_ms": {clip["slot"]: listen_ms for clip in payload["clips"]},
        **answer,
    }
    response = client.post(VOTES, body, format="json")
    assert response.status_code == 201, response.content
    return Vote.objects.get(pk=response.json()["vote"])


def right_answer(payload) -> str:
    """The screen slot of a check's expected track (what a careful listener hears)."""
    assignment = Assignment.objects.select_related("pair").get(pk=payload["assignment"])
    expected_left = (assignment.pair.expected_choice == "a") == assignment.left_is_a
    return "A" if expected_left else "B"


def wrong_answer(payload) -> str:
    return "B" if right_answer(payload) == "A" else "A"


@pytest.fixture
def p808_campaign():
    return CampaignFactory(
        quality_policy=Campaign.QualityPolicy.P808, check_rate=0.5, votes_per_item=2
    )


def rate_everything(client, campaign, rater: SimulatedRater) -> int:
    """Lease and vote until nothing is served; a careful listener hears which gold clip is
    better (p = 0.95), a careless one answers at random. Returns the votes cast."""
    cast = 0
    while (payload := lease(client, campaign)) is not None:
        assignment = Assignment.objects.select_related("pair").get(pk=payload["assignment"])
        if assignment.pair.kind == Pair.Kind.REGULAR:
            p_a = 0.8 if (assignment.pair.pk % 2 == 0) == assignment.left_is_a else 0.2
        else:
            p_a = 0.95 if right_answer(payload) == "A" else 0.05
        vote(client, payload, choice=rater.choose(p_a))
        cast += 1
    return cast


def test_a_careless_rater_is_rejected_and_excluded_and_a_careful_one_is_not(
    make_rater, api_client_for, p808_campaign, monkeypatch
):
    # Seeded: which items are checks and which side each clip is shown on.
    monkeypatch.setattr(pair_selection, "_rng", random.Random(3))
    monkeypatch.setattr(leasing, "secrets", SimpleNamespace(randbelow=random.Random(4).randrange))
    PairFactory.create_batch(12, campaign=p808_campaign)
    for expected in "ababab":
        check_pair(p808_campaign, expected=expected)
    careful, careless = make_rater(), make_rater()

    rate_everything(
        api_client_for(careful), p808_campaign,
        SimulatedRater("careful", "", noise=0.1, careless=False, rng=random.Random(1)),
    )  # fmt: skip
    cast = rate_everything(
        api_client_for(careless), p808_campaign,
        SimulatedRater("careless", "", noise=1.0, careless=True, rng=random.Random(2)),
    )  # fmt: skip

    careful_session = RaterSession.objects.get(rater=careful, campaign=p808_campaign)
    assert careful_session.status != RaterSession.Status.REJECTED  # completed when all rated
    assert careful_session.failed_checks == 0
    assert Vote.objects.filter(rater=careful, check_passed=True).count() == 6
    assert not Vote.objects.filter(rater=careful).exclude(status=Vote.Status.COUNTED).exists()
    session = RaterSession.objects.get(rater=careless, campaign=p808_campaign)
    assert session.status == RaterSession.Status.REJECTED
    assert session.failed_checks >= quality.REJECT_AFTER
    assert "gold_failed" in session.rejection_reasons
    # Rejected at the second failure, so the careless rater stopped before rating everything.
    assert cast < Pair.objects.filter(campaign=p808_campaign).count()
    rejected = Vote.objects.filter(rater=careless)
    assert rejected.count() == cast
    assert all(v.status == Vote.Status.REJECTED for v in rejected)
    assert all("session_rejected:gold_failed" in v.flags for v in rejected)
    # Kept, but out of statistics and datasets; their slots went back to the pairs.
    exported = {row["rater_id"] for row in vote_rows(DataFilters())}
    assert exported == {careful.pk}
    counted = Vote.objects.counted().filter(campaign=p808_campaign).count()
    assert selectors.campaign_progress(campaign=p808_campaign)["votes"] == counted
    assert counted == Vote.objects.filter(rater=careful, pair__kind=Pair.Kind.REGULAR).count()
    for pair in Pair.objects.filter(campaign=p808_campaign, kind=Pair.Kind.REGULAR):
        assert pair.vote_count == pair.votes.exclude(status=Vote.Status.REJECTED).count()
    every = DataFilters(vote_statuses=("counted", "flagged", "rejected"))
    assert {row["rater_id"] for row in vote_rows(every)} == {careful.pk, careless.pk}


def test_one_failed_check_flags_the_session_and_the_second_rejects_it(
    make_rater, api_client_for, p808_campaign, monkeypatch
):
    check_pair(p808_campaign, expected="a")
    check_pair(p808_campaign, expected="b")
    PairFactory.create_batch(2, campaign=p808_campaign)
    rater = make_rater()
    client = api_client_for(rater)

    monkeypatch.setattr(pair_selection, "serve_check", lambda campaign: True)
    first_check = vote(client, lease(client, p808_campaign), choice="tie")
    monkeypatch.setattr(pair_selection, "serve_check", lambda campaign: False)
    regular = vote(client, (payload := lease(client, p808_campaign)), choice="A")

    session = RaterSession.objects.get(rater=rater)
    assert (session.status, session.failed_checks) == (RaterSession.Status.ACTIVE, 1)
    first_check.refresh_from_db()
    assert (first_check.check_passed, first_check.flags) == (False, ["check_failed"])
    regular.refresh_from_db()
    assert regular.status == Vote.Status.COUNTED
    assert regular.session_id == session.pk

    monkeypatch.setattr(pair_selection, "serve_check", lambda campaign: True)
    payload = lease(client, p808_campaign)
    vote(client, payload, choice=wrong_answer(payload))

    session.refresh_from_db()
    assert (session.status, session.failed_checks) == (RaterSession.Status.REJECTED, 2)
    regular.refresh_from_db()
    assert regular.status == Vote.Status.REJECTED
    assert lease(client, p808_campaign) is None  # a rejected rater is served nothing more


def test_a_vote_in_a_rejected_session_is_rejected_too(make_rater, api_client_for, p808_campaign):
    PairFactory.create_batch(2, campaign=p808_campaign)
    rater = make_rater()
    client = api_client_for(rater)
    payload = lease(client, p808_campaign)  # leased before the rejection, voted after it
    quality.session_reject(session=quality.session_for(rater=rater, campaign=p808_campaign),
                           reasons=["admin"])  # fmt: skip

    late = vote(client, payload, choice="A")

    assert late.status == Vote.Status.REJECTED
    assert late.flags == ["session_rejected:admin"]
    assert Pair.objects.get(pk=late.pair_id).vote_count == 0


def test_unplayed_clips_and_flat_ratings_each_count_as_a_failed_check(
    make_rater, api_client_for, monkeypatch
):
    campaign = CampaignFactory(
        quality_policy=Campaign.QualityPolicy.P808, min_listen_seconds=0, votes_per_item=1
    )
    PairFactory.create_batch(quality.FLAT_EVERY, campaign=campaign)
    rater = make_rater()
    client = api_client_for(rater)

    vote(client, lease(client, campaign), listen_ms=0, choice="A")
    session = RaterSession.objects.get(rater=rater)
    assert (session.failed_checks, session.rejection_reasons) == (1, ["clip_not_played"])
    for _ in range(quality.FLAT_EVERY - 1):
        vote(client, lease(client, campaign), choice="A")  # always the left clip

    session.refresh_from_db()
    assert session.status == RaterSession.Status.REJECTED
    assert session.rejection_reasons == ["clip_not_played", "ratings_flat"]


def test_under_policy_none_failed_checks_are_recorded_and_nothing_is_rejected(
    make_rater, api_client_for, monkeypatch
):
    campaign = CampaignFactory(check_rate=0.5)
    for expected in "ab":
        check_pair(campaign, kind=Pair.Kind.TRAP, expected=expected)
    rater = make_rater()
    client = api_client_for(rater)
    monkeypatch.setattr(pair_selection, "serve_check", lambda campaign: True)

    for _ in range(2):
        payload = lease(client, campaign)
        vote(client, payload, choice=wrong_answer(payload))

    session = RaterSession.objects.get(rater=rater)
    assert (session.status, session.failed_checks) == (RaterSession.Status.ACTIVE, 2)
    assert session.rejection_reasons == ["trap_failed", "trap_failed"]
    assert not Vote.objects.filter(status=Vote.Status.REJECTED).exists()


def test_check_items_look_exactly_like_rating_items(make_rater, api_client_for, monkeypatch):
    campaign = CampaignFactory(check_rate=0.5)
    check_pair(campaign, kind=Pair.Kind.TRAP)
    PairFactory(campaign=campaign)
    client = api_client_for(make_rater())

    monkeypatch.setattr(pair_selection, "serve_check", lambda campaign: True)
    check = lease(client, campaign)
    vote(client, check, choice="A")
    regular = lease(client, campaign)

    assert Assignment.objects.get(pk=check["assignment"]).pair.kind == Pair.Kind.TRAP
    assert Assignment.objects.get(pk=regular["assignment"]).pair.kind == Pair.Kind.REGULAR
    assert set(check) == set(regular)
    assert set(check["clips"][0]) == set(regular["clips"][0])
    assert "phase" not in check


def test_real_items_are_served_only_after_a_passed_qualification(make_rater, api_client_for):
    campaign = CampaignFactory(qualification_required=True, qualification_valid_hours=1)
    for expected in "ab":
        check_pair(campaign, kind=Pair.Kind.QUALIFICATION, expected=expected)
    real = PairFactory(campaign=campaign)
    good, bad = make_rater(), make_rater()

    for rater, answer in ((good, right_answer), (bad, wrong_answer)):
        client = api_client_for(rater)
        for _ in range(2):
            payload = lease(client, campaign)
            assert payload["phase"] == "qualification"
            vote(client, payload, choice=answer(payload))

    good_lease = lease(api_client_for(good), campaign)
    assert Assignment.objects.get(pk=good_lease["assignment"]).pair == real
    assert "phase" not in good_lease
    assert lease(api_client_for(bad), campaign) is None
    results = {q.rater_id: (q.passed, q.correct, q.total) for q in Qualification.objects.all()}
    assert results == {good.pk: (True, 2, 2), bad.pk: (False, 0, 2)}


def test_an_expired_qualification_is_taken_again(make_rater, api_client_for):
    campaign = CampaignFactory(qualification_required=True)
    item = check_pair(campaign, kind=Pair.Kind.QUALIFICATION)
    PairFactory(campaign=campaign)
    rater = make_rater()
    client = api_client_for(rater)
    payload = lease(client, campaign)
    vote(client, payload, choice=wrong_answer(payload))
    assert lease(client, campaign) is None  # failed, until the result expires

    long_ago = timezone.now() - timedelta(days=2)
    Qualification.objects.update(taken_at=long_ago, expires_at=long_ago + timedelta(hours=1))
    Assignment.objects.update(served_at=long_ago - timedelta(minutes=1))
    again = lease(client, campaign)

    assert again["phase"] == "qualification"
    assert Assignment.objects.get(pk=again["assignment"]).pair == item
    assert Vote.objects.filter(pair=item).count() == 0  # the old round's answer is discarded
    item.refresh_from_db()
    assert (item.vote_count, item.slots_taken) == (0, 1)


def test_a_campaign_needing_qualification_without_items_serves_nothing(make_rater, api_client_for):
    campaign = CampaignFactory(qualification_required=True)
    PairFactory(campaign=campaign)

    assert lease(api_client_for(make_rater()), campaign) is None


def test_session_for_reuses_the_current_session_and_keeps_rejected_raters_rejected(make_rater):
    campaign = CampaignFactory()
    rater = make_rater()

    first = quality.session_for(rater=rater, campaign=campaign)
    assert quality.session_for(rater=rater, campaign=campaign.pk) == first
    quality.session_reject(session=first, reasons=["admin"])
    assert quality.session_for(rater=rater, campaign=campaign).status == "rejected"
    newer = RaterSession.objects.create(rater=rater, campaign=campaign, source="prolific")
    assert quality.session_for(rater=rater, campaign=campaign) == newer
    assert RaterSession.objects.filter(rater=rater).count() == 2


def test_reliability_is_gold_accuracy_majority_agreement_and_score_correlation(make_rater):
    campaign = CampaignFactory()
    pairs = PairFactory.create_batch(3, campaign=campaign)
    golds = [check_pair(campaign, expected="a") for _ in range(3)]
    steady, contrary, other = make_rater(), make_rater(), make_rater()
    for pair in pairs:
        vote_on(pair, steady, "a")
        vote_on(pair, other, "a")
        vote_on(pair, contrary, "b")
    for gold, answer in zip(golds, "aab", strict=True):
        Vote.objects.filter(pk=vote_on(gold, steady, answer).pk).update(check_passed=answer == "a")

    quality.reliability_refresh()

    steady.refresh_from_db()
    contrary.refresh_from_db()
    assert steady.gold_accuracy == pytest.approx(2 / 3)
    assert steady.majority_agreement == 0.5  # the other two split on every pair
    assert contrary.majority_agreement == 0.0
    assert contrary.gold_accuracy is None and steady.reliability_updated_at is not None
    only_golden = DataFilters(min_gold_accuracy=0.9)
    assert steady.pk not in {row["rater_id"] for row in vote_rows(only_golden)}
    assert other.pk in {row["rater_id"] for row in vote_rows(only_golden)}


def test_score_correlation_compares_with_the_other_raters_mean():
    rows = [(1, 1.0), (3, 3.0), (5, 4.0)]
    assert quality._pearson(rows) == pytest.approx(0.9820, abs=1e-3)
    assert quality._pearson([(3, 1.0), (3, 2.0), (3, 5.0)]) is None


def test_undersampled_selection_weighs_version_pairs_by_their_votes(make_rater):
    campaign = CampaignFactory(
        purpose=Campaign.Purpose.EVALUATE, protocol=Campaign.Protocol.MOS,
        version_b=CampaignFactory().version_a, pair_selection=Campaign.PairSelection.UNDERSAMPLED,
    )  # fmt: skip
    voted = PairFactory(campaign=campaign, track_b=None)
    for _ in range(3):
        vote_on(voted, make_rater(), scores=(3,))
    PairFactory(campaign=campaign, track_b=None)
    fresh = PairFactory(
        campaign=campaign, track_b=None, track_a__generator_version=campaign.version_b
    )

    weights = pair_selection.version_pair_weights(make_rater(), campaign)

    assert weights == {
        (None, campaign.version_a_id): pytest.approx(1 / 4),
        (None, campaign.version_b_id): pytest.approx(1.0),
    }
    picks = {pair_selection.undersampled_items(make_rater(), campaign).first() for _ in range(40)}
    assert fresh in picks and len(picks) == 2


def test_active_selection_serves_the_most_uncertain_pair_first(make_rater, api_client_for):
    from reward.models import RewardModel, TrackReward

    campaign = CampaignFactory(pair_selection=Campaign.PairSelection.ACTIVE)
    clear, uncertain = PairFactory(campaign=campaign), PairFactory(campaign=campaign)
    model = RewardModel.objects.create(
        name="prefs", kind=RewardModel.Kind.PREFERENCE, steps=1, checkpoint="scorer.pt",
        status=RewardModel.Status.FINISHED, metrics={"heldout": {"accuracy": 0.7}},
    )  # fmt: skip
    for pair, gap in ((clear, 3.0), (uncertain, 0.1)):
        TrackReward.objects.create(reward_model=model, track=pair.track_a, value=gap)
        TrackReward.objects.create(reward_model=model, track=pair.track_b, value=0.0)

    payload = lease(api_client_for(make_rater()), campaign)

    assert Assignment.objects.get(pk=payload["assignment"]).pair == uncertain


def test_active_selection_without_a_reward_hook_serves_as_uniform_does(
    make_rater, api_client_for, settings
):
    """Ratings knows no reward models: with the hook unset, active campaigns lease the
    least-served pair first, as uniform selection does, even where a reward model would
    rank another pair first."""
    from reward.models import RewardModel, TrackReward

    settings.ACTIVE_SELECTION_REWARD_HOOK = ""
    campaign = CampaignFactory(pair_selection=Campaign.PairSelection.ACTIVE, votes_per_item=3)
    served, fresh = PairFactory(campaign=campaign), PairFactory(campaign=campaign)
    Pair.objects.filter(pk=served.pk).update(slots_taken=1, votes_wanted=3)
    model = RewardModel.objects.create(
        name="prefs", kind=RewardModel.Kind.PREFERENCE, steps=1, checkpoint="scorer.pt",
        status=RewardModel.Status.FINISHED, metrics={"heldout": {"accuracy": 0.7}},
    )  # fmt: skip
    for pair, gap in ((served, 0.1), (fresh, 3.0)):  # the hook would serve `served` first
        TrackReward.objects.create(reward_model=model, track=pair.track_a, value=gap)
        TrackReward.objects.create(reward_model=model, track=pair.track_b, value=0.0)

    payload = lease(api_client_for(make_rater()), campaign)

    assert Assignment.objects.get(pk=payload["assignment"]).pair == fresh


def test_admins_mark_gold_items_and_bad_marks_are_refused():
    pair = PairFactory()

    with pytest.raises(ValueError):
        quality.pairs_mark(pairs=Pair.objects.all(), kind=Pair.Kind.GOLD)
    quality.pairs_mark(pairs=Pair.objects.all(), kind=Pair.Kind.GOLD, expected_choice="b")

    pair.refresh_from_db()
    assert (pair.kind, pair.expected_choice) == (Pair.Kind.GOLD, "b")
    assert pair.votes_wanted == quality.CHECK_VOTES_WANTED


def test_snapshot_filters_with_unknown_vote_statuses_are_refused():
    from ratings.snapshots import SnapshotError, snapshot_create

    with pytest.raises(SnapshotError, match="vote_statuses"):
        snapshot_create(
            filters=DataFilters(vote_statuses=("approved",)), formats=["csv"], queue=False
        )
    with pytest.raises(SnapshotError, match="min_gold_accuracy"):
        snapshot_create(filters=DataFilters(min_gold_accuracy=2.0), formats=["csv"], queue=False)


def test_check_items_are_made_from_the_campaigns_clips_with_known_answers():
    import numpy as np
    from django.core.files.base import ContentFile

    from generation.music.render import decode_audio, encode_ogg_opus
    from ratings.check_items import CheckItemError, check_items_create
    from tests.factories import PromptFactory, TrackFactory

    sine = 0.3 * np.sin(np.linspace(0, 440 * 2 * np.pi, 48_000, dtype=np.float32))[:, None]
    clip = encode_ogg_opus(sine, 48_000)

    def make_track(*, prompt, version, seed, duration_seconds):
        audio = ContentFile(clip, name="clip.ogg")
        track = TrackFactory(prompt=prompt, generator_version=version, seed=seed, audio=audio)
        return track, True

    campaign = CampaignFactory()
    campaign.prompts.add(PromptFactory())
    pairs = check_items_create(campaign=campaign, gold=1, qualification=1, make_track=make_track)

    gold, qualification = pairs
    assert (gold.kind, qualification.kind) == (Pair.Kind.GOLD, Pair.Kind.QUALIFICATION)
    assert qualification.prompt.text == "Which clip is louder?"
    loud = qualification.track_a if qualification.expected_choice == "a" else qualification.track_b
    quiet = qualification.track_b if loud == qualification.track_a else qualification.track_a
    level = {
        t: float(np.abs(decode_audio(t.audio.open("rb").read())[0]).max()) for t in (loud, quiet)
    }
    assert level[loud] > 5 * level[quiet]
    music = gold.track_a if gold.expected_choice == "a" else gold.track_b
    assert music.seed != (gold.track_b if music == gold.track_a else gold.track_a).seed
    with pytest.raises(CheckItemError):
        check_items_create(
            campaign=CampaignFactory(protocol=Campaign.Protocol.MOS), qualification=1,
            make_track=make_track,
        )  # fmt: skip


def test_the_campaign_page_shows_reliability_rejections_and_alpha(client, make_rater):
    from ratings.forms import CampaignForm
    from ratings.models import Role
    from tests.factories import GeneratorVersionFactory

    campaign = CampaignFactory(quality_policy=Campaign.QualityPolicy.P808)
    pairs = PairFactory.create_batch(2, campaign=campaign)
    raters = [make_rater() for _ in range(3)]
    for pair, agreed in zip(pairs, "ab", strict=True):
        for rater, choice in zip(raters, [agreed, agreed, "tie"], strict=True):
            vote_on(pair, rater, choice)
    quality.votes_reject(votes=Vote.objects.filter(rater=raters[2]))
    client.force_login(make_rater(role=Role.ADMIN).user)

    response = client.get(f"/manage/campaigns/{campaign.pk}/")

    assert response.status_code == 200
    progress = response.context["progress"]
    assert progress["votes"] == 4
    assert progress["quality"]["rejected"] == 2
    assert progress["quality"]["alpha"] == pytest.approx(1.0)
    rows = {row["rater_id"]: row for row in progress["votes_per_rater"]}
    assert rows[raters[2].pk]["rejected"] == 2
    assert b"rater-reliability" in response.content and b"ITU-T P.808" in response.content
    form = CampaignForm(
        {"name": "x", "purpose": "collect", "protocol": "preference", "prompts": "piano",
         "version_a": GeneratorVersionFactory().pk, "votes_per_item": 3,
         "min_listen_seconds": 5, "clip_seconds": 10, "check_rate": 0.9}
    )  # fmt: skip
    assert not form.is_valid() and "check_rate" in form.errors
