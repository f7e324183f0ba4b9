"""One checkpointed optimisation loop shared by every reward model (and, later, fine-tuning).

Resuming is exact: the batch for step s is drawn from an RNG seeded with (seed, s), and the
checkpoint holds the model, the optimiser, torch's RNG state (dropout) and the history, so a
run killed at step 130 and resumed from its step-120 checkpoint ends where an uninterrupted
run would.

A run can also end early and cleanly: a step function or progress callback that raises
`EarlyStop(reason)` (e.g. a guard against reward hacking in fine-tuning) makes the loop
checkpoint, record the reason in the checkpoint and return; running it again returns at once
with the same reason, so a stopped run stays stopped. Training state beyond the model (such
as running reward statistics) belongs in buffers of the `model` passed in, which the
checkpoint holds with the weights.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_NAME = "checkpoint.pt"

# step_fn(step, rng) -> (loss to minimise, extra figures for the curve)
StepFn = Callable[[int, random.Random], tuple[torch.Tensor, dict[str, float]]]
# evaluate() -> figures on held-out data (the model is in eval mode and grads are off)
EvalFn = Callable[[], dict[str, float]]
# on_progress(step, total, entry); it may raise Cancelled to stop after a checkpoint
ProgressFn = Callable[[int, int, dict[str, float]], None]
# on_checkpoint(step): called after each checkpoint is written (not after a cancel's)
CheckpointFn = Callable[[int], None]


class Cancelled(Exception):
    """Raised by a progress callback to stop a run; the loop checkpoints first."""


class EarlyStop(Exception):
    """Raised by a step function or progress callback to end a run for good: the loop
    checkpoints (with the reason) and returns normally, with `LoopState.stopped_reason` set.
    From step_fn the step is not taken; from on_progress the step is kept."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LoopConfig:
    steps: int = 300
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-4
    warmup_steps: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 25
    eval_every: int = 50
    seed: int = 0
    # One thread: these small models gain little from a second core, and on a busy 2-core
    # machine two threads were measured 2.5-13x slower per step than one.
    num_threads: int = 1
    # Step size of a part of the model relative to learning_rate, by the part's name in the
    # model's `parameter_parts()` (a planned generator's "planner" and "body"); unnamed parts
    # and models without parts step at 1.
    part_lr_scales: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def finetune_loop() -> LoopConfig:
    """Fine-tuning settings (RLOO, DPO): a small learning rate (the policy starts from a
    trained model and the gradient is noisy) and no weight decay (it pulls the weights towards
    zero, not towards the reference; the KL term is the regulariser)."""
    return LoopConfig(
        steps=200,
        learning_rate=2e-5,
        min_learning_rate=2e-6,
        warmup_steps=10,
        weight_decay=0.0,
        grad_clip=1.0,
        checkpoint_every=25,
        eval_every=25,
    )


def learning_rate(config: LoopConfig, step: int) -> float:
    """Linear warmup, then cosine decay to min_learning_rate at the last step."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.min_learning_rate + cosine * (config.learning_rate - config.min_learning_rate)


def make_optimizer(model: nn.Module, config: LoopConfig) -> torch.optim.AdamW:
    """Weight decay on weight matrices and kernels only, not on biases and norms; each of the
    model's parts (`parameter_parts()`, if it has them) steps at its own scale of the rate."""
    params = [p for p in model.parameters() if p.requires_grad]
    scale_of: dict[int, float] = {}
    parts = getattr(model, "parameter_parts", None)
    for name, part in (parts() if parts is not None else {}).items():
        scale_of |= dict.fromkeys(map(id, part), config.part_lr_scales.get(name, 1.0))
    groups = []
    for scale in sorted({scale_of.get(id(p), 1.0) for p in params}):
        scaled = [p for p in params if scale_of.get(id(p), 1.0) == scale]
        for matrices, decay in ((True, config.weight_decay), (False, 0.0)):
            chosen = [p for p in scaled if (p.dim() >= 2) == matrices]
            groups.append({"params": chosen, "weight_decay": decay, "lr_scale": scale})
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.99))


