"""DPO (Rafailov et al. 2023): fine-tune the symbolic generator directly on stored preference
pairs, with no reward model and no sampling.

Readable top to bottom: pairs (and the token ids of a stored track) -> config -> the loss ->
the reference's log-probs (computed once) -> a training step -> held-out figures -> the run
(run_loop: checkpoints, exact resume).

For a pair (prompt x, chosen y_w, rejected y_l), with log-ratios h(y) = log pi(y|x) -
log pi_ref(y|x) of whole sequences:

    loss = -log sigmoid(beta * (h(y_w) - h(y_l)))

beta * h(y) is the policy's implicit reward; a pair is "right" when the chosen sequence's
implicit reward is the larger one.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from generation.music.learned import SymbolicTransformerBackend, torch_threads
from reward.learning.loop import LoopConfig, ProgressFn, finetune_loop, module_digest, run_loop

KIND = "dpo"
SCORE_BATCH = 16  # sequences per no-grad forward pass when scoring whole sets


@dataclass(frozen=True)
class DPOPair:
    prompt: str
    # token ids as the model writes them (header ... EOS), no BOS; a stored track's come
    # from the backend's `sequence_for`
    chosen: list[int]
    rejected: list[int]


@dataclass(frozen=True)
class DPOConfig:
    loop: LoopConfig = field(default_factory=finetune_loop)
    beta: float = 0.1  # larger: stay closer to the reference
    batch_size: int = 8  # pairs per step

    def __post_init__(self) -> None:
        if self.beta <= 0 or self.batch_size < 1:
            raise ValueError("need beta > 0 and batch_size >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DPOConfig:
        data = dict(data)
        return cls(loop=LoopConfig(**data.pop("loop")), **data)


# --- the loss -----------------------------------------------------------------------------


def dpo_loss(
    beta: float, ratio_chosen: torch.Tensor, ratio_rejected: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """The mean DPO loss over pairs and its figures, from the log-ratios log pi - log pi_ref
    of the chosen and rejected sequences. Sequence log-probs are sums over tokens, not
    means: that is the likelihood the model assigns, and DPO's derivation is in it.
    kl_chosen / kl_rejected are the mean log-ratios: on the policy's own samples their mean
    would be the KL; here (the sequences are the pairs') they tell which way each side moves."""
    margins = beta * (ratio_chosen - ratio_rejected)
    loss = -F.logsigmoid(margins).mean()
    margins = margins.detach()
    right = torch.where(margins == 0, 0.5, (margins > 0).double())  # a tie counts half
    return loss, {
        "reward_accuracy": float(right.mean()),
        "margin": float(margins.mean()),
        "kl_chosen": float(ratio_chosen.detach().mean()),
        "kl_rejected": float(ratio_rejected.detach().mean()),
    }


# --- scoring ------------------------------------------------------------------------------


@dataclass
class PairSet:
    """Pairs with their reference log-probs, computed once: the reference never changes."""

    pairs: list[DPOPair]
    reference_chosen: torch.Tensor  # (N,) float64
    reference_rejected: torch.Tensor

    def __len__(self) -> int:
        return len(self.pairs)


def fit_pairs(
    pairs: Sequence[DPOPair], backend: SymbolicTransformerBackend
) -> tuple[list[DPOPair], int]:
    """The pairs with every sequence cut to the model's context (`max_sequence_tokens`), as
    pretraining cuts its corpus, and
    how many sequences were cut. Dense stored tracks can exceed it; the cut keeps their
    opening, which is what the model would have written first. Empty sequences are refused."""
    room = backend.model.max_sequence_tokens
    fitted, cut = [], 0
    for index, pair in enumerate(pairs):
        if not pair.chosen or not pair.rejected:
            raise ValueError(f"pair {index} has an empty sequence")
        cut += (len(pair.chosen) > room) + (len(pair.rejected) > room)
        fitted.append(DPOPair(pair.prompt, pair.chosen[:room], pair.rejected[:room]))
    return fitted, cut


def pair_logprobs(
    backend: SymbolicTransformerBackend, pairs: Sequence[DPOPair]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed log-probs, each (len(pairs),); with grad if grad is on."""
    prompts = [pair.prompt for pair in pairs]
    logprobs = backend.seq_logprobs(
        prompts * 2, [pair.chosen for pair in pairs] + [pair.rejected for pair in pairs]
    )
    return logprobs[: len(pairs)], logprobs[len(pairs) :]


@torch.no_grad()
def score_pairs(
    backend: SymbolicTransformerBackend, pairs: Sequence[DPOPair]
) -> tuple[torch.Tensor, torch.Tensor]:
    """pair_logprobs over a whole set in batches, without grad."""
    chosen, rejected = [], []
    step = max(1, SCORE_BATCH // 2)
    for start in range(0, len(pairs), step):
        c, r = pair_logprobs(backend, pairs[start : start + step])
        chosen.append(c)
        rejected.append(r)
    empty = torch.zeros(0, dtype=torch.float64)
    return torch.cat(chosen) if chosen else empty, torch.cat(rejected) if rejected else empty


def with_reference(reference: SymbolicTransformerBackend, pairs: Sequence[DPOPair]) -> PairSet:
    reference.model.eval()
    chosen, rejected = score_pairs(reference, pairs)
    return PairSet(list(pairs), chosen, rejected)


# --- training -----------------------------------------------------------------------------


def training_step(
    policy: SymbolicTransformerBackend, config: DPOConfig, train: PairSet, rng: random.Random
) -> tuple[torch.Tensor, dict[str, float]]:
    """The DPO loss on batch_size pairs drawn by `rng` (distinct when there are enough)."""
    # Dropout off: the reference's log-probs are without it, so the ratios compare like
    # with like (and the ratios are 0 at the start, as DPO assumes).
    policy.model.eval()
    n = len(train)
    if n >= config.batch_size:
        rows = rng.sample(range(n), config.batch_size)
    else:
        rows = [rng.randrange(n) for _ in range(config.batch_size)]
    chosen, rejected = pair_logprobs(policy, [train.pairs[row] for row in rows])
    index = torch.tensor(rows)
    return dpo_loss(
        config.beta,
        chosen - train.reference_chosen[index],
        rejected - train.reference_rejected[index],
    )


def held_out_figures(
    policy: SymbolicTransformerBackend, config: DPOConfig, pairs: PairSet, prefix: str
) -> dict[str, float]:
    if len(pairs) == 0:
        return {}
    chosen, rejected = score_pairs(policy, pairs.pairs)
    loss, figures = dpo_loss(
        config.beta, chosen - pairs.reference_chosen, rejected - pairs.reference_rejected
    )
    figures = {"loss": float(loss), **figures}
    return {f"{prefix}{name}": value for name, value in figures.items()}


# --- the run ------------------------------------------------------------------------------


@dataclass
class DPOResult:
    policy: SymbolicTransformerBackend  # the backend passed in, now tuned
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    resumed_from: int


def pairs_digest(pairs: Sequence[DPOPair]) -> str:
    data = [[pair.prompt, pair.chosen, pair.rejected] for pair in pairs]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]


def train_dpo(
    config: DPOConfig,
    policy: SymbolicTransformerBackend,
    reference: SymbolicTransformerBackend,
    train_pairs: Sequence[DPOPair],
    held_out_pairs: Sequence[DPOPair],
    checkpoint_dir: Path | str,
    on_progress: ProgressFn | None = None,
) -> DPOResult:
    """Fine-tune `policy` in place with DPO (or resume, if checkpoint_dir holds a checkpoint
    of the same run: pass the same starting policy and reference again). Held-out figures
    (heldout_loss, _reward_accuracy, _margin, _kl_chosen, _kl_rejected) every
    loop.eval_every steps and at the end; metrics["initial"] has them before training.
    Sequences longer than the model's context are cut to it (see fit_pairs)."""
    if not train_pairs:
        raise ValueError("no training pairs")
    train_pairs, train_cut = fit_pairs(train_pairs, policy)
    held_out_pairs, held_out_cut = fit_pairs(held_out_pairs, policy)
    with torch_threads(config.loop.num_threads):
        train = with_reference(reference, train_pairs)
        held_out = with_reference(reference, held_out_pairs)
        policy.model.eval()
        initial = held_out_figures(policy, config, held_out, "heldout_")
    # Stored with the checkpoint: resuming with other settings, pairs or models is refused.
    extra = {
        "kind": KIND,
        "config": config.to_dict(),
        "data": {"train": pairs_digest(train_pairs), "held_out": pairs_digest(held_out_pairs)},
        "models": {
            "start": module_digest(policy.model),
            "reference": module_digest(reference.model),
        },
    }

    def step_fn(step: int, rng: random.Random) -> tuple[torch.Tensor, dict[str, float]]:
        return training_step(policy, config, train, rng)

    state = run_loop(
        policy.model,
        step_fn,
        config=config.loop,
        checkpoint_dir=checkpoint_dir,
        evaluate=lambda: held_out_figures(policy, config, held_out, "heldout_"),
        on_progress=on_progress,
        extra=extra,
    )
    last = state.history[-1] if state.history else {}
    metrics: dict[str, Any] = {k: v for k, v in last.items() if k not in ("step", "lr")}
    metrics |= {
        "initial": initial,
        "train_pairs": len(train),
        "heldout_pairs": len(held_out),
        "cut_sequences": train_cut + held_out_cut,  # longer than the context (fit_pairs)
        "steps": state.step,
        "resumed_from": state.resumed_from,
    }
    return DPOResult(
        policy=policy, history=state.history, metrics=metrics, resumed_from=state.resumed_from
    )
