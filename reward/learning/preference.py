"""A reward model learned from pairwise votes ("which of these two clips is better for this
prompt?") with the Bradley-Terry model.

Readable top to bottom: config -> a training step (random crops of both clips of a batch of
votes, Bradley-Terry loss on the reward margin) -> held-out evaluation on whole clips -> the
run (run_loop: checkpoints, exact resume) -> final metrics with bootstrap intervals and the
raters' own agreement on the same held-out pairs, the ceiling the accuracy is read against.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from generation.music.learned import torch_threads
from reward.learning.data import ClipTable, PreferenceSet, random_crops
from reward.learning.features import DEFAULT_MEL
from reward.learning.loop import LoopConfig, ProgressFn, module_digest, run_loop
from reward.learning.metrics import (
    DEFAULT_RESAMPLES,
    log_likelihood_gain,
    pairwise_accuracy,
    rater_agreement,
)
from reward.learning.nets import RewardNet, RewardNetConfig
from reward.learning.scoring import (
    DEFAULT_SCORE_BATCH,
    TrainedReward,
    score_clips,
)

KIND = "preference"


@dataclass(frozen=True)
class PreferenceConfig:
    net: RewardNetConfig = field(default_factory=RewardNetConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    batch_size: int = 32  # votes (pairs of clips) per step
    # A crop is long enough to hear a bar or two of the music and short enough that a step
    # costs the same whatever the clips' lengths; evaluation reads whole clips.
    crop_seconds: float = 4.0
    score_batch_size: int = DEFAULT_SCORE_BATCH
    bootstrap_resamples: int = DEFAULT_RESAMPLES

    @property
    def crop_frames(self) -> int:
        return max(1, round(self.crop_seconds * DEFAULT_MEL.frames_per_second))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreferenceConfig:
        data = dict(data)
        net = RewardNetConfig.from_dict(data.pop("net"))
        return cls(net=net, loop=LoopConfig(**data.pop("loop")), **data)


def bradley_terry_loss(margins: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-[t log sigmoid(r_a - r_b) + (1 - t) log sigmoid(r_b - r_a)], averaged; a tie (t = 0.5)
    pulls the margin towards zero and costs at least log 2."""
    return F.binary_cross_entropy_with_logits(margins, targets)


