"""Pretraining the symbolic transformer on the composer's captioned corpus.

Readable top to bottom: corpus -> batches -> model and optimizer -> the loop
(AdamW, warmup + cosine LR, gradient clipping, checkpoints) -> held-out evaluation.

The corpus is generated on the fly: the batch for step s comes from an RNG seeded
with (seed, s), so a resumed run sees exactly the batches an uninterrupted run
would, and nothing needs to be stored. Half the prompts are the composer's full
template captions, half are short free-text prompts ("slow sad piano ballad")
whose attributes `parse_prompt` reads back, so the model learns to follow the way
people actually write prompts, with `parse_prompt` as the ground truth either way.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from generation.music.attributes_measure import adherence, measure
from generation.music.composer import compose
from generation.music.learned import SamplingConfig, SymbolicTransformerBackend, torch_threads
from generation.music.model import SIZES, GPTConfig, MusicGPT
from generation.music.prompts import (
    GENRE_ALIASES,
    MOOD_WORDS,
    PROGRAM_NAMES,
    MusicAttributes,
    caption_for,
    parse_prompt,
    random_attributes,
)
from generation.music.text_encoder import TextEncoder, get_text_encoder
from generation.music.tokenizer import BAR_ID, BOS_ID, PAD_ID, encode_piece

CHECKPOINT_NAME = "checkpoint.pt"  # model + optimizer + configs + step: for resuming
GENERATOR_NAME = "generator.pt"  # what the platform loads (SymbolicTransformerBackend.load)
HELD_OUT_SEED_OFFSET = 1_000_003  # eval prompts come from a stream training never draws
CONTRAST_PROMPTS = ("slow sad piano ballad", "fast techno with drums")

ProgressCallback = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainConfig:
    size: str = "small"
    model: GPTConfig | None = None  # overrides `size` (tests build tiny models)
    batch_size: int = 16
    micro_batch_size: int = 4  # examples of similar length run together
    learning_rate: float = 3e-3
    min_learning_rate: float = 3e-4
    warmup_steps: int = 20
    lr_decay_steps: int | None = None  # default: the `steps` train() is asked for
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    conditioning_lr_scale: float = 1.0
    # The header (tempo, instruments, drums, and the Bar that closes it) is ~5 tokens
    # of ~400 yet carries the prompt; weighting it up makes it learn within minutes.
    # The tempo gets the most: it is one token where the instruments have several.
    tempo_loss_weight: float = 20.0
    header_loss_weight: float = 10.0
    text_threads: int = 2  # MiniLM on a batch of prompts is big enough to use 2 cores
    text_statistics_prompts: int = 512
    max_bars: int = 4
    short_prompt_share: float = 0.5
    seed: int = 0
    checkpoint_every: int = 50
    eval_prompts: int = 32
    num_threads: int = 1  # see SamplingConfig.num_threads: small ops, busy cores

    def model_config(self) -> GPTConfig:
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
    token_ids: list[int] = field(repr=False)


TEMPO_WORDS = ("", "", "slow", "very slow", "fast", "very fast", "upbeat", "chill")
DENSITY_PHRASES = ("", "", "", "sparse", "busy", "minimal", "dense")


def short_prompt(attrs: MusicAttributes, rng: random.Random) -> str:
    """A terse prompt in the way people write them, built from some of the attributes."""
    genre_words = [attrs.genre] + [w for w, g in GENRE_ALIASES.items() if g == attrs.genre]
    mood_words = [attrs.mood] + [w for w, m in MOOD_WORDS.items() if m == attrs.mood]
    named = [PROGRAM_NAMES[p] for p in attrs.instruments if p in PROGRAM_NAMES]
    instruments = rng.sample(named, k=min(len(named), rng.choice((0, 1, 1, 2))))
    drums = rng.choice(("", "", "with drums", "without drums"))
    words = [rng.choice(TEMPO_WORDS), rng.choice(DENSITY_PHRASES)]
    words += [rng.choice(mood_words) if rng.random() < 0.7 else ""]
    if instruments and rng.random() < 0.5:
        words += [instruments.pop(0)]  # "piano ballad" as well as "ballad with piano"
    words += [rng.choice(genre_words) if rng.random() < 0.85 else "music"]
    extras = [f"with {' and '.join(instruments)}"] if instruments else []
    extras += [drums] if drums else []
    return " ".join(word for word in words + extras if word)


def corpus_example(rng: random.Random, config: TrainConfig) -> CorpusExample:
    attrs = random_attributes(rng)
    if rng.random() < config.short_prompt_share:
        prompt = short_prompt(attrs, rng)
        attrs = parse_prompt(prompt)
    else:
        prompt = caption_for(attrs)
    seconds = config.max_bars * 240 / attrs.tempo_bpm  # exactly max_bars 4/4 bars
    piece = compose(attrs, seed=rng.randrange(2**31), duration_seconds=seconds)
    max_tokens = config.model_config().block_size - config.model_config().n_prefix
    ids = encode_piece(piece, max_bars=config.max_bars, max_tokens=max_tokens)
    return CorpusExample(prompt, attrs, ids)


def training_batch(config: TrainConfig, step: int) -> list[CorpusExample]:
    rng = random.Random(config.seed * 7_919 + step)
    return [corpus_example(rng, config) for _ in range(config.batch_size)]


def held_out_examples(config: TrainConfig, count: int) -> list[CorpusExample]:
    rng = random.Random(HELD_OUT_SEED_OFFSET + config.seed)
    return [corpus_example(rng, config) for _ in range(count)]


def text_statistics(config: TrainConfig, encoder: TextEncoder) -> torch.Tensor:
    """Embeddings of corpus prompts (from their own seed stream) for centring."""
    rng = random.Random(2 * HELD_OUT_SEED_OFFSET + config.seed)
    prompts = []
    for _ in range(config.text_statistics_prompts):
        attrs = random_attributes(rng)
        prompts.append(short_prompt(attrs, rng) if rng.random() < 0.5 else caption_for(attrs))
    return encoder.encode(prompts)


def collate(
    examples: list[CorpusExample], encoder: TextEncoder
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text embeddings, inputs = BOS + ids[:-1], targets = ids), right-padded with
    PAD: with causal attention, padding after a sequence cannot change its logits."""
    longest = max(len(example.token_ids) for example in examples)
    targets = torch.full((len(examples), longest), PAD_ID, dtype=torch.long)
    for row, example in enumerate(examples):
        targets[row, : len(example.token_ids)] = torch.tensor(example.token_ids)
    inputs = torch.cat([torch.full((len(examples), 1), BOS_ID), targets[:, :-1]], dim=1)
    return encoder.encode([example.prompt for example in examples]), inputs, targets


