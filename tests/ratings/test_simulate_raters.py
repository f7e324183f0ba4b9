"""Simulated raters drive the real HTTP API of a live server: they lease, fetch the clips,
wait out the listening gate and vote, and their judgement follows the preference oracle."""

import dataclasses
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Count, F

from generation.music.prompts import parse_prompt
from ratings.models import Campaign, MosRating, Pair, Vote
from ratings.simulation.raters import SimulatedRater, rater_judgement
from ratings.simulation.tastes import SimulatedClip, default_preference
from tests.factories import CampaignFactory, GeneratorVersionFactory, PairFactory, TrackFactory

REQUIRED_LISTEN_MS = 200
CHALLENGER = "challenger-version"
PLACEHOLDER_AUDIO = b"OggS placeholder"
seen_audio: list[bytes] = []


def always_left(prompt_text: str, clip_a: SimulatedClip, clip_b: SimulatedClip) -> float:
    return 1.0


def prefer_challenger(prompt_text: str, clip_a: SimulatedClip, clip_b: SimulatedClip) -> float:
    seen_audio.extend([clip_a.audio_bytes, clip_b.audio_bytes])
    return 1.0 if clip_a.generator_version == CHALLENGER else 0.0


def quick_campaign(pairs: int = 4, **kwargs) -> Campaign:
    campaign = CampaignFactory(
        min_listen_seconds=REQUIRED_LISTEN_MS / 1000, clip_seconds=1.0, votes_per_item=2, **kwargs
    )
    # A MOS item is a single clip.
    single = campaign.protocol == Campaign.Protocol.MOS
    PairFactory.create_batch(pairs, campaign=campaign, **({"track_b": None} if single else {}))
    return campaign


def simulate(live_server, campaign: Campaign, *extra: str) -> None:
    call_command(
        "simulate_raters",
        "--campaign",
        str(campaign.pk),
        "--base-url",
        live_server.url,
        "--seed",
        "1",
        "--no-progress",
        *extra,
    )


def clip(attributes: dict, version: str = "v1") -> SimulatedClip:
    return SimulatedClip(b"", "", attributes, version)


@pytest.mark.django_db(transaction=True)
def test_simulated_raters_cast_exactly_the_requested_votes_through_the_api(live_server):
    campaign = quick_campaign()

    simulate(live_server, campaign, "--raters", "3", "--votes", "6")

    votes = Vote.objects.filter(campaign=campaign).select_related("rater__user")
    assert votes.count() == 6
    usernames = {vote.rater.user.username for vote in votes}
    assert len(usernames) == 3
    assert all(name.startswith(f"sim-{campaign.pk}-") for name in usernames)
    assert all(v.listen_ms_a >= REQUIRED_LISTEN_MS for v in votes)
    assert all(v.listen_ms_b >= REQUIRED_LISTEN_MS for v in votes)
    assert not Pair.objects.filter(vote_count__gt=F("votes_wanted")).exists()
    per_pair = Pair.objects.annotate(n=Count("votes")).filter(n__gt=F("votes_wanted"))
    assert not per_pair.exists()


@pytest.mark.django_db(transaction=True)
def test_simulated_raters_stop_when_nothing_is_left_to_rate(live_server):
    campaign = quick_campaign(pairs=2)  # 4 slots only

    simulate(live_server, campaign, "--raters", "3", "--votes", "10")

    assert Vote.objects.filter(campaign=campaign).count() == 4
    assert set(Pair.objects.values_list("vote_count", flat=True)) == {2}


@pytest.mark.django_db(transaction=True)
def test_a_custom_preference_is_applied_to_the_clip_shown_as_a(live_server):
    campaign = quick_campaign(pairs=6)

    simulate(
        live_server,
        campaign,
        *("--raters", "2", "--votes", "8", "--noise", "0"),
        *("--preference", f"{__name__}.always_left"),
    )

    votes = list(Vote.objects.filter(campaign=campaign))
    assert len(votes) == 8
    # Stored choices are in track terms: the left clip is track a only when left_is_a.
    assert all(vote.choice == ("a" if vote.left_is_a else "b") for vote in votes)


@pytest.mark.django_db(transaction=True)
def test_the_oracle_sees_each_clips_own_metadata_and_audio(live_server):
    campaign = quick_campaign(pairs=0)
    challenger = GeneratorVersionFactory(name=CHALLENGER)
    for _ in range(4):
        PairFactory(campaign=campaign, track_b=TrackFactory(generator_version=challenger))
    seen_audio.clear()

    simulate(
        live_server,
        campaign,
        *("--raters", "2", "--votes", "6", "--noise", "0"),
        *("--preference", f"{__name__}.prefer_challenger"),
    )

    votes = list(Vote.objects.filter(campaign=campaign))
    assert len(votes) == 6
    assert {vote.choice for vote in votes} == {"b"}  # track b is the challenger's
    assert seen_audio and set(seen_audio) == {PLACEHOLDER_AUDIO}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("protocol", [Campaign.Protocol.SIDE_BY_SIDE, Campaign.Protocol.MOS])
def test_scored_protocols_store_a_1_to_5_rating_per_clip(live_server, protocol):
    campaign = quick_campaign(protocol=protocol)

    simulate(live_server, campaign, "--raters", "2", "--votes", "4", "--careless-fraction", "0.5")

    assert Vote.objects.filter(campaign=campaign, choice__isnull=True).count() == 4
    ratings = MosRating.objects.filter(campaign=campaign)
    clips_per_vote = 1 if protocol == Campaign.Protocol.MOS else 2
    assert ratings.count() == 4 * clips_per_vote
    assert set(ratings.values_list("score", flat=True)) <= {1, 2, 3, 4, 5}


