"""Pretraining the planned generator on the composer's captioned corpus.

Readable top to bottom: corpus -> batches -> model and optimizer -> the loop
(AdamW, warmup + cosine LR, gradient clipping per part, checkpoints) -> held-out evaluation.

The corpus is generated on the fly: the batch for step s comes from an RNG seeded with
(seed, s), so a resumed run sees exactly the batches an uninterrupted run would, and nothing
needs to be stored. Half the prompts are the composer's full template captions, half are
short free-text prompts ("slow sad piano ballad") whose attributes `parse_prompt` reads back,
so the model learns to follow the way people actually write prompts, with `parse_prompt` as
the ground truth either way. Some pieces play their melody higher or lower than the
composer's default (`register_shift_share`), so the register the plan declares is one the
body must read rather than infer from the instruments.

Prompts are split by a hash of their text (`prompts.prompt_is_held_out`): training draws
only training prompts and evaluation only held-out ones, so no evaluation prompt was ever
trained on, whichever stream it came from.

A data worker (`data_workers`, a process of its own) composes and embeds the batches of the
next steps while the current one trains, in the same order and from the same seeds: the
model's step runs on one core (small ops), so the corpus's composing and the prompt
encoder, a third of a step when done in line, take the other.

Each step trains both parts of `PlannedMusicGPT` (planned.py): the body on `batch_size`
composed pieces (its loss is on the notes), the planner on the plans of `plan_batch_size`
prompts (the pieces' own and more: a plan is a dozen tokens, so the planner sees thousands of
distinct prompts cheaply). The two parts share no weight, so each is clipped on its own.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import queue
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from generation.music.composer import ComposerStyle, compose
from generation.music.evaluation import GeneratedPiece, adherence_report
from generation.music.learned import (
    PLANNED_CHECKPOINT_FORMAT,
    SamplingConfig,
    SymbolicTransformerBackend,
    torch_threads,
)
from generation.music.plan import Plan, plan_for_piece
from generation.music.planned import SIZES, PlannedConfig, PlannedMusicGPT
from generation.music.prompt_sampling import random_prompt_text
from generation.music.prompts import MusicAttributes, prompt_is_held_out
from generation.music.text_encoder import TextEncoder, get_text_encoder
from generation.music.tokenizer import BOS_ID, PAD_ID, crop_piece, encode_piece, header_length

CHECKPOINT_NAME = "checkpoint.pt"  # model + optimizer + configs + step: for resuming
GENERATOR_NAME = "generator.pt"  # what the platform loads (SymbolicTransformerBackend.load)
HELD_OUT_SEED_OFFSET = 1_000_003  # eval prompts come from a stream training never draws
REGISTER_SHIFTS = (-12, -8, -4, 4, 8, 12)  # semitones: one to three register bands down or up

ProgressCallback = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainConfig:
    size: str = "small"
    model: PlannedConfig | None = None  # overrides `size` (tests build tiny models)
    batch_size: int = 16  # composed pieces per step: the body's batch
    plan_batch_size: int = 64  # prompts per step for the planner (the pieces' own first)
    micro_batch_size: int = 4  # pieces of similar length run together
    learning_rate: float = 3e-3
    min_learning_rate: float = 3e-4
    planner_lr_scale: float = 0.7  # the planner's step, relative to the body's
    warmup_steps: int = 50
    lr_decay_steps: int | None = None  # default: the `steps` train() is asked for
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    text_threads: int = 2  # MiniLM on a batch of prompts is big enough to use 2 cores
    text_statistics_prompts: int = 512
    max_bars: int = 4
    short_prompt_share: float = 0.5
    register_shift_share: float = 0.3
    held_out_share: float = 0.1  # of all prompt texts, by hash: never trained on
    seed: int = 0
    checkpoint_every: int = 50
    eval_prompts: int = 256  # held-out prompts the finished model is evaluated on
    num_threads: int = 1  # see SamplingConfig.num_threads: small ops, busy cores
    data_workers: int = 1  # 0: compose and embed each step's batch in line (tests, daemons)
    prefetch_steps: int = 4  # batches the data worker may hold ready

    def __post_init__(self) -> None:
        if self.plan_batch_size < self.batch_size:
            raise ValueError("plan_batch_size holds the batch's own pieces: >= batch_size")
        if not 0 < self.held_out_share < 1:
            raise ValueError("held_out_share must lie in (0, 1)")
        if self.data_workers not in (0, 1) or self.prefetch_steps < 1:
            raise ValueError("data_workers is 0 or 1, prefetch_steps at least 1")

    def model_config(self) -> PlannedConfig:
        return self.model or SIZES[self.size]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = self.model_config().to_dict()
        return data


# --- corpus -----------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusExample:
    prompt: str
    attributes: MusicAttributes
    plan: Plan
    token_ids: list[int] = field(repr=False)

    @property
    def plan_ids(self) -> list[int]:
        """The plan and the Bar that closes it: what the planner learns to write."""
        return self.token_ids[: header_length(self.token_ids) + 1]


def random_prompt(rng: random.Random, config: TrainConfig) -> tuple[str, MusicAttributes]:
    """A prompt from the corpus's distribution and the attributes it asks for."""
    return random_prompt_text(rng, short_prompt_share=config.short_prompt_share)