def length_buckets(examples: list[CorpusExample], size: int) -> list[list[CorpusExample]]:
    """Micro-batches of similar length: padding a 100-token piece to a 1000-token one
    would spend most of the step's compute on PAD."""
    ordered = sorted(examples, key=lambda example: len(example.token_ids))
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def token_loss(
    model: MusicGPT,
    text_emb: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    header_weight: float = 1.0,
    tempo_weight: float = 1.0,
) -> torch.Tensor:
    """Summed cross-entropy over real (non-PAD) target tokens. The header targets
    (tempo, instruments, drums, and the first Bar, which decides "no more
    instruments") are what only the prompt can predict; weighting them up makes the
    model learn to read the prompt within minutes instead of hours of CPU training."""
    logits = model(text_emb, inputs)
    losses = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD_ID, reduction="none")
    is_bar = (targets == BAR_ID).long()
    in_header = is_bar.cumsum(1) - is_bar == 0  # no Bar strictly before this target
    weights = torch.where(in_header, header_weight, 1.0)
    weights[:, 0] = tempo_weight  # the first target is the tempo
    return (losses * weights).sum()


# --- optimisation -------------------------------------------------------------------


def make_optimizer(model: MusicGPT, config: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices only; biases, norms and embeddings' scale stay free."""
    conditioning = [model.prefix.weight, model.cond.weight]
    is_conditioning = {id(p) for p in conditioning}
    rest = [p for p in model.parameters() if id(p) not in is_conditioning]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        # The prompt's path gets a larger step: its signal is one token in hundreds.
        {"params": conditioning, "weight_decay": 0.0, "lr_scale": config.conditioning_lr_scale},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95))


def learning_rate(config: TrainConfig, step: int, decay_steps: int) -> float:
    """Linear warmup, then cosine decay to min_learning_rate at decay_steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, decay_steps - config.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.min_learning_rate + cosine * (config.learning_rate - config.min_learning_rate)


def train_step(
    model: MusicGPT,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[Batch],
    *,
    lr: float,
    grad_clip: float,
    header_weight: float = 1.0,
    tempo_weight: float = 1.0,
) -> float:
    """One optimiser step over all micro-batches; returns the mean token loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    tokens = sum(int((targets != PAD_ID).sum()) for _, _, targets in micro_batches)
    total = 0.0
    for batch in micro_batches:
        # accumulates to the mean over the step
        loss = token_loss(model, *batch, header_weight=header_weight, tempo_weight=tempo_weight)
        loss = loss / tokens
        loss.backward()
        total += float(loss.detach())
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return total


# --- checkpoints ------------------------------------------------------------------


