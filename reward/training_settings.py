"""What a reward-model run may be set to: the defaults of each kind, the admin's values checked
against them, and the error for a run that cannot be made. Below both the job services
(reward/training.py), which check settings with it, and the trainers (reward/trainers.py),
which raise the same error when the data cannot train a model.
"""

from __future__ import annotations

from typing import Any

from reward.models import RewardModel

# The run settings an admin may set, with their defaults; anything else is refused.
COMMON_SETTINGS: dict[str, Any] = {
    "learning_rate": 1e-3,
    "batch_size": 32,
    "test_share": 0.2,  # of the prompts, held out whole
    "split_seed": 0,
    "seed": 0,
    "checkpoint_every": 25,
    "eval_every": 50,
}
KIND_SETTINGS: dict[str, dict[str, Any]] = {
    # encoder_from: the id of a learned adherence model whose music tower starts the audio
    # encoder (0: start from scratch).
    # l2: the measured method's penalty on its standardised weights, per vote.
    # support_error: 0, the measured method weighs every feature; else it keeps only those
    # whose weights the votes support at this family-wise error (Bonferroni) and refits on
    # them (reward/learning/measured.py fit_supported).
    RewardModel.Kind.PREFERENCE: {
        "crop_seconds": 4.0,
        "encoder_from": 0,
        "l2": 0.01,
        "support_error": 0.0,
    },
    RewardModel.Kind.QUALITY: {"crop_seconds": 4.0, "encoder_from": 0},
    RewardModel.Kind.ADHERENCE: {"corpus_size": 512, "held_out_size": 64, "clip_seconds": 6.0},
}


class RewardModelError(ValueError):
    """Bad settings for a reward model: shown to the admin as a 400, nothing is stored."""


def reward_settings(kind: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The full settings of a run: defaults for its kind with the admin's values on top."""
    if kind not in RewardModel.Kind.values:
        raise RewardModelError(f"kind must be one of {', '.join(RewardModel.Kind.values)}")
    defaults = COMMON_SETTINGS | KIND_SETTINGS[kind]
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise RewardModelError(f"unknown settings for a {kind} model: {', '.join(unknown)}")
    merged = defaults | overrides
    for key, value in merged.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise RewardModelError(f"{key} must be a non-negative number")
    if not 0 < merged["test_share"] < 1:
        raise RewardModelError("test_share must lie strictly between 0 and 1")
    if not 0 <= merged.get("support_error", 0) < 1:
        raise RewardModelError("support_error must lie in [0, 1)")
    if not 0 < merged["learning_rate"] <= 1:
        raise RewardModelError("learning_rate must lie in (0, 1]")
    for key in ("batch_size", "checkpoint_every", "eval_every"):
        if int(merged[key]) != merged[key] or merged[key] < 1:
            raise RewardModelError(f"{key} must be a whole number of at least 1")
    return merged
