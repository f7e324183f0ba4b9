"""A fine-tuning run's settings as the training loop receives them."""

from reward.finetune_settings import finetune_run_settings, loop_config


def test_the_planner_s_rate_scale_reaches_the_training_loop():
    # Older runs' stored settings lack it: they step the planner like the body, as they did.
    settings = finetune_run_settings({"planner_lr_scale": 5, "learning_rate": 1e-4})
    loop = loop_config(settings, steps=20, seed=3)
    assert loop.part_lr_scales == {"planner": 5.0}
    assert (loop.learning_rate, loop.steps, loop.seed) == (1e-4, 20, 3)
    stored = {k: v for k, v in settings.items() if k != "planner_lr_scale"}
    assert loop_config(stored, steps=20, seed=3).part_lr_scales == {"planner": 1.0}


def test_exploration_must_vary_some_of_each_prompt_s_samples_and_leave_it_some():
    import pytest

    from reward.finetune_settings import FineTuneError

    assert finetune_run_settings({"explore_share": 0.25})["explore_share"] == 0.25
    for share in (1.0, 0.1):  # all four samples varied; none of four (0.4 rounds to 0)
        with pytest.raises(FineTuneError, match="explore_share must vary"):
            finetune_run_settings({"explore_share": share})
    with pytest.raises(FineTuneError, match="rloo"):
        finetune_run_settings({"explore_share": 0.25, "estimator": "best_of_group"})
    # Plan stages explore too, so their groups must leave room as well: 0.25 of 8 plans
    # is 2, but of 3 it rounds to 1 and of 2 to 0 (4 whole samples: 1).
    plan = {"explore_share": 0.25, "plan_steps": 10}
    assert finetune_run_settings(plan | {"plan_samples_per_prompt": 3})["plan_steps"] == 10
    with pytest.raises(FineTuneError, match="explore_share must vary"):
        finetune_run_settings(plan | {"plan_samples_per_prompt": 2})
    # Without plan stages their group size is not used.
    assert finetune_run_settings({"explore_share": 0.25, "plan_samples_per_prompt": 2})


def test_kept_and_explored_fields_are_lists_of_known_names_from_a_list_or_a_command_line():
    import pytest

    from reward.finetune_settings import FineTuneError

    # key=value on the finetune command's line gives a string; the order is FIT_PARTS'.
    settings = finetune_run_settings({"kept_fields": "key, tempo", "explore_fields": ["tempo"]})
    assert (settings["kept_fields"], settings["explore_fields"]) == (["tempo", "key"], ["tempo"])
    assert finetune_run_settings({})["kept_fields"] == []  # an admin's run keeps nothing fixed
    with pytest.raises(FineTuneError, match="kept_fields: unknown register"):
        finetune_run_settings({"kept_fields": ["key", "register"]})
    with pytest.raises(FineTuneError, match="explore_fields must be a list"):
        finetune_run_settings({"explore_fields": 3})
    with pytest.raises(FineTuneError, match="at least one of explore_fields"):
        finetune_run_settings({"explore_share": 0.25, "explore_fields": []})
    with pytest.raises(FineTuneError, match="keep_weight"):
        finetune_run_settings({"keep_weight": -1})


def test_a_plan_stage_takes_the_plan_settings_and_a_whole_sequence_stage_its_own():
    import pytest

    from reward.finetune_settings import FineTuneError
    from reward.finetune_stages import stage_rloo_config

    settings = finetune_run_settings({
        "kl_loss": 0.25, "plan_kl_loss": 0.02, "learning_rate": 1e-4, "plan_learning_rate": 1e-3,
        "prompts_per_step": 8, "samples_per_prompt": 4, "plan_steps": 10,
    })  # fmt: skip
    plan = stage_rloo_config(settings, {"part": "plan", "steps": 10}, 0, {"taste": 1.0})
    whole = stage_rloo_config(settings, {"part": "all", "steps": 30}, 1, {"taste": 1.0})

    assert (plan.part, plan.kl_loss, plan.loop.learning_rate) == ("plan", 0.02, 1e-3)
    assert (plan.prompts_per_step, plan.samples_per_prompt, plan.loop.steps) == (16, 8, 10)
    assert (whole.part, whole.kl_loss, whole.loop.learning_rate) == ("all", 0.25, 1e-4)
    assert (whole.prompts_per_step, whole.samples_per_prompt, whole.loop.steps) == (8, 4, 30)
    # Unset (and in runs stored before it existed), a plan stage keeps the run's kl_loss.
    unset = finetune_run_settings({"kl_loss": 0.25})
    assert stage_rloo_config(unset, {"part": "plan", "steps": 1}, 0, {}).kl_loss == 0.25
    stored = {k: v for k, v in unset.items() if k != "plan_kl_loss"}
    assert stage_rloo_config(stored, {"part": "plan", "steps": 1}, 0, {}).kl_loss == 0.25
    with pytest.raises(FineTuneError, match="plan_kl_loss must be a non-negative number"):
        finetune_run_settings({"plan_kl_loss": -0.1})