def corpus_prompt(
    rng: random.Random, config: TrainConfig, *, held_out: bool
) -> tuple[str, MusicAttributes]:
    """The next prompt of the stream on the requested side of the split."""
    while True:
        prompt, attrs = random_prompt(rng, config)
        if prompt_is_held_out(prompt, test_share=config.held_out_share, split_seed=config.seed) == (
            held_out
        ):
            return prompt, attrs


def corpus_example(rng: random.Random, config: TrainConfig, *, held_out: bool) -> CorpusExample:
    prompt, attrs = corpus_prompt(rng, config, held_out=held_out)
    shift = rng.choice(REGISTER_SHIFTS) if rng.random() < config.register_shift_share else 0
    seconds = config.max_bars * 240 / attrs.tempo_bpm  # exactly max_bars 4/4 bars
    piece = compose(
        attrs,
        seed=rng.randrange(2**31),
        duration_seconds=seconds,
        style=ComposerStyle(register_shift=shift),
    )
    piece = crop_piece(piece, config.max_bars)
    plan = plan_for_piece(attrs, piece)
    max_tokens = config.model_config().body.block_size - 1
    ids = encode_piece(piece, plan=plan, max_tokens=max_tokens)
    return CorpusExample(prompt, attrs, plan, ids)


def training_batch(config: TrainConfig, step: int) -> list[CorpusExample]:
    """plan_batch_size examples of training prompts; the body trains on the first
    batch_size of them."""
    rng = random.Random(config.seed * 7_919 + step)
    return [corpus_example(rng, config, held_out=False) for _ in range(config.plan_batch_size)]


def held_out_examples(config: TrainConfig, count: int) -> list[CorpusExample]:
    rng = random.Random(HELD_OUT_SEED_OFFSET + config.seed)
    return [corpus_example(rng, config, held_out=True) for _ in range(count)]


class PromptEmbeddings:
    """A step's prompt vectors, looked up as `TextEncoder.encode` would give them (`collate`
    takes either)."""

    def __init__(self, prompts: list[str], vectors: torch.Tensor) -> None:
        self.vectors = vectors  # one row per prompt, in the step's order
        self._row = {prompt: row for row, prompt in enumerate(prompts)}

    def encode(self, texts: list[str]) -> torch.Tensor:
        return self.vectors[[self._row[text] for text in texts]]


@dataclass
class PreparedStep:
    step: int
    examples: list[CorpusExample]
    embeddings: PromptEmbeddings


def prepare_step(config: TrainConfig, step: int, encoder: TextEncoder) -> PreparedStep:
    """The step's examples and their prompts' embeddings, in one encoder call: the encoder,
    not the model, was most of a tiny model's step."""
    examples = training_batch(config, step)
    prompts = [example.prompt for example in examples]
    return PreparedStep(step, examples, PromptEmbeddings(prompts, encoder.encode(prompts)))


