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
