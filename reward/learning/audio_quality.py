"""The audio-quality reward (MusicRL's quality reward; RewardModel kind `quality`), learned
from absolute ratings (1-5 stars, normalised per rater). Not ratings/quality.py, which checks
the raters.

Same shape as preference.py: config -> a training step (random crops, mean squared error to
the normalised score) -> held-out evaluation on whole clips -> the run (run_loop) -> final
metrics. A single rating is noisy and raters use the scale differently, so the model is
judged per clip: its prediction against the clip's mean normalised rating.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from generation.music.learned import torch_threads
from reward.learning.data import ClipTable, RatingSet, random_crops
from reward.learning.features import DEFAULT_MEL
from reward.learning.loop import LoopConfig, ProgressFn, module_digest, run_loop
from reward.learning.metrics import DEFAULT_RESAMPLES, pearson, regression_metrics
from reward.learning.nets import RewardNet, RewardNetConfig
from reward.learning.scoring import (
    DEFAULT_SCORE_BATCH,
    TrainedReward,
    score_clips,
)

KIND = "quality"


@dataclass(frozen=True)
class QualityConfig:
    net: RewardNetConfig = field(default_factory=RewardNetConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    batch_size: int = 32  # ratings per step
    crop_seconds: float = 4.0  # see PreferenceConfig
    score_batch_size: int = DEFAULT_SCORE_BATCH
    bootstrap_resamples: int = DEFAULT_RESAMPLES

    @property
    def crop_frames(self) -> int:
        return max(1, round(self.crop_seconds * DEFAULT_MEL.frames_per_second))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityConfig:
        data = dict(data)
        net = RewardNetConfig.from_dict(data.pop("net"))
        return cls(net=net, loop=LoopConfig(**data.pop("loop")), **data)


# --- training -----------------------------------------------------------------------------


def training_step(
    model: RewardNet,
    config: QualityConfig,
    clips: ClipTable,
    ratings: RatingSet,
    rng: random.Random,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean squared error on batch_size ratings drawn (with replacement) by `rng`, each clip
    read from a random crop. Regressing single ratings, not per-clip means, weighs a clip by
    how often it was rated and lets the loss see the raters' spread."""
    rows = torch.tensor([rng.randrange(len(ratings)) for _ in range(config.batch_size)])
    batch = ratings.subset(rows)
    audio, lengths = random_crops(
        [clips.mels[clip] for clip in batch.clip.tolist()], config.crop_frames, rng
    )
    predictions = model(audio, clips.prompt_embeddings[batch.prompt], lengths)
    return F.mse_loss(predictions, batch.target), {}


def clip_predictions(
    model: RewardNet, clips: ClipTable, ratings: RatingSet, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prediction, mean target, number of ratings) per rated clip (per group), the
    prediction made once on the whole clip."""
    clip, prompt, mean_target, counts = ratings.per_group()
    mels = [clips.mels[index] for index in clip.tolist()]
    predictions = score_clips(model, mels, clips.prompt_embeddings[prompt], batch_size=batch_size)
    return predictions, mean_target, counts


def training_settings(config: QualityConfig) -> dict[str, Any]:
    """What the trained weights depend on (scoring batch and bootstrap size do not)."""
    data = config.to_dict()
    return {key: data[key] for key in ("net", "loop", "batch_size", "crop_seconds")}


def train_quality(
    config: QualityConfig,
    clips: ClipTable,
    train: RatingSet,
    test: RatingSet,
    checkpoint_dir: Path | str,
    on_progress: ProgressFn | None = None,
    initial_audio: dict[str, torch.Tensor] | None = None,
) -> TrainedReward:
    """Train (or resume, if checkpoint_dir holds a checkpoint of the same run) a quality
    reward model; evaluate on `test` every loop.eval_every steps and at the end."""
    if len(train) == 0:
        raise ValueError("no training ratings")
    torch.manual_seed(config.loop.seed)
    model = RewardNet(config.net)
    if initial_audio is not None:
        # An audio encoder pretrained elsewhere (the adherence model's music tower, trained
        # on thousands of captioned clips) starts from features of tempo, instruments and
        # style, which a few hundred votes could never teach from scratch.
        model.audio.load_state_dict(initial_audio)

    def step_fn(step: int, rng: random.Random) -> tuple[torch.Tensor, dict[str, float]]:
        return training_step(model, config, clips, train, rng)

    def evaluate() -> dict[str, float]:
        if len(test) == 0:
            return {}
        predictions, targets, _ = clip_predictions(model, clips, test, config.score_batch_size)
        figures = {"heldout_mse": float(F.mse_loss(predictions, targets))}
        correlation = pearson(predictions.numpy(), targets.numpy())
        if correlation is not None:
            figures["heldout_pearson"] = correlation
        return figures

    # Stored with the checkpoint: resuming with other settings or other ratings is refused.
    extra = {
        "kind": KIND,
        "config": training_settings(config),
        "data": {"clips": clips.digest(), "train": train.digest(), "test": test.digest()},
        "initial_audio": module_digest(model.audio) if initial_audio is not None else None,
    }
    state = run_loop(
        model,
        step_fn,
        config=config.loop,
        checkpoint_dir=checkpoint_dir,
        evaluate=evaluate,
        on_progress=on_progress,
        extra=extra,
    )
    with torch_threads(config.loop.num_threads):
        metrics = final_metrics(model, config, clips, train, test)
    metrics |= {"steps": state.step, "resumed_from": state.resumed_from}
    return TrainedReward(
        kind=KIND,
        model=model,
        config=config.to_dict(),
        history=state.history,
        resumed_from=state.resumed_from,
        metrics=metrics,
    )


# --- final figures ------------------------------------------------------------------------


def final_metrics(
    model: RewardNet,
    config: QualityConfig,
    clips: ClipTable,
    train: RatingSet,
    test: RatingSet,
) -> dict[str, Any]:
    """Per clip, on held-out and on training clips: Pearson (with a 95% bootstrap interval
    over clips), Spearman and MSE between prediction and mean normalised rating; clip and
    rating counts."""
    metrics: dict[str, Any] = {}
    for name, ratings in (("train", train), ("heldout", test)):
        metrics[f"{name}_ratings"] = len(ratings)
        if len(ratings) == 0:
            metrics[f"{name}_clips"] = 0
            continue
        predictions, targets, _ = clip_predictions(model, clips, ratings, config.score_batch_size)
        figures = regression_metrics(
            predictions.numpy(), targets.numpy(), resamples=config.bootstrap_resamples
        )
        metrics[f"{name}_clips"] = figures.pop("n")
        metrics |= {f"{name}_{key}": value for key, value in figures.items()}
    return metrics