def module_digest(module: nn.Module) -> str:
    """A short fingerprint of a module's weights and buffers, for a checkpoint's `extra`
    (resuming from a different starting model is then refused)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:16]


@dataclass
class LoopState:
    step: int
    history: list[dict[str, float]]
    resumed_from: int  # 0 for a fresh start
    stopped_reason: str | None = None  # set when an EarlyStop ended the run


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    history: list[dict[str, float]],
    extra: dict[str, Any],
    stopped_reason: str | None = None,
) -> None:
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "step": step,
        "history": history,
        "extra": extra,
        "stopped_reason": stopped_reason,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)  # a crash mid-write leaves the previous checkpoint intact


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any]
) -> LoopState:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["extra"] != extra:
        raise ValueError(f"{path} was written by a run with other settings; use a new directory")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["torch_rng"])
    step = int(payload["step"])
    return LoopState(
        step=step,
        history=list(payload["history"]),
        resumed_from=step,
        stopped_reason=payload.get("stopped_reason"),  # absent from older checkpoints
    )


def run_loop(
    model: nn.Module,
    step_fn: StepFn,
    *,
    config: LoopConfig,
    checkpoint_dir: Path | str,
    evaluate: EvalFn | None = None,
    on_progress: ProgressFn | None = None,
    extra: dict[str, Any] | None = None,
    on_checkpoint: CheckpointFn | None = None,
) -> LoopState:
    """Train `model` for config.steps steps, resuming from checkpoint_dir if it holds a
    checkpoint. `extra` (JSON-like settings) is stored with the checkpoint and must match on
    resume. History entries: step, loss, lr, step_fn's figures, and evaluate()'s every
    eval_every steps and at the end. An EarlyStop ends the run after a checkpoint (see the
    module doc); a checkpoint of a stopped run is returned as it is."""
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME
    extra = {"loop": config.to_dict(), **(extra or {})}
    torch.manual_seed(config.seed)
    optimizer = make_optimizer(model, config)
    state = LoopState(step=0, history=[], resumed_from=0)
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, model, optimizer, extra)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)

    announced: list[int] = []  # a stop right after a periodic checkpoint saves twice

    def checkpoint(step: int, *, announce: bool = True) -> None:
        save_checkpoint(
            checkpoint_path, model, optimizer, step, state.history, extra, state.stopped_reason
        )
        if announce and on_checkpoint is not None and step not in announced[-1:]:
            announced.append(step)
            on_checkpoint(step)

    try:
        for step in range(state.step, config.steps):
            if state.stopped_reason is not None:
                break
            model.train()
            lr = learning_rate(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)  # older checkpoints: 1
            optimizer.zero_grad(set_to_none=True)
            try:
                loss, figures = step_fn(step, random.Random(config.seed * 1_000_003 + step))
            except EarlyStop as stop:
                state.stopped_reason = stop.reason
                checkpoint(step)
                break
            loss.backward()
            grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
            optimizer.step()
            entry = {"step": step + 1, "loss": float(loss.detach()), "lr": lr}
            entry |= {"grad_norm": grad_norm, **figures}
            done = step + 1 == config.steps
            if evaluate is not None and ((step + 1) % config.eval_every == 0 or done):
                entry |= _evaluated(model, evaluate)
            state.history.append(entry)
            state.step = step + 1
            if (step + 1) % config.checkpoint_every == 0 or done:
                checkpoint(step + 1)
            if on_progress is not None:
                try:
                    on_progress(step + 1, config.steps, entry)
                except Cancelled:
                    checkpoint(step + 1, announce=False)
                    raise
                except EarlyStop as stop:
                    state.stopped_reason = stop.reason
                    checkpoint(step + 1)
                    break
    finally:
        torch.set_num_threads(previous_threads)
    model.eval()
    return state


def _evaluated(model: nn.Module, evaluate: EvalFn) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        figures = evaluate()
    model.train()
    return figures


def checkpoint_step(directory: Path) -> int:
    """The step of the loop checkpoint in `directory`, which a run resumes from (0 if none)."""
    path = directory / CHECKPOINT_NAME
    if not path.exists():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
