"""How every reward-model run ends, whatever its kind and method: the fitted model saved as its
scorer file, the job finished with its metrics on the RewardModel, and the scores of the tracks
it saw stored for the admin's track pages. Also how a training result's flat figures are
grouped into the sections the pages and `RewardModel.usable` read.

torch is imported inside the function that saves a network: the web process imports this
module (through reward/training.py) and must never load torch.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from generation.models import Track
from reward import jobs
from reward.models import RewardModel

logger = logging.getLogger(__name__)
SCORER_NAME = "scorer.pt"
MEASURED_NAME = "measured.json"


def reward_model_finish(
    reward_model: RewardModel,
    *,
    fitted: Any,
    metrics: dict[str, Any],
    track_ids: list[int],
    heartbeat: jobs.Heartbeat,
) -> None:
    """Save `fitted` as the model's scorer (None: a method with nothing to save, the attribute
    match), record the finished job with its metrics and scorer file, then score the tracks
    the model saw."""
    scorer_file: dict[str, str] = {}
    if fitted is not None:
        heartbeat.phase("saving the scorer")
        scorer_file["checkpoint"] = str(_save_scorer(reward_model, fitted))
    jobs.job_finish(
        RewardModel, reward_model.pk, metrics=_json_safe(metrics), step=reward_model.steps,
        **scorer_file,
    )  # fmt: skip
    reward_model.refresh_from_db()
    _score_seen_tracks(reward_model, track_ids, heartbeat)


def _save_scorer(reward_model: RewardModel, fitted: Any) -> Path:
    """A network as a scorer file (reward/learning/scoring.py); the measured method's weights
    as its own JSON file. Either carries the model's name and the sha256 of its rows."""
    metadata = _scorer_metadata(reward_model)
    if reward_model.method == RewardModel.Method.MEASURED:
        return fitted.save(reward_model.directory / MEASURED_NAME, metadata=metadata)
    from reward.learning.scoring import save_scorer

    return save_scorer(
        reward_model.directory / SCORER_NAME,
        fitted,
        kind=reward_model.kind,
        config=reward_model.config,
        metadata=metadata,
    )


def _scorer_metadata(reward_model: RewardModel) -> dict[str, str]:
    return {"reward_model": reward_model.name, "rows_sha256": _rows_hash(reward_model)}


def _rows_hash(reward_model: RewardModel) -> str:
    return (
        RewardModel.objects.values_list("data_summary", flat=True)
        .get(pk=reward_model.pk)
        .get("rows_sha256", "")
    )


def _score_seen_tracks(
    reward_model: RewardModel, track_ids: list[int], heartbeat: jobs.Heartbeat
) -> None:
    """Store the scores of the tracks the model saw, for the admin's track pages. A failure
    here leaves the trained model usable (scores can be computed again from the admin), so it
    is recorded on the model instead of failing the job."""
    from reward.track_scoring import reward_scores_store

    tracks = list(Track.objects.filter(pk__in=track_ids).select_related("prompt").order_by("pk"))
    try:
        reward_scores_store(reward_model=reward_model, tracks=tracks)
    except Exception:
        logger.exception("scoring the tracks of %s failed", reward_model)
        RewardModel.objects.filter(pk=reward_model.pk).update(
            error="Trained, but storing the scores of its tracks failed:\n"
            + traceback.format_exc()[-3000:]
        )


# Keys of a training result that describe the run rather than held-out or training data.
RUN_KEYS = {"steps", "resumed_from", "final_loss", "parameters", "train_clips"}


def sectioned_metrics(raw: dict[str, Any], *, retrieval: bool = False) -> dict[str, Any]:
    """A training result's flat figures grouped for the pages and for `usable`: heldout_x
    goes to metrics["heldout"]["x"], train_x to ["train"]["x"], and x_low / x_high become
    x_ci = [low, high]. Retrieval figures (adherence) are all held-out figures."""
    metrics: dict[str, Any] = {}
    for key, value in raw.items():
        section, _, name = key.partition("_")
        if section in ("heldout", "train") and name:
            metrics.setdefault(section, {})[name] = value
        elif retrieval and key not in RUN_KEYS:
            metrics.setdefault("heldout", {})[key] = value
        else:
            metrics[key] = value
    for section in ("heldout", "train"):
        figures = metrics.get(section, {})
        for key in [k for k in figures if k.endswith("_low")]:
            base = key.removesuffix("_low")
            if f"{base}_high" in figures:
                figures[f"{base}_ci"] = [figures.pop(key), figures.pop(f"{base}_high")]
    return metrics


def _json_safe(value: Any) -> Any:
    """Metrics as plain JSON: numpy scalars to floats, NaN to None."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
