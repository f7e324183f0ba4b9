"""Evaluations: creating one queues an evaluate campaign, its report follows the votes, and
admins (only admins) promote or retire the candidate from its page."""

import dataclasses

import numpy as np
import pytest
from scipy import stats as scipy_stats

from generation.models import GeneratorVersion
from generation.music.composer import compose
from generation.music.evaluation import GeneratedPiece, piece_fit
from generation.music.events import piece_to_events
from generation.music.plan import plan_for_piece
from generation.music.prompts import parse_prompt
from ratings.models import Campaign, Role
from reward.evaluations import (
    EvaluationError,
    adherence_shortfalls,
    evaluation_create,
    evaluation_refresh,
    held_out_adherence,
    paired_adherence,
    version_promote,
    version_retire,
)
from reward.models import Evaluation
from tests.factories import (
    CampaignFactory,
    GeneratorVersionFactory,
    PairFactory,
    PromptFactory,
    TrackFactory,
    vote_on,
)

pytestmark = pytest.mark.django_db

# (candidate score, baseline score) of ten side-by-side votes: 6 wins, 2 ties, 2 losses; the
# figures are worked out by hand in test_statistics.py.
SCORES = [(4, 3), (5, 3), (3, 3), (4, 2), (2, 3), (5, 4), (4, 4), (5, 2), (3, 4), (4, 1)]


@pytest.fixture
def versions():
    base = GeneratorVersionFactory(name="base-v1")
    tuned = GeneratorVersionFactory(
        name="tuned-v2", parent=base, status=GeneratorVersion.Status.CANDIDATE
    )
    return tuned, base


def evaluation_with_votes(candidate, baseline, make_rater, scores=SCORES):
    """An active evaluate campaign of 5 items, each voted on by 2 raters in `scores` order."""
    campaign = CampaignFactory(
        purpose=Campaign.Purpose.EVALUATE,
        protocol=Campaign.Protocol.SIDE_BY_SIDE,
        version_a=candidate,
        version_b=baseline,
    )
    evaluation = Evaluation.objects.create(
        campaign=campaign, candidate=candidate, baseline=baseline
    )
    raters = [make_rater() for _ in range(2)]
    for index, (own, other) in enumerate(scores):
        if index % 2 == 0:
            prompt = PromptFactory()
            pair = PairFactory(
                campaign=campaign,
                prompt=prompt,
                track_b=TrackFactory(prompt=prompt, generator_version=baseline),
            )
        vote_on(pair, raters[index % 2], scores=(own, other))
    return evaluation


@pytest.fixture
def client_as(client, make_rater):
    def login(role):
        client.force_login(make_rater(role=role).user)
        return client

    return login


def test_creating_an_evaluation_queues_an_evaluate_campaign(
    versions, django_capture_on_commit_callbacks
):
    tuned, base = versions
    with django_capture_on_commit_callbacks() as callbacks:
        evaluation = evaluation_create(
            candidate=tuned,
            baseline=base,
            prompt_texts=["slow sad piano ballad", "fast techno", " "],
            votes_per_item=5,
            clip_seconds=8.0,
        )

    campaign = evaluation.campaign
    assert campaign.name == "Evaluation: tuned-v2 vs base-v1"
    assert campaign.purpose == Campaign.Purpose.EVALUATE
    assert campaign.protocol == Campaign.Protocol.SIDE_BY_SIDE
    assert (campaign.version_a, campaign.version_b) == (tuned, base)
    assert (campaign.votes_per_item, campaign.clip_seconds) == (5, 8.0)
    assert campaign.status == Campaign.Status.GENERATING
    assert campaign.generation_total == 4
    assert (evaluation.candidate, evaluation.baseline) == (tuned, base)
    assert evaluation.report["votes"] == 0
    assert len(callbacks) == 2  # one generation job per prompt, sent once the rows commit


