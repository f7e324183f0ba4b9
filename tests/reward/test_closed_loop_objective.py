"""The closed loop's choice of objective after a round of votes: the raters' taste only where a
preference model beats chance on held-out votes, more votes while the budget allows, then a stop;
prompt adherence only when chosen."""

import pytest

from reward.closed_loop_objective import objective_decide
from reward.models import RewardModel


def preference_model(name: str, accuracy: float, low: float, high: float) -> RewardModel:
    metrics = {"heldout": {"accuracy": accuracy, "accuracy_ci": [low, high], "votes": 60}}
    return RewardModel(name=name, kind="preference", metrics=metrics)


def test_the_loop_optimises_the_taste_only_where_a_preference_model_beats_chance():
    audio = preference_model("audio", 0.62, 0.49, 0.74)
    measured = preference_model("measured", 0.71, 0.58, 0.81)

    decision = objective_decide(
        objective="auto", preference_models=[audio, measured], rounds_done=1, max_rounds=2
    )

    assert (decision.action, decision.preset, decision.reward_model) == ("optimise", "U", measured)
    assert "measured: 0.710 [0.580, 0.810]" in decision.reason


def test_without_a_model_that_beats_chance_the_loop_collects_more_votes_then_stops():
    near_chance = [
        preference_model("audio", 0.55, 0.42, 0.67),
        preference_model("m", 0.6, 0.47, 0.7),
    ]

    first = objective_decide(
        objective="auto", preference_models=near_chance, rounds_done=1, max_rounds=2
    )
    last = objective_decide(
        objective="auto", preference_models=near_chance, rounds_done=2, max_rounds=2
    )

    assert (first.action, first.preset) == ("collect", None)
    assert "round 2 of at most 2" in first.reason
    # It never falls back on another objective by itself: it stops and says why.
    assert (last.action, last.preset, last.reward_model) == ("stop", None, None)
    assert "do not support a taste" in last.reason and "audio: 0.550 [0.420, 0.670]" in last.reason


def test_prompt_adherence_runs_only_when_chosen_and_unknown_objectives_are_refused():
    near_chance = [preference_model("audio", 0.5, 0.4, 0.6)]
    chosen = objective_decide(
        objective="R", preference_models=near_chance, rounds_done=1, max_rounds=1
    )
    assert (chosen.action, chosen.preset) == ("optimise", "R")
    with pytest.raises(ValueError, match="objective"):
        objective_decide(objective="U", preference_models=[], rounds_done=1, max_rounds=1)


def test_a_preference_model_is_read_against_the_raters_own_agreement_on_the_same_pairs():
    from reward.closed_loop_objective import against_the_raters, raters_agreement_gap
    from reward.learning.metrics import rater_agreement

    # Two held-out pairs, three decisive votes each: 3-0 (agreement 1) and 2-1 (two of the
    # six ordered pairs of votes agree: 1/3), so the raters agree 2/3 of the time.
    raters = rater_agreement({0: [1.0, 1.0, 1.0], 1: [1.0, 1.0, 0.0]}, resamples=50)
    assert raters["agreement"] == pytest.approx(2 / 3)
    model = preference_model("measured", 0.7, 0.55, 0.8)
    model.metrics["noise_ceiling"] = {"heldout": raters}

    figures = raters_agreement_gap(model)

    assert figures["gap"] == pytest.approx(0.7 - 2 / 3)
    assert figures["pairs"] == 2
    assert "agreement on the same 2 pairs 0.667 (gap +0.033" in against_the_raters(model)
    # Read on the votes the agreement counts when the model measured it there; a
    # cross-validated model is read on every pair too.
    model.metrics["heldout"]["agreement_pairs_accuracy"] = 0.75
    model.metrics["cross_validated"] = {"accuracy": 0.6, "agreement_pairs_accuracy": 0.62}
    everyone = rater_agreement({0: [1.0, 1.0], 1: [1.0, 0.0], 2: [0.0, 0.0]}, resamples=50)
    model.metrics["noise_ceiling"]["all"] = everyone
    figures = raters_agreement_gap(model)
    assert figures["gap"] == pytest.approx(0.75 - 2 / 3)
    assert figures["cross_validated"] == {
        "accuracy": 0.62, "raters_agreement": pytest.approx(2 / 3),
        "gap": pytest.approx(0.62 - 2 / 3), "pairs": 3,
    }  # fmt: skip
    assert "cross-validated on all 3 pairs 0.620 against the raters' 0.667 (gap -0.047)" in (
        against_the_raters(model)
    )
    # Pairs with a single vote each cannot show agreement: no figure, and the line says why.
    model.metrics["noise_ceiling"] = {"heldout": rater_agreement({0: [1.0], 1: [0.0]})}
    assert raters_agreement_gap(model) is None
    assert "too few votes" in against_the_raters(model)


