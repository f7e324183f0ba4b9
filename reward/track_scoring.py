"""Scoring tracks with a named reward model: used by RL fine-tuning, by training (to store
scores of the tracks a model saw) and by the admin's track pages. Track rows in, stored
scores out; the scorer file and the clip-level scoring it loads are reward/learning/scoring.py.

torch is imported inside the functions: the web process imports this module (to queue a
scoring task) and must never load torch.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction

from generation.models import Track
from reward.models import RewardModel, TrackReward

if TYPE_CHECKING:
    import torch

_scorers: dict[tuple[str, float], Any] = {}
_scorers_lock = threading.Lock()


def _feature_dir() -> Path:
    from reward.learning.features import DEFAULT_MEL

    key = hashlib.sha256(json.dumps(asdict(DEFAULT_MEL), sort_keys=True).encode()).hexdigest()
    return Path(settings.REWARD_DIR) / "features" / key[:12]


def track_log_mels(tracks: Sequence[Track]) -> list[torch.Tensor]:
    """Each track's log-mel, decoded from its stored audio once and then read from a cache
    file named by the track's public id (the audio of a track never changes)."""
    import torch

    from reward.learning.features import log_mel_from_bytes

    directory = _feature_dir()
    directory.mkdir(parents=True, exist_ok=True)
    mels = []
    for track in tracks:
        cached = directory / f"{track.public_id.hex}.pt"
        if cached.exists():
            mels.append(torch.load(cached, weights_only=True))
            continue
        with track.audio.open("rb") as handle:
            mel = log_mel_from_bytes(handle.read())
        temporary = cached.with_suffix(".tmp")
        torch.save(mel, temporary)
        temporary.replace(cached)
        mels.append(mel)
    return mels


def prompt_embeddings(texts: Sequence[str], *, exact: bool = False) -> torch.Tensor:
    """(len(texts), 384) frozen MiniLM embeddings, the same ones the generator reads. With
    `exact`, each text's vector is the same whatever else this process embedded (so the same
    votes train the same reward model), at about twice the time per text and no cache."""
    from generation.music.text_encoder import get_text_encoder

    encoder = get_text_encoder()
    return encoder.encode_each(list(texts)) if exact else encoder.encode(list(texts))


def _scorer_for(reward_model: RewardModel) -> Any:
    """The loaded scorer of a learned model, cached per process and file version."""
    from reward.learning.scoring import load_scorer

    path = reward_model.scorer_path()
    key = (str(path), path.stat().st_mtime)
    with _scorers_lock:
        scorer = _scorers.get(key)
        if scorer is None:
            scorer = load_scorer(path)
            _scorers[key] = scorer
    return scorer


def reward_scores(*, reward_model: RewardModel, tracks: Sequence[Track]) -> list[float]:
    """One reward value per track, for its own prompt. Refuses a model that is not usable
    (unfinished, or finished without recorded metrics)."""
    if not reward_model.usable:
        raise ValueError(f"reward model {reward_model} is {reward_model.status}, not usable")
    if not tracks:
        return []
    prompts = [track.prompt.text for track in tracks]
    if reward_model.method == RewardModel.Method.ATTRIBUTE_MATCH:
        from reward.learning.adherence import attribute_match_scores

        return [float(v) for v in attribute_match_scores(prompts, [t.events for t in tracks])]
    if reward_model.method == RewardModel.Method.MEASURED:
        from reward.learning.measured import MeasuredPreferenceModel

        model = MeasuredPreferenceModel.load(reward_model.scorer_path())
        return model.scores(prompts, [t.events for t in tracks])
    scorer = _scorer_for(reward_model)
    values = scorer.score(track_log_mels(tracks), prompt_embeddings(prompts))
    return [float(value) for value in values]


def reward_scores_store(*, reward_model: RewardModel, tracks: Sequence[Track]) -> int:
    """Compute and store (or refresh) the scores of `tracks`; returns how many."""
    values = reward_scores(reward_model=reward_model, tracks=tracks)
    rows = [
        TrackReward(track=track, reward_model=reward_model, value=value)
        for track, value in zip(tracks, values, strict=True)
    ]
    with transaction.atomic():
        TrackReward.objects.bulk_create(
            rows,
            batch_size=1000,
            update_conflicts=True,
            unique_fields=["track", "reward_model"],
            update_fields=["value", "created_at"],
        )
    return len(rows)
