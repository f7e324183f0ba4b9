"""MusicGen (text -> EnCodec codes -> audio) behind the shared generator interface.

The model is `transformers.MusicgenForConditionalGeneration`, loaded only from a
local directory (`$MUSICGEN_PATH` or the backend config's "path") with
`local_files_only=True`: nothing is ever fetched from a hub at run time.

Sampling is our own KV-cached loop over the decoder rather than `model.generate`,
because RL needs the log-probability of every sampled code; `generate` only
exposes processed scores for every position, including the ones the delay
pattern overwrites. Log-probs are those of the model itself: the
classifier-free-guided distribution at temperature 1 without top-k, the same
convention as the symbolic backend. Temperature and top-k only shape which
code is drawn, so a code that leaves the top-k after an update never scores
-inf. `_model_logprobs` serves sampling and teacher-forced re-scoring alike,
so the two agree to float error.

Delay pattern (as in audiocraft/transformers): codebook k is shifted right by
its delay d_k (= k, or k // 2 for stereo, whose channels share a delay), after
a start token at position 0. A clip of F frames is a sequence of
L = F + max(d) + 1 positions; codebook k holds frame f at position f + d_k + 1
and pad everywhere else. Only those positions are sampled and scored.

The weights of the public checkpoints are CC-BY-NC 4.0 (see the README).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.signal import resample_poly
from transformers import AutoTokenizer, MusicgenConfig, MusicgenForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from generation.music import render
from generation.music.interface import GeneratedClip, check_duration, clips_one_by_one

MUSICGEN_PATH_ENV = "MUSICGEN_PATH"
BACKEND_CONFIG_FILE = "musicgen_backend.json"  # sampling settings saved beside the weights
DEFAULT_SAMPLE_SECONDS = 10.0


@dataclass(frozen=True)
class SamplingConfig:
    """How codes are drawn. Guidance is part of the scored model; temperature and
    top-k only shape the draw (see the module docstring)."""

    temperature: float = 1.0
    top_k: int = 250  # audiocraft's default; 0 disables truncation
    guidance_scale: float = 3.0  # classifier-free guidance; <= 1 disables it
    target_lufs: float = -16.0

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None) -> SamplingConfig:
        config = dict(config or {})
        unknown = sorted(set(config) - {field.name for field in fields(cls)})
        if unknown:
            raise ValueError(f"unknown musicgen sampling config keys: {unknown}")
        parsed = cls(**{key: type(getattr(cls, key))(value) for key, value in config.items()})
        if parsed.temperature <= 0 or parsed.top_k < 0:
            raise ValueError("temperature must be > 0 and top_k >= 0")
        if not -40.0 <= parsed.target_lufs <= -6.0:
            raise ValueError("target_lufs must lie in [-40, -6]")
        return parsed


@dataclass
class MusicGenSample:
    prompt: str
    token_ids: torch.Tensor  # (num_codebooks, frames) long: the sampled EnCodec codes
    logprobs: torch.Tensor  # (num_codebooks, frames) under the model, as seq_logprobs scores
    clip: GeneratedClip | None = None  # None when sampled with render=False

    @property
    def logprob(self) -> float:
        return float(self.logprobs.sum())


@dataclass
class _Conditioning:
    """Text-encoder output for a batch, already doubled for guidance if used."""

    encoder_outputs: BaseModelOutput
    attention_mask: torch.Tensor


class MusicGenBackend:
    """MusicGen with the interface of the symbolic backend: sample, seq_logprobs,
    save/load, config_description and generate. The model stays in eval mode
    (no dropout) so that re-scoring reproduces the sampling-time log-probs;
    gradients still flow in eval mode."""

    name = "musicgen"

    def __init__(
        self,
        model: MusicgenForConditionalGeneration,
        tokenizer: Any,
        sampling: SamplingConfig | None = None,
        source: str | None = None,
        device: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.model.freeze_text_encoder()  # conditioning is fixed; only the decoder learns
        self.model.freeze_audio_encoder()
        self.tokenizer = tokenizer
        self.sampling = sampling or SamplingConfig()
        self.source = source
        decoder = model.config.decoder
        self.num_codebooks: int = decoder.num_codebooks
        self.vocab_size: int = decoder.vocab_size
        self.pad_id: int = decoder.pad_token_id
        start = model.generation_config.decoder_start_token_id
        self.start_id: int = start if start is not None else decoder.bos_token_id
        self.delays = self._codebook_delays(decoder.num_codebooks, decoder.audio_channels).to(
            self.device
        )

    # --- construction, persistence ---------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: MusicgenConfig,
        tokenizer: Any,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        device: str | None = None,
    ) -> MusicGenBackend:
        """A randomly initialised model (tests, experiments): no files, no network."""
        torch.manual_seed(seed)
        return cls(MusicgenForConditionalGeneration(config), tokenizer, sampling, device=device)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        sampling: SamplingConfig | None = None,
        device: str | None = None,
    ) -> MusicGenBackend:
        """Weights, tokenizer and (unless given) sampling settings from a local dir."""
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"MusicGen directory {directory} not found: download the weights yourself "
                f"(see README) and point {MUSICGEN_PATH_ENV} at them"
            )
        model = MusicgenForConditionalGeneration.from_pretrained(directory, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        if sampling is None and (directory / BACKEND_CONFIG_FILE).is_file():
            saved = json.loads((directory / BACKEND_CONFIG_FILE).read_text())
            sampling = SamplingConfig.from_dict(saved)
        return cls(model, tokenizer, sampling, source=str(directory), device=device)

    @classmethod
    def from_settings(cls, config: dict[str, Any] | None = None) -> MusicGenBackend:
        """Registry factory: config {"path": ..., **sampling}; path defaults to
        $MUSICGEN_PATH and the given sampling keys override the saved ones. The
        weights are loaded once per process and path: a worker builds a backend per job.
        Backends built here share one model object, so fine-tuning code uses `load`."""
        config = dict(config or {})
        path = config.pop("path", None) or os.environ.get(MUSICGEN_PATH_ENV)
        if not path:
            raise ValueError(f"musicgen backend needs config 'path' or ${MUSICGEN_PATH_ENV}")
        device = config.pop("device", None)
        shared = _load_shared(str(Path(path).resolve()), device)
        sampling = SamplingConfig.from_dict({**asdict(shared.sampling), **config})
        return cls(shared.model, shared.tokenizer, sampling, source=str(path), device=device)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """A directory that `load` (and `from_pretrained`) reads back."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / BACKEND_CONFIG_FILE).write_text(json.dumps(asdict(self.sampling), indent=2))
        return directory

    def config_description(self) -> dict[str, Any]:
        decoder = self.model.config.decoder
        return {
            "backend": self.name,
            "source": self.source,
            "device": str(self.device),
            "decoder_layers": decoder.num_hidden_layers,
            "hidden_size": decoder.hidden_size,
            "num_codebooks": self.num_codebooks,
            "codebook_size": self.vocab_size,
            "audio_channels": decoder.audio_channels,
            "frame_rate": self.frame_rate,
            "sampling_rate": self.model.config.audio_encoder.sampling_rate,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "trainable_parameters": sum(p.numel() for p in self.parameters()),
            "sampling": asdict(self.sampling),
        }

    def parameters(self) -> list[torch.nn.Parameter]:
        """What an optimiser may move: the decoder and the text->decoder projection."""
        return [p for p in self.model.parameters() if p.requires_grad]

    # --- the generator interface ---------------------------------------------------

    @property
    def frame_rate(self) -> float:
        audio = self.model.config.audio_encoder
        return audio.sampling_rate / audio.hop_length

    def frames_for(self, duration_seconds: float) -> int:
        frames = math.ceil(duration_seconds * self.frame_rate)
        length = frames + int(self.delays.max()) + 1
        if length > self.model.config.decoder.max_position_embeddings:
            raise ValueError(f"{duration_seconds} s exceeds the decoder's maximum length")
        return frames

    @torch.no_grad()
    def sample(
        self,
        prompts: Sequence[str],
        n: int,
        seed: int,
        *,
        render: bool = True,
        duration_seconds: float = DEFAULT_SAMPLE_SECONDS,
    ) -> list[MusicGenSample]:
        """n samples per prompt, prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...], with
        codes, log-probs and (unless render=False) the encoded clip. Unlike the
        symbolic backend, the codes already fix the duration, so it is given here."""
        check_duration(duration_seconds)
        expanded = [prompt for prompt in prompts for _ in range(n)]
        generator = torch.Generator(device=self.device).manual_seed(seed)
        codes, logprobs = self._sample_codes(expanded, self.frames_for(duration_seconds), generator)
        samples = [MusicGenSample(p, codes[i], logprobs[i]) for i, p in enumerate(expanded)]
        if render:
            for sample, audio in zip(samples, self._decode_audio(codes), strict=True):
                sample.clip = self._to_clip(sample.prompt, audio, duration_seconds)
        return samples

    def seq_logprobs(
        self, prompts: Sequence[str], token_ids: Sequence[torch.Tensor] | torch.Tensor
    ) -> torch.Tensor:
        """(N,) summed log-probs of each code sequence given its prompt; differentiable."""
        logprobs, _ = self.token_logprobs(prompts, token_ids)
        return logprobs.sum(dim=(1, 2))

    @staticmethod
    def scoring_chunks(token_ids: Sequence[torch.Tensor] | torch.Tensor) -> list[list[int]]:
        """One batch: the clips of a call have the same length, so nothing is padded."""
        return [list(range(len(token_ids)))] if len(token_ids) else []

    def token_logprobs(
        self, prompts: Sequence[str], token_ids: Sequence[torch.Tensor] | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced per-code log-probs (N, num_codebooks, frames) from one
        forward pass, and the mask of real codes (all True: every clip in a call has
        the same length; the mask keeps the symbolic backend's signature)."""
        codes = torch.stack(list(token_ids)) if not torch.is_tensor(token_ids) else token_ids
        codes = codes.to(self.device)
        if codes.shape[0] != len(prompts) or codes.shape[1] != self.num_codebooks:
            raise ValueError("token_ids must be (len(prompts), num_codebooks, frames)")
        sequence = self._delay(codes)
        inputs = sequence[:, :, :-1].reshape(-1, sequence.shape[-1] - 1)
        logits = self._forward(self._condition(prompts), inputs, cache=None).logits
        logprobs = self._model_logprobs(logits, len(prompts))
        targets = sequence[:, :, 1:]
        picked = logprobs.gather(-1, targets.clamp(max=self.vocab_size - 1)[..., None])[..., 0]
        return self._undelay(picked, codes.shape[-1]), torch.ones_like(codes, dtype=torch.bool)

    def generate(self, prompt_text: str, *, seed: int, duration_seconds: float) -> GeneratedClip:
        sample = self.sample([prompt_text], 1, seed, duration_seconds=duration_seconds)[0]
        assert sample.clip is not None  # rendered by default
        return sample.clip

    def generate_many(
        self, requests: Sequence[tuple[str, int]], *, duration_seconds: float
    ) -> list[GeneratedClip]:
        # One at a time: `sample` draws a batch from one generator, so a clip made in a batch
        # would differ from the clip `generate` makes for the same seed.
        return clips_one_by_one(self, requests, duration_seconds=duration_seconds)

    # --- the delay pattern ------------------------------------------------------------

    @staticmethod
    def _codebook_delays(num_codebooks: int, audio_channels: int) -> torch.Tensor:
        if audio_channels == 2:  # codebooks interleave left/right; a pair shares its delay
            return torch.arange(num_codebooks // 2).repeat_interleave(2)
        return torch.arange(num_codebooks)

    def _frame_index(self, batch: int, frames: int) -> torch.Tensor:
        """(batch, K, frames): where frame f of codebook k sits among the targets
        (positions 1..L-1 of the delayed sequence)."""
        index = self.delays[:, None] + torch.arange(frames, device=self.device)[None, :]
        return index.expand(batch, -1, -1)

    def _delay(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, K, F) codes -> (N, K, L) delayed sequence with start and pads."""
        batch, codebooks, frames = codes.shape
        length = frames + int(self.delays.max()) + 1
        sequence = torch.full(
            (batch, codebooks, length), self.pad_id, dtype=torch.long, device=self.device
        )
        sequence[:, :, 0] = self.start_id
        sequence[:, :, 1:] = sequence[:, :, 1:].scatter(
            2, self._frame_index(batch, frames), codes.long()
        )
        return sequence

    def _undelay(self, targets: torch.Tensor, frames: int) -> torch.Tensor:
        """(N, K, L-1) values per target position -> (N, K, F) values per frame."""
        return targets.gather(2, self._frame_index(targets.shape[0], frames))

    def _valid_targets(self, frames: int) -> torch.Tensor:
        """(K, L-1) bool: target positions that hold a code rather than a pad."""
        length = frames + int(self.delays.max()) + 1
        position = torch.arange(length - 1, device=self.device)[None, :]
        return (position >= self.delays[:, None]) & (position < self.delays[:, None] + frames)

    # --- model calls --------------------------------------------------------------------

    @property
    def _guided(self) -> bool:
        return self.sampling.guidance_scale > 1.0

    @torch.no_grad()
    def _condition(self, prompts: Sequence[str]) -> _Conditioning:
        """Frozen T5 encoding; with guidance the batch is doubled with a null
        condition (zero states, zero mask), exactly as transformers does."""
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt")
        tokens = {key: value.to(self.device) for key, value in tokens.items()}
        hidden = self.model.text_encoder(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).last_hidden_state
        mask = tokens["attention_mask"]
        if self._guided:
            hidden = torch.cat([hidden, torch.zeros_like(hidden)])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        return _Conditioning(BaseModelOutput(last_hidden_state=hidden), mask)

    def _forward(self, condition: _Conditioning, decoder_input_ids: torch.Tensor, cache: Any):
        if self._guided:
            decoder_input_ids = decoder_input_ids.repeat(2, 1)
        return self.model(
            encoder_outputs=condition.encoder_outputs,
            attention_mask=condition.attention_mask,
            decoder_input_ids=decoder_input_ids,
            past_key_values=cache,
            use_cache=cache is not None,
        )

    def _model_logprobs(self, logits: torch.Tensor, batch: int) -> torch.Tensor:
        """Raw logits ((2x)N*K, T, V) -> log-probs (N, K, T, V) of the guided model."""
        if self._guided:  # combined before the softmax, as transformers does
            conditional, unconditional = logits.split(logits.shape[0] // 2)
            logits = unconditional + (conditional - unconditional) * self.sampling.guidance_scale
        return logits.log_softmax(-1).reshape(batch, self.num_codebooks, *logits.shape[1:])

    def _draw(self, logprobs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(N, K, V) -> (N, K) codes from the tempered, top-k truncated distribution."""
        logits = logprobs / self.sampling.temperature
        if 0 < self.sampling.top_k < logits.shape[-1]:
            kth = logits.topk(self.sampling.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        drawn = torch.multinomial(logits.flatten(0, 1).softmax(-1), 1, generator=generator)
        return drawn.view(logits.shape[:2])

    @torch.no_grad()  # the recorded log-probs are data; seq_logprobs is the differentiable path
    def _sample_codes(
        self, prompts: list[str], frames: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """KV-cached ancestral sampling; returns codes and log-probs, both (N, K, F)."""
        batch, codebooks = len(prompts), self.num_codebooks
        condition = self._condition(prompts)
        empty = torch.zeros(batch, codebooks, frames, dtype=torch.long, device=self.device)
        sequence = self._delay(empty)
        valid = self._valid_targets(frames)
        logprobs = torch.zeros(batch, codebooks, valid.shape[1], device=self.device)
        cache = _empty_cache(self.model.config.decoder)
        for step in range(valid.shape[1]):
            inputs = sequence[:, :, step : step + 1].reshape(batch * codebooks, 1)
            output = self._forward(condition, inputs, cache)
            cache = output.past_key_values
            step_logprobs = self._model_logprobs(output.logits, batch)[:, :, -1]
            drawn = self._draw(step_logprobs, generator)
            picked = step_logprobs.gather(-1, drawn[..., None])[..., 0]
            sequence[:, :, step + 1] = torch.where(valid[:, step], drawn, self.pad_id)
            logprobs[:, :, step] = torch.where(valid[:, step], picked, 0.0)
        return self._undelay(sequence[:, :, 1:], frames), self._undelay(logprobs, frames)

    # --- audio ------------------------------------------------------------------------------

    @torch.no_grad()
    def _decode_audio(self, codes: torch.Tensor) -> np.ndarray:
        """(N, K, F) codes -> (N, samples, channels) float32 at the codec's rate."""
        codec = self.model.audio_encoder
        scales = [None] * codes.shape[0]
        if self.model.config.decoder.audio_channels == 2:
            left = codec.decode(codes[None, :, ::2], audio_scales=scales).audio_values
            right = codec.decode(codes[None, :, 1::2], audio_scales=scales).audio_values
            values = torch.cat([left, right], dim=1)
        else:
            values = codec.decode(codes[None], audio_scales=scales).audio_values
        return values.transpose(1, 2).float().cpu().numpy()

    def _to_clip(self, prompt: str, audio: np.ndarray, duration_seconds: float) -> GeneratedClip:
        """Resample to the Opus rate, cut to exactly the duration, normalise, encode."""
        source_rate = self.model.config.audio_encoder.sampling_rate
        divisor = math.gcd(render.SAMPLE_RATE, source_rate)
        audio = resample_poly(audio, render.SAMPLE_RATE // divisor, source_rate // divisor, axis=0)
        samples = round(duration_seconds * render.SAMPLE_RATE)
        audio = np.pad(audio[:samples], ((0, max(0, samples - len(audio))), (0, 0)))
        audio = audio[:, 0] if audio.shape[1] == 1 else audio
        return GeneratedClip(
            audio_bytes=render.encode_normalized(
                audio.astype(np.float32), render.SAMPLE_RATE, target_lufs=self.sampling.target_lufs
            ),
            file_extension="ogg",
            mime_type="audio/ogg",
            sample_rate=render.SAMPLE_RATE,
            duration_seconds=float(duration_seconds),
            caption=prompt,
            attributes={},
            events=[],
        )


def _empty_cache(decoder_config: Any) -> Any:
    """Self- and cross-attention caches for one sampling run."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    return EncoderDecoderCache(
        DynamicCache(config=decoder_config), DynamicCache(config=decoder_config)
    )


@lru_cache(maxsize=2)
def _load_shared(path: str, device: str | None) -> MusicGenBackend:
    """Weights shared by every backend a process builds for this path (serving)."""
    return MusicGenBackend.load(path, device=device)


def resolve_device(device: str | None) -> torch.device:
    """The device to run on: the argument, else $MUSICGEN_DEVICE, else CUDA when present.
    MusicGen is GPU-sized; the CPU is for tests and tiny configs."""
    chosen = device or os.environ.get("MUSICGEN_DEVICE")
    return torch.device(chosen or ("cuda" if torch.cuda.is_available() else "cpu"))
