"""The closed loop at its tiny budget: every stage runs for real (generation, simulated raters
over HTTP, reward models, RL fine-tuning, an evaluation campaign voted by the same population)
and leaves its objects behind. The tiny budget learns nothing; the small one is the command's
job (see the closing notes for its figures)."""

import pytest

from generation.models import GeneratorVersion, Track
from ratings.models import Campaign, Vote
from ratings.simulation.tastes import default_preference
from reward.closed_loop import closed_loop_run
from reward.models import Evaluation, FineTuneRun, RewardModel


@pytest.mark.django_db(transaction=True)
def test_every_stage_of_the_tiny_loop_produces_its_objects():
    said: list[str] = []

    result = closed_loop_run(
        preference=default_preference, preference_name="default", budget_name="tiny",
        objective="R", say=said.append,
    )  # fmt: skip

    collect = Campaign.objects.get(purpose="collect")
    assert collect.pairs.count() == 12
    assert Track.objects.filter(generator_version__name=result["baseline"]).count() >= 24
    assert Vote.objects.filter(campaign=collect).count() == 24
    assert result["snapshot"]["votes"] == 24 and len(result["snapshot"]["sha256"]) == 64
    models = {(m.kind, m.method): m for m in RewardModel.objects.all()}
    assert set(models) == {
        ("adherence", "learned"), ("adherence", "attribute_match"),
        ("preference", "learned"), ("preference", "measured"),
    }  # fmt: skip
    assert all(m.status == "finished" and m.usable for m in models.values())
    # Each preference model is read against the raters' own agreement on its held-out pairs.
    for role in ("preference", "measured"):
        assert "against_raters" in result["reward_models"][role]
        name = models[("preference", "learned" if role == "preference" else "measured")].name
        assert any(
            line.startswith(f"  {name}: ") and ("agreement" in line or "too few votes" in line)
            for line in said
        ), said
    run = FineTuneRun.objects.get()
    assert run.status == "finished"
    # R, because it was asked for: the run optimises prompt adherence, whatever the votes say.
    assert result["decision"]["preset"] == result["preset"] == "R"
    assert result["collect_rounds"] == 1
    (stage,) = run.stages
    optimised = RewardModel.objects.get(pk=int(next(iter(stage["rewards"]))))
    assert (optimised.kind, optimised.method) == ("adherence", "attribute_match")
    assert len(run.data_summary["held_out_prompts"]) == 6  # the tiny budget's pools
    candidate = GeneratorVersion.objects.get(pk=run.result_version_id)
    assert candidate.parent.name == result["baseline"]
    evaluation = Evaluation.objects.get()
    assert evaluation.fine_tune_run == run
    assert evaluation.campaign.version_a == candidate
    votes = Vote.objects.filter(campaign=evaluation.campaign).count()
    assert votes == evaluation.campaign.pairs.count() * 2
    report = result["report"]
    assert report["comparison"]["n"] == votes
    assert report["candidate"] == candidate.name
    # Adherence per attribute of both versions' clips, and the composer's as the ceiling.
    assert set(report["adherence"]) == {candidate.name, result["baseline"]}
    assert report["adherence_ceiling"]["tempo"] == 1.0  # the composer plays the asked tempo
    assert any("report" in line for line in said)


@pytest.mark.django_db(transaction=True)
def test_a_loop_whose_votes_support_no_taste_stops_and_trains_no_audio_network(monkeypatch):
    """A budget that can never collect the votes the audio network needs trains neither it
    nor the music tower that starts it; when the measured-feature model does not beat chance
    on its held-out votes either, the loop stops and says why: no RL run, no candidate."""
    from dataclasses import replace

    from reward import closed_loop

    budgets = closed_loop.BUDGETS | {
        "one-round": replace(closed_loop.BUDGETS["tiny"], audio_min_votes=1000,
                             max_collect_rounds=1, collect_prompts=6),
    }  # fmt: skip
    monkeypatch.setattr(closed_loop, "BUDGETS", budgets)
    said: list[str] = []

    result = closed_loop_run(
        preference=default_preference, preference_name="default", budget_name="one-round",
        say=said.append,
    )  # fmt: skip

    assert "no preference model beats chance" in result["stopped"]
    assert result["collect_rounds"] == 1 and result["decision"]["action"] == "stop"
    models = {(m.kind, m.method) for m in RewardModel.objects.all()}
    assert models == {("preference", "measured")}
    assert set(result["reward_models"]) == {"measured"}
    assert any("audio preference network is not trained" in line for line in said)
    assert not FineTuneRun.objects.exists() and not Evaluation.objects.exists()
