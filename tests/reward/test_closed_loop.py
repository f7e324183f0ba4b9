"""The closed loop at its tiny budget: every stage runs for real (generation, simulated raters
over HTTP, reward models, RL fine-tuning, an evaluation campaign voted by the same population)
and leaves its objects behind. The tiny budget learns nothing; the small one is the command's
job (see the closing notes for its figures)."""

import pytest

from generation.models import GeneratorVersion, Track
from generation.music.evaluation import FIT_PARTS
from generation.music.learned import create_backend
from ratings.models import Campaign, Vote
from ratings.simulation.tastes import default_preference
from reward import finetune_results
from reward.closed_loop import closed_loop_run
from reward.models import Evaluation, FineTuneRun, RewardModel


@pytest.mark.django_db(transaction=True)
def test_every_stage_of_the_tiny_loop_produces_its_objects_and_musicrl_s_table(monkeypatch):
    """The tiny loop with MusicRL's three presets: R on prompt adherence, U on a preference
    model, RU as U started from R's result; each judged against the base, and RU against R.
    The tiny budget's 24 votes support no taste, so the decision is made for it here: U on the
    measured-feature model (the decision itself is tested in test_closed_loop_objective)."""
    from reward import closed_loop
    from reward.closed_loop_objective import Decision

    def decide_u(*, preference_models, **_):
        measured = next(m for m in preference_models if m.method == "measured")
        return Decision("optimise", "U", measured, "U, as this test decides")

    monkeypatch.setattr(closed_loop, "objective_decide", decide_u)
    said: list[str] = []

    result = closed_loop_run(
        preference=default_preference, preference_name="default", budget_name="tiny",
        presets=("R", "U", "RU"), say=said.append,
    )  # fmt: skip

    collect = Campaign.objects.get(purpose="collect")
    assert collect.pairs.count() == 12
    assert Track.objects.filter(generator_version__name=result["baseline"]).count() >= 24
    assert Vote.objects.filter(campaign=collect).count() == 24
    assert result["snapshot"]["votes"] == 24 and len(result["snapshot"]["sha256"]) == 64
    assert result["collect_rounds"] == 1
    models = {(m.kind, m.method): m for m in RewardModel.objects.all()}
    assert set(models) == {
        ("adherence", "learned"), ("adherence", "attribute_match"),
        ("preference", "learned"), ("preference", "measured"),
    }  # fmt: skip
    assert all(m.status == "finished" and m.usable for m in models.values())
    # The measured model is also judged five-fold by prompt over all its votes (12 prompts).
    measured = models[("preference", "measured")].metrics
    crossed = result["reward_models"]["measured"]["cross_validated"]
    assert crossed["votes"] == measured["train"]["votes"] + measured["heldout"]["votes"] > 0
    # Each preference model is read against the raters' own agreement on its held-out pairs.
    for role in ("preference", "measured"):
        assert "against_raters" in result["reward_models"][role]
        name = models[("preference", "learned" if role == "preference" else "measured")].name
        assert any(
            line.startswith(f"  {name}: ") and ("agreement" in line or "too few votes" in line)
            for line in said
        ), said
    # Three runs: R optimises prompt adherence, U and RU the measured model; RU starts from R.
    runs = {
        preset: FineTuneRun.objects.get(pk=pk) for preset, pk in result["fine_tune_runs"].items()
    }
    assert set(runs) == {"R", "U", "RU"}
    assert all(run.status == "finished" for run in runs.values())
    for preset, (kind, method) in {
        "R": ("adherence", "attribute_match"), "U": ("preference", "measured"),
        "RU": ("preference", "measured"),
    }.items():  # fmt: skip
        stages = runs[preset].stages
        # U and RU learn on plans first, then on whole sequences; R on whole sequences.
        parts = ["all"] if preset == "R" else ["plan", "all"]
        assert [stage.get("part", "all") for stage in stages] == parts
        # The report gives each stage's steps and wall time.
        times = result["rl_stages"][preset]
        assert [t["part"] for t in times] == parts and all(t["seconds"] > 0 for t in times)
        assert sum(t["steps"] for t in times) == runs[preset].steps
        for stage in stages:
            optimised = RewardModel.objects.get(pk=int(next(iter(stage["rewards"]))))
            assert (optimised.kind, optimised.method) == (kind, method)
    # U and RU keep the prompt's fields the votes do not pull and explore only those they
    # do (24 votes pin down no weight: all are kept); R's reward is adherence itself.
    fields = result["taste_fields"]
    assert sorted([*fields["kept"], *fields["pulled"]]) == sorted(FIT_PARTS)
    for preset in ("U", "RU"):
        assert runs[preset].settings["kept_fields"] == fields["kept"]
        # The tuned version, as the platform loads it to make clips, keeps them as each
        # prompt asks (planned.PromptLock).
        tuned = create_backend(runs[preset].result_version.backend_config())
        assert list(tuned.sampling.kept_fields) == fields["kept"]
        assert runs[preset].settings["explore_share"] == (0.5 if fields["explored"] else 0.0)
    assert runs["R"].settings["kept_fields"] == []
    assert any(line.startswith("  the votes ask to move") for line in said), said
    base = runs["R"].base_version
    assert runs["U"].base_version == base and base.name == result["baseline"]
    assert runs["RU"].base_version == runs["R"].result_version
    assert len(runs["R"].data_summary["held_out_prompts"]) == 4  # the tiny budget's pools
    # Four listening tests, each voted by the population on the runs' held-out prompts.
    evaluations = {
        label: Evaluation.objects.get(pk=pk) for label, pk in result["evaluations"].items()
    }
    assert set(evaluations) == {"R vs base", "U vs base", "RU vs R", "RU vs base"}
    expected = {
        "R vs base": (runs["R"].result_version, base),
        "U vs base": (runs["U"].result_version, base),
        "RU vs R": (runs["RU"].result_version, runs["R"].result_version),
        "RU vs base": (runs["RU"].result_version, base),
    }  # fmt: skip
    for label, evaluation in evaluations.items():
        assert (evaluation.candidate, evaluation.baseline) == expected[label]
        votes = Vote.objects.filter(campaign=evaluation.campaign).count()
        assert votes == evaluation.campaign.pairs.count() * 2
        report = result["reports"][label]
        assert report["comparison"]["n"] == votes
        # Adherence per attribute of both versions' clips, and the composer's as the ceiling.
        assert set(report["adherence"]) == {evaluation.candidate.name, evaluation.baseline.name}
        assert report["adherence_ceiling"]["tempo"] == 1.0  # the composer plays the asked tempo
        # And on whole pieces of the same prompts, paired by prompt, stored with the
        # evaluation: one piece per prompt and version at the tiny budget.
        whole = report["held_out_adherence"]
        assert whole == evaluation.report["held_out_adherence"]
        assert whole["pieces"] == {"candidate": 4, "parent": 4}
        for measured in ("notes", "plans"):
            assert whole[measured]["prompts"] == 4
            for part in (*FIT_PARTS, "score"):
                figures = whole[measured][part]
                assert figures["difference"] == pytest.approx(
                    figures["candidate"] - figures["parent"], abs=2e-4
                )
        # The composer's whole pieces as the ceiling, and the share of the gap made up.
        ceiling, score = whole["composer_ceiling"], whole["notes"]["score"]
        assert ceiling["tempo"] == 1.0
        if ceiling["score"] > score["parent"]:
            assert whole["gap_closed"] == pytest.approx(
                (score["candidate"] - score["parent"]) / (ceiling["score"] - score["parent"]),
                abs=1e-3,
            )
        else:  # nothing to make up
            assert whole["gap_closed"] is None
        # The fields the taste does not pull on which the candidate fell more than 0.02.
        notes = whole["notes"]
        assert report["unpulled_shortfalls"] == {
            name: notes[name]["difference"]
            for name in fields["kept"]
            if notes[name]["difference"] < -0.02
        }
    # RU's page shows its comparison with its parent, R.
    assert finetune_results.evaluation_for_run(run=runs["RU"]) == evaluations["RU vs R"]
    # The table, in MusicRL's form, as the reports give it.
    table = {row["comparison"]: row for row in result["table"]}
    assert set(table) == set(evaluations)
    for label, row in table.items():
        comparison = result["reports"][label]["comparison"]
        assert (row["wins"], row["ties"], row["losses"]) == (
            comparison["wins"],
            comparison["ties"],
            comparison["losses"],
        )
        assert row["win_rate"] == comparison["win_rate"]
    assert any(line.startswith("RU vs R ") for line in said)
    assert any("wall time" in line for line in said)