def prepared_steps(
    config: TrainConfig, start: int, stop: int, encoder: TextEncoder
) -> Iterator[PreparedStep]:
    """The prepared batches of steps start..stop-1, in order: from a data worker process
    when config.data_workers is 1 (and this process may have children: a Celery pool
    process is a daemon and may not), else composed here."""
    if config.data_workers == 0 or multiprocessing.current_process().daemon:
        for step in range(start, stop):
            with torch_threads(config.text_threads):
                prepared = prepare_step(config, step, encoder)
            yield prepared
        return
    # spawn, not fork: a forked child of a process that has run torch can hang in OpenMP.
    context = multiprocessing.get_context("spawn")
    ready = context.Queue(maxsize=config.prefetch_steps)
    worker = context.Process(
        target=_data_worker, args=(config, start, stop, str(encoder.path), ready), daemon=True
    )
    worker.start()
    try:
        for _ in range(start, stop):
            prepared = _next_prepared(ready, worker)
            yield prepared
    finally:
        worker.terminate()
        worker.join()
        ready.close()


def _next_prepared(ready: multiprocessing.Queue, worker: multiprocessing.Process) -> PreparedStep:
    while True:
        try:
            item = ready.get(timeout=1.0)
        except queue.Empty:
            if not worker.is_alive():
                raise RuntimeError(f"the data worker died (exit code {worker.exitcode})") from None
            continue
        if isinstance(item, str):  # the worker's traceback
            raise RuntimeError(f"the data worker failed:\n{item}")
        step, examples, vectors = item
        prompts = [example.prompt for example in examples]
        return PreparedStep(step, examples, PromptEmbeddings(prompts, torch.from_numpy(vectors)))


def _data_worker(
    config: TrainConfig, start: int, stop: int, encoder_path: str, ready: multiprocessing.Queue
) -> None:
    import traceback

    torch.set_num_threads(1)  # the training step has the other core
    try:
        encoder = get_text_encoder(encoder_path)
        for step in range(start, stop):
            prepared = prepare_step(config, step, encoder)
            # As an array: a tensor would travel as a shared-memory handle that dies with
            # this process.
            ready.put((step, prepared.examples, prepared.embeddings.vectors.numpy()))
    except Exception:
        ready.put(traceback.format_exc())


def text_statistics(config: TrainConfig, encoder: TextEncoder) -> torch.Tensor:
    """Embeddings of training prompts (from their own seed stream) for centring."""
    rng = random.Random(2 * HELD_OUT_SEED_OFFSET + config.seed)
    prompts = [
        corpus_prompt(rng, config, held_out=False)[0] for _ in range(config.text_statistics_prompts)
    ]
    return encoder.encode(prompts)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def collate(
    sequences: list[list[int]], prompts: list[str], encoder: TextEncoder | PromptEmbeddings
) -> Batch:
    """(text embeddings, inputs = BOS + ids[:-1], targets = ids), right-padded with
    PAD: with causal attention, padding after a sequence cannot change its logits."""
    longest = max(len(ids) for ids in sequences)
    targets = torch.full((len(sequences), longest), PAD_ID, dtype=torch.long)
    for row, ids in enumerate(sequences):
        targets[row, : len(ids)] = torch.tensor(ids)
    inputs = torch.cat([torch.full((len(sequences), 1), BOS_ID), targets[:, :-1]], dim=1)
    return encoder.encode(prompts), inputs, targets


def length_buckets(examples: list[CorpusExample], size: int) -> list[list[CorpusExample]]:
    """Micro-batches of similar length: padding a 100-token piece to a 1000-token one
    would spend most of the step's compute on PAD."""
    ordered = sorted(examples, key=lambda example: len(example.token_ids))
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


def piece_batches(
    examples: list[CorpusExample], size: int, encoder: TextEncoder | PromptEmbeddings
) -> list[Batch]:
    return [
        collate([e.token_ids for e in bucket], [e.prompt for e in bucket], encoder)
        for bucket in length_buckets(examples, size)
    ]


def plan_batch(examples: list[CorpusExample], encoder: TextEncoder | PromptEmbeddings) -> Batch:
    return collate([e.plan_ids for e in examples], [e.prompt for e in examples], encoder)


def token_loss(
    model: PlannedMusicGPT, text_emb: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Summed cross-entropy over real (non-PAD) target tokens."""
    logits = model(text_emb, inputs)
    return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD_ID, reduction="sum")


# --- optimisation -------------------------------------------------------------------


def make_optimizer(model: PlannedMusicGPT, config: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices only; the planner's groups take a scaled step."""
    groups = []
    parts = model.parameter_parts()
    for parameters, scale in ((parts["body"], 1.0), (parts["planner"], config.planner_lr_scale)):
        matrices = [p for p in parameters if p.dim() >= 2]
        vectors = [p for p in parameters if p.dim() < 2]
        groups.append({"params": matrices, "weight_decay": config.weight_decay, "lr_scale": scale})
        groups.append({"params": vectors, "weight_decay": 0.0, "lr_scale": scale})
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95))


