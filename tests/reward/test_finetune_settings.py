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