def test_a_model_that_barely_beats_chance_gets_more_votes_while_the_budget_allows():
    weak = preference_model("measured", 0.596, 0.513, 0.675)

    first = objective_decide(
        objective="auto", preference_models=[weak], rounds_done=1, max_rounds=2,
        confident_lower=0.55,
    )  # fmt: skip
    last = objective_decide(
        objective="auto", preference_models=[weak], rounds_done=2, max_rounds=2,
        confident_lower=0.55,
    )  # fmt: skip
    confident = objective_decide(
        objective="auto", preference_models=[preference_model("measured", 0.7, 0.55, 0.8)],
        rounds_done=1, max_rounds=2, confident_lower=0.55,
    )  # fmt: skip

    assert (first.action, first.reward_model) == ("collect", None)
    assert "below 0.55" in first.reason and "round 2 of at most 2" in first.reason
    # After the last round the best the votes support is optimised, and the report says so.
    assert (last.action, last.preset, last.reward_model) == ("optimise", "U", weak)
    assert "rounds of collection are spent" in last.reason
    assert (confident.action, confident.preset) == ("optimise", "U")
    assert "spent" not in confident.reason


def test_the_votes_support_a_taste_by_cross_validation_over_all_of_them_when_it_was_measured():
    """The measured-feature model is also judged five-fold over all its votes; those figures
    decide, and a log-likelihood gain whose interval clears 0 is support even where the
    accuracy interval still reaches 0.5 (most pairs may not show the taste at all)."""
    weak_fifth = preference_model("measured", 0.578, 0.465, 0.672)
    weak_fifth.metrics["cross_validated"] = {
        "votes": 576, "accuracy": 0.566, "accuracy_ci": [0.49, 0.61],
        "gain_over_chance": 0.032, "gain_over_chance_ci": [0.005, 0.063],
    }  # fmt: skip
    no_gain = preference_model("measured", 0.578, 0.465, 0.672)
    no_gain.metrics["cross_validated"] = {
        "votes": 576, "accuracy": 0.52, "accuracy_ci": [0.47, 0.57],
        "gain_over_chance": 0.004, "gain_over_chance_ci": [-0.02, 0.03],
    }  # fmt: skip

    supported = objective_decide(
        objective="auto", preference_models=[weak_fifth], rounds_done=2, max_rounds=2,
        confident_lower=0.55,
    )  # fmt: skip
    unsupported = objective_decide(
        objective="auto", preference_models=[no_gain], rounds_done=2, max_rounds=2,
        confident_lower=0.55,
    )  # fmt: skip

    assert (supported.action, supported.reward_model) == ("optimise", weak_fifth)
    assert "0.566 [0.490, 0.610] cross-validated over 576 votes" in supported.reason
    assert "+0.032 [+0.005, +0.063] nats a vote over chance" in supported.reason
    assert unsupported.action == "stop"


def measured_model(fitted: dict[str, tuple[float, float, float]]) -> RewardModel:
    """A measured-feature model with these (weight, 95% low, 95% high) per feature."""
    metrics = {
        "weights": {name: weight for name, (weight, _, _) in fitted.items()},
        "weight_intervals": {name: [low, high] for name, (_, low, high) in fitted.items()},
    }
    return RewardModel(name="measured", kind="preference", method="measured", metrics=metrics)


def test_the_votes_pull_a_prompt_field_when_a_weight_on_it_is_clearly_away_from_zero():
    from reward.closed_loop_objective import taste_fields

    fields = taste_fields(
        measured_model({
            # slower than asked, z = -4.5 (standard error 0.105 from the interval): pulled
            "tempo_vs_request": (-0.47, -0.69, -0.28),
            "tempo_fit": (0.1, -0.2, 0.4),
            "lead_pitch": (0.8, 0.5, 1.1),  # no prompt field
            "minor_mode": (0.1, -0.1, 0.3),  # spans 0: mode is kept
            "mode_fit": (0.35, 0.1, 0.6),  # the mode as asked is liked: kept
            "drums_fit": (-0.8, -1.1, -0.5),  # drums other than asked are liked: pulled
            # Clear of 0 at 95% but not at 95% shared among the 8 features tested
            # (z = 2.1 against 2.73): the noise of many weights, not a pull.
            "drums": (0.2, 0.02, 0.39),
            "key_fit": (0.0, -0.3, 0.3),
            "melodic_instruments": (0.0, 0.0, 0.0),  # never varied
        })
    )  # fmt: skip

    assert fields.pulled == {"tempo": ["tempo_vs_request"], "drums": ["drums_fit"]}
    assert fields.kept == ("instruments", "mode", "density", "key")
    assert fields.explored == ("tempo", "drums")
    assert "tempo (tempo_vs_request)" in fields.summary()
    assert "keeps instruments, mode, density, key as asked" in fields.summary()