# reset_sequences: the campaigns' clip seeds and variant axes derive from database ids
# (`ratings.campaigns._clip_seed`, `variant_axis_for`), so ids that depend on which tests ran
# before on the same worker gave other clips, other votes, and once a model that beat chance.
@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_a_loop_whose_votes_support_no_taste_stops_and_trains_no_audio_network(monkeypatch):
    """A budget that can never collect the votes the audio network needs trains neither it
    nor the music tower that starts it; when the measured-feature model does not beat chance
    on its held-out votes, the loop collects a second round, every pair of it a clip against
    its variant, and when the model still does not, it stops and says why: no RL run, no
    candidate."""
    from dataclasses import replace

    from reward import closed_loop

    budgets = closed_loop.BUDGETS | {
        # As many raters as votes per pair, so each rater votes on every pair and, with the
        # ids reset, the votes are the same in every run (`SimulatedRater.draws`). With the
        # tiny budget's four raters, which rater got which pair was timing, and on a busy
        # machine the model beat chance once and the loop went on to RL.
        "two-rounds": replace(closed_loop.BUDGETS["tiny"], audio_min_votes=1000,
                             max_collect_rounds=2, collect_prompts=6, raters=2),
    }  # fmt: skip
    monkeypatch.setattr(closed_loop, "BUDGETS", budgets)
    said: list[str] = []

    def indifferent(prompt_text, clip_a, clip_b) -> float:
        return 0.5  # raters who hear no difference: their votes hold no taste at all

    result = closed_loop_run(
        preference=indifferent, preference_name="indifferent", budget_name="two-rounds",
        say=said.append,
    )  # fmt: skip

    assert "no preference model beats chance" in result["stopped"]
    assert result["collect_rounds"] == 2 and result["decision"]["action"] == "stop"
    first, second = Campaign.objects.filter(purpose="collect").order_by("pk")
    variants = {
        campaign.pk: sum("variant" in pair.track_b.attributes for pair in campaign.pairs.all())
        for campaign in (first, second)
    }
    assert (first.variant_share, second.variant_share) == (0.5, 1.0)
    assert variants[second.pk] == second.pairs.count() == 6 > variants[first.pk]
    # The prompts of the second round are new ones.
    assert not set(first.prompts.all()) & set(second.prompts.all())
    models = {(m.kind, m.method) for m in RewardModel.objects.all()}
    assert models == {("preference", "measured")}
    assert set(result["reward_models"]) == {"measured"}
    assert any("audio preference network is not trained" in line for line in said)
    assert not FineTuneRun.objects.exists() and not Evaluation.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("presets", "objective", "why"),
    [("U,RU", "auto", "RU needs R"), ("R,X", "auto", "some of R,U,RU"), ("R,U", "R", "auto")],
)
def test_presets_that_cannot_run_are_refused_before_anything_is_made(presets, objective, why):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match=why):
        call_command(
            "musicrl_loop", "--budget", "tiny", "--presets", presets, "--objective", objective
        )
    with pytest.raises(ValueError, match=why):
        closed_loop_run(
            preference=default_preference, preference_name="default", budget_name="tiny",
            objective=objective, presets=tuple(presets.split(",")), say=lambda line: None,
        )  # fmt: skip

    assert not Campaign.objects.exists() and not GeneratorVersion.objects.exists()