def save_checkpoint(
    path: Path,
    model: MusicGPT,
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


def load_checkpoint(
    path: Path, model: MusicGPT, optimizer: torch.optim.Optimizer
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
) -> TrainResult:
    """Train (or resume, if checkpoint_dir holds a checkpoint) up to `steps` steps."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_path = checkpoint_dir / CHECKPOINT_NAME
    encoder = text_encoder or get_text_encoder()
    torch.manual_seed(config.seed)
    model = MusicGPT(config.model_config())
    optimizer = make_optimizer(model, config)
    start, history = 0, []
    if checkpoint_path.exists():
        start, history = load_checkpoint(checkpoint_path, model, optimizer)
    else:
        model.set_text_statistics(text_statistics(config, encoder))
    decay_steps = config.lr_decay_steps or steps
    started, tokens = time.perf_counter(), 0
    with torch_threads(config.num_threads):
        for step in range(start, steps):
            examples = training_batch(config, step)
            with torch_threads(config.text_threads):
                # One encoder call per step fills the cache that `collate` reads: the
                # prompt encoder, not the model, was most of a tiny model's step.
                encoder.encode([example.prompt for example in examples])
            buckets = length_buckets(examples, config.micro_batch_size)
            micro_batches = [collate(bucket, encoder) for bucket in buckets]
            lr = learning_rate(config, step, decay_steps)
            loss = train_step(
                model,
                optimizer,
                micro_batches,
                lr=lr,
                grad_clip=config.grad_clip,
                header_weight=config.header_loss_weight,
                tempo_weight=config.tempo_loss_weight,
            )
            tokens += sum(len(example.token_ids) for example in examples)
            history.append({"step": step + 1, "loss": loss, "lr": lr})
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
    model: MusicGPT,
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
        "loss_curve": [(h["step"], round(h["loss"], 4)) for h in history],
        "parameters": model.num_parameters(),
        "train_tokens": tokens,
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
    }
    if evaluate_after:
        metrics["eval"] = evaluate(backend, config)
    backend.metadata["metrics"] = {k: v for k, v in metrics.items() if k != "loss_curve"}
    generator_path = backend.save(checkpoint_path.parent / GENERATOR_NAME)
    return TrainResult(metrics, backend, generator_path, checkpoint_path)


# --- held-out evaluation ------------------------------------------------------------


@torch.no_grad()
def held_out_loss(backend: SymbolicTransformerBackend, examples: list[CorpusExample]) -> float:
    """Mean token-level cross-entropy (nats) over all held-out tokens."""
    total, count = 0.0, 0
    for chunk in length_buckets(examples, 8):
        text_emb, inputs, targets = collate(chunk, backend.text_encoder)
        total += float(token_loss(backend.model.eval(), text_emb, inputs, targets))
        count += int((targets != PAD_ID).sum())
    return total / count


def evaluate(
    backend: SymbolicTransformerBackend, config: TrainConfig, *, seed: int = 1234
) -> dict[str, Any]:
    """Token loss, share of well-formed samples, and prompt adherence on held-out
    prompts, plus what the model does with two contrasting prompts."""
    examples = held_out_examples(config, config.eval_prompts)
    with torch_threads(config.num_threads):
        loss = held_out_loss(backend, examples)
        samples = backend.sample([example.prompt for example in examples], 1, seed)
    scores = [adherence(s.prompt, s.piece) for s in samples]
    return {
        "token_loss": round(loss, 4),
        "valid_share": sum(s.well_formed for s in samples) / len(samples),
        "adherence": round(statistics.mean(score.score for score in scores), 4),
        "adherence_parts": {
            part: round(statistics.mean(getattr(score, part) for score in scores), 4)
            for part in ("tempo", "instruments", "drums", "mode", "density")
        },
        "contrast": contrast(backend, CONTRAST_PROMPTS, n=8, seed=seed),
    }


def contrast(
    backend: SymbolicTransformerBackend, prompts: tuple[str, ...], *, n: int, seed: int
) -> dict[str, dict[str, float]]:
    """Mean measured attributes of n samples per prompt."""
    samples = backend.sample(list(prompts), n, seed)
    report = {}
    for index, prompt in enumerate(prompts):
        measured = [measure(s.piece) for s in samples[index * n : (index + 1) * n]]
        report[prompt] = {
            "tempo_bpm": round(statistics.mean(m.tempo_bpm for m in measured), 1),
            "drums_share": sum(m.drums for m in measured) / n,
            "piano_share": sum(0 in m.programs for m in measured) / n,
            "minor_share": sum(m.mode == "minor" for m in measured) / n,
            "notes_per_bar": round(statistics.mean(m.notes_per_bar for m in measured), 1),
        }
    return report
