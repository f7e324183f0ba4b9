"""The learned generator behind the platform's one generator interface.

`SymbolicTransformerBackend` wraps a model and the frozen text encoder. The model is the
planned generator (`planned.PlannedMusicGPT`: a planner writes the plan from the prompt, a
body plays it) or the first learned generator (`model.MusicGPT`: tempo and instruments, then
the notes, all from the prompt), whose checkpoints still load; the interface is the same:

- `sample(prompts, n, seed)` -> `Sample`s with token ids, per-token log-probs, the
  decoded piece and (optionally) the rendered clip;
- `seq_logprobs(prompts, token_ids)` -> teacher-forced, differentiable log-probs;
- `save(path)` / `load(path)`, `config_description()`;
- `generate(prompt, seed=, duration_seconds=)` -> `GeneratedClip`, like the composer.

RL and DPO code sees only this interface. The model writes at most `max_bars`
bars; the clip repeats them to its length (a loop keeps sampling fast on a CPU).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from generation.music.attributes_measure import adherence, measure
from generation.music.composer import bars_for
from generation.music.evaluation import FIT_PARTS
from generation.music.events import Piece, events_to_piece
from generation.music.interface import GeneratedClip, check_duration, encode_clip
from generation.music.model import Generators, GPTConfig, MusicGPT
from generation.music.plan import Plan, plan_for_piece, plan_piece
from generation.music.planned import PlannedConfig, PlannedMusicGPT, PromptLock
from generation.music.prompts import MusicAttributes, parse_prompt
from generation.music.text_encoder import TextEncoder, get_text_encoder
from generation.music.tokenizer import (
    BOS_ID,
    PAD_ID,
    TOKENS,
    crop_piece,
    decode_ids,
    decode_plan,
    encode_piece,
    is_well_formed,
    loop_piece,
    one_strike_per_key,
)

# One checkpoint format per architecture; `load` reads either.
CHECKPOINT_FORMAT = "musicpref-symbolic-v1"  # MusicGPT, the first learned generator
PLANNED_CHECKPOINT_FORMAT = "musicpref-symbolic-planned-v1"  # PlannedMusicGPT
GeneratorModel = MusicGPT | PlannedMusicGPT
MAX_SAMPLING_BATCH = 32  # bounds the KV cache's memory
MAX_PLAN_BATCH = 256  # plans are a dozen tokens: their caches are small
SCORING_CHUNK = 16  # sequences per teacher-forced pass, grouped by length


@dataclass(frozen=True)
class SamplingConfig:
    """What a GeneratorVersion of the symbolic backend may set at sampling time."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    max_bars: int = 4
    # OpenMP threads: per-token ops are tiny, and on a busy 2-core machine waking a
    # second thread costs more than it saves (measured: 1 thread is ~10x faster).
    num_threads: int = 1
    target_lufs: float = -16.0
    # Prompt fields (evaluation.FIT_PARTS) a planned generator's plans declare only as the
    # prompt asks (planned.PromptLock): a generator tuned to keep them samples so.
    kept_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # JSON and checkpoints give lists: keep a tuple, as set.
        object.__setattr__(self, "kept_fields", tuple(self.kept_fields))
        if unknown := set(self.kept_fields) - set(FIT_PARTS):
            raise ValueError(f"kept_fields: no such prompt fields {sorted(unknown)}")

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None) -> SamplingConfig:
        config = dict(config or {})
        unknown = sorted(set(config) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown sampling config keys: {unknown}")
        parsed = cls(**config)
        if parsed.temperature < 0 or not 0 < parsed.top_p <= 1 or parsed.top_k < 0:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0")
        if not 1 <= parsed.max_bars <= 16:
            raise ValueError("max_bars must lie in [1, 16]")
        return parsed


@dataclass
class Sample:
    prompt: str
    token_ids: list[int]  # sampled events, ending in EOS or the Bar past max_bars
    logprobs: torch.Tensor  # (len(token_ids),) under the model, as seq_logprobs scores
    piece: Piece  # the decoded bars (not yet looped to a clip length)
    well_formed: bool
    plan: Plan | None = None  # what a planned generator declared before the notes
    clip: GeneratedClip | None = None

    @property
    def logprob(self) -> float:
        return float(self.logprobs.double().sum())


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run torch ops on `count` threads, then restore the previous setting. More threads
    than free cores makes torch's thread pool spin and wait: on two busy cores, one thread
    scored clips several times faster than two."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class SymbolicTransformerBackend:
    name = "symbolic"

    def __init__(
        self,
        model: GeneratorModel,
        *,
        sampling: SamplingConfig | None = None,
        text_encoder: TextEncoder | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.sampling = sampling or SamplingConfig()
        self._text_encoder = text_encoder
        self.metadata = dict(metadata or {})

    @property
    def text_encoder(self) -> TextEncoder:
        if self._text_encoder is None:  # loaded on first use: it takes seconds
            self._text_encoder = get_text_encoder()
        return self._text_encoder

    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.text_encoder.encode(list(prompts))

    def lock_keywords(self, prompts: Sequence[str]) -> dict[str, Any]:
        """The model's keyword for each prompt's PromptLock on the kept fields: none unless
        a planned generator keeps some (the first generator's header has no such fields)."""
        if not self.sampling.kept_fields or not isinstance(self.model, PlannedMusicGPT):
            return {}
        fields = self.sampling.kept_fields
        return {"locks": [_prompt_lock(prompt, fields) for prompt in prompts]}

    # --- sampling -------------------------------------------------------------

    def sample(
        self,
        prompts: Sequence[str],
        n: int,
        seed: int,
        *,
        render: bool = False,
        duration_seconds: float = 10.0,
        heard_seconds: float | None = None,
    ) -> list[Sample]:
        """n samples per prompt, prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...].

        heard_seconds: write only the bars a clip that long plays (`bars_for` at the tempo
        each sample's header declares, at most max_bars), not max_bars. A clip repeats the
        bars it needs from the start (`clip_piece`), so its notes come out as they would
        have, without the bars no one hears; RL, whose rewards hear clips, samples so."""
        rows = [prompt for prompt in prompts for _ in range(n)]
        generator = torch.Generator().manual_seed(seed)
        limits = None if heard_seconds is None else bar_limits_for_clip(heard_seconds)
        samples: list[Sample] = []
        for start in range(0, len(rows), MAX_SAMPLING_BATCH):
            batch = rows[start : start + MAX_SAMPLING_BATCH]
            samples += self._sample_batch(batch, generator, limits)
        if render:
            for sample in samples:
                sample.clip = self.render(sample, duration_seconds)
        return samples

    def sample_seeded(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        *,
        heard_seconds: float | None = None,
    ) -> list[Sample]:
        """One sample per (prompt, seed), in batches, each row drawn from its own generator
        seeded with its seed: a row's sample does not depend on the others in its batch, so
        a clip made with many (`generate_many`) is the clip `generate` makes alone, and a
        retried job remakes it. heard_seconds as in `sample`."""
        if len(prompts) != len(seeds):
            raise ValueError("one seed per prompt")
        limits = None if heard_seconds is None else bar_limits_for_clip(heard_seconds)
        samples: list[Sample] = []
        for start in range(0, len(prompts), MAX_SAMPLING_BATCH):
            batch = list(prompts[start : start + MAX_SAMPLING_BATCH])
            generators = [
                torch.Generator().manual_seed(seed)
                for seed in seeds[start : start + MAX_SAMPLING_BATCH]
            ]
            samples += self._sample_batch(batch, generators, limits)
        return samples

    def sample_plans(self, prompts: Sequence[str], n: int, seed: int) -> list[Sample]:
        """n plans per prompt, prompt-major, each played by the composer (`plan_piece`)
        instead of the body: a Sample whose tokens are the plan and the Bar that closes it
        (scored, like any sample, by `token_logprobs`: the planner's tokens only) and whose
        piece is what a body that keeps to its plan would play. For judging plans by how
        they sound at milliseconds a sample; planned generators only."""
        if not isinstance(self.model, PlannedMusicGPT):
            raise TypeError("only a planned generator writes a plan of its own")
        rows = [prompt for prompt in prompts for _ in range(n)]
        generator = torch.Generator().manual_seed(seed)
        planner = self.model.config.planner
        room = planner.block_size - planner.n_prefix
        config = self.sampling
        samples: list[Sample] = []
        for start in range(0, len(rows), MAX_PLAN_BATCH):
            batch = rows[start : start + MAX_PLAN_BATCH]
            with torch_threads(config.num_threads):
                # max_bars=0: each row ends at the Bar that closes its plan.
                tokens, logprobs, lengths = self.model.sample(
                    self.embed(batch),
                    max_new_tokens=room,
                    max_bars=0,
                    temperature=config.temperature,
                    top_k=config.top_k,
                    top_p=config.top_p,
                    generator=generator,
                    **self.lock_keywords(batch),
                )
            for row, prompt in enumerate(batch):
                ids = tokens[row, : lengths[row]].tolist()
                plan = decode_plan(ids)
                if plan is None:  # the grammar closes every plan within the planner's room
                    raise RuntimeError(f"an unfinished plan: {ids}")
                piece_seed = int(torch.randint(2**31, (1,), generator=generator))
                piece = plan_piece(plan, seed=piece_seed, bars=config.max_bars)
                samples.append(
                    Sample(
                        prompt=prompt,
                        token_ids=ids,
                        logprobs=logprobs[row, : lengths[row]].clone(),
                        piece=replace(piece, caption=prompt),
                        well_formed=True,
                        plan=plan,
                    )
                )
        return samples

    def _sample_batch(
        self, prompts: list[str], generator: Generators, limits: torch.Tensor | None
    ) -> list[Sample]:
        config = self.sampling
        with torch_threads(config.num_threads):
            tokens, logprobs, lengths = self.model.sample(
                self.embed(prompts),
                max_new_tokens=self.model.max_sequence_tokens,
                max_bars=config.max_bars,
                temperature=config.temperature,
                top_k=config.top_k,
                top_p=config.top_p,
                generator=generator,
                bar_limit_of_token=limits,
                **self.lock_keywords(prompts),
            )
        samples = []
        for row, prompt in enumerate(prompts):
            ids = tokens[row, : lengths[row]].tolist()
            bars = _bar_budget(ids, config.max_bars, limits)
            samples.append(
                Sample(
                    prompt=prompt,
                    token_ids=ids,
                    logprobs=logprobs[row, : lengths[row]].clone(),
                    piece=decode_ids(ids, max_bars=bars),
                    well_formed=is_well_formed(ids, max_bars=bars, grammar=self.model.grammar),
                    plan=decode_plan(ids),
                )
            )
        return samples

    def clip_piece(self, sample: Sample, duration_seconds: float) -> Piece:
        """The sampled bars repeated to cover the clip, captioned with the prompt."""
        piece = sample.piece
        looped = loop_piece(piece, bars_for(duration_seconds, piece.tempo_bpm))
        target = parse_prompt(sample.prompt)
        attributes = {
            **target.to_dict(),
            "measured": measure(piece, lead_hint=target.instruments[0]).to_dict(),
            "adherence": adherence(target, piece).to_dict(),
        }
        if sample.plan is not None:
            attributes["plan"] = sample.plan.to_dict()
        return replace(looped, caption=sample.prompt, attributes=attributes)

    def sequence_for(
        self, prompt: str, events: Sequence[str], attributes: dict[str, Any]
    ) -> list[int]:
        """The ids of a stored track as this model would have written them, for re-scoring
        (DPO learns from votes on stored tracks): the stored clip's notes cropped to
        max_bars behind this model's header, then EOS, cut to the model's context. A
        planned model's own tracks carry the plan it declared; other tracks (the composer's,
        the first generator's) get the plan of their attributes and what they play. A key
        struck twice at one onset is kept once, as the grammar requires."""
        piece = one_strike_per_key(events_to_piece(list(events)))
        max_bars, limit = self.sampling.max_bars, self.model.max_sequence_tokens
        if not isinstance(self.model, PlannedMusicGPT):
            return encode_piece(piece, max_bars=max_bars, max_tokens=limit)
        if "plan" in attributes:
            stored = dict(attributes["plan"])
            plan = Plan(**{**stored, "instruments": tuple(stored["instruments"])})
        else:
            try:
                target = MusicAttributes.from_dict(attributes)
            except (KeyError, TypeError, ValueError):
                target = parse_prompt(prompt)
            plan = plan_for_piece(target, crop_piece(piece, max_bars))
        return encode_piece(piece, plan=plan, max_bars=max_bars, max_tokens=limit)

    def render(self, sample: Sample, duration_seconds: float) -> GeneratedClip:
        check_duration(duration_seconds)
        piece = self.clip_piece(sample, duration_seconds)
        return encode_clip(piece, duration_seconds, target_lufs=self.sampling.target_lufs)

    def generate(self, prompt_text: str, *, seed: int, duration_seconds: float) -> GeneratedClip:
        """The platform's entry point, exactly like ProceduralBackend.generate."""
        return self.generate_many([(prompt_text, seed)], duration_seconds=duration_seconds)[0]

    def generate_many(
        self, requests: Sequence[tuple[str, int]], *, duration_seconds: float
    ) -> list[GeneratedClip]:
        """One clip per (prompt, seed), sampled in batches: the clips `generate` makes one at
        a time, several times faster (a batch of 32 costs little more per step than one row).
        Only the bars each clip plays are sampled; its notes are the same as if all were."""
        check_duration(duration_seconds)
        samples = self.sample_seeded(
            [prompt for prompt, _ in requests],
            [seed for _, seed in requests],
            heard_seconds=duration_seconds,
        )
        return [self.render(sample, duration_seconds) for sample in samples]

    # --- scoring --------------------------------------------------------------

    def token_logprobs(
        self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced per-token log-probs (B, T) and the mask of real tokens."""
        if len(prompts) != len(token_ids):
            raise ValueError("one prompt per token sequence")
        longest = max(len(ids) for ids in token_ids)
        targets = torch.full((len(token_ids), longest), PAD_ID, dtype=torch.long)
        for row, ids in enumerate(token_ids):
            targets[row, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        inputs = torch.cat([torch.full((len(token_ids), 1), BOS_ID), targets[:, :-1]], dim=1)
        logits = self.model(self.embed(prompts), inputs, **self.lock_keywords(prompts))
        mask = targets != PAD_ID
        logprobs = F.log_softmax(logits, dim=-1).gather(2, targets[..., None])[..., 0]
        return logprobs.masked_fill(~mask, 0.0), mask

    def seq_logprobs(
        self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """(B,) summed log-probs of each sequence given its prompt; differentiable.
        Summed in float64: a float32 sum over ~1000 tokens rounds at the 1e-4 level.

        Sequences are scored in chunks of similar length: sampled lengths spread from a few
        dozen to several hundred tokens, and one batch padded to the longest spent most of
        its time on padding (measured: 64 samples of the shipped model, 4x fewer tokens)."""
        if len(prompts) != len(token_ids):
            raise ValueError("one prompt per token sequence")
        chunks = self.scoring_chunks(token_ids)
        totals = []
        for rows in chunks:
            logprobs, _ = self.token_logprobs(
                [prompts[row] for row in rows], [token_ids[row] for row in rows]
            )
            totals.append(logprobs.double().sum(dim=1))
        if not totals:
            return torch.zeros(0, dtype=torch.float64)
        order = torch.tensor([row for rows in chunks for row in rows])
        sorted_totals = torch.cat(totals)
        return torch.zeros_like(sorted_totals).index_copy(0, order, sorted_totals)

    @staticmethod
    def scoring_chunks(token_ids: Sequence[Sequence[int]]) -> list[list[int]]:
        """Row indices in groups of similar length, SCORING_CHUNK rows each: the batches in
        which teacher-forced scoring wastes the least time on padding."""
        order = sorted(range(len(token_ids)), key=lambda row: len(token_ids[row]))
        starts = range(0, len(order), SCORING_CHUNK)
        return [order[start : start + SCORING_CHUNK] for start in starts]

    # --- persistence ----------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        planned = isinstance(self.model, PlannedMusicGPT)
        payload = {
            "format": PLANNED_CHECKPOINT_FORMAT if planned else CHECKPOINT_FORMAT,
            "model_config": self.model.config.to_dict(),
            "state_dict": self.model.state_dict(),
            "sampling": asdict(self.sampling),
            "text_encoder": self.text_encoder_name(),
            "metadata": self.metadata,
        }
        temporary = path.with_suffix(path.suffix + ".tmp")
        torch.save(payload, temporary)
        temporary.replace(path)  # readers never see a half-written file
        return path

    @classmethod
    def load(
        cls, path: str | Path, *, text_encoder: TextEncoder | None = None
    ) -> SymbolicTransformerBackend:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        model: GeneratorModel
        if payload.get("format") == PLANNED_CHECKPOINT_FORMAT:
            model = PlannedMusicGPT(PlannedConfig.from_dict(payload["model_config"]))
        elif payload.get("format") == CHECKPOINT_FORMAT:
            model = MusicGPT(GPTConfig(**payload["model_config"]))
        else:
            raise ValueError(f"{path} is not a symbolic generator checkpoint")
        model.load_state_dict(payload["state_dict"])
        model.eval()
        return cls(
            model,
            sampling=SamplingConfig(**payload["sampling"]),
            text_encoder=text_encoder,
            metadata=payload.get("metadata"),
        )

    def text_encoder_name(self) -> str:
        return self._text_encoder.name if self._text_encoder else "all-MiniLM-L6-v2"

    def config_description(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "architecture": architecture_name(self.model),
            "parameters": self.model.num_parameters(),
            "model": self.model.config.to_dict(),
            "sampling": asdict(self.sampling),
            "text_encoder": self.text_encoder_name(),
            "metadata": self.metadata,
        }


def architecture_name(model: GeneratorModel) -> str:
    if isinstance(model, PlannedMusicGPT):
        return "planner (prompt -> plan) and body (plan -> notes) transformers (PlannedMusicGPT)"
    return "decoder-only transformer, prefix-conditioned (MusicGPT)"


# --- the platform's registry hook ----------------------------------------------------

_LOADED: dict[tuple[str, float], SymbolicTransformerBackend] = {}
_LOADED_LOCK = threading.Lock()


def create_backend(config: dict[str, Any] | None) -> SymbolicTransformerBackend:
    """Factory for `get_backend("symbolic", {"checkpoint": path, **sampling})`.
    Weights are loaded once per process and file version, so workers stay warm."""
    config = dict(config or {})
    checkpoint = config.pop("checkpoint", None)
    if not checkpoint:
        raise ValueError("the symbolic backend needs config['checkpoint']")
    path = Path(checkpoint).resolve()
    key = (str(path), path.stat().st_mtime)
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = SymbolicTransformerBackend.load(path)
        loaded = _LOADED[key]
    sampling = SamplingConfig.from_dict({**asdict(loaded.sampling), **config})
    return SymbolicTransformerBackend(
        loaded.model, sampling=sampling, text_encoder=loaded._text_encoder, metadata=loaded.metadata
    )


@functools.lru_cache(maxsize=4096)
def _prompt_lock(prompt: str, fields: tuple[str, ...]) -> PromptLock:
    return PromptLock.of(parse_prompt(prompt), fields)


def bar_limits_for_clip(heard_seconds: float) -> torch.Tensor:
    """Per token id, the bars a clip of heard_seconds plays at that Tempo token's tempo
    (0 for every other token): `StepSampler`'s bar_limit_of_token."""
    limits = torch.zeros(len(TOKENS), dtype=torch.long)
    for token_id, name in enumerate(TOKENS):
        if name.startswith("Tempo_"):
            limits[token_id] = bars_for(heard_seconds, int(name.split("_", 1)[1]))
    return limits


def _bar_budget(ids: list[int], max_bars: int, limits: torch.Tensor | None) -> int:
    """The bars a sampled row was allowed: max_bars, or less where its Tempo lowered it."""
    lowered = [int(limits[token]) for token in ids if limits is not None and limits[token] > 0]
    return min([max_bars, *lowered])