def learning_rate(config: TrainConfig, step: int, decay_steps: int) -> float:
    """Linear warmup, then cosine decay to min_learning_rate at decay_steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, decay_steps - config.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.min_learning_rate + cosine * (config.learning_rate - config.min_learning_rate)


def train_step(
    model: PlannedMusicGPT,
    optimizer: torch.optim.Optimizer,
    pieces: list[Batch],
    plans: Batch,
    *,
    lr: float,
    grad_clip: float,
) -> dict[str, float]:
    """One optimiser step: the pieces' mean token loss (plans and notes) and the plan
    batch's mean token loss, each part clipped on its own."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    model.train()
    optimizer.zero_grad(set_to_none=True)
    tokens = sum(int((targets != PAD_ID).sum()) for _, _, targets in pieces)
    piece_loss = 0.0
    for batch in pieces:
        loss = token_loss(model, *batch) / tokens  # accumulates to the mean over the step
        loss.backward()
        piece_loss += float(loss.detach())
    plan_loss = token_loss(model, *plans) / int((plans[2] != PAD_ID).sum())
    plan_loss.backward()
    for part in (model.body, model.planner):
        torch.nn.utils.clip_grad_norm_(part.parameters(), grad_clip)
    optimizer.step()
    return {"loss": piece_loss, "plan_loss": float(plan_loss.detach())}


# --- checkpoints ------------------------------------------------------------------


def save_checkpoint(
    path: Path,
    model: PlannedMusicGPT,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    step: int,
    history: list[dict[str, float]],
) -> None:
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "model_config": model.config.to_dict(),
        "train_config": config.to_dict(),
        "step": step,
        "history": history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)  # a crash mid-write leaves the previous checkpoint intact


