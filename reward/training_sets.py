"""Training sets from dataset rows (`ratings.dataset`): votes as Bradley-Terry pairs, 1-5
ratings as per-rater normalised targets, both split by prompt so no prompt is on both sides.
Plain Python and numpy: the trainers (reward.trainers) fit the reward models to these.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from generation.music.prompts import prompt_is_held_out
from ratings.dataset import preference_target


@dataclass
class PreferenceData:
    """Training pairs from vote rows, indices into `track_ids` and `prompt_texts`."""

    track_ids: list[int]
    prompt_texts: list[str]
    train: dict[str, list]
    test: dict[str, list]
    summary: dict[str, Any]


def _canonical_order(row: dict[str, Any]) -> tuple:
    return (row["prompt_text"], row["track_a_id"], row["track_b_id"] or 0, row["rater_id"],
            row["vote_id"])  # fmt: skip


def preference_pairs(
    rows: list[dict[str, Any]], *, test_share: float, split_seed: int
) -> PreferenceData:
    """Votes as Bradley-Terry examples: clip a, clip b, the prompt and P(a preferred) (1, 0,
    or 0.5 for a tie). Both-bad votes and single-clip items say nothing about which clip is
    better and are left out. The split is by prompt: no prompt is on both sides."""
    track_index: dict[int, int] = {}
    prompt_index: dict[str, int] = {}
    sides: dict[bool, dict[str, list]] = {
        held_out: {"clip_a": [], "clip_b": [], "prompt": [], "target": [], "group": []}
        for held_out in (False, True)
    }
    left_out = 0
    # In an order of their own rather than the order they were cast in (which concurrent
    # raters make a matter of timing), so the same votes give the same clip indices and
    # batches, and a seeded model trained on them is the same model.
    for row in sorted(rows, key=_canonical_order):
        target = preference_target(row)
        if target is None:
            left_out += 1
            continue
        held_out = prompt_is_held_out(
            row["prompt_text"], test_share=test_share, split_seed=split_seed
        )
        side = sides[held_out]
        side["clip_a"].append(track_index.setdefault(row["track_a_id"], len(track_index)))
        side["clip_b"].append(track_index.setdefault(row["track_b_id"], len(track_index)))
        side["prompt"].append(prompt_index.setdefault(row["prompt_text"], len(prompt_index)))
        side["target"].append(target)
        side["group"].append(_pair_key(row))
    train, test = sides[False], sides[True]
    summary = {
        "votes": len(rows),
        "left_out": left_out,
        "train_pairs": len(train["target"]),
        "test_pairs": len(test["target"]),
        "ties": sum(t == 0.5 for side in sides.values() for t in side["target"]),
        "train_prompts": len({train["prompt"][i] for i in range(len(train["prompt"]))}),
        "test_prompts": len({test["prompt"][i] for i in range(len(test["prompt"]))}),
        "tracks": len(track_index),
    }
    return PreferenceData(list(track_index), list(prompt_index), train, test, summary)


def _pair_key(row: dict[str, Any]) -> int:
    """Votes on the same two clips (in either order) share a group: the noise ceiling and the
    bootstrap treat them as one item."""
    low, high = sorted((row["track_a_id"], row["track_b_id"]))
    return low * 10_000_019 + high


@dataclass
class RatingData:
    track_ids: list[int]
    prompt_texts: list[str]
    train: dict[str, list]
    test: dict[str, list]
    summary: dict[str, Any]


def rater_normalisers(rows: list[dict[str, Any]]) -> dict[int, tuple[float, float]]:
    """(mean, sd) of each rater's scores. A rater with fewer than three ratings or no spread
    gets the spread of everyone, so one rating cannot become an extreme z-score."""
    by_rater: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        by_rater[row["rater_id"]].append(row["score"])
    all_scores = np.array([row["score"] for row in rows], dtype=float)
    pooled_sd = float(all_scores.std()) if len(all_scores) > 1 and all_scores.std() > 0 else 1.0
    norms = {}
    for rater_id, scores in by_rater.items():
        values = np.array(scores, dtype=float)
        sd = float(values.std())
        norms[rater_id] = (float(values.mean()), sd if len(values) >= 3 and sd > 0 else pooled_sd)
    return norms


def rating_targets(rows: list[dict[str, Any]], *, test_share: float, split_seed: int) -> RatingData:
    """1-5 ratings as regression targets, normalised per rater (z-scores), so that a lenient
    and a strict rater who agree on the order teach the same thing."""
    norms = rater_normalisers(rows)
    track_index: dict[int, int] = {}
    prompt_index: dict[str, int] = {}
    sides: dict[bool, dict[str, list]] = {
        held_out: {"clip": [], "prompt": [], "target": [], "raw_score": [], "group": []}
        for held_out in (False, True)
    }
    for row in rows:
        held_out = prompt_is_held_out(
            row["prompt_text"], test_share=test_share, split_seed=split_seed
        )
        mean, sd = norms[row["rater_id"]]
        clip = track_index.setdefault(row["track_id"], len(track_index))
        side = sides[held_out]
        side["clip"].append(clip)
        side["prompt"].append(prompt_index.setdefault(row["prompt_text"], len(prompt_index)))
        side["target"].append((row["score"] - mean) / sd)
        side["raw_score"].append(row["score"])
        side["group"].append(clip)
    summary = {
        "ratings": len(rows),
        "raters": len(norms),
        "train_ratings": len(sides[False]["target"]),
        "test_ratings": len(sides[True]["target"]),
        "tracks": len(track_index),
    }
    return RatingData(list(track_index), list(prompt_index), sides[False], sides[True], summary)
