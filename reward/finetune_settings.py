"""What a fine-tuning run may be set to: the defaults, the admin's values checked against them,
the error for a run that cannot be made, and the training loop's settings a run's settings
give. Below the run services (reward/finetune.py), the data (reward/finetune_data.py) and the
stages (reward/finetune_stages.py), which all read them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from generation.music.evaluation import FIT_PARTS
from generation.music.prompt_sampling import PROMPT_VARIANT_AXES

if TYPE_CHECKING:
    from reward.learning.loop import LoopConfig

DEFAULT_SETTINGS: dict[str, Any] = {
    "learning_rate": 2e-5,
    "min_learning_rate": None,  # where the cosine schedule ends; None: a tenth of the above
    "beta": 0.05,  # KL coefficient in the reward (per sequence)
    "kl_loss": 0.5,  # per-token KL term in the loss (reward/learning/rl.py's module doc)
    "prompts_per_step": 8,
    "samples_per_prompt": 4,
    "checkpoint_every": 10,
    "eval_every": 10,
    "kl_limit": 40.0,  # nats per sequence
    "diversity_floor": 0.5,  # of the diversity at the start
    "guard_action": "warn",  # or "stop"
    "clip_seconds": 10.0,  # what reward models hear of each sample
    "test_share": 0.2,  # prompts held out for the curves and the evaluation campaign
    "split_seed": 0,
    "seed": 0,
    # Prompts RL samples from, and prompts it is judged on (curves and the evaluation
    # campaign): a prompt-dependent taste does not generalise from a few dozen prompts.
    "train_prompts": 2000,
    "held_out_prompts": 64,
    "dpo_beta": 0.1,
    "dpo_batch_size": 8,
    # torch threads for sampling and training. One suits a worker that shares the machine;
    # a run that has the machine to itself (the closed loop) gains from two: an RLOO step of
    # the planned model took 4.6 s on two threads against 7.0 s on one, on an idle 2-core CPU.
    "num_threads": 1,
    # The planner's step relative to the body's (a planned generator; others ignore it).
    # The planner's weights reach only the dozen plan tokens, so a taste that lives in the
    # plan (tempo, register, mode, instruments) moves there without disturbing the notes.
    "planner_lr_scale": 1.0,
    # How a step learns from its samples (reward/learning/rl.py): "rloo" from every sample's
    # leave-one-out advantage, "best_of_group" from each prompt's best sample.
    "estimator": "rloo",
    # Each plan token's per-token KL term counts 1 + this many times (rl.py, RLOOConfig).
    "plan_kl_weight": 0.0,
    # Share of each prompt's samples drawn for the prompt varied along one axis it controls
    # (tempo, mode, drums, instruments, density) and learned from as answers to the prompt
    # itself (rl.py): a generator that plays every prompt as asked never samples another
    # tempo, so no reward could move it there. Plan stages explore with plans drawn for the
    # varied prompt. The rloo estimator only; 0: none.
    "explore_share": 0.0,
    # The axes it varies (a list, or comma-separated: tempo, mode, drums, instruments, density).
    "explore_fields": list(PROMPT_VARIANT_AXES),
    # Prompt fields each sample must keep as asked (tempo, instruments, drums, mode, density,
    # key): each unit of fit a sample gives up on them costs keep_weight in its objective, in
    # normalised reward units (rl.py). `musicrl_loop` keeps every field its votes do not pull.
    "kept_fields": [],
    "keep_weight": 2.0,
    # Seconds of one attempt after which the run stops, keeping what it learned (0: no
    # limit). `musicrl_loop` sets it so that the whole loop keeps to its wall time.
    "max_seconds": 0,
    # Steps on the plan alone before each stage (a planned generator): the planner's plans
    # heard as the composer plays them, at milliseconds a sample, so a taste that lives in
    # the plan (tempo, register, mode, instruments, density) moves in many cheap samples;
    # the stage's own steps then tune the whole sequence from there. 0: none.
    "plan_steps": 0,
    "plan_prompts_per_step": 16,
    "plan_samples_per_prompt": 8,
    "plan_learning_rate": 1e-3,
    # The per-token KL term's weight in plan stages (None: kl_loss). A plan token that
    # moves to another tempo leaves a model that was sure of the asked one by several nats
    # at once, and kl_loss's square of that outweighs any normalised reward: at the loop's
    # 0.25 a prefers_slower plan stage left 0.76 of the asked tempo fit; at 0.02, with the
    # taste itself as the reward, 0.07 (benchmarks/rl_oracle.py --part plan).
    "plan_kl_loss": None,
}
STRING_SETTINGS = {"guard_action": ("warn", "stop"), "estimator": ("rloo", "best_of_group")}
# Settings that hold a list of names, each one of these (rl.py checks the same).
LIST_SETTINGS = {"explore_fields": PROMPT_VARIANT_AXES, "kept_fields": FIT_PARTS}


class FineTuneError(ValueError):
    """Bad settings for a run: a 400 for the admin, and nothing is stored."""


def finetune_run_settings(overrides: dict[str, Any] | None) -> dict[str, Any]:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DEFAULT_SETTINGS))
    if unknown:
        raise FineTuneError(f"unknown settings: {', '.join(unknown)}")
    merged = DEFAULT_SETTINGS | overrides
    for key, allowed in LIST_SETTINGS.items():
        merged[key] = _names(key, merged[key], allowed)
    for key, value in merged.items():
        if key in LIST_SETTINGS:
            continue
        if key in STRING_SETTINGS:
            if value not in STRING_SETTINGS[key]:
                raise FineTuneError(f"{key} must be one of {', '.join(STRING_SETTINGS[key])}")
        elif value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise FineTuneError(f"{key} must be a non-negative number")
    if merged["samples_per_prompt"] < 2 or merged["plan_samples_per_prompt"] < 2:
        raise FineTuneError("RLOO needs at least 2 samples per prompt")
    for whole in ("plan_steps", "plan_prompts_per_step", "plan_samples_per_prompt"):
        if int(merged[whole]) != merged[whole]:
            raise FineTuneError(f"{whole} must be a whole number")
    if merged["explore_share"]:
        group_sizes = [merged["samples_per_prompt"]]
        if merged["plan_steps"]:
            group_sizes.append(merged["plan_samples_per_prompt"])
        for group in group_sizes:
            if not 0 < round(group * merged["explore_share"]) < group:
                raise FineTuneError(
                    "explore_share must vary at least one of each prompt's samples and "
                    "leave at least one to the prompt itself"
                )
        if merged["estimator"] != "rloo":
            raise FineTuneError("explore_share is for the rloo estimator")
        if not merged["explore_fields"]:
            raise FineTuneError("explore_share needs at least one of explore_fields")
    if not 0 < merged["test_share"] < 1:
        raise FineTuneError("test_share must lie strictly between 0 and 1")
    if not 1 <= merged["clip_seconds"] <= 30:
        raise FineTuneError("clip_seconds must lie in [1, 30]")
    if merged["num_threads"] not in range(1, 65):
        raise FineTuneError("num_threads must be a whole number from 1 to 64")
    for pool in ("train_prompts", "held_out_prompts"):
        if merged[pool] is None or int(merged[pool]) != merged[pool] or merged[pool] < 1:
            raise FineTuneError(f"{pool} must be a whole number of at least 1")
    return merged


def _names(key: str, value: Any, allowed: tuple[str, ...]) -> list[str]:
    """A list setting as a list of names in `allowed`'s order, from a list or from a
    comma-separated string (a command line's key=value)."""
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(name, str) for name in value):
        raise FineTuneError(f"{key} must be a list of names")
    if unknown := sorted(set(value) - set(allowed)):
        raise FineTuneError(f"{key}: unknown {', '.join(unknown)} (one of {', '.join(allowed)})")
    return [name for name in allowed if name in value]


def _min_learning_rate(config: dict[str, Any]) -> float:
    if config["min_learning_rate"] is None:
        return config["learning_rate"] / 10
    return float(config["min_learning_rate"])


def loop_config(config: dict[str, Any], *, steps: int, seed: int) -> LoopConfig:
    from reward.learning.loop import LoopConfig

    return LoopConfig(
        steps=steps,
        learning_rate=config["learning_rate"],
        min_learning_rate=_min_learning_rate(config),
        warmup_steps=min(10, max(1, steps // 10)),
        weight_decay=0.0,  # fine-tuning: stay near the starting weights
        checkpoint_every=int(config["checkpoint_every"]),
        eval_every=int(config["eval_every"]),
        seed=seed,
        num_threads=int(config.get("num_threads", 1)),
        # Runs stored before the setting existed stepped every part alike.
        part_lr_scales={"planner": float(config.get("planner_lr_scale", 1.0))},
    )
