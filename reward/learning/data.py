"""Plain containers for reward-model training data, and the batching of clips.

The Django side fills these from the database: every clip's log-mel once in a ClipTable, and
the votes or ratings as parallel tensors of indices into it. Nothing here knows where the
numbers came from, which keeps the training code testable on synthetic data.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Self

import torch

# The value padded frames get. The encoder masks padding (nets.AudioEncoder), so it never
# reaches a result; it is the log-mel of silence so that an unmasked use stays sensible.
PAD_VALUE = -1.0


def _long(values: Sequence[int] | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long).reshape(-1)


def _float(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32).reshape(-1)


@dataclass
class ClipTable:
    """mels[i] is clip i's (n_mels, frames) log-mel; prompt_embeddings[p] is prompt p's
    text embedding (P, 384)."""

    mels: list[torch.Tensor]
    prompt_embeddings: torch.Tensor

    def __post_init__(self) -> None:
        self.prompt_embeddings = torch.as_tensor(self.prompt_embeddings, dtype=torch.float32)
        if self.prompt_embeddings.dim() != 2:
            raise ValueError("prompt_embeddings must be (prompts, dim)")

    def __len__(self) -> int:
        return len(self.mels)

    def lengths(self) -> list[int]:
        return [int(mel.shape[-1]) for mel in self.mels]

    def digest(self) -> str:
        """A cheap fingerprint (clip lengths and prompt embeddings, not every mel value), so
        that a checkpoint is not resumed on other data."""
        lengths = torch.tensor(self.lengths(), dtype=torch.long)
        return _digest([lengths, self.prompt_embeddings])


def _digest(tensors: Sequence[torch.Tensor]) -> str:
    hasher = hashlib.sha1()
    for tensor in tensors:
        hasher.update(str(tuple(tensor.shape)).encode())
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()


class _Rows:
    """Shared behaviour of the row sets: parallel 1-D tensors, all of one length."""

    def _check(self) -> None:
        sizes = {name: len(getattr(self, name)) for name in self._columns()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"columns of unequal length: {sizes}")

    @classmethod
    def _columns(cls) -> list[str]:
        return [field.name for field in fields(cls)]

    def __len__(self) -> int:
        return len(getattr(self, self._columns()[0]))

    def digest(self) -> str:
        return _digest([getattr(self, name) for name in self._columns()])

    def subset(self, rows: torch.Tensor | Sequence[int]) -> Self:
        """The rows at `rows` (indices or a boolean mask), in that order."""
        rows = torch.as_tensor(rows)
        if rows.dtype != torch.bool:
            rows = rows.to(torch.long)
        return type(self)(**{name: getattr(self, name)[rows] for name in self._columns()})


@dataclass
class PreferenceSet(_Rows):
    """One row per vote: clips a and b (indices into a ClipTable), the prompt both were made
    for, and the target P(a preferred): 1.0, 0.0, or 0.5 for a tie. Votes on the same pair of
    clips share a `group` (whichever way round each was shown)."""

    clip_a: torch.Tensor
    clip_b: torch.Tensor
    prompt: torch.Tensor
    target: torch.Tensor
    group: torch.Tensor

    def __post_init__(self) -> None:
        self.clip_a, self.clip_b = _long(self.clip_a), _long(self.clip_b)
        self.prompt, self.group = _long(self.prompt), _long(self.group)
        self.target = _float(self.target)
        self._check()

    def decisive(self) -> PreferenceSet:
        """The votes that are not ties."""
        return self.subset(self.target != 0.5)

    def votes_by_group(self) -> dict[int, list[float]]:
        """Each group's targets, all oriented the same way (as P(lower clip index preferred)),
        so that two votes for the same clip agree even if the pair was shown swapped."""
        oriented = torch.where(self.clip_a <= self.clip_b, self.target, 1.0 - self.target)
        votes: dict[int, list[float]] = {}
        for group, target in zip(self.group.tolist(), oriented.tolist(), strict=True):
            votes.setdefault(group, []).append(target)
        return votes


@dataclass
class RatingSet(_Rows):
    """One row per rating: the clip, its prompt, the per-rater-normalised score (`target`,
    what the model regresses to), the raw 1-5 score, and the group (the clip's id) by which
    held-out figures are averaged."""

    clip: torch.Tensor
    prompt: torch.Tensor
    target: torch.Tensor
    raw_score: torch.Tensor
    group: torch.Tensor

    def __post_init__(self) -> None:
        self.clip, self.prompt, self.group = _long(self.clip), _long(self.prompt), _long(self.group)
        self.target, self.raw_score = _float(self.target), _float(self.raw_score)
        self._check()

    def per_group(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(clip, prompt, mean target, number of ratings) per group, groups in sorted order.
        A group must be one clip under one prompt."""
        groups, inverse, counts = torch.unique(self.group, return_inverse=True, return_counts=True)
        first = torch.zeros(len(groups), dtype=torch.long).scatter_reduce(
            0, inverse, torch.arange(len(self)), reduce="amin", include_self=False
        )
        clip, prompt = self.clip[first], self.prompt[first]
        if not (
            torch.equal(self.clip, clip[inverse]) and torch.equal(self.prompt, prompt[inverse])
        ):
            raise ValueError("a rating group spans several clips or prompts")
        sums = torch.zeros(len(groups)).index_add(0, inverse, self.target)
        return clip, prompt, sums / counts, counts


def held_out_split(
    keys: torch.Tensor | Sequence[int], test_fraction: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, test rows) such that all rows sharing a key fall on the same side.
    Split by prompt (or by clip), not by vote: a clip seen in training would let a model
    score well on held-out votes by recognising the clip rather than by judging it."""
    keys = _long(keys)
    unique = sorted(set(keys.tolist()))
    random.Random(seed).shuffle(unique)
    n_test = round(len(unique) * test_fraction)
    is_test = torch.isin(keys, torch.tensor(unique[:n_test], dtype=torch.long))
    return torch.nonzero(~is_test).flatten(), torch.nonzero(is_test).flatten()


# --- batching clips ---------------------------------------------------------------------


def padded_batch(mels: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole clips, right-padded to the longest: ((batch, n_mels, frames), lengths)."""
    lengths = torch.tensor([mel.shape[-1] for mel in mels], dtype=torch.long)
    batch = torch.full((len(mels), mels[0].shape[0], int(lengths.max())), PAD_VALUE)
    for row, mel in enumerate(mels):
        batch[row, :, : mel.shape[-1]] = mel
    return batch, lengths


def random_crops(
    mels: Sequence[torch.Tensor], crop_frames: int, rng: random.Random
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random window of crop_frames from each clip (training sees varied parts of every
    clip, and a step costs the same whatever the clips' lengths). Shorter clips are taken
    whole and padded; the batch is only as wide as its longest crop."""
    crops = []
    for mel in mels:
        frames = mel.shape[-1]
        start = rng.randrange(frames - crop_frames + 1) if frames > crop_frames else 0
        crops.append(mel[:, start : start + crop_frames])
    return padded_batch(crops)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
