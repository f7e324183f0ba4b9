"""RL fine-tuning of the symbolic generator against reward models: RLOO (REINFORCE with a
leave-one-out baseline, Ahmadian et al. 2024) with a KL penalty to a frozen reference.

Readable top to bottom: config -> the estimator (running reward normalisation, the
leave-one-out advantage, the loss) -> scoring and curve figures -> a step and held-out
evaluation -> the run (run_loop: checkpoints, exact resume, early stop). What watches the run
for reward hacking (diversity, prompt adherence, the KL and diversity guards) is in
reward_hacking.py.

One step, for prompts_per_step prompts drawn by the step's RNG and K samples of each:

    r_k,i  raw reward k of sample i (reward_fn), normalised by its running mean and std
    R_i  = sum_k w_k r_k,i - beta * KL_i,   KL_i = sum_t log pi(y_t) - log pi_ref(y_t)
    A_i  = R_i - mean of R over the other K - 1 samples of the same prompt
    loss = -mean_i(A_i * log pi(y_i)) + kl_loss * mean_i(sum_t 1/2 (log pi - log pi_ref)(y_t)^2)

log pi(y_i) is teacher-forced, with grad. The second term (the "k2" estimator of the KL, as
GRPO puts a KL term into the loss) is optional: its gradient on the policy's own samples is the
reverse KL's, token by token. The sequence-level penalty in R_i reaches each token only through
one noisy advantage shared by hundreds of tokens; this term pulls back exactly the tokens that
drifted. Measured with the "faster" taste itself as the reward (20 steps of 8 x 4 samples,
learning rate 1e-3): beta alone let the KL run to 100 nats, mostly drift of notes no reward
cared about, and won 0.68 against the starting model; kl_loss 0.5 held the KL at 13 nats and
won 0.71.

`estimator="best_of_group"` keeps the sampling, rewards and KL but learns only from the best
sample of each prompt's group (by R_i): loss = -mean over prompts of (log pi(y_best) / its
tokens) + kl_loss * the same per-token KL term on those samples. This is best-of-K
distillation done online (expert iteration: RAFT, ReST). Each step moves the policy towards
its own best-of-K; what no reward cares about is, in the chosen samples, distributed as the
policy plays it, so it is learned back as it was rather than pushed around by the noise of
negative advantages. But a field the reward does care about through a side door moves too:
with the default taste (a higher lead) as the exact reward and no KL term, 50 steps of 8
prompts x 8 samples at 3e-4 won 0.913 against the base (RLOO at the loop's settings: 0.65),
mostly by changing the plan's key, which transposes every note (held-out key fit 0.961 ->
0.242). `plan_kl_weight` counts each plan token's KL term 1 + that many times: a dozen plan
tokens among hundreds of notes otherwise move for free, and a field the base is sure of (the
key the prompt asks for) then costs as little to change as one it is not (the register). With
kl_loss 0.2 and plan_kl_weight 4 the key held (0.961) but the win rate was 0.599 at 3e-4
and 0.659 at 1.5e-4 (benchmarks/rl_oracle.py, one run each).

`part="plan"` samples plans alone (`SymbolicTransformerBackend.sample_plans`): each is
played by the composer as the body would play it (`plan.plan_piece`), the rewards hear that,
and the loss and KL cover the plan's tokens, so only the planner learns and the body keeps
every weight. A taste that lives in the plan then moves in samples that cost milliseconds of
composing instead of a third of a second of the body's sampling. With the default taste as
the exact reward (30 steps of 16 prompts x 8 plans at 1e-3, kl_loss 0.25) it won 0.615
against the base, with instrument fit 1.000 -> 0.920 (benchmarks/rl_oracle.py --part plan).

`explore_share` draws that share of each prompt's K samples for the prompt varied along one
axis a prompt controls (`prompt_sampling.prompt_variant`: tempo 0.8x or 1.25x, the other mode,
drums in or out, an instrument fewer, another density) and then treats them as answers to the
prompt itself: their log-probs, KL and rewards are the prompt's. A generator that plays every
prompt as asked never samples another tempo for it (the planned base: 1,024 of 1,024 sampled
plans kept the held-out prompts' tempo), so on-policy samples never differ there and no reward
can move it. The explored samples' advantages are their rewards against their group's, so
when a taste prefers what a variant plays, the policy learns to play it for the prompt; when
not, their negative advantages push down tokens the policy hardly produces anyway. The
estimate is no longer the on-policy gradient (nothing corrects for the explored samples being
drawn from another distribution: their importance weights would be about 0, which would
remove exactly what exploring is for); the KL terms still measure the drift from the
reference on every sample. `explore_fields` limits the axes to those the votes ask to move.
A plan run (`part="plan"`) explores the same way with plans drawn for the varied prompt: the
planner is what plays every prompt's tempo as asked.

`kept_fields` are the prompt's fields (tempo, instruments, drums, mode, density, key) that a
sample must keep as asked, whatever the rewards say. A planned policy is locked to them
(`planned.PromptLock`, set on the policy's sampling, so the tuned version keeps them too): its
plans declare them only as the prompt asks. Otherwise R_i loses keep_weight for each unit of
fit it gives up on them (`reward_hacking.strayed`, read off the plan a planned sample
declares, else the notes). The penalty alone was not enough for plans: a plan stage on the
default taste at keep_weight 10 still left held-out plans' drums fit at 0.957 and instrument
fit at 0.915 (the base's: 1.000, 0.991), as a higher register, written right after the
instruments, competes with one more of them. A
reward learned from votes that never asked for another key can still pay for one through a
side door: a higher lead line is bought most cheaply by moving the plan's key, which transposes
every note (see best_of_group above). The closed loop keeps every field its votes do not pull
(reward/closed_loop_objective.py); the KL terms cannot tell a field the base is sure of from one
it is not, and `plan_kl_weight` holds the register back as firmly as the key.

The reference never changes during a run. Two-stage schedules (R, then U from the R result)
are the caller's: it passes the first stage's policy as the second stage's reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generation.music.evaluation import FIT_PARTS
from generation.music.learned import Sample, SymbolicTransformerBackend, torch_threads
from generation.music.prompt_sampling import PROMPT_VARIANT_AXES, prompt_variant
from generation.music.tokenizer import header_length
from reward.learning.loop import (
    CHECKPOINT_NAME,
    Cancelled,
    EarlyStop,
    LoopConfig,
    ProgressFn,
    finetune_loop,
    module_digest,
    run_loop,
)
from reward.learning.reward_hacking import (
    GuardState,
    check_guards,
    diversity,
    fit_figures,
    guard_warnings,
    strayed,
)

KIND = "rloo"
GUARD_ACTIONS = ("stop", "warn")
ESTIMATORS = ("rloo", "best_of_group")
PARTS = ("all", "plan")  # what a step samples and learns: whole sequences, or plans alone
# A reward that has been constant so far normalises to 0 rather than to 0/0.
MIN_REWARD_STD = 1e-6

# reward_fn(samples) -> {reward name: (len(samples),) raw reward of each sample}
RewardFn = Callable[[list[Sample]], dict[str, torch.Tensor]]
# on_checkpoint(step, samples): a few held-out samples of the policy as checkpointed
CheckpointSamplesFn = Callable[[int, list[Sample]], None]


@dataclass(frozen=True)
class RLOOConfig:
    loop: LoopConfig = field(default_factory=finetune_loop)
    prompts_per_step: int = 8
    samples_per_prompt: int = 4  # K; the leave-one-out baseline needs K >= 2
    beta: float = 0.05  # KL penalty, in units of (normalised) reward per nat
    kl_loss: float = 0.0  # weight of the per-token KL term in the loss (see the module doc)
    reward_weights: dict[str, float] = field(default_factory=dict)
    normalise_rewards: bool = True
    # Guards against reward hacking (None = off). kl_limit: mean per-sequence KL in nats;
    # diversity_floor: share of the first step's diversity.
    kl_limit: float | None = None
    diversity_floor: float | None = None
    guard_action: str = "stop"  # "stop" ends the run after a checkpoint, "warn" records
    held_out_samples: int = 1  # per held-out prompt
    held_out_seed: int = 1234  # the same every evaluation, so held-out curves compare
    checkpoint_samples: int = 3  # held-out prompts whose samples on_checkpoint receives
    temperature: float | None = None  # None: the policy's own sampling temperature
    estimator: str = "rloo"  # or "best_of_group" (see the module doc)
    plan_kl_weight: float = 0.0  # each plan token's KL term counts 1 + this (module doc)
    part: str = "all"  # "plan": plans alone, heard as the composer plays them (module doc)
    # Sample only the bars a clip this long plays (None: the policy's max_bars): the rewards
    # hear clips, so bars past the clip cost sampling time and teach nothing.
    heard_seconds: float | None = None
    # Share of each prompt's training samples drawn for a varied prompt (`prompt_variant`)
    # and scored as answers to the prompt itself (module doc): 0, on-policy RLOO.
    explore_share: float = 0.0
    # The axes exploration varies (PROMPT_VARIANT_AXES): those the votes ask to move.
    explore_fields: tuple[str, ...] = PROMPT_VARIANT_AXES
    # Prompt fields (FIT_PARTS) a sample must keep as its prompt asks: each unit of fit a
    # sample loses on them (`strayed`) costs keep_weight in the objective, in units of the
    # normalised reward (module doc). (): none kept, whatever the rewards do to them.
    kept_fields: tuple[str, ...] = ()
    keep_weight: float = 2.0

    def __post_init__(self) -> None:
        # JSON (a run's settings, a checkpoint's config) gives lists: keep tuples, as set.
        object.__setattr__(self, "explore_fields", tuple(self.explore_fields))
        object.__setattr__(self, "kept_fields", tuple(self.kept_fields))
        if unknown := set(self.explore_fields) - set(PROMPT_VARIANT_AXES):
            raise ValueError(f"explore_fields: no such axes {sorted(unknown)}")
        if unknown := set(self.kept_fields) - set(FIT_PARTS):
            raise ValueError(f"kept_fields: no such prompt fields {sorted(unknown)}")
        if self.keep_weight < 0:
            raise ValueError("keep_weight must be >= 0")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}")
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}")
        if self.samples_per_prompt < 2:
            raise ValueError("RLOO needs samples_per_prompt >= 2 (the leave-one-out baseline)")
        if self.prompts_per_step < 1 or self.held_out_samples < 1:
            raise ValueError("need prompts_per_step >= 1 and held_out_samples >= 1")
        if self.beta < 0 or self.kl_loss < 0 or self.plan_kl_weight < 0:
            raise ValueError("beta, kl_loss and plan_kl_weight must be >= 0")
        if self.guard_action not in GUARD_ACTIONS:
            raise ValueError(f"guard_action must be one of {GUARD_ACTIONS}")
        if self.kl_limit is not None and self.kl_limit <= 0:
            raise ValueError("kl_limit must be > 0")
        if self.diversity_floor is not None and not 0 < self.diversity_floor <= 1:
            raise ValueError("diversity_floor must lie in (0, 1]")
        if self.explore_share:
            if not 0 < self.explored_per_prompt < self.samples_per_prompt:
                raise ValueError(
                    "explore_share must leave at least one of each prompt's samples to the "
                    "prompt itself and vary at least one"
                )
            if self.estimator != "rloo":
                raise ValueError("explore_share is for the rloo estimator")
            if not self.explore_fields:
                raise ValueError("explore_share needs at least one axis in explore_fields")

    @property
    def explored_per_prompt(self) -> int:
        return round(self.samples_per_prompt * self.explore_share)

    @property
    def reward_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.reward_weights))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RLOOConfig:
        data = dict(data)
        return cls(loop=LoopConfig(**data.pop("loop")), **data)


# --- the estimator ------------------------------------------------------------------------


class RewardStatistics(nn.Module):
    """Running mean and variance of each raw reward over every sample seen (Chan et al.'s
    parallel update, in float64). Buffers, so the loop's checkpoint holds them with the
    weights and a resumed run normalises exactly as an uninterrupted one would.

    The normalisation's shift cancels in the leave-one-out advantage; its scale is what
    matters: it puts rewards of different units on one footing for the weights, and makes
    beta read as "nats of KL worth one standard deviation of reward"."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = tuple(names)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(len(names), dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(len(names), dtype=torch.float64))

    @torch.no_grad()
    def update(self, rewards: torch.Tensor) -> None:
        """Fold in a batch (N, len(names))."""
        n = rewards.shape[0]
        batch_mean = rewards.mean(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.m2 += ((rewards - batch_mean) ** 2).sum(0) + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.count.copy_(total)

    def std(self) -> torch.Tensor:
        return (self.m2 / self.count.clamp_min(1.0)).sqrt()

    def normalise(self, rewards: torch.Tensor) -> torch.Tensor:
        return (rewards - self.mean) / self.std().clamp_min(MIN_REWARD_STD)


class RLOOModule(nn.Module):
    """What the loop trains and checkpoints: the policy's weights, the reward statistics and
    the guards' state (the last two have no parameters, so the optimiser never sees them)."""

    def __init__(self, policy: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.policy = policy
        self.statistics = RewardStatistics(names)
        self.guard = GuardState()

    def parameter_parts(self) -> dict[str, list[nn.Parameter]]:
        """The policy's parts (a planned generator's planner and body), for the optimiser."""
        parts = getattr(self.policy, "parameter_parts", None)
        return parts() if parts is not None else {}


def rloo_advantages(objective: torch.Tensor, group_size: int) -> torch.Tensor:
    """A_i = R_i - mean of the other group_size - 1 R of its group, for prompt-major R
    (groups are consecutive). Within each group the advantages sum to zero, so a reward
    every sample of a prompt shares (an easy prompt) gives no gradient."""
    grouped = objective.view(-1, group_size)
    others = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).reshape(-1)


def best_in_groups(objective: torch.Tensor, group_size: int) -> torch.Tensor:
    """The index of each consecutive group's best sample (the first, on a tie)."""
    grouped = objective.view(-1, group_size)
    offsets = torch.arange(grouped.shape[0]) * group_size
    return grouped.argmax(dim=1) + offsets


def rloo_loss(advantages: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
    """-mean(A_i * log pi(y_i)) over sequences. log pi is the sequence's summed log-prob, not
    its per-token mean: the sum gives the unbiased gradient of the sequence-level objective
    (the reward and the KL penalty are per sequence too), while dividing by the length would
    favour long samples when A > 0 and short ones when A < 0. The larger gradients of long
    sequences are bounded by the loop's clipping (and Adam is blind to the overall scale)."""
    return -(advantages.detach() * logprobs).mean()


# --- scoring and curve figures ------------------------------------------------------------


@dataclass
class Scored:
    """A batch of samples with its rewards and KL to the reference."""

    samples: list[Sample]
    raw: torch.Tensor  # (N, rewards) float64, columns in config.reward_names order
    kl: torch.Tensor  # (N,) float64: sum_t log pi - log pi_ref, per sequence
    strayed: torch.Tensor  # (N,) float64: fit lost on the kept fields (`strayed`)


def logprobs_against_reference(
    policy: SymbolicTransformerBackend,
    reference: SymbolicTransformerBackend,
    samples: Sequence[Sample],
    *,
    plan_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sequence, scored by the policy (with grad when grad is on) and by the frozen
    reference, chunk by chunk as the backend batches best: log pi (N,), the KL
    sum_t log pi - log pi_ref (N,) without grad, and sum_t 1/2 (log pi - log pi_ref)^2 (N,)
    with grad, in which each token of the header (the plan, up to the Bar that closes it)
    counts 1 + plan_weight times. All float64."""
    prompts = [s.prompt for s in samples]
    ids = [s.token_ids for s in samples]
    logprobs, kls, squared, rows_done = [], [], [], []
    for rows in policy.scoring_chunks(ids):
        chunk_prompts, chunk_ids = [prompts[r] for r in rows], [ids[r] for r in rows]
        tokens, _ = policy.token_logprobs(chunk_prompts, chunk_ids)
        with torch.no_grad():
            reference_tokens, _ = reference.token_logprobs(chunk_prompts, chunk_ids)
        # Padding scores 0 under both models, so it adds nothing to any sum.
        sum_dims = tuple(range(1, tokens.dim()))
        log_ratio = tokens.double() - reference_tokens.double()
        weights = torch.ones_like(log_ratio)
        if plan_weight:
            for row, sample_ids in enumerate(chunk_ids):
                weights[row, : header_length(list(sample_ids)) + 1] += plan_weight
        logprobs.append(tokens.double().sum(dim=sum_dims))
        kls.append(log_ratio.detach().sum(dim=sum_dims))
        squared.append(0.5 * (weights * log_ratio**2).sum(dim=sum_dims))
        rows_done.extend(rows)
    if not rows_done:
        empty = torch.zeros(0, dtype=torch.float64)
        return empty, empty, empty
    order = torch.tensor(rows_done, dtype=torch.long)

    def in_sample_order(parts: list[torch.Tensor]) -> torch.Tensor:
        chunked = torch.cat(parts)
        return torch.zeros_like(chunked).index_copy(0, order, chunked)

    return in_sample_order(logprobs), in_sample_order(kls), in_sample_order(squared)


def raw_rewards(samples: list[Sample], reward_fn: RewardFn, names: Sequence[str]) -> torch.Tensor:
    rewards = reward_fn(samples)
    missing = [name for name in names if name not in rewards]
    if missing:
        raise ValueError(f"reward_fn returned no {missing}")
    columns = [torch.as_tensor(rewards[name], dtype=torch.float64).reshape(-1) for name in names]
    if any(len(column) != len(samples) for column in columns):
        raise ValueError("reward_fn must return one value per sample for each reward")
    return torch.stack(columns, dim=1)


def weighted_total(
    config: RLOOConfig, statistics: RewardStatistics, raw: torch.Tensor
) -> torch.Tensor:
    """sum_k w_k r_k (normalised if the config says so): the reward before the KL penalty."""
    rewards = statistics.normalise(raw) if config.normalise_rewards else raw
    weights = torch.tensor([config.reward_weights[n] for n in config.reward_names])
    return rewards @ weights.double()


def figures_of(
    config: RLOOConfig,
    statistics: RewardStatistics,
    scored: Scored,
    group_size: int,
    prefix: str = "",
) -> dict[str, float]:
    figures = {
        f"{prefix}reward_{name}": float(scored.raw[:, column].mean())
        for column, name in enumerate(config.reward_names)
    }
    samples = scored.samples
    figures[f"{prefix}reward_total"] = float(weighted_total(config, statistics, scored.raw).mean())
    figures[f"{prefix}kl"] = float(scored.kl.mean())
    if config.kept_fields:
        figures[f"{prefix}strayed"] = float(scored.strayed.mean())
    figures[f"{prefix}diversity"] = diversity(samples, group_size)
    figures[f"{prefix}length"] = sum(len(s.token_ids) for s in samples) / len(samples)
    figures[f"{prefix}well_formed"] = sum(s.well_formed for s in samples) / len(samples)
    return figures | fit_figures(samples, prefix)


# --- a step, and held-out evaluation -------------------------------------------------------


@dataclass
class RLOORun:
    """The pieces one run's steps and evaluations share."""

    config: RLOOConfig
    module: RLOOModule
    sampler: SymbolicTransformerBackend  # the policy, with the run's sampling settings
    reference: SymbolicTransformerBackend
    reward_fn: RewardFn

    def score(self, samples: list[Sample]) -> tuple[Scored, torch.Tensor, torch.Tensor]:
        """Rewards and KL of samples; log pi and the per-token KL term with grad (when grad
        is on)."""
        raw = raw_rewards(samples, self.reward_fn, self.config.reward_names)
        logprobs, kl, squared = logprobs_against_reference(
            self.sampler, self.reference, samples, plan_weight=self.config.plan_kl_weight
        )
        kept = strayed(samples, self.config.kept_fields, whole_bars=self.sampler.sampling.max_bars)
        return Scored(samples, raw, kl, kept), logprobs, squared

    def sample(self, prompts: Sequence[str], n: int, seed: int) -> list[Sample]:
        """n samples per prompt of the part the run trains: whole sequences, or plans."""
        if self.config.part == "plan":
            return self.sampler.sample_plans(prompts, n, seed)
        return self.sampler.sample(prompts, n, seed, heard_seconds=self.config.heard_seconds)

    def explored_sample(self, prompts: Sequence[str], n: int, seed: int) -> list[Sample]:
        """n samples per prompt (of the part the run trains), prompt-major, the last
        `explored_per_prompt` of each drawn for a varied prompt (`prompt_variant`), then all
        of them given the prompt itself: their log-probs, rewards and KL are those of answers
        to it. Whole sequences get a generator per row, seeded from `seed`."""
        rng = random.Random(seed)
        explored = self.config.explored_per_prompt
        rows = [
            row
            for prompt in prompts
            for row in [prompt] * (n - explored)
            + [prompt_variant(prompt, rng, self.config.explore_fields) for _ in range(explored)]
        ]
        if self.config.part == "plan":  # one batch, one generator: plans cost milliseconds
            samples = self.sampler.sample_plans(rows, 1, rng.randrange(2**31))
        else:
            seeds = [rng.randrange(2**31) for _ in rows]
            samples = self.sampler.sample_seeded(
                rows, seeds, heard_seconds=self.config.heard_seconds
            )
        asked = [prompt for prompt in prompts for _ in range(n)]
        return [replace(s, prompt=p) for s, p in zip(samples, asked, strict=True)]

    def held_out(self, prompts: list[str]) -> Scored:
        """Held-out prompts sampled with the fixed held-out seed, scored."""
        with torch.no_grad():
            samples = self.sample(prompts, self.config.held_out_samples, self.config.held_out_seed)
            scored, _, _ = self.score(samples)
        return scored

    def held_out_figures(self, prompts: list[str]) -> dict[str, float]:
        scored = self.held_out(prompts)
        statistics = self.module.statistics
        group = self.config.held_out_samples
        return figures_of(self.config, statistics, scored, group, prefix="heldout_")


def choose_prompts(prompts: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """`count` distinct prompts when there are enough, else drawn with replacement."""
    if len(prompts) >= count:
        return rng.sample(list(prompts), count)
    return rng.choices(list(prompts), k=count)


def training_step(
    run: RLOORun, prompts: Sequence[str], rng: random.Random
) -> tuple[torch.Tensor, dict[str, float]]:
    config, k = run.config, run.config.samples_per_prompt
    # Dropout off for the whole step: the gradient must be that of the policy that sampled.
    run.module.policy.eval()
    chosen = choose_prompts(prompts, config.prompts_per_step, rng)
    if config.explore_share:
        samples = run.explored_sample(chosen, k, seed=rng.randrange(2**31))
    else:
        samples = run.sample(chosen, k, seed=rng.randrange(2**31))
    if config.estimator == "best_of_group":
        return best_of_group_step(run, samples)
    scored, logprobs, squared_log_ratio = run.score(samples)
    objective = objective_of(run, scored)
    advantages = rloo_advantages(objective, k)
    loss = rloo_loss(advantages, logprobs)
    if config.kl_loss:
        loss = loss + config.kl_loss * squared_log_ratio.mean()
    figures = figures_of(config, run.module.statistics, scored, k)
    figures["objective"] = float(objective.mean())
    return loss, figures


def objective_of(run: RLOORun, scored: Scored) -> torch.Tensor:
    """R_i = sum_k w_k r_k,i - beta * KL_i - keep_weight * strayed_i, the running reward
    statistics updated first."""
    if run.config.normalise_rewards:
        # This batch first: so the first step has a scale, and no batch is judged by
        # statistics that have never seen rewards as high (or low) as its own.
        run.module.statistics.update(scored.raw)
    total = weighted_total(run.config, run.module.statistics, scored.raw)
    return total - run.config.beta * scored.kl - run.config.keep_weight * scored.strayed


def best_of_group_step(
    run: RLOORun, samples: list[Sample]
) -> tuple[torch.Tensor, dict[str, float]]:
    """The best_of_group loss: every sample's KL from the log-probs the sampler recorded
    (as teacher-forced scoring gives them) and one pass of the reference, then the group's
    best scored with grad, its log-prob and KL term each a mean over its tokens (so long and
    short samples teach alike, as in supervised training)."""
    config, k = run.config, run.config.samples_per_prompt
    with torch.no_grad():
        reference = run.reference.seq_logprobs(
            [sample.prompt for sample in samples], [sample.token_ids for sample in samples]
        )
    recorded = torch.stack([sample.logprobs.double().sum() for sample in samples])
    raw = raw_rewards(samples, run.reward_fn, config.reward_names)
    kept = strayed(samples, config.kept_fields, whole_bars=run.sampler.sampling.max_bars)
    scored = Scored(samples, raw, recorded - reference, kept)
    objective = objective_of(run, scored)
    best = [samples[index] for index in best_in_groups(objective, k).tolist()]
    logprobs, _, squared_log_ratio = logprobs_against_reference(
        run.sampler, run.reference, best, plan_weight=config.plan_kl_weight
    )
    tokens = torch.tensor([max(1, len(sample.token_ids)) for sample in best], dtype=torch.float64)
    loss = -(logprobs / tokens).mean()
    if config.kl_loss:
        loss = loss + config.kl_loss * (squared_log_ratio / tokens).mean()
    figures = figures_of(config, run.module.statistics, scored, k)
    figures["objective"] = float(objective.mean())
    return loss, figures


# --- the run ------------------------------------------------------------------------------


@dataclass
class RLResult:
    policy: SymbolicTransformerBackend  # the backend passed in, now tuned
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    resumed_from: int
    stopped_reason: str | None  # None, "kl_limit", "diversity_floor" or the caller's reason
    warnings: list[dict[str, Any]]


def texts_digest(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()[:16]


def sampler_for(
    policy: SymbolicTransformerBackend, config: RLOOConfig
) -> SymbolicTransformerBackend:
    """The policy as the run samples it: its own sampling settings, bar the temperature if
    the config sets one (samples at a temperature other than 1 are slightly off-policy: the
    gradient and the KL use the untempered log-probs), on the run's threads. The policy
    itself keeps its temperature and threads, so the version saved from it samples as
    before (`train_rloo` gives it the run's kept fields)."""
    temperature = policy.sampling.temperature if config.temperature is None else config.temperature
    sampling = replace(
        policy.sampling, temperature=temperature, num_threads=config.loop.num_threads
    )
    if sampling == policy.sampling:
        return policy
    return SymbolicTransformerBackend(
        policy.model, sampling=sampling, text_encoder=policy.text_encoder
    )


def train_rloo(
    config: RLOOConfig,
    policy: SymbolicTransformerBackend,
    reference: SymbolicTransformerBackend,
    prompts: list[str],
    held_out_prompts: list[str],
    reward_fn: RewardFn,
    checkpoint_dir: Path | str,
    on_progress: ProgressFn | None = None,
    on_checkpoint: CheckpointSamplesFn | None = None,
) -> RLResult:
    """Fine-tune `policy` in place with RLOO (or resume, if checkpoint_dir holds a checkpoint
    of the same run: pass the same starting policy and reference again). Held-out figures
    every loop.eval_every steps and at the end; on_checkpoint(step, samples) after every
    checkpoint and once at step 0 of a fresh run (a resumed run may repeat a step's call)."""
    if not config.reward_weights:
        raise ValueError("no rewards: set config.reward_weights")
    if not prompts or not held_out_prompts:
        raise ValueError("need training and held-out prompts")
    if config.kept_fields:
        # A planned policy then declares the kept fields only as each prompt asks, in every
        # sample it draws here and in the version saved from it (planned.PromptLock).
        policy.sampling = replace(policy.sampling, kept_fields=config.kept_fields)
    module = RLOOModule(policy.model, config.reward_names)
    reference.model.eval()
    run = RLOORun(config, module, sampler_for(policy, config), reference, reward_fn)
    fresh = not (Path(checkpoint_dir) / CHECKPOINT_NAME).exists()
    # Stored with the checkpoint: resuming with other settings, prompts or models is refused.
    extra = {
        "kind": KIND,
        "config": config.to_dict(),
        "sampling": asdict(run.sampler.sampling),
        "data": {"prompts": texts_digest(prompts), "held_out": texts_digest(held_out_prompts)},
        "models": {
            "start": module_digest(policy.model),
            "reference": module_digest(reference.model),
        },
    }
    with torch_threads(config.loop.num_threads):
        initial = run.held_out(held_out_prompts)  # the starting policy, for before/after
    checkpoint_prompts = held_out_prompts[: config.checkpoint_samples]

    def checkpoint_samples(step: int) -> None:
        if on_checkpoint is not None and checkpoint_prompts:
            module.policy.eval()
            with torch.no_grad():
                samples = run.sampler.sample(checkpoint_prompts, 1, config.held_out_seed)
            on_checkpoint(step, samples)  # the body's notes, whatever part the run trains

    def step_fn(step: int, rng: random.Random) -> tuple[torch.Tensor, dict[str, float]]:
        return training_step(run, prompts, rng)

    def progress(step: int, total: int, entry: dict[str, float]) -> None:
        crossed = check_guards(config, module.guard, entry)
        if not crossed or config.guard_action == "warn":
            if on_progress is not None:
                on_progress(step, total, entry)
            return
        if on_progress is not None:
            # The guard's stop wins over a cancel: both end the run, and the stop is what
            # must be recorded (and what a resumed run must find).
            with contextlib.suppress(Cancelled):
                on_progress(step, total, entry)
        raise EarlyStop(crossed[0]["kind"])

    if fresh:
        with torch_threads(config.loop.num_threads):
            checkpoint_samples(0)
    state = run_loop(
        module,
        step_fn,
        config=config.loop,
        checkpoint_dir=checkpoint_dir,
        evaluate=lambda: run.held_out_figures(held_out_prompts),
        on_progress=progress,
        extra=extra,
        on_checkpoint=checkpoint_samples,
    )
    with torch_threads(config.loop.num_threads):
        metrics = final_metrics(run, state.history, initial, held_out_prompts)
    metrics |= {
        "steps": state.step,
        "resumed_from": state.resumed_from,
        "stopped_reason": state.stopped_reason,
    }
    return RLResult(
        policy=policy,
        history=state.history,
        metrics=metrics,
        resumed_from=state.resumed_from,
        stopped_reason=state.stopped_reason,
        warnings=guard_warnings(config, state.history),
    )


def final_metrics(
    run: RLOORun, history: list[dict[str, float]], initial: Scored, held_out_prompts: list[str]
) -> dict[str, Any]:
    """The last step's figures, held-out figures of the final policy (those of the last
    entry, or fresh ones after an early stop) and of the starting policy. Both held-out
    reward totals use the final reward statistics, so they compare."""
    last = history[-1] if history else {}
    metrics: dict[str, Any] = {k: v for k, v in last.items() if k not in ("step", "lr")}
    if "heldout_kl" not in metrics:
        run.module.eval()
        with torch.no_grad():
            metrics |= run.held_out_figures(held_out_prompts)
    group = run.config.held_out_samples
    before = figures_of(run.config, run.module.statistics, initial, group, prefix="heldout_")
    metrics["initial"] = before
    return metrics
