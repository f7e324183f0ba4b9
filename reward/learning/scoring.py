"""Scoring whole clips with a trained reward model, and the file that carries one.

Every kind of reward model (preference, quality, adherence) is saved the same way and loaded
into the same Scorer, so the platform scores clips without knowing which kind it holds. A
kind whose network is not a RewardNet registers a loader (register_scorer_loader); the
adherence module does so on import, and load_scorer imports it when it meets that kind.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reward.learning.data import length_batches, padded_batch
from reward.learning.nets import RewardNet, RewardNetConfig

SCORER_FORMAT = 1
DEFAULT_SCORE_BATCH = 16  # whole clips per forward pass

# loader(payload) -> the model with its weights loaded. Its forward must take
# (mel (B, n_mels, T), prompt embedding (B, D), lengths (B,)) and return (B,) scores.
ScorerLoader = Callable[[dict[str, Any]], nn.Module]
SCORER_LOADERS: dict[str, ScorerLoader] = {}
# kinds whose loader lives in a module that registers it when imported
LOADER_MODULES = {"adherence": "reward.learning.adherence"}


def register_scorer_loader(kind: str, loader: ScorerLoader) -> None:
    SCORER_LOADERS[kind] = loader


def load_reward_net(payload: dict[str, Any]) -> RewardNet:
    model = RewardNet(RewardNetConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    return model


register_scorer_loader("preference", load_reward_net)
register_scorer_loader("quality", load_reward_net)


@torch.no_grad()
def score_clips(
    model: nn.Module,
    mels: Sequence[torch.Tensor],
    prompt_embeddings: torch.Tensor,
    *,
    batch_size: int = DEFAULT_SCORE_BATCH,
) -> torch.Tensor:
    """(clips,) scores of whole clips, clip i read with prompt_embeddings[i]. Clips of similar
    length share a batch; the encoder masks padding, so a score does not depend on which
    clips it was batched with."""
    if len(mels) != len(prompt_embeddings):
        raise ValueError(f"{len(mels)} clips but {len(prompt_embeddings)} prompt embeddings")
    scores = torch.zeros(len(mels))
    was_training = model.training
    model.eval()
    try:
        for rows in length_batches([mel.shape[-1] for mel in mels], batch_size):
            batch, lengths = padded_batch([mels[row] for row in rows])
            scores[rows] = model(batch, prompt_embeddings[rows], lengths).float()
    finally:
        model.train(was_training)
    return scores


@dataclass
class Scorer:
    """A loaded reward model: score(mels, prompt_embeddings) -> one value per clip."""

    model: nn.Module
    kind: str
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    batch_size: int = DEFAULT_SCORE_BATCH

    def score(self, mels: Sequence[torch.Tensor], prompt_embeddings: torch.Tensor) -> torch.Tensor:
        embeddings = torch.as_tensor(prompt_embeddings, dtype=torch.float32)
        return score_clips(self.model, mels, embeddings, batch_size=self.batch_size)


def save_scorer(
    path: Path | str,
    model: nn.Module,
    *,
    kind: str,
    config: dict[str, Any],
    metadata: dict[str, Any],
) -> Path:
    """Write the model's weights, its own config (model.config.to_dict(), which the loader
    rebuilds it from), the training config and JSON-like metadata. Atomic: the file is
    written beside its destination and moved into place, so a reader never sees half."""
    path = Path(path)
    model_config = getattr(model, "config", None)
    payload = {
        "format": SCORER_FORMAT,
        "kind": kind,
        "model_config": model_config.to_dict() if hasattr(model_config, "to_dict") else None,
        "state_dict": model.state_dict(),
        "config": config,
        "metadata": metadata,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_scorer(path: Path | str) -> Scorer:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != SCORER_FORMAT:
        raise ValueError(f"{path}: unknown scorer format {payload.get('format')!r}")
    kind = payload["kind"]
    if kind not in SCORER_LOADERS and kind in LOADER_MODULES:
        importlib.import_module(LOADER_MODULES[kind])  # registers its loader
    if kind not in SCORER_LOADERS:
        raise ValueError(f"{path}: no loader for scorer kind {kind!r}")
    model = SCORER_LOADERS[kind](payload)
    model.eval()
    return Scorer(model, kind, payload["config"], payload["metadata"])


# --- what a training run returns ----------------------------------------------------------


@dataclass
class TrainedReward:
    """A trained reward model with its curve and held-out figures."""

    kind: str
    model: nn.Module
    config: dict[str, Any]
    history: list[dict[str, float]]
    resumed_from: int
    metrics: dict[str, Any]

    def save(self, path: Path | str, metadata: dict[str, Any] | None = None) -> Path:
        """Save as a scorer; the metadata records the held-out metrics."""
        metadata = {"metrics": self.metrics, **(metadata or {})}
        return save_scorer(path, self.model, kind=self.kind, config=self.config, metadata=metadata)

    def scorer(self) -> Scorer:
        return Scorer(self.model, self.kind, self.config, {"metrics": self.metrics})