def _generator_payload(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def warm_start_mismatch(path: Path, size: str) -> str | None:
    """Why the generator file at `path` cannot start a run of `size`, or None if it can."""
    try:
        payload = _generator_payload(path)
    except Exception as error:  # any unreadable file gets the same answer
        return f"{path.name} is not readable as a generator ({type(error).__name__})"
    if payload.get("format") != PLANNED_CHECKPOINT_FORMAT:
        return f"{path.name} is not a planned generator"
    if payload["model_config"] != SIZES[size].to_dict():
        return f"{path.name} holds a different model than size {size}"
    return None


def warm_start(path: Path, model: PlannedMusicGPT) -> None:
    """Load a generator file's weights (text statistics included) into a fresh model."""
    payload = _generator_payload(path)
    if payload.get("format") != PLANNED_CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a planned generator")
    if payload["model_config"] != model.config.to_dict():
        raise ValueError(f"{path} holds a different model config")
    model.load_state_dict(payload["state_dict"])


def load_checkpoint(
    path: Path, model: PlannedMusicGPT, optimizer: torch.optim.Optimizer
) -> tuple[int, list[dict[str, float]]]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["model_config"] != model.config.to_dict():
        raise ValueError(f"{path} holds a different model config; use another directory")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    return int(payload["step"]), list(payload["history"])


# --- the loop -----------------------------------------------------------------------


@dataclass
class TrainResult:
    metrics: dict[str, Any]
    backend: SymbolicTransformerBackend
    generator_path: Path
    checkpoint_path: Path


def train(
    config: TrainConfig,
    *,
    steps: int,
    checkpoint_dir: str | Path,
    progress_callback: ProgressCallback | None = None,
    text_encoder: TextEncoder | None = None,
    evaluate_after: bool = True,
    init_from: Path | None = None,
) -> TrainResult:
    """Train (or resume, if checkpoint_dir holds a checkpoint) up to `steps` steps: a fresh
    model, or the weights of the generator file `init_from` (a warm start)."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_path = checkpoint_dir / CHECKPOINT_NAME
    encoder = text_encoder or get_text_encoder()
    torch.manual_seed(config.seed)
    model = PlannedMusicGPT(config.model_config())
    optimizer = make_optimizer(model, config)
    start, history = 0, []
    if checkpoint_path.exists():
        start, history = load_checkpoint(checkpoint_path, model, optimizer)
    elif init_from is not None:
        warm_start(init_from, model)
    else:
        model.set_text_statistics(text_statistics(config, encoder))
    decay_steps = config.lr_decay_steps or steps
    started, tokens = time.perf_counter(), 0
    # closing(): a step that raises (a cancel, a crash) stops the data worker then and
    # there, whatever still refers to the generator.
    with contextlib.closing(prepared_steps(config, start, steps, encoder)) as batches:
        for prepared in batches:
            step, examples, embeddings = prepared.step, prepared.examples, prepared.embeddings
            pieces = examples[: config.batch_size]
            lr = learning_rate(config, step, decay_steps)
            with torch_threads(config.num_threads):
                losses = train_step(
                    model,
                    optimizer,
                    piece_batches(pieces, config.micro_batch_size, embeddings),
                    plan_batch(examples, embeddings),
                    lr=lr,
                    grad_clip=config.grad_clip,
                )
            tokens += sum(len(example.token_ids) for example in pieces)
            history.append({"step": step + 1, **losses, "lr": lr})
            if progress_callback:
                progress_callback(step + 1, steps, history[-1])
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == steps:
                save_checkpoint(checkpoint_path, model, optimizer, config, step + 1, history)
    seconds = time.perf_counter() - started
    return _finish(
        config, model, encoder, history, checkpoint_path, tokens, seconds, evaluate_after
    )


def _finish(
    config: TrainConfig,
    model: PlannedMusicGPT,
    encoder: TextEncoder,
    history: list[dict[str, float]],
    checkpoint_path: Path,
    tokens: int,
    seconds: float,
    evaluate_after: bool,
) -> TrainResult:
    model.eval()
    sampling = SamplingConfig(max_bars=config.max_bars, num_threads=config.num_threads)
    backend = SymbolicTransformerBackend(
        model, sampling=sampling, text_encoder=encoder, metadata={"train": config.to_dict()}
    )
    metrics: dict[str, Any] = {
        "steps": history[-1]["step"] if history else 0,
        "final_loss": history[-1]["loss"] if history else None,
        "final_plan_loss": history[-1]["plan_loss"] if history else None,
        "loss_curve": [(h["step"], round(h["loss"], 4)) for h in history],
        "plan_loss_curve": [(h["step"], round(h["plan_loss"], 4)) for h in history],
        "parameters": model.num_parameters(),
        "train_tokens": tokens,
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
    }
    if evaluate_after:
        metrics["eval"] = evaluate(backend, config)
    curves = ("loss_curve", "plan_loss_curve")
    backend.metadata["metrics"] = {k: v for k, v in metrics.items() if k not in curves}
    generator_path = backend.save(checkpoint_path.parent / GENERATOR_NAME)
    return TrainResult(metrics, backend, generator_path, checkpoint_path)


# --- held-out evaluation ------------------------------------------------------------


@torch.no_grad()
def held_out_loss(
    backend: SymbolicTransformerBackend, examples: list[CorpusExample], *, plans_only: bool = False
) -> float:
    """Mean token-level cross-entropy (nats) over all held-out tokens (plans_only: over the
    plans' tokens, the planner's part)."""
    if plans_only:
        batches = [plan_batch(examples, backend.text_encoder)]
    else:
        batches = piece_batches(examples, 8, backend.text_encoder)
    total, count = 0.0, 0
    for batch in batches:
        total += float(token_loss(backend.model.eval(), *batch))
        count += int((batch[2] != PAD_ID).sum())
    return total / count


def evaluate(
    backend: SymbolicTransformerBackend, config: TrainConfig, *, seed: int = 1234
) -> dict[str, Any]:
    """On held-out prompts (never trained on): token loss, and one sample per prompt at
    the backend's sampling settings (temperature 1), scored by `adherence_report`."""
    examples = held_out_examples(config, config.eval_prompts)
    with torch_threads(config.num_threads):
        loss = held_out_loss(backend, examples)
        plan_loss = held_out_loss(backend, examples, plans_only=True)
        samples = backend.sample([example.prompt for example in examples], 1, seed)
    generated = [GeneratedPiece(s.prompt, s.piece, s.plan, s.well_formed) for s in samples]
    losses = {"token_loss": round(loss, 4), "plan_token_loss": round(plan_loss, 4)}
    return losses | adherence_report(generated)
