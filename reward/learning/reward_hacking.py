"""Watching an RL run for reward hacking: the figures that show it, and the guards that act.

A policy that games its reward tends to collapse onto a few outputs and to drift from the
reference and from the prompt. So every curve entry carries the samples' diversity and their
prompt adherence per attribute, on training and held-out prompts alike (the KL comes from the
run's own scoring), and two guards watch them: one for a KL past its limit, one for diversity
fallen below a share of the first step's. Both are recorded at the first crossing and again
only when the figure gets twice as bad, and their memory lives in buffers, so a resumed run
goes on warning where it was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from statistics import fmean
from typing import Any, Protocol

import torch
from torch import nn

from generation.music.evaluation import FIT_PARTS, piece_fit, plan_fit
from generation.music.learned import Sample
from generation.music.plan import plan_agreement
from generation.music.prompts import MusicAttributes, parse_prompt
from generation.music.tokenizer import content_ids

DIVERSITY_NGRAM = 4
GUARD_KINDS = ("kl_limit", "diversity_floor")


# --- figures ------------------------------------------------------------------------------


def ngrams(ids: Sequence[int], n: int = DIVERSITY_NGRAM) -> set[tuple[int, ...]]:
    tokens = content_ids(list(ids))
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard_distance(a: set, b: set) -> float:
    """1 - |a & b| / |a | b|: 0 for equal sets (two empty ones included), 1 for disjoint."""
    union = len(a | b)
    return 1.0 - len(a & b) / union if union else 0.0


def diversity(samples: Sequence[Sample], group_size: int) -> float:
    """Mean pairwise Jaccard distance between the token 4-gram sets of the samples of one
    prompt (groups of group_size consecutive samples), averaged over prompts: 1 when the K
    samples of a prompt share no 4-gram, 0 when they are identical. Collapse onto one
    output, the usual face of reward hacking, drives it to 0. With one sample per prompt
    (held-out, by default) all samples form one group, and it measures diversity across
    prompts instead."""
    sets = [ngrams(sample.token_ids) for sample in samples]
    if group_size < 2:
        group_size = len(sets)
    distances = []
    for start in range(0, len(sets), group_size):
        group = sets[start : start + group_size]
        pairs = [jaccard_distance(a, b) for a, b in combinations(group, 2)]
        if pairs:
            distances.append(sum(pairs) / len(pairs))
    return sum(distances) / len(distances) if distances else 0.0


def fit_figures(samples: Sequence[Sample], prefix: str = "") -> dict[str, float]:
    """Mean prompt adherence of the samples' notes per attribute (`fit_tempo`, ...) and
    overall (`fit_score`): whatever the reward, the curves show what RL did to each
    attribute, on training and held-out prompts side by side."""
    targets: dict[str, MusicAttributes] = {}
    rows = []
    for sample in samples:
        if sample.prompt not in targets:
            targets[sample.prompt] = parse_prompt(sample.prompt)
        rows.append(piece_fit(targets[sample.prompt], sample.piece))
    return {
        f"{prefix}fit_{part}": fmean(row[part] for row in rows) for part in (*FIT_PARTS, "score")
    }


# The kept fields a planned sample's notes are held to as well as its plan: a plan locked to
# the prompt declares them as asked whatever the body then plays, so a reward that pays for
# fewer notes (detached ones, to a taste for staccato) was free to leave the declared density
# behind. These three the notes of a 4-s clip measure as the plan declares them: on the
# base's heard bars of the 64 held-out prompts (two samples each), instruments 1.000, drums
# 1.000 and density 0.967, where key (0.320) and mode (0.641) are mostly the estimate's
# misses.
NOTES_KEPT_FIELDS = ("instruments", "drums", "density")


def strayed(
    samples: Sequence[Sample], fields: Sequence[str], *, whole_bars: int | None = None
) -> torch.Tensor:
    """(N,) float64: how far each sample strays from its prompt on `fields` (FIT_PARTS), the
    sum of 1 - fit over them. A planned sample is judged on what its plan declares, exactly
    (a 4-second clip's key, measured from its notes, matches the asked one in only about a
    third of the base's own samples), plus how far its notes leave that plan on the fields
    among them the notes measure well (`NOTES_KEPT_FIELDS`, `plan.plan_agreement`); a sample
    without a plan on its notes. RL subtracts it from the objective
    (`RLOOConfig.kept_fields`), so what the votes do not ask to move stays as the prompt
    asks. whole_bars: the length of the pieces whose first bars the samples hold (the
    policy's max_bars, when RL samples only the bars a clip plays), so that the notes'
    density is read on every bar the body wrote in full (`estimate_density`)."""
    if unknown := set(fields) - set(FIT_PARTS):
        raise ValueError(f"no such prompt fields: {sorted(unknown)}")
    targets: dict[str, MusicAttributes] = {}
    in_notes = [name for name in fields if name in NOTES_KEPT_FIELDS]
    totals = []
    for sample in samples:
        if sample.prompt not in targets:
            targets[sample.prompt] = parse_prompt(sample.prompt)
        target = targets[sample.prompt]
        if sample.plan is None:
            fit = piece_fit(target, sample.piece)
            totals.append(sum(1.0 - fit[name] for name in fields))
            continue
        fit = plan_fit(target, sample.plan)
        kept = plan_agreement(sample.plan, sample.piece, in_notes, whole_bars=whole_bars)
        totals.append(
            sum(1.0 - fit[name] for name in fields) + sum(1.0 - kept[name] for name in in_notes)
        )
    return torch.tensor(totals, dtype=torch.float64)


# --- guards -------------------------------------------------------------------------------


class GuardLimits(Protocol):
    """The limits the guards read from a run's settings (an RLOOConfig); None turns one off.
    kl_limit: mean per-sequence KL in nats; diversity_floor: share of the first step's."""

    @property
    def kl_limit(self) -> float | None: ...

    @property
    def diversity_floor(self) -> float | None: ...


class GuardState(nn.Module):
    """What the guards remember between steps (buffers, checkpointed with the weights): the
    first step's diversity and the last value each guard warned at (NaN: none yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("initial_diversity", torch.tensor(math.nan, dtype=torch.float64))
        self.register_buffer("warned", torch.full((2,), math.nan, dtype=torch.float64))


def check_guards(
    config: GuardLimits, state: GuardState, entry: dict[str, float]
) -> list[dict[str, Any]]:
    """Warnings for one step's curve entry (updating `state`). A guard records a warning when
    its figure first crosses the limit, and again only each time it gets twice as bad as at
    its last warning (KL doubles, diversity halves): a drifting run gives a handful of
    warnings, not one per step."""
    if math.isnan(float(state.initial_diversity)):
        state.initial_diversity.fill_(entry["diversity"])  # the untouched policy's
    limits = {
        "kl_limit": config.kl_limit,
        "diversity_floor": None
        if config.diversity_floor is None
        else config.diversity_floor * float(state.initial_diversity),
    }
    warnings = []
    for index, kind in enumerate(GUARD_KINDS):
        limit = limits[kind]
        if limit is None:
            continue
        value = entry["kl"] if kind == "kl_limit" else entry["diversity"]
        last = float(state.warned[index])
        if kind == "kl_limit":
            crossed = value > limit and (math.isnan(last) or value >= 2 * last)
        else:
            crossed = value < limit and (math.isnan(last) or value <= last / 2)
        if crossed:
            state.warned[index] = value
            warnings.append(
                {"step": int(entry["step"]), "kind": kind, "value": value, "limit": limit}
            )
    return warnings


def guard_warnings(config: GuardLimits, history: list[dict[str, float]]) -> list[dict[str, Any]]:
    """The warnings of a whole run, replayed from its curve (as recorded live)."""
    state = GuardState()
    return [w for entry in history for w in check_guards(config, state, entry)]