def test_an_evaluation_against_itself_or_without_prompts_stores_nothing(versions):
    tuned, base = versions
    with pytest.raises(EvaluationError):
        evaluation_create(candidate=tuned, baseline=tuned, prompt_texts=["calm piano"])
    with pytest.raises(EvaluationError):
        evaluation_create(candidate=tuned, baseline=base, prompt_texts=["", "  "])
    assert not Campaign.objects.exists() and not Evaluation.objects.exists()


def test_the_report_is_computed_from_the_campaigns_votes(versions, make_rater):
    tuned, base = versions
    evaluation = evaluation_with_votes(tuned, base, make_rater)
    other = evaluation_with_votes(tuned, base, make_rater, scores=[(1, 5), (1, 5)])

    report = evaluation_refresh(evaluation)

    evaluation.refresh_from_db()
    assert evaluation.report == report and evaluation.computed_at is not None
    comparison = report["comparison"]
    assert (comparison["wins"], comparison["ties"], comparison["losses"]) == (6, 2, 2)
    assert comparison["win_rate"] == 0.75
    assert report["wilcoxon"]["p"] == pytest.approx(26 / 256)
    assert report["scores"]["candidate"]["mean"] == pytest.approx(3.9)
    assert report["scores"]["baseline"]["mean"] == pytest.approx(2.9)
    assert (report["votes"], report["raters"], report["prompts"]) == (10, 2, 5)
    assert evaluation_refresh(other)["comparison"]["losses"] == 2


def test_promote_and_retire_change_the_versions_status(versions):
    tuned, _ = versions
    version_promote(tuned)
    assert GeneratorVersion.objects.get(pk=tuned.pk).status == GeneratorVersion.Status.ACTIVE
    version_retire(tuned)
    assert GeneratorVersion.objects.get(pk=tuned.pk).status == GeneratorVersion.Status.RETIRED


def test_the_detail_page_shows_the_musicrl_table(versions, make_rater, client_as):
    tuned, base = versions
    evaluation = evaluation_with_votes(tuned, base, make_rater)

    response = client_as(Role.RESEARCHER).get(f"/manage/evaluations/{evaluation.pk}/")

    assert response.status_code == 200
    html = response.content.decode()
    for figure in (
        "60.0%",  # win
        "20.0%",  # tie and loss
        "75.0%",  # win rate, ties excluded
        "[40.9%, 92.9%]",  # its Wilson interval
        "0.2891",  # binomial p = 74/256
        "0.1016",  # Wilcoxon p = 26/256
        "3.90",  # candidate mean
        "2.90",  # baseline mean
        "[3.19, 4.61]",  # 3.9 +- 2.262 * 0.994 / sqrt(10)
        "No clear difference yet",  # the interval [40.9%, 92.9%] contains 50%
    ):
        assert figure in html, figure
    assert '<svg class="chart" id="chart-outcomes"' in html
    assert '<svg class="chart" id="chart-means"' in html
    assert f'href="/manage/campaigns/{evaluation.campaign_id}/"' in html
    assert "tuned-v2 <span" in html and "&larr; base-v1" in html  # lineage
    assert "Promote candidate to active" not in html  # researchers only read
    evaluation.refresh_from_db()
    assert evaluation.report["votes"] == 10  # refreshed on view


def test_the_list_shows_each_evaluations_headline(versions, make_rater, client_as):
    tuned, base = versions
    evaluation = evaluation_with_votes(tuned, base, make_rater)  # report never computed

    response = client_as(Role.RESEARCHER).get("/manage/evaluations/")

    assert response.status_code == 200
    html = response.content.decode()
    assert f'href="/manage/evaluations/{evaluation.pk}/"' in html
    assert "75.0% [40.9%, 92.9%]" in html
    assert "60.0% / 20.0% / 20.0%" in html