def decisive_accuracy(margins: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Share of non-tie votes whose winner has the larger reward (no interval: for curves)."""
    decisive = targets != 0.5
    if not decisive.any():
        return None
    right = torch.where(margins == 0, 0.5, ((margins > 0) == (targets > 0.5)).float())
    return float(right[decisive].mean())


# --- training -----------------------------------------------------------------------------


def training_step(
    model: RewardNet,
    config: PreferenceConfig,
    clips: ClipTable,
    votes: PreferenceSet,
    rng: random.Random,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Bradley-Terry loss on batch_size votes drawn (with replacement) by `rng`. Both clips of
    a vote are read with the vote's prompt, each from its own random crop."""
    rows = torch.tensor([rng.randrange(len(votes)) for _ in range(config.batch_size)])
    batch = votes.subset(rows)
    mels = [clips.mels[clip] for clip in batch.clip_a.tolist() + batch.clip_b.tolist()]
    audio, lengths = random_crops(mels, config.crop_frames, rng)
    text = clips.prompt_embeddings[batch.prompt].repeat(2, 1)
    rewards = model(audio, text, lengths)
    margins = rewards[: len(rows)] - rewards[len(rows) :]
    loss = bradley_terry_loss(margins, batch.target)
    accuracy = decisive_accuracy(margins.detach(), batch.target)
    return loss, {} if accuracy is None else {"train_accuracy": accuracy}


def vote_margins(
    model: RewardNet, clips: ClipTable, votes: PreferenceSet, batch_size: int
) -> torch.Tensor:
    """r_a - r_b for every vote, each (clip, prompt) scored once on the whole clip."""
    n = len(votes)
    keys = torch.stack(
        [torch.cat([votes.clip_a, votes.clip_b]), torch.cat([votes.prompt, votes.prompt])], dim=1
    )
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
    mels = [clips.mels[clip] for clip in unique[:, 0].tolist()]
    scores = score_clips(model, mels, clips.prompt_embeddings[unique[:, 1]], batch_size=batch_size)
    rewards = scores[inverse]
    return rewards[:n] - rewards[n:]


def curve_figures(margins: torch.Tensor, votes: PreferenceSet, prefix: str) -> dict[str, float]:
    figures = {f"{prefix}_loss": float(bradley_terry_loss(margins, votes.target))}
    accuracy = decisive_accuracy(margins, votes.target)
    if accuracy is not None:
        figures[f"{prefix}_accuracy"] = accuracy
    return figures


def training_settings(config: PreferenceConfig) -> dict[str, Any]:
    """What the trained weights depend on (scoring batch and bootstrap size do not)."""
    data = config.to_dict()
    return {key: data[key] for key in ("net", "loop", "batch_size", "crop_seconds")}


def train_preference(
    config: PreferenceConfig,
    clips: ClipTable,
    train: PreferenceSet,
    test: PreferenceSet,
    checkpoint_dir: Path | str,
    on_progress: ProgressFn | None = None,
    initial_audio: dict[str, torch.Tensor] | None = None,
) -> TrainedReward:
    """Train (or resume, if checkpoint_dir holds a checkpoint of the same run) a preference
    reward model; evaluate on `test` every loop.eval_every steps and at the end."""
    if len(train) == 0:
        raise ValueError("no training votes")
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
        margins = vote_margins(model, clips, test, config.score_batch_size)
        return curve_figures(margins, test, "heldout")

    # Stored with the checkpoint: resuming with other settings or other votes is refused.
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
    config: PreferenceConfig,
    clips: ClipTable,
    train: PreferenceSet,
    test: PreferenceSet,
) -> dict[str, Any]:
    """Held-out accuracy on decisive votes with a pair-resampling 95% interval, log loss on
    all votes (ties included) and its gain over chance with the same kind of interval, the
    same on the training votes (how far the model overfits), vote and pair counts, and the
    raters' agreement on the held-out pairs."""
    metrics: dict[str, Any] = {}
    for name, votes in (("train", train), ("heldout", test)):
        metrics[f"{name}_votes"] = len(votes)
        metrics[f"{name}_pairs"] = len(torch.unique(votes.group))
        metrics[f"{name}_ties"] = int((votes.target == 0.5).sum())
    if len(test):
        margins = vote_margins(model, clips, test, config.score_batch_size)
        accuracy = pairwise_accuracy(
            margins.numpy(),
            test.target.numpy(),
            test.group.numpy(),
            resamples=config.bootstrap_resamples,
        )
        metrics["heldout_accuracy"] = accuracy["accuracy"]
        metrics["heldout_accuracy_low"] = accuracy["low"]
        metrics["heldout_accuracy_high"] = accuracy["high"]
        metrics["heldout_decisive"] = accuracy["n"]
        metrics["heldout_log_loss"] = float(bradley_terry_loss(margins, test.target))
        gain = log_likelihood_gain(
            margins.numpy(),
            test.target.numpy(),
            test.group.numpy(),
            resamples=config.bootstrap_resamples,
        )
        metrics["heldout_gain_over_chance"] = gain["gain"]
        metrics["heldout_gain_over_chance_low"] = gain["low"]
        metrics["heldout_gain_over_chance_high"] = gain["high"]
        metrics["noise_ceiling"] = rater_agreement(
            test.votes_by_group(), resamples=config.bootstrap_resamples
        )
    margins = vote_margins(model, clips, train, config.score_batch_size)
    metrics["train_accuracy"] = decisive_accuracy(margins, train.target)
    metrics["train_log_loss"] = float(bradley_terry_loss(margins, train.target))
    return metrics