def test_a_taste_that_pulls_no_prompt_field_keeps_them_all_and_explores_nothing():
    from reward.closed_loop_objective import taste_fields

    higher_lead = taste_fields(
        measured_model({"lead_pitch": (0.7, 0.4, 0.9), "key_fit": (-0.05, -0.2, 0.1)})
    )
    unknown = taste_fields(None)  # no measured model: nothing can be told apart

    for fields in (higher_lead, unknown):
        assert fields.pulled == {} and fields.explored == ()
        assert fields.kept == ("tempo", "instruments", "drums", "mode", "density", "key")
    assert "explores nothing" in higher_lead.summary()
    # The key is never explored (no variant changes it), though votes may pull it.
    pulled_key = taste_fields(measured_model({"key_fit": (-0.6, -0.9, -0.3)}))
    assert pulled_key.pulled == {"key": ["key_fit"]} and pulled_key.explored == ()


def test_a_model_that_kept_only_its_supported_features_pulls_exactly_the_fields_they_measure():
    from reward.closed_loop_objective import taste_fields

    model = measured_model({
        "tempo_vs_request": (-0.9, -1.2, -0.6),
        "tempo_fit": (0.0, -0.2, 0.2),
        "drums_fit": (-0.8, -1.1, -0.5),  # would pull drums were it chosen; it was not
    })  # fmt: skip
    model.metrics["supported_features"] = {
        "error": 0.05,
        # Chosen among every feature: the lead's pitch is no prompt field; a fit liked as
        # asked (mode_fit > 0) keeps its field.
        "z": {"tempo_vs_request": -5.1, "lead_pitch": 4.0, "mode_fit": 3.5},
        "weights_before": {},
    }

    fields = taste_fields(model)

    assert fields.pulled == {"tempo": ["tempo_vs_request"]}
    assert fields.kept == ("instruments", "drums", "mode", "density", "key")
    assert fields.explored == ("tempo",)
    assert fields.in_plan and fields.body_only == ()  # tempo and register: plans move them


def test_a_reward_of_what_only_the_notes_decide_skips_the_plan_stage():
    from reward.closed_loop_objective import taste_fields

    def chosen(z_scores: dict[str, float]):
        model = measured_model({"articulation": (-0.9, -1.2, -0.6)})
        model.metrics["supported_features"] = {"error": 0.05, "z": z_scores, "weights_before": {}}
        return taste_fields(model)

    touch = chosen({"articulation": -6.0, "dynamics": 3.4})
    assert touch.body_only == ("articulation", "dynamics") and not touch.in_plan
    assert touch.pulled == {} and touch.explored == ()
    assert "only what the notes alone decide (articulation, dynamics)" in touch.summary()
    assert touch.to_dict()["body_only"] == ["articulation", "dynamics"]
    # One feature a plan decides among them (the lead's register), and plans come first.
    assert chosen({"articulation": -6.0, "lead_pitch": 4.0}).in_plan
    # A full fit (no choice stored) says nothing about where the taste lives: plans stay.
    assert taste_fields(measured_model({"articulation": (-0.9, -1.2, -0.6)})).in_plan