def test_a_mos_evaluation_page_shows_means_only(versions, make_rater, client_as):
    tuned, base = versions
    campaign = CampaignFactory(
        purpose=Campaign.Purpose.EVALUATE,
        protocol=Campaign.Protocol.MOS,
        version_a=tuned,
        version_b=base,
    )
    evaluation = Evaluation.objects.create(campaign=campaign, candidate=tuned, baseline=base)
    rater = make_rater()
    for version, score in ((tuned, 4), (tuned, 5), (base, 2), (base, 3)):
        vote_on(PairFactory(campaign=campaign, track_b=None, track_a=TrackFactory(
            generator_version=version)), rater, scores=(score,))  # fmt: skip

    response = client_as(Role.RESEARCHER).get(f"/manage/evaluations/{evaluation.pk}/")

    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="no-comparison"' in html and "A MOS test rates one clip at a time" in html
    assert "4.50" in html and "2.50" in html
    assert 'id="chart-outcomes"' not in html and 'id="chart-means"' in html


def test_admins_promote_and_retire_the_candidate(versions, make_rater, client_as):
    tuned, base = versions
    evaluation = evaluation_with_votes(tuned, base, make_rater)
    client = client_as(Role.ADMIN)

    page = client.get(f"/manage/evaluations/{evaluation.pk}/").content.decode()
    assert "Promote candidate to active" in page and "Retire candidate" in page
    response = client.post(f"/manage/evaluations/{evaluation.pk}/promote/")
    assert response.status_code == 302
    assert response["Location"] == f"/manage/evaluations/{evaluation.pk}/"
    tuned.refresh_from_db()
    assert tuned.status == GeneratorVersion.Status.ACTIVE

    client.post(f"/manage/evaluations/{evaluation.pk}/retire/")
    tuned.refresh_from_db()
    assert tuned.status == GeneratorVersion.Status.RETIRED
    assert client.get(f"/manage/evaluations/{evaluation.pk}/promote/").status_code == 405


@pytest.mark.parametrize("action", ["promote", "retire"])
def test_researchers_may_read_but_not_decide(action, versions, make_rater, client_as):
    tuned, base = versions
    evaluation = evaluation_with_votes(tuned, base, make_rater, scores=SCORES[:2])
    client = client_as(Role.RESEARCHER)

    assert client.get(f"/manage/evaluations/{evaluation.pk}/").status_code == 200
    assert client.post(f"/manage/evaluations/{evaluation.pk}/{action}/").status_code == 403
    tuned.refresh_from_db()
    assert tuned.status == GeneratorVersion.Status.CANDIDATE


def test_raters_are_refused_and_anonymous_visitors_sent_to_log_in(
    versions, make_rater, client, client_as
):
    tuned, base = versions
    evaluation = evaluation_with_votes(tuned, base, make_rater, scores=SCORES[:2])
    for path in ("/manage/evaluations/", f"/manage/evaluations/{evaluation.pk}/"):
        response = client.get(path)
        assert response.status_code == 302 and "/login/" in response["Location"]
    response = client.post(f"/manage/evaluations/{evaluation.pk}/promote/")
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert client_as(Role.RATER).get("/manage/evaluations/").status_code == 403


