"""Prompt adherence as a learned reward: a MuLan-style two-tower model that embeds a prompt
and a rendered clip in one space, so that the cosine of the two says how well the clip fits.

Readable top to bottom: the captioned corpus (composed, rendered, cached) -> the two towers
and their contrastive loss -> training with the shared checkpointed loop -> held-out
retrieval metrics -> the exact attribute match of the symbolic backend, measured the same way
so the two adherence rewards can be compared -> saving and loading the scorer.

Why audio and not notes: the learned reward reads only the rendered sound, so it can judge
every backend (procedural, learned symbolic, MusicGen), while the attribute match needs the
notes and therefore only works for the symbolic ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from generation.music.attributes_measure import adherence
from generation.music.composer import compose
from generation.music.events import events_to_piece, piece_to_events
from generation.music.prompt_sampling import random_prompt_text
from generation.music.prompts import MusicAttributes, parse_prompt
from generation.music.render import SAMPLE_RATE, SOUNDFONT_PATH, normalize_loudness, render_piece
from reward.learning.data import random_crops
from reward.learning.features import DEFAULT_MEL, log_mel
from reward.learning.loop import LoopConfig, ProgressFn, run_loop
from reward.learning.nets import AudioEncoder, EncoderConfig
from reward.learning.scoring import TrainedReward, register_scorer_loader, save_scorer

CORPUS_VERSION = 1  # bump when the way clips are made changes: old caches stop matching
CORPUS_SAVE_EVERY = 64  # clips between partial saves while a corpus is being built
SPLITS = ("train", "test")
TARGET_LUFS = -16.0  # what the platform normalises every clip to (encode_normalized)
CEILING_DBFS = -1.5
SCORER_KIND = "adherence"
MAX_LOGIT_SCALE = 100.0  # CLIP's clamp: a temperature below 0.01 only sharpens noise

# A prompt encoder: list of texts -> (n, text_dim) embeddings. The platform passes MiniLM's
# `get_text_encoder().encode`; an object with an `encode` method is accepted as well.
TextEmbedder = Callable[[list[str]], torch.Tensor]


@dataclass(frozen=True)
class AdherenceConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    text_dim: int = 384  # all-MiniLM-L6-v2
    embed_dim: int = 128  # the shared space both towers project into
    projection_hidden: int = 256
    initial_temperature: float = 0.07  # CLIP's starting point
    corpus_size: int = 512
    held_out_size: int = 64
    clip_seconds: float = 6.0
    crop_seconds: float | None = 4.0  # random training crops; None trains on whole clips
    short_prompt_share: float = 0.5  # as in pretraining: terse prompts besides captions
    batch_size: int = 32
    # One thread: on a 2-core machine that also runs a worker, two threads per process made
    # this model's steps 2-10x slower, never faster than one.
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(steps=600, eval_every=50, num_threads=1)
    )
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdherenceConfig:
        data = dict(data)
        encoder = EncoderConfig(**data.pop("encoder"))
        loop = LoopConfig(**data.pop("loop"))
        return cls(encoder=encoder, loop=loop, **data)

    def split_size(self, split: str) -> int:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.corpus_size if split == "train" else self.held_out_size


# --- corpus -----------------------------------------------------------------------


@dataclass
class Corpus:
    """Captioned clips. Every clip lasts clip_seconds, so the mels stack into one tensor."""

    split: str
    key: str  # hash of the settings that define the clips (the cache file's name)
    texts: list[str]
    # Clips composed for identical attributes are interchangeable answers to each other's
    # prompts: the loss and the retrieval metrics never count one as the other's negative.
    groups: list[str]
    attributes: list[dict[str, Any]]
    events: list[list[str]] = field(repr=False)
    mels: torch.Tensor = field(repr=False)  # (n, n_mels, frames)
    text_embeddings: torch.Tensor = field(repr=False)  # (n, text_dim)

    def __len__(self) -> int:
        return len(self.texts)

    def group_ids(self) -> torch.Tensor:
        index = {group: number for number, group in enumerate(dict.fromkeys(self.groups))}
        return torch.tensor([index[group] for group in self.groups])


def corpus_settings(config: AdherenceConfig, split: str) -> dict[str, Any]:
    """Everything the clips depend on, and nothing else (not the text encoder: the texts'
    embeddings are recomputed on every load, so one cache serves any encoder)."""
    return {
        "version": CORPUS_VERSION,
        "seed": config.seed,
        "split": split,
        "size": config.split_size(split),
        "clip_seconds": config.clip_seconds,
        "short_prompt_share": config.short_prompt_share,
        "target_lufs": TARGET_LUFS,
        "mel": asdict(DEFAULT_MEL),
        "soundfont": Path(SOUNDFONT_PATH).name if SOUNDFONT_PATH else None,
    }


def corpus_key(settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def corpus_item(config: AdherenceConfig, split: str, index: int) -> tuple[str, MusicAttributes]:
    """The prompt and attributes of clip `index`. Each clip has its own RNG, seeded by
    (seed, split, index): the held-out split is a stream training never draws from, and
    clip i is the same however many clips are built."""
    rng = random.Random(f"adherence-corpus/{config.seed}/{split}/{index}")
    # A terse prompt leaves the rest to genre defaults: its attributes are those it parses to.
    return random_prompt_text(rng, short_prompt_share=config.short_prompt_share)


def _composition_seed(config: AdherenceConfig, split: str, index: int) -> int:
    return random.Random(f"adherence-piece/{config.seed}/{split}/{index}").randrange(2**31)


def render_clip(
    config: AdherenceConfig, split: str, index: int
) -> tuple[str, MusicAttributes, list[str], torch.Tensor]:
    """(text, attributes, events, log-mel) of one clip, rendered and loudness-normalised
    the way the platform makes the clips its raters hear (only the Opus round trip is
    skipped: it would triple the time per clip and barely moves the mel)."""
    text, attrs = corpus_item(config, split, index)
    seed = _composition_seed(config, split, index)
    piece = compose(attrs, seed=seed, duration_seconds=config.clip_seconds)
    audio = render_piece(piece, duration_seconds=config.clip_seconds)
    audio = normalize_loudness(audio, SAMPLE_RATE, TARGET_LUFS, CEILING_DBFS)
    return text, attrs, piece_to_events(piece), log_mel(audio, SAMPLE_RATE)


def _group(attrs: MusicAttributes) -> str:
    return json.dumps(attrs.to_dict(), sort_keys=True)


def _load_cache(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload if payload["settings"] == settings else None


def _save_cache(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def build_corpus(
    config: AdherenceConfig,
    split: str,
    cache_dir: Path | str,
    text_encoder: TextEmbedder | Any,
    on_progress: ProgressFn | None = None,
) -> Corpus:
    """Compose, render and cache the clips of one split, then embed their texts.

    Rendering is the slow part (~0.1 s a clip), so the clips are cached in cache_dir under
    a name derived from corpus_settings; a build interrupted part-way (on_progress may
    raise loop.Cancelled) saves what it has and the next build continues from there.
    """
    settings = corpus_settings(config, split)
    key = corpus_key(settings)
    path = Path(cache_dir) / f"adherence-{split}-{key}.pt"
    payload = _load_cache(path, settings)
    if payload is None:
        partial_path = path.with_name(f"adherence-{split}-{key}.partial.pt")
        payload = _load_cache(partial_path, settings) or {
            "settings": settings,
            "texts": [],
            "attributes": [],
            "events": [],
            "mels": [],
        }
        _render_missing(config, split, payload, partial_path, on_progress)
        _save_cache(path, payload)
        partial_path.unlink(missing_ok=True)
    return _corpus_from_payload(payload, split, key, text_encoder)


def _render_missing(
    config: AdherenceConfig,
    split: str,
    payload: dict[str, Any],
    partial_path: Path,
    on_progress: ProgressFn | None,
) -> None:
    """Render the clips the payload lacks, saving it to partial_path now and then and
    whenever the build stops early, so that no finished clip is rendered twice."""
    total = payload["settings"]["size"]
    try:
        for index in range(len(payload["texts"]), total):
            text, attrs, events, mel = render_clip(config, split, index)
            payload["texts"].append(text)
            payload["attributes"].append(attrs.to_dict())
            payload["events"].append(events)
            payload["mels"].append(mel)
            if (index + 1) % CORPUS_SAVE_EVERY == 0 and index + 1 < total:
                _save_cache(partial_path, payload)
            if on_progress is not None:
                on_progress(index + 1, total, {})
    except BaseException:
        _save_cache(partial_path, payload)
        raise


def _corpus_from_payload(
    payload: dict[str, Any], split: str, key: str, text_encoder: TextEmbedder | Any
) -> Corpus:
    embed = getattr(text_encoder, "encode", text_encoder)
    texts = list(payload["texts"])
    attributes = [dict(attrs) for attrs in payload["attributes"]]
    groups = [_group(MusicAttributes.from_dict(attrs)) for attrs in attributes]
    return Corpus(
        split=split,
        key=key,
        texts=texts,
        groups=groups,
        attributes=attributes,
        events=[list(events) for events in payload["events"]],
        mels=torch.stack(list(payload["mels"])),
        text_embeddings=torch.as_tensor(embed(texts), dtype=torch.float32).detach().clone(),
    )


# --- the two towers -------------------------------------------------------------------


def _projection(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class TwoTower(nn.Module):
    """Text tower: the frozen prompt embedding (computed outside, by MiniLM), centred on the
    training prompts' mean, through a trainable projection. Music tower: AudioEncoder over
    the log-mel, then a projection. Both outputs are L2-normalised, so their dot product
    is the cosine the reward reports; a learnable temperature sharpens the contrastive
    softmax (CLIP's logit scale, clamped to at most MAX_LOGIT_SCALE)."""

    def __init__(self, config: AdherenceConfig) -> None:
        super().__init__()
        self.config = config
        self.audio = AudioEncoder(config.encoder)
        hidden = config.projection_hidden
        self.music_head = _projection(config.encoder.embed_dim, hidden, config.embed_dim)
        self.text_head = _projection(config.text_dim, hidden, config.embed_dim)
        # MiniLM embeddings of music prompts all point roughly the same way; centring them
        # makes the differences between prompts what the projection sees first.
        self.register_buffer("text_mean", torch.zeros(config.text_dim))
        initial = math.log(1.0 / config.initial_temperature)
        self.logit_scale = nn.Parameter(torch.tensor(initial))

    def set_text_mean(self, text_embeddings: torch.Tensor) -> None:
        self.text_mean.copy_(text_embeddings.mean(dim=0))

    def embed_text(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_head(text_embeddings - self.text_mean), dim=-1)

    def embed_music(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(self.music_head(self.audio(mel, lengths)), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(0.0, math.log(MAX_LOGIT_SCALE)).exp()

    def logits(
        self, mel: torch.Tensor, text_embeddings: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, batch) scaled cosines: row i is text i against every clip of the batch."""
        music = self.embed_music(mel, lengths)
        return self.scale() * self.embed_text(text_embeddings) @ music.T

    def forward(
        self, mel: torch.Tensor, text_embeddings: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The adherence score: cosine of clip i with prompt i, one value per clip in [-1, 1].
        This is the signature scoring.Scorer calls every reward model with."""
        music = self.embed_music(mel, lengths)
        return (music * self.embed_text(text_embeddings)).sum(dim=1)


def contrastive_loss(logits: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: text i should pick clip i among the batch, and clip i text i.

    Two clips of a batch can be composed for the same attributes (short prompts such as
    "sad ballad" repeat). Such a pair is masked out of the softmax rather than pushed apart:
    calling an equally right answer wrong would teach the model noise."""
    n = logits.shape[0]
    duplicate = (groups[:, None] == groups[None, :]) & ~torch.eye(n, dtype=torch.bool)
    logits = logits.masked_fill(duplicate, float("-inf"))
    targets = torch.arange(n)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


# --- retrieval metrics --------------------------------------------------------------


def retrieval_metrics(similarity: torch.Tensor, groups: torch.Tensor) -> dict[str, float]:
    """Retrieval among n held-out pairs; similarity[i, j] compares text i with clip j and
    clip i is text i's match. Clips composed for the same attributes as the match are left
    out of the ranking (like in the loss). Ties count as broken at random: R@k is the
    chance the match lands in the top k, and the rank is the expected one. `auc` is the
    share of wrong candidates ranked below the match (0.5 by chance), a steadier figure
    than R@1 on a small held-out set."""
    n = similarity.shape[0]
    others = groups[:, None] != groups[None, :]  # symmetric, False on the diagonal
    candidates = others.sum(dim=1).to(torch.float64) + 1
    metrics: dict[str, float] = {"n": n}
    for name, sim in (("text_to_music", similarity), ("music_to_text", similarity.T)):
        sim = sim.to(torch.float64)
        match = sim.diagonal()[:, None]
        above = ((sim > match) & others).sum(dim=1).to(torch.float64)
        tied = ((sim == match) & others).sum(dim=1).to(torch.float64)
        for k in (1, 5):
            metrics[f"{name}_r{k}"] = float(((k - above) / (tied + 1)).clamp(0, 1).mean())
        ranks = (above + 1 + tied / 2).tolist()
        metrics[f"{name}_median_rank"] = float(statistics.median(ranks))
        wrong = (candidates - 1).clamp_min(1)
        metrics[f"{name}_auc"] = float((1 - (above + tied / 2) / wrong).mean())
    metrics["chance_r1"] = float((1 / candidates).mean())
    metrics["chance_r5"] = float((candidates.clamp(max=5) / candidates).mean())
    metrics["chance_median_rank"] = float(statistics.median(((candidates + 1) / 2).tolist()))
    return metrics


@torch.no_grad()
def similarity_matrix(model: TwoTower, corpus: Corpus, chunk: int = 128) -> torch.Tensor:
    """(n, n) cosines of every held-out text with every held-out clip."""
    model.eval()
    music = torch.cat([model.embed_music(part) for part in corpus.mels.split(chunk)])
    text = model.embed_text(corpus.text_embeddings)
    return text @ music.T


def model_retrieval(model: TwoTower, corpus: Corpus) -> dict[str, float]:
    return retrieval_metrics(similarity_matrix(model, corpus), corpus.group_ids())


# --- training ---------------------------------------------------------------------


# The same record every reward model's training returns (kind "adherence"): .save(path)
# writes a scorer file, .scorer() scores clips in memory.
TrainedAdherence = TrainedReward


def train_adherence(
    config: AdherenceConfig,
    corpus_train: Corpus,
    corpus_test: Corpus,
    checkpoint_dir: Path | str,
    on_progress: ProgressFn | None = None,
) -> TrainedAdherence:
    """Train the two towers contrastively (or resume from checkpoint_dir). The curve holds
    the batch loss every step and held-out retrieval every loop.eval_every steps."""
    torch.manual_seed(config.seed)  # the initial weights, identical on every (re)start
    model = TwoTower(config)
    model.set_text_mean(corpus_train.text_embeddings)
    groups = corpus_train.group_ids()
    frames = corpus_train.mels.shape[-1]
    if config.crop_seconds is not None:
        frames = min(frames, round(config.crop_seconds * DEFAULT_MEL.frames_per_second))
    batch_size = min(config.batch_size, len(corpus_train))

    def step_fn(step: int, rng: random.Random) -> tuple[torch.Tensor, dict[str, float]]:
        index = torch.tensor(rng.sample(range(len(corpus_train)), batch_size))
        mel, lengths = random_crops(corpus_train.mels[index], frames, rng)
        logits = model.logits(mel, corpus_train.text_embeddings[index], lengths)
        loss = contrastive_loss(logits, groups[index])
        batch_r1 = (logits.argmax(dim=1) == torch.arange(batch_size)).float().mean()
        return loss, {"batch_r1": float(batch_r1), "logit_scale": float(model.scale().detach())}

    def evaluate() -> dict[str, float]:
        metrics = model_retrieval(model, corpus_test)
        return {
            "heldout_r1": metrics["text_to_music_r1"],
            "heldout_r5": metrics["text_to_music_r5"],
            "heldout_auc": metrics["text_to_music_auc"],
        }

    extra = {
        "adherence": {k: v for k, v in config.to_dict().items() if k != "loop"},
        "corpus": {"train": corpus_train.key, "test": corpus_test.key},
    }
    state = run_loop(
        model,
        step_fn,
        config=config.loop,
        checkpoint_dir=checkpoint_dir,
        evaluate=evaluate,
        on_progress=on_progress,
        extra=extra,
    )
    seen = set(corpus_train.texts)
    metrics: dict[str, Any] = {
        "steps": state.step,
        "final_loss": state.history[-1]["loss"] if state.history else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_clips": len(corpus_train),
        "held_out_texts_seen_in_training": sum(text in seen for text in corpus_test.texts),
        **model_retrieval(model, corpus_test),
    }
    return TrainedReward(
        kind=SCORER_KIND,
        model=model,
        config=config.to_dict(),
        history=state.history,
        resumed_from=state.resumed_from,
        metrics=metrics,
    )


# --- the exact attribute match (symbolic backends only) -------------------------------


def attribute_match_scores(prompts: Sequence[str], events: Sequence[list[str]]) -> list[float]:
    """adherence(prompt, notes).score in [0, 1] for each (prompt, event list) pair: the
    measured tempo, instruments, drums, mode and density against what the prompt asks."""
    return [
        adherence(p, events_to_piece(list(e))).score for p, e in zip(prompts, events, strict=True)
    ]


def attribute_match_retrieval(corpus: Corpus) -> dict[str, float]:
    """retrieval_metrics with the attribute match as the similarity, on the same corpus the
    learned model is evaluated on (n^2 adherence checks: a few seconds for n = 64). The
    score has many ties (e.g. every drum-less piano clip scores alike), counted as above."""
    targets = [parse_prompt(text) for text in corpus.texts]
    pieces = [events_to_piece(events) for events in corpus.events]
    similarity = torch.tensor(
        [[adherence(target, piece).score for piece in pieces] for target in targets]
    )
    return retrieval_metrics(similarity, corpus.group_ids())


def shuffled_texts(corpus: Corpus, seed: int = 0) -> Corpus:
    """The corpus with its texts (and groups) permuted against the clips: a control whose
    retrieval should stay at chance, showing that the real pairing is what is learned."""
    order = list(range(len(corpus)))
    random.Random(seed).shuffle(order)
    return replace(
        corpus,
        key=f"{corpus.key}-shuffled-{seed}",
        texts=[corpus.texts[i] for i in order],
        groups=[corpus.groups[i] for i in order],
        text_embeddings=corpus.text_embeddings[order],
    )


# --- the scorer file ----------------------------------------------------------------


def save_adherence(
    path: Path | str,
    model: TwoTower,
    config: AdherenceConfig,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """A scorer file that scoring.load_scorer reads back: its Scorer.score(mels,
    prompt_embeddings) is the cosine of each clip with its prompt."""
    return save_scorer(
        path, model, kind=SCORER_KIND, config=config.to_dict(), metadata=metadata or {}
    )


def load_adherence_model(payload: dict[str, Any]) -> TwoTower:
    model = TwoTower(AdherenceConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    return model


register_scorer_loader(SCORER_KIND, load_adherence_model)
