"""What a fine-tuning run learns from: the prompt pools RLOO samples from and is judged on, and
for DPO the pairs of stored votes re-encoded as the policy's tokens. torch (behind the DPO
pair type) is imported inside dpo_pairs, which only a worker calls.
"""

from __future__ import annotations

from typing import Any

from generation.models import Prompt, Track
from generation.music.prompt_sampling import prompt_pools
from generation.music.prompts import prompt_is_held_out
from ratings.dataset import DataFilters, preference_target, vote_rows
from reward.finetune_settings import DEFAULT_SETTINGS, FineTuneError
from reward.models import FineTuneRun


def prompt_pool(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts): the curated prompts people wrote, split whole by
    the same rule as reward training, filled up with generated prompts in the way people write
    them (`prompt_sampling.prompt_pools`). The held-out prompts feed the curves and the
    evaluation."""
    curated = list(
        Prompt.objects.filter(source=Prompt.Source.CURATED)
        .order_by("pk")
        .values_list("text", flat=True)
    )
    settings = DEFAULT_SETTINGS | config  # runs stored before the pools had sizes
    try:
        return prompt_pools(
            curated,
            train_count=int(settings["train_prompts"]),
            held_out_count=int(settings["held_out_prompts"]),
            test_share=float(settings["test_share"]),
            split_seed=int(settings["split_seed"]),
            seed=int(settings["seed"]),
        )
    except ValueError as error:
        raise FineTuneError(str(error)) from error


def dpo_pairs(run: FineTuneRun, policy: Any) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """(train pairs, held-out pairs, summary) from stored votes on two tracks of the base
    version: the chosen and rejected clips' notes re-encoded as the policy's tokens."""
    from reward.learning.dpo import DPOPair

    filters = DataFilters.from_json(run.data_filters)
    rows = [row for row in vote_rows(filters) if preference_target(row) in (0.0, 1.0)]
    base_name = run.base_version.name
    rows = [r for r in rows if r["version_a"] == base_name and r["version_b"] == base_name]
    tracks = Track.objects.in_bulk({r[k] for r in rows for k in ("track_a_id", "track_b_id")})
    train, held_out = [], []
    for row in rows:
        winner, loser = ("track_a_id", "track_b_id")
        if preference_target(row) == 0.0:
            winner, loser = loser, winner
        chosen, rejected = tracks[row[winner]], tracks[row[loser]]
        prompt = row["prompt_text"]
        pair = DPOPair(
            prompt=prompt,
            chosen=policy.sequence_for(prompt, chosen.events, chosen.attributes),
            rejected=policy.sequence_for(prompt, rejected.events, rejected.attributes),
        )
        side = held_out if prompt_is_held_out(
            row["prompt_text"], test_share=run.settings["test_share"],
            split_seed=run.settings["split_seed"],
        ) else train  # fmt: skip
        side.append(pair)
    summary = {"decisive_votes": len(rows), "train_pairs": len(train), "held_out": len(held_out)}
    return train, held_out, summary