def test_the_report_gives_each_version_s_prompt_adherence_on_the_clips_heard(versions, client_as):
    candidate, baseline = versions
    campaign = CampaignFactory(
        purpose=Campaign.Purpose.EVALUATE, protocol=Campaign.Protocol.PREFERENCE,
        version_a=candidate, version_b=baseline,
    )  # fmt: skip
    evaluation = Evaluation.objects.create(
        campaign=campaign, candidate=candidate, baseline=baseline
    )
    for index, text in enumerate(["slow sad piano ballad", "calm ambient pad with strings"]):
        prompt = PromptFactory(text=text)
        # The candidate plays what was asked; the baseline plays fast techno whatever it is,
        # and declares the plan of the prompt moved to another key.
        followed = compose(parse_prompt(text), seed=index, duration_seconds=6)
        ignored = compose(parse_prompt("fast techno with drums"), seed=index, duration_seconds=6)
        plan = plan_for_piece(parse_prompt(text), followed)
        moved = dataclasses.replace(plan, key_root=(plan.key_root + 5) % 12)
        PairFactory(
            campaign=campaign, prompt=prompt,
            track_a=TrackFactory(prompt=prompt, generator_version=candidate,
                                 events=piece_to_events(followed),
                                 attributes={"plan": plan.to_dict()}),
            track_b=TrackFactory(prompt=prompt, generator_version=baseline,
                                 events=piece_to_events(ignored),
                                 attributes={"plan": moved.to_dict()}),
        )  # fmt: skip
    PairFactory(campaign=campaign, track_b=None)  # audio only (no notes): left out

    report = evaluation_refresh(evaluation)

    followed, ignored = report["adherence"]["tuned-v2"], report["adherence"]["base-v1"]
    assert (followed["clips"], ignored["clips"]) == (2, 2)
    assert (followed["tempo"], followed["drums"]) == (1.0, 1.0)
    assert (ignored["tempo"], ignored["drums"]) == (0.0, 0.0)
    assert followed["score"] > ignored["score"] + 0.4
    # The plans they declared, exactly: only the key differs.
    planned = report["plan_adherence"]
    assert (planned["tuned-v2"]["key"], planned["base-v1"]["key"]) == (1.0, 0.0)
    assert planned["tuned-v2"]["clips"] == planned["base-v1"]["clips"] == 2
    assert planned["base-v1"]["tempo"] == planned["tuned-v2"]["tempo"]
    page = client_as(Role.RESEARCHER).get(f"/manage/evaluations/{evaluation.pk}/")
    table = page.content.decode().split('id="adherence-table"')[1].split("</table>")[0]
    assert table.index("tuned-v2") < table.index("base-v1")  # the candidate first
    assert 'id="plan-adherence-table"' in page.content.decode()


def _pieces(version_tempo_shifts: list[list[int]], prompts: list[str]) -> list[GeneratedPiece]:
    """For each prompt, one composer piece per tempo shift (BPM added to the asked tempo),
    with the plan of what it plays declared."""
    pieces = []
    for index, (text, shifts) in enumerate(zip(prompts, version_tempo_shifts, strict=True)):
        for number, shift in enumerate(shifts):
            target = parse_prompt(text)
            played = dataclasses.replace(target, tempo_bpm=target.tempo_bpm + shift)
            piece = compose(played, seed=10 * index + number, duration_seconds=6)
            pieces.append(GeneratedPiece(text, piece, plan_for_piece(played, piece)))
    return pieces


PAIRED_PROMPTS = ["slow sad piano ballad", "calm ambient pad with strings", "upbeat funk with bass"]


def test_whole_piece_adherence_is_paired_by_prompt_with_a_t_interval():
    # The candidate plays each prompt as asked; the parent drifts from the asked tempo by
    # a different amount in each of its two pieces per prompt.
    candidate = _pieces([[0, 0], [0, 0], [0, 0]], PAIRED_PROMPTS)
    parent = _pieces([[8, 24], [0, 16], [12, 4]], PAIRED_PROMPTS)

    figures = paired_adherence(candidate, parent)

    assert figures["pieces"] == {"candidate": 6, "parent": 6}
    tempo = figures["notes"]["tempo"]
    # By hand: each prompt's mean tempo fit per version, their differences, and the 95%
    # t-interval of the mean difference over the 3 prompts (2 degrees of freedom).
    per_piece = {
        name: [piece_fit(parse_prompt(p.prompt), p.piece)["tempo"] for p in pieces]
        for name, pieces in (("candidate", candidate), ("parent", parent))
    }
    assert per_piece["candidate"] == [1.0] * 6
    differences = np.array([
        np.mean(per_piece["candidate"][2 * i : 2 * i + 2])
        - np.mean(per_piece["parent"][2 * i : 2 * i + 2])
        for i in range(3)
    ])  # fmt: skip
    assert differences.min() > 0  # every drift costs tempo fit
    half_width = scipy_stats.t.ppf(0.975, 2) * differences.std(ddof=1) / np.sqrt(3)
    assert tempo["difference"] == pytest.approx(differences.mean(), abs=1e-4)
    assert tempo["difference_ci"] == pytest.approx(
        [differences.mean() - half_width, differences.mean() + half_width], abs=1e-4
    )
    assert tempo["candidate"] == 1.0
    assert tempo["parent"] == pytest.approx(np.mean(per_piece["parent"]), abs=1e-4)
    # A field both play alike differs by 0 exactly, an interval of no width.
    assert figures["notes"]["instruments"]["difference"] == 0.0
    assert figures["notes"]["instruments"]["difference_ci"] == [0.0, 0.0]
    # The plans declared the tempo played, so they show the same shortfall.
    assert figures["plans"]["tempo"]["difference"] == pytest.approx(tempo["difference"], abs=0.02)
    assert figures["notes"]["prompts"] == figures["plans"]["prompts"] == 3