class _AlwaysFailing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.mark.django_db
def test_a_server_error_makes_the_command_fail_instead_of_spinning():
    campaign = quick_campaign()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysFailing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(CommandError, match="server error"):
            call_command(
                *("simulate_raters", "--campaign", str(campaign.pk), "--no-progress"),
                *("--raters", "2", "--votes", "4"),
                *("--base-url", f"http://127.0.0.1:{server.server_address[1]}"),
            )
    finally:
        server.shutdown()
    assert not Vote.objects.exists()


@pytest.mark.django_db
def test_an_unknown_campaign_is_a_command_error():
    with pytest.raises(CommandError, match="No campaign"):
        call_command("simulate_raters", "--campaign", "999999", "--raters", "1", "--votes", "1")


def test_the_default_preference_prefers_the_track_that_matches_the_prompt():
    prompt = "slow sad piano ballad"
    matching = clip(parse_prompt(prompt).to_dict())
    other = clip(parse_prompt("fast techno with drums").to_dict())

    assert default_preference(prompt, matching, other) > 0.8
    assert default_preference(prompt, other, matching) < 0.2


def test_a_noise_free_rater_always_picks_the_preferred_clip_and_scores_it_higher():
    prompt = "slow sad piano ballad"
    matching = clip(dataclasses.asdict(parse_prompt(prompt)))
    other = clip(parse_prompt("fast techno with drums").to_dict())
    rater = SimulatedRater("r", "t", noise=0.0, careless=False, rng=random.Random(0))

    def judge(protocol: str, clips: list[SimulatedClip]) -> dict:
        return rater_judgement(
            rater=rater,
            protocol=protocol,
            prompt_text=prompt,
            clips=clips,
            preference=default_preference,
        )

    assert {judge("preference", [other, matching])["choice"] for _ in range(20)} == {"B"}
    scores = judge("side_by_side", [matching, other])["scores"]
    assert scores["A"] > scores["B"]
    assert judge("mos", [matching])["scores"]["A"] > judge("mos", [other])["scores"]["A"]


def test_a_rater_answers_the_same_pair_the_same_way_whenever_and_on_whichever_side() -> None:
    """Answers are drawn per rater, prompt and clips, and turn with the screen: a seeded
    simulation casts the same votes however its raters' requests interleave and whichever
    side the server shows each clip on. The raters are noisy (a coin flip for the close
    pairs), so a judgement that drew in turn from one generator would differ."""
    prompt = "slow sad piano ballad"
    attrs = dataclasses.asdict(parse_prompt(prompt))
    pairs = [
        (SimulatedClip(b"", f"a {i}", attrs, "v1"), SimulatedClip(b"", f"b {i}", attrs, "v2"))
        for i in range(40)
    ]

    def close_call(prompt_text: str, clip_a: SimulatedClip, clip_b: SimulatedClip) -> float:
        return 0.6 if clip_a.generator_version == "v1" else 0.4

    def judge(rater: SimulatedRater, protocol: str, clips: list[SimulatedClip]) -> dict:
        return rater_judgement(rater=rater, protocol=protocol, prompt_text=prompt, clips=clips,
                               preference=close_call)  # fmt: skip

    mirror = {"A": "B", "B": "A", "tie": "tie", "both_bad": "both_bad"}
    answers = {}
    for careless in (False, True):
        rater = SimulatedRater("r", "t", noise=1.0, careless=careless, rng=random.Random(7))
        again = SimulatedRater("r", "t", noise=1.0, careless=careless, rng=random.Random(7))
        forward = [judge(rater, "preference", [a, b])["choice"] for a, b in pairs]
        backward = [judge(again, "preference", [b, a])["choice"] for a, b in reversed(pairs)]
        assert backward[::-1] == [mirror[choice] for choice in forward]
        assert len(set(forward)) > 1  # noisy: not every answer is the same
        answers[careless] = forward
        scores = [judge(rater, "side_by_side", [a, b])["scores"] for a, b in pairs]
        swapped = [judge(rater, "side_by_side", [b, a])["scores"] for a, b in pairs]
        assert swapped == [{"A": s["B"], "B": s["A"]} for s in scores]
    other = SimulatedRater("r", "t", noise=1.0, careless=False, rng=random.Random(8))
    assert [judge(other, "preference", [a, b])["choice"] for a, b in pairs] != answers[False]


@pytest.mark.django_db
def test_the_swarm_casts_the_last_vote_when_another_rater_gives_it_back(monkeypatch):
    """One vote left, two raters: the first holds it, finds nothing left to rate and gives it
    back while the second worker is looking for work. The second rater must still cast it
    (a worker that took its rater before the budget ended with the rater in hand, one vote
    short)."""
    from ratings.simulation.raters import SimulatedAccount, simulated_raters_build
    from ratings.simulation.swarm import RaterSwarm, SimulationConfig, _Outcome

    campaign = CampaignFactory()
    accounts = [SimulatedAccount("has-nothing-left", "t1"), SimulatedAccount("owes-a-vote", "t2")]
    raters = simulated_raters_build(accounts=accounts, noise=1.0, careless_fraction=0, seed=1)
    swarm = RaterSwarm(config=SimulationConfig(campaign.pk, votes=1, concurrency=2), raters=raters)
    voters = []

    def cycle(rater):
        if rater.username == "has-nothing-left":
            time.sleep(0.3)  # the other worker looks for work meanwhile
            return _Outcome.EXHAUSTED
        voters.append(rater.username)
        return _Outcome.VOTED

    monkeypatch.setattr(swarm, "_cycle", cycle)
    swarm.run()

    assert voters == ["owes-a-vote"]
