"""Synthetic clips whose quality is a known property of their log-mel, for testing that the
reward models learn what is there (and nothing when the labels are shuffled)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from reward.learning.data import ClipTable, PreferenceSet, RatingSet
from reward.learning.loop import LoopConfig
from reward.learning.nets import EncoderConfig, RewardNetConfig

N_MELS = 64
# Under prompt 0 a clip is as good as the level of its low band, under prompt 1 as that of
# its high band: the model must read the prompt to get the ranking right.
BANDS = (slice(8, 16), slice(40, 48))
PROMPTS = len(BANDS)
LEVEL = 0.3  # log-mel units per standard deviation of quality
BT_SCALE = 2.0  # P(a preferred) = sigmoid(BT_SCALE * (q_a - q_b))
TIE_SHARE = 0.1


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Import into a test module to run it on one torch thread: tests share two cores with
    other work, and torch's default of one thread per core then spins and waits."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_net() -> RewardNetConfig:
    return RewardNetConfig(
        encoder=EncoderConfig(channels=32, blocks=3, embed_dim=32, dropout=0.0),
        hidden=32,
        dropout=0.0,
    )


def loop_config(**overrides) -> LoopConfig:
    settings = dict(
        steps=150,
        learning_rate=3e-3,
        min_learning_rate=3e-4,
        warmup_steps=10,
        checkpoint_every=1000,
        eval_every=50,
        num_threads=1,
    )
    return LoopConfig(**(settings | overrides))


@dataclass
class SyntheticClips:
    table: ClipTable
    prompt: np.ndarray  # each clip's prompt
    quality: np.ndarray  # each clip's true quality under its prompt


def synthetic_clips(n: int, seed: int, frames: tuple[int, int] = (100, 250)) -> SyntheticClips:
    """n clips of 2-5 s: noise, plus a level per band; clip i is made for prompt i % 2."""
    rng = np.random.default_rng(seed)
    embeddings = np.random.default_rng(12345).normal(size=(PROMPTS, 384)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    mels, prompts, qualities = [], [], []
    for index in range(n):
        length = int(rng.integers(*frames))
        levels = rng.normal(size=PROMPTS)
        mel = -0.5 + 0.15 * rng.normal(size=(N_MELS, length))
        for band, level in zip(BANDS, levels, strict=True):
            mel[band] += LEVEL * level
        prompt = index % PROMPTS
        mels.append(torch.from_numpy(mel.astype(np.float32)))
        prompts.append(prompt)
        qualities.append(levels[prompt])
    table = ClipTable(mels, torch.from_numpy(embeddings))
    return SyntheticClips(table, np.array(prompts), np.array(qualities))


def preference_probability(clips: SyntheticClips, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-BT_SCALE * (clips.quality[a] - clips.quality[b])))


def synthetic_votes(
    clips: SyntheticClips, clip_ids: np.ndarray, pairs: int, seed: int, first_group: int = 0
) -> PreferenceSet:
    """`pairs` random same-prompt pairs among clip_ids, each with 1-3 votes, some ties, and
    some shown swapped."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"clip_a": [], "clip_b": [], "prompt": [], "target": [], "group": []}
    for pair in range(pairs):
        prompt = pair % PROMPTS
        candidates = clip_ids[clips.prompt[clip_ids] == prompt]
        a, b = rng.choice(candidates, size=2, replace=False)
        p = preference_probability(clips, np.array([a]), np.array([b]))[0]
        for _ in range(rng.integers(1, 4)):
            target = 0.5 if rng.random() < TIE_SHARE else float(rng.random() < p)
            shown = (a, b) if rng.random() < 0.5 else (b, a)
            if shown[0] != a and target != 0.5:
                target = 1.0 - target
            rows["clip_a"].append(shown[0])
            rows["clip_b"].append(shown[1])
            rows["prompt"].append(prompt)
            rows["target"].append(target)
            rows["group"].append(first_group + pair)
    return PreferenceSet(**rows)


def bayes_accuracy(clips: SyntheticClips, votes: PreferenceSet) -> float:
    """Accuracy on decisive votes of the true preference probability itself."""
    decisive = votes.decisive()
    p = preference_probability(clips, decisive.clip_a.numpy(), decisive.clip_b.numpy())
    return float(np.mean(np.maximum(p, 1 - p)))


def synthetic_ratings(
    clips: SyntheticClips, clip_ids: np.ndarray, seed: int, raters: int = 8
) -> RatingSet:
    """1-4 ratings per clip from raters who each use the 1-5 scale with their own offset and
    spread; `target` is each rater's z-scored rating, as the platform normalises them."""
    rng = np.random.default_rng(seed)
    offset, spread = rng.normal(0, 0.6, raters), rng.uniform(0.5, 1.3, raters)
    rows: dict[str, list] = {"clip": [], "prompt": [], "raw_score": [], "rater": []}
    for clip in clip_ids:
        for rater in rng.choice(raters, size=rng.integers(1, 5), replace=False):
            score = 3 + offset[rater] + spread[rater] * clips.quality[clip] + rng.normal(0, 0.7)
            rows["clip"].append(clip)
            rows["prompt"].append(clips.prompt[clip])
            rows["raw_score"].append(float(np.clip(np.round(score), 1, 5)))
            rows["rater"].append(rater)
    raw, rater = np.array(rows["raw_score"]), np.array(rows["rater"])
    target = np.zeros_like(raw)
    for index in range(raters):
        mine = rater == index
        if mine.any():
            target[mine] = (raw[mine] - raw[mine].mean()) / max(raw[mine].std(), 1e-6)
    return RatingSet(
        clip=rows["clip"],
        prompt=rows["prompt"],
        target=target,
        raw_score=raw,
        group=rows["clip"],
    )