def test_whole_piece_density_is_read_on_the_lead_the_plan_declared():
    """A candidate whose votes pulled the instruments may lead with another part than the
    prompt asked for; its density is the rhythm of the melody it leads with, not of
    whichever part is busiest once the asked lead is gone."""
    prompt = "a calm folk song with flute, acoustic guitar and acoustic bass"
    target = parse_prompt(prompt)
    cello_led = dataclasses.replace(target, instruments=(42, *target.instruments[1:]))
    piece = compose(cello_led, seed=3, duration_seconds=16)
    swapped = GeneratedPiece(prompt, piece, plan_for_piece(cello_led, piece), True)
    as_asked = compose(target, seed=3, duration_seconds=16)
    parent = GeneratedPiece(prompt, as_asked, plan_for_piece(target, as_asked), True)

    figures = paired_adherence([swapped], [parent])

    assert piece_fit(target, piece)["density"] < 0.9  # the busiest part's rhythm
    assert (
        figures["notes"]["density"]["candidate"]
        == 1.0
        == piece_fit(target, piece, lead=42)["density"]
    )
    assert figures["notes"]["density"]["parent"] == 1.0
    assert figures["notes"]["instruments"]["candidate"] < 1.0  # the swap itself still shows


def test_only_unpulled_fields_more_than_0_02_below_are_shortfalls():
    figures = {
        "notes": {
            "tempo": {"difference": -0.30},  # pulled by the taste: not a shortfall
            "mode": {"difference": -0.05},
            "key": {"difference": -0.02},  # exactly at the limit: allowed
            "density": {"difference": 0.04},
        }
    }
    kept = ("mode", "key", "density", "instruments")  # instruments not measured
    assert adherence_shortfalls(figures, kept) == {"mode": -0.05}
    assert adherence_shortfalls(None, kept) == {}


def test_the_page_shows_whole_piece_adherence_and_a_refresh_keeps_it(
    versions, make_rater, client_as
):
    candidate, baseline = versions
    evaluation = evaluation_with_votes(candidate, baseline, make_rater)
    figures = paired_adherence(
        _pieces([[0, 0], [0, 0], [0, 0]], PAIRED_PROMPTS),
        _pieces([[8, 24], [0, 16], [12, 4]], PAIRED_PROMPTS),
    ) | {"samples_per_prompt": 2}
    evaluation.report = {**evaluation.report, "held_out_adherence": figures}
    evaluation.save()

    report = evaluation_refresh(evaluation)  # votes change; the pieces do not

    assert report["held_out_adherence"] == figures
    page = client_as(Role.RESEARCHER).get(f"/manage/evaluations/{evaluation.pk}/")
    html = page.content.decode()
    table = html.split('id="whole-piece-adherence-table"')[1].split("</table>")[0]
    tempo_row = table.split("<td>tempo</td>")[1].split("</tr>")[0]
    assert f"{figures['notes']['tempo']['difference']:.3f}" in tempo_row
    assert "2 whole pieces per prompt" in html and "3 prompts" in html


def test_an_audio_only_version_has_no_whole_piece_adherence(versions):
    candidate, baseline = versions  # procedural: no model to sample notes from
    assert (
        held_out_adherence(candidate, baseline, PAIRED_PROMPTS, samples_per_prompt=1, seed=0)
        is None
    )