def test_the_loop_s_rl_settings_tune_plans_first_only_where_a_plan_moves_the_reward():
    from reward.closed_loop import rl_settings, rl_steps
    from reward.closed_loop_budgets import BUDGETS
    from reward.closed_loop_objective import TasteFields

    budget = BUDGETS["small"]
    kept = ("tempo", "instruments", "drums", "mode", "density", "key")
    register = TasteFields(pulled={}, kept=kept, explored=())
    touch = TasteFields(pulled={}, kept=kept, explored=(), body_only=("articulation",))
    slower = TasteFields(pulled={"tempo": ["tempo_bpm"]}, kept=kept[1:], explored=("tempo",))

    assert rl_settings(budget, 0, fields=register)["plan_steps"] == budget.rl_plan_steps > 0
    assert rl_settings(budget, 0, fields=touch)["plan_steps"] == 0
    assert rl_settings(budget, 0)["plan_steps"] == 0  # R: whole samples alone
    explored = rl_settings(budget, 0, fields=slower, max_seconds=600)
    assert explored["explore_fields"] == ["tempo"] and explored["kept_fields"] == list(kept[1:])
    assert explored["learning_rate"] == budget.rl_explore_learning_rate
    assert explored["max_seconds"] == 600
    plain = rl_settings(budget, 0, fields=register)
    assert (plain["learning_rate"], plain["kl_loss"]) == (
        budget.rl_learning_rate,
        budget.rl_kl_loss,
    )
    # What only the notes decide: the body itself must move, at the body-only KL weight and
    # learning rate, over more (and cheaper) steps.
    body = rl_settings(budget, 0, fields=touch)
    assert body["learning_rate"] == budget.rl_body_only_learning_rate > budget.rl_learning_rate
    assert body["kl_loss"] == budget.rl_body_only_kl_loss < budget.rl_kl_loss
    # and without the sequence-level KL charge, which grows with every note's duration moved.
    assert body["beta"] == budget.rl_body_only_beta < plain["beta"] == budget.rl_beta
    assert rl_steps(budget, touch) == budget.rl_steps * budget.rl_body_only_steps_factor
    assert rl_steps(budget, register) == rl_steps(budget) == budget.rl_steps


def doubtful_model(**fitted: tuple[float, float, float]) -> RewardModel:
    """A measured model over every listening feature, confident on held-out votes: each
    weight 0 with a 95% interval of +-1 (a standard error of 0.51) but those given."""
    from generation.music.listening import LISTENING_FEATURES

    model = measured_model({name: (0.0, -1.0, 1.0) for name in LISTENING_FEATURES} | fitted)
    model.metrics["heldout"] = {"accuracy": 0.7, "accuracy_ci": [0.6, 0.8], "votes": 60}
    return model


def test_an_axis_whose_weights_the_votes_leave_in_doubt_is_named_with_their_z_scores():
    from reward.closed_loop_objective import uncertain_axes

    model = doubtful_model(
        lead_pitch=(4.0, 3.0, 5.0),  # z 7.8: supported among all 25 (beyond 3.09)
        brightness=(1.2, 0.2, 2.2),  # z 2.35, but the transposition speaks through the pitch
        minor_mode=(1.2, 0.2, 2.2),  # z 2.35: passes its own test, not the shared one
        pitch_range=(-1.2, -2.2, -0.2),  # in doubt, but no variant varies it alone
        tempo_fit=(0.8, -0.2, 1.8),  # z 1.57: not even its own test
        drums=(-1.4, -2.4, -0.4),  # z -2.74
    )

    doubtful = uncertain_axes(model)

    assert list(doubtful) == ["drums", "mode"]  # in VARIANT_AXES order
    assert doubtful["mode"] == {"minor_mode": pytest.approx(2.352, abs=1e-3)}
    assert doubtful["drums"] == {"drums": pytest.approx(-2.744, abs=1e-3)}
    assert uncertain_axes(model, error=0.001) == {}  # a stricter own test: nothing in doubt
    assert uncertain_axes(preference_model("audio", 0.7, 0.6, 0.8)) == {}  # no intervals


def test_votes_that_leave_an_axis_in_doubt_get_a_round_of_pairs_varying_it_alone():
    doubtful = doubtful_model(lead_pitch=(4.0, 3.0, 5.0), minor_mode=(1.2, 0.2, 2.2))
    pinned = doubtful_model(lead_pitch=(4.0, 3.0, 5.0), minor_mode=(2.4, 1.4, 3.4))  # z 4.7

    def decide(model: RewardModel, rounds_done: int, error: float | None = 0.05):
        return objective_decide(
            objective="auto", preference_models=[model], rounds_done=rounds_done,
            max_rounds=2, confident_lower=0.55, uncertain_error=error,
        )  # fmt: skip

    first = decide(doubtful, 1)
    assert (first.action, first.reward_model, first.variant_axes) == ("collect", None, ("mode",))
    assert "minor_mode z +2.4" in first.reason and "round 2 of at most 2" in first.reason
    # Once the rounds are spent, or without such rounds, the model is optimised as it stands;
    # a model whose every axis is pinned down is optimised at once.
    for decision in (decide(doubtful, 2), decide(doubtful, 1, None), decide(pinned, 1)):
        assert (decision.action, decision.preset, decision.variant_axes) == ("optimise", "U", ())