@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_a_round_for_the_axes_left_in_doubt_pairs_every_clip_with_a_variant_along_them(
    monkeypatch,
):
    """When the first round's votes leave some axis in doubt, the next round's pairs vary
    that axis alone (the decision itself is tested in test_closed_loop_objective)."""
    from dataclasses import replace

    from reward import closed_loop
    from reward.closed_loop_objective import Decision

    budgets = closed_loop.BUDGETS | {
        "two-rounds": replace(closed_loop.BUDGETS["tiny"], audio_min_votes=1000,
                             max_collect_rounds=2, collect_prompts=3, raters=2),
    }  # fmt: skip
    monkeypatch.setattr(closed_loop, "BUDGETS", budgets)

    def decide(*, rounds_done, **_):
        if rounds_done == 1:
            return Decision("collect", None, None, "mode in doubt", variant_axes=("mode",))
        return Decision("stop", None, None, "stopped, as this test decides")

    monkeypatch.setattr(closed_loop, "objective_decide", decide)
    # No reward models: the decisions are made here, and the campaigns are what is tested.
    monkeypatch.setattr(closed_loop, "_preference_models", lambda *args: {})

    result = closed_loop_run(
        preference=default_preference, preference_name="default", budget_name="two-rounds",
        say=lambda line: None,
    )  # fmt: skip

    assert result["collect_rounds"] == 2
    first, second = Campaign.objects.filter(purpose="collect").order_by("pk")
    assert len(first.variant_axes) == 9 and second.variant_axes == ["mode"]
    axes = [pair.track_b.attributes["variant"]["axis"] for pair in second.pairs.all()]
    assert axes == ["mode"] * 3
