"""Decoder-only transformers over event tokens, and the grammar mask they share.

nanoGPT-style: each config is a dataclass beside its module. `MusicGPT` is conditioned on a
prompt: the prompt enters as `n_prefix` vectors projected from a frozen sentence embedding
and placed before BOS, and is added to every token too. It is the first learned generator
(a header of tempo and instruments, then the notes) and, with the plan grammar and a short
block, the planner of `planned.PlannedMusicGPT`. Sampling keeps a preallocated key/value
cache per layer, which makes each new token cost one token's compute.

Tokens the grammar forbids get probability 0 (a logit mask, `GrammarMask`): the kind that
may come next, rising onsets, instruments ascending within an onset, pitches rising within an
onset's instrument (the canonical order of events.py, so a chord ends and a sample cannot
pile notes onto one onset without end), header instruments
ascending (first format) or each at most once (plan), and, once the body has begun, only
the instruments the header declared. So every sample is well formed and plays only what its
header names, and a tiny model spends none of its training on syntax. The mask is applied in
sampling and in teacher-forced scoring alike, so `forward` scores exactly the policy that
`sample` draws from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from generation.music.tokenizer import (
    BAR_ID,
    BOS_ID,
    EOS_ID,
    GRAMMARS,
    INSTRUMENT_IDS,
    PAD_ID,
    SEGMENT_KINDS,
    TOKENS,
    VOCAB_SIZE,
    Grammar,
    grammar_state,
    pitch_value,
    position_value,
    token_kind,
)

_SEGMENT_STRIDE = 1 << 12  # > any token id, for `_segment_max`


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = VOCAB_SIZE
    block_size: int = 1024  # prefix + BOS + events
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 192
    n_prefix: int = 4
    text_dim: int = 384  # MiniLM's embedding size
    dropout: float = 0.0
    grammar: str = "header"  # tokenizer.GRAMMARS: "header" (first format) or "plan"

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


SIZES: dict[str, GPTConfig] = {
    "tiny": GPTConfig(block_size=512, n_layer=2, n_head=2, n_embd=64, n_prefix=2),
    "small": GPTConfig(block_size=1024, n_layer=4, n_head=4, n_embd=128),
    "base": GPTConfig(block_size=1024, n_layer=6, n_head=8, n_embd=256),
}

KVCache = tuple[torch.Tensor, torch.Tensor]
# What sampling draws from: one generator for the batch, one per row, or torch's global one.
Generators = torch.Generator | Sequence[torch.Generator] | None
# (state kind index, current onset, current instrument id, declared (.., V), in body, current
# pitch within the onset's instrument)
GrammarState = tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, pos: int = 0):
        batch, steps, channels = x.shape
        q, k, v = self.qkv(x).split(channels, dim=2)
        q, k, v = (t.view(batch, steps, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        if cache is not None:  # write this step's keys/values, attend to all so far
            cache[0][:, :, pos : pos + steps] = k
            cache[1][:, :, pos : pos + steps] = v
            k, v = cache[0][:, :, : pos + steps], cache[1][:, :, : pos + steps]
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            is_causal=steps > 1,  # only the first cached call or training has > 1 query
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(y.transpose(1, 2).reshape(batch, steps, channels))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, pos: int = 0):
        x = x + self.attn(self.ln_1(x), cache, pos)
        return x + self.mlp(self.ln_2(x))


class GrammarMask(nn.Module):
    """A grammar's rules as per-token lookup tables, and the logit mask they give (see the
    module doc). It holds no weights: its buffers are rebuilt from the grammar on load."""

    def __init__(self, grammar: Grammar, vocab_size: int) -> None:
        super().__init__()
        self.grammar = grammar
        self.vocab_size = vocab_size
        for name, value in _grammar_tables(grammar, vocab_size).items():
            self.register_buffer(name, value, persistent=False)

    def apply(self, logits: torch.Tensor, state: GrammarState) -> torch.Tensor:
        """-inf for the tokens the grammar forbids after `state`. A first-format header that
        declares nothing (a checkpoint from before headers) constrains nothing, so every
        state leaves at least one token open. Shapes broadcast: logits (..., V), the state's
        per-row fields (...) and declared (..., V)."""
        kind, position, instrument, declared, in_body, pitch = state
        vocab = torch.arange(self.vocab_size, device=logits.device)
        body = in_body[..., None]
        allowed = self.allowed[kind]
        allowed = allowed & ~(
            (self.position_value >= 0) & (self.position_value <= position[..., None])
        )
        allowed = allowed & ~((self.pitch_value >= 0) & (self.pitch_value <= pitch[..., None]))
        not_ascending = self.is_instrument & (vocab <= instrument[..., None])
        if not self.grammar.ordered_header:
            not_ascending = not_ascending & body
            cap = self.grammar.max_header_instruments or self.vocab_size
            full = declared.sum(-1, keepdim=True) >= cap
            allowed = allowed & ~(~body & self.is_instrument & (declared | full))
        allowed = allowed & ~not_ascending
        undeclared = self.is_instrument & ~declared & declared.any(-1, keepdim=True)
        allowed = allowed & ~(undeclared & body)
        return logits.masked_fill(~allowed, float("-inf"))

    def state(self, idx: torch.Tensor) -> GrammarState:
        """The grammar state after each input token, for teacher forcing; `advance` keeps the
        same state step by step. "Current" onset and instrument are the largest since the
        segment began. Declared holds the header's instruments read so far (B, T, V); the
        first format only consults it in the body, once the header is complete, so there it
        is the whole header's (B, 1, V)."""
        in_body = (idx == BAR_ID).cumsum(1) > 0
        kind = torch.where(in_body, self.body_state[idx], self.header_state[idx])
        position = _segment_max(self.position_value[idx], (idx == BAR_ID).cumsum(1))
        instruments = torch.where(self.is_instrument[idx], idx, -1)
        instrument = _segment_max(instruments, self.starts_segment[idx].cumsum(1))
        chord = (self.starts_segment[idx] | self.is_instrument[idx]).cumsum(1)
        pitch = _segment_max(self.pitch_value[idx], chord)
        header_ids = idx.masked_fill(in_body | ~self.is_instrument[idx], PAD_ID)
        if self.grammar.ordered_header:
            declared = torch.zeros(
                len(idx), self.vocab_size, dtype=torch.bool, device=idx.device
            ).scatter_(1, header_ids, True)
            declared = (declared & self.is_instrument)[:, None]
        else:
            header_end = int((~in_body).sum(1).max())  # the longest header, in tokens
            read = F.one_hot(header_ids[:, : max(header_end, 1)], self.vocab_size).cumsum(1) > 0
            read = read & self.is_instrument
            steps = torch.arange(idx.shape[1], device=idx.device).clamp(max=read.shape[1] - 1)
            declared = read[:, steps]
        return kind, position, instrument, declared, in_body, pitch

    def initial(self, batch: int, device: torch.device | None = None) -> GrammarState:
        """The state after BOS, one row per sequence."""
        bos = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=device)
        kind, position, instrument, declared, in_body, pitch = self.state(bos)
        declared = declared[:, 0].expand(batch, self.vocab_size).clone()
        return kind[:, 0], position[:, 0], instrument[:, 0], declared, in_body[:, 0], pitch[:, 0]

    def advance(self, state: GrammarState, token: torch.Tensor) -> GrammarState:
        """The grammar state after one more token per row (`state`, stepwise)."""
        _, position, instrument, declared, in_body, pitch = state
        in_body = in_body | (token == BAR_ID)
        kind = torch.where(in_body, self.body_state[token], self.header_state[token])
        position = torch.where(
            token == BAR_ID, -1, torch.maximum(position, self.position_value[token])
        )
        instrument = torch.where(
            self.starts_segment[token],
            -1,
            torch.maximum(instrument, torch.where(self.is_instrument[token], token, -1)),
        )
        pitch = torch.where(
            self.starts_segment[token] | self.is_instrument[token],
            -1,
            torch.maximum(pitch, self.pitch_value[token]),
        )
        rows = torch.arange(len(token), device=token.device)
        declared = declared.clone()
        declared[rows, token] |= ~in_body & self.is_instrument[token]
        return kind, position, instrument, declared, in_body, pitch


class MusicGPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.prefix = nn.Linear(config.text_dim, config.n_prefix * config.n_embd)
        # The same embedding, added to every token too: a direct path from the prompt
        # to each prediction (above all the first, the tempo), which attention to the
        # prefix alone learns only slowly from a few minutes of CPU training.
        self.cond = nn.Linear(config.text_dim, config.n_embd)
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying, as in GPT-2
        init_weights(self, config.n_layer)
        self.register_buffer("logit_mask", never_targets(config.vocab_size), persistent=False)
        self.grammar_mask = GrammarMask(GRAMMARS[config.grammar], config.vocab_size)
        # Prompt embeddings share a large common direction; centring and scaling them
        # (statistics set from the corpus before training) makes the differences
        # between prompts, which are what conditioning needs, the bulk of the input.
        self.register_buffer("text_mean", torch.zeros(config.text_dim))
        self.register_buffer("text_scale", torch.ones(config.text_dim))

    @property
    def grammar(self) -> Grammar:
        return self.grammar_mask.grammar

    @property
    def max_sequence_tokens(self) -> int:
        """The longest token sequence (without BOS) the model can score."""
        return self.config.block_size - self.config.n_prefix - 1

    def set_text_statistics(self, embeddings: torch.Tensor) -> None:
        self.text_mean.copy_(embeddings.mean(0))
        self.text_scale.copy_(text_scale(embeddings))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, text_emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """[prefix vectors | token embeddings] plus positions."""
        text_emb = self._standardise(text_emb)
        prefix = self.prefix(text_emb).view(len(text_emb), self.config.n_prefix, -1)
        tokens = self.tok_emb(idx) + self.cond(text_emb)[:, None]
        x = torch.cat([prefix, tokens], dim=1)
        if x.shape[1] > self.config.block_size:
            raise ValueError(f"sequence of {x.shape[1]} exceeds block_size")
        return x + self.pos_emb(torch.arange(x.shape[1], device=x.device))

    def _standardise(self, text_emb: torch.Tensor) -> torch.Tensor:
        return (text_emb - self.text_mean) * self.text_scale

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.ln_f(h)) + self.logit_mask

    def raw_logits(self, text_emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Logits at each token of idx (BOS first) before the grammar mask."""
        x = self._embed(text_emb, idx)
        for block in self.blocks:
            x = block(x)
        return self._logits(x[:, self.config.n_prefix :])

    def forward(self, text_emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Logits at each token of idx (BOS first): position i predicts idx[:, i + 1]."""
        logits = self.raw_logits(text_emb, idx)
        return self.grammar_mask.apply(logits, self.grammar_mask.state(idx))

    def new_cache(self, batch: int, length: int) -> list[KVCache]:
        return new_cache(self.config, batch, length)

    def conditioning(self, text_emb: torch.Tensor) -> torch.Tensor:
        """The per-token prompt vector that sampling adds to each new token."""
        return self.cond(self._standardise(text_emb))

    def start(self, text_emb: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """Read the prefix and BOS into the caches; the unmasked logits of the first token."""
        bos = torch.full((len(text_emb), 1), BOS_ID, dtype=torch.long, device=text_emb.device)
        return self._step(self._embed(text_emb, bos), caches, 0)

    def feed(
        self, token: torch.Tensor, cond: torch.Tensor, caches: list[KVCache], index: int
    ) -> torch.Tensor:
        """Read token number `index` (BOS is 0) into the caches; the next unmasked logits."""
        pos = self.config.n_prefix + index
        x = (self.tok_emb(token) + cond)[:, None] + self.pos_emb.weight[pos]
        return self._step(x, caches, pos)

    def _step(self, x: torch.Tensor, caches: list[KVCache], pos: int) -> torch.Tensor:
        for block, cache in zip(self.blocks, caches, strict=True):
            x = block(x, cache, pos)
        return self._logits(x[:, -1])

    @torch.inference_mode()
    def sample(
        self,
        text_emb: torch.Tensor,
        *,
        max_new_tokens: int,
        max_bars: int | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: Generators = None,
        bar_limit_of_token: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Autoregressive sampling for a batch of prompts.

        Returns (tokens, logprobs, lengths): tokens (B, T) padded with PAD after each
        row's end, logprobs (B, T) of each token under the model itself (temperature
        1, no truncation: the policy that `forward` scores, as RL needs), 0 at PAD.
        A row ends at EOS, or at the Bar token that would open bar `max_bars + 1` (or
        the budget its Tempo gives, with `bar_limit_of_token`: see StepSampler).
        """
        batch = len(text_emb)
        max_new_tokens = min(max_new_tokens, self.max_sequence_tokens)
        caches = self.new_cache(batch, self.config.n_prefix + 1 + max_new_tokens)
        cond = self.conditioning(text_emb)
        mask = self.grammar_mask
        state = mask.initial(batch)
        logits = mask.apply(self.start(text_emb, caches), state)
        sampler = StepSampler(
            batch, max_bars, temperature, top_k, top_p, generator, bar_limit_of_token
        )
        for index in range(1, max_new_tokens + 1):
            token = sampler.draw(logits)
            state = mask.advance(state, token)
            if sampler.done or index == max_new_tokens:
                break
            if (kept := sampler.drop_finished()) is not None:
                token, state, cond = keep_rows((token, state, cond), kept)
                caches = keep_cache_rows(caches, kept, self.config.n_prefix + index)
            logits = mask.apply(self.feed(token, cond, caches, index), state)
        return sampler.result()


class StepSampler:
    """One token per row per step from masked logits: the draw, its log-prob under the
    untempered policy, PAD after a row's end, and when each row ends (EOS, or the Bar that
    would open bar max_bars + 1). `bar_limit_of_token` (per token id: a bar budget, 0 for
    none) lowers a row's budget when it draws such a token: a Tempo token, when only the
    bars a clip of some length will play are wanted (`bar_limits_for_clip`).

    Rows that ended leave the model's batch (`drop_finished`): sampled lengths spread from a
    few dozen tokens to several hundred, and a batch that ran every row to its longest
    spent most of its time on rows that had ended. The model then gives logits for the rows
    still running only (`running`, their rows in the whole batch), and the sampler keeps the
    whole batch's tokens. Every draw is still made for the whole batch, an ended row from a
    distribution that is certain of PAD, so the random stream, and with it every row's
    tokens, is what it was without dropping rows."""

    def __init__(
        self,
        batch: int,
        max_bars: int | None,
        temperature: float,
        top_k: int,
        top_p: float,
        generator: Generators,
        bar_limit_of_token: torch.Tensor | None = None,
    ) -> None:
        if isinstance(generator, Sequence) and len(generator) != batch:
            raise ValueError(f"{len(generator)} generators for {batch} rows")
        self.options = (temperature, top_k, top_p, generator)
        self.finished = torch.zeros(batch, dtype=torch.bool)
        self.bars = torch.zeros(batch, dtype=torch.long)
        self.bar_limit_of_token = bar_limit_of_token
        no_limit = torch.iinfo(torch.long).max
        self.bar_limits = torch.full((batch,), no_limit if max_bars is None else max_bars)
        self.tokens: list[torch.Tensor] = []
        self.logprobs: list[torch.Tensor] = []
        self.running = torch.arange(batch)

    @property
    def done(self) -> bool:
        return bool(self.finished.all())

    def draw(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token of each running row, from its logits (one row each)."""
        if len(self.running) < len(self.finished):
            whole = torch.full((len(self.finished), logits.shape[1]), float("-inf"))
            whole[:, PAD_ID] = 0.0
            whole[self.running] = logits
            logits = whole
        token = _choose(logits, *self.options)
        logprob = F.log_softmax(logits, dim=-1).gather(1, token[:, None])[:, 0]
        token = token.masked_fill(self.finished, PAD_ID)
        self.tokens.append(token)
        self.logprobs.append(logprob.masked_fill(self.finished, 0.0))
        self.bars += token == BAR_ID
        self.finished = self.finished | (token == EOS_ID)
        if self.bar_limit_of_token is not None:
            limit = self.bar_limit_of_token[token]
            lowered = torch.minimum(self.bar_limits, limit)
            self.bar_limits = torch.where(limit > 0, lowered, self.bar_limits)
        self.finished = self.finished | (self.bars > self.bar_limits)
        return token[self.running]

    def prefix(self, row: int) -> list[int]:
        """The tokens drawn so far for `row` of the whole batch."""
        return [int(step[row]) for step in self.tokens]

    def drop_finished(self) -> torch.Tensor | None:
        """When a quarter or more of the running rows have ended, stop running them: the
        positions, among the rows running until now, of those that go on (for `keep_rows`);
        None while all go on. Not at every ended row: dropping copies the KV caches."""
        ended = self.finished[self.running]
        if int(ended.sum()) * 4 < len(self.running):
            return None
        kept = (~ended).nonzero()[:, 0]
        self.running = self.running[kept]
        return kept

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens, logprobs = torch.stack(self.tokens, 1), torch.stack(self.logprobs, 1)
        return tokens, logprobs, (tokens != PAD_ID).sum(1)


def init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2's initialisation: N(0, 0.02), zero biases, residual projections scaled by depth
    so activations stay O(1)."""
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    for name, param in model.named_parameters():
        if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
            nn.init.normal_(param, std=0.02 / math.sqrt(2 * n_layer))


def never_targets(vocab_size: int) -> torch.Tensor:
    """PAD and BOS are never targets; masking them everywhere keeps sampling and
    teacher-forced scoring on exactly the same distribution."""
    mask = torch.zeros(vocab_size)
    mask[[PAD_ID, BOS_ID]] = float("-inf")
    return mask


def text_scale(embeddings: torch.Tensor) -> torch.Tensor:
    """Per-dimension scale that gives centred prompt embeddings unit total variance. A
    dimension that barely varies over the corpus (MiniLM has three) would be blown up by
    1/std, to a scale of about 1e6, so that a prompt unlike the corpus in it would swamp
    every other input. Its std is floored at a tenth of the median dimension's: it then
    weighs no more than a typical dimension, and its tiny variations stay tiny."""
    std = embeddings.std(0)
    floor = 0.1 * float(std.median()) + 1e-12
    return 1.0 / (std.clamp(min=floor) * math.sqrt(len(std)))


def new_cache(config: GPTConfig, batch: int, length: int) -> list[KVCache]:
    head_dim = config.n_embd // config.n_head
    shape = (batch, config.n_head, length, head_dim)
    return [(torch.empty(shape), torch.empty(shape)) for _ in range(config.n_layer)]


def keep_cache_rows(caches: list[KVCache], rows: torch.Tensor, filled: int) -> list[KVCache]:
    """The caches of `rows` only, as new caches of the same length. Only the `filled`
    positions written so far are copied: the rest holds nothing yet, and a cache is as long
    as the longest sequence the model can write (1,024 positions for the shipped body)."""
    kept = []
    for key, value in caches:
        new_key, new_value = (
            key.new_empty(len(rows), *key.shape[1:]),
            value.new_empty(len(rows), *value.shape[1:]),
        )
        new_key[:, :, :filled] = key[rows, :, :filled]
        new_value[:, :, :filled] = value[rows, :, :filled]
        kept.append((new_key, new_value))
    return kept


def keep_rows(value: Any, rows: torch.Tensor) -> Any:
    """A batch's per-row state (a tensor whose first dimension is the batch, or a tuple,
    list or dict of such) cut to `rows`, when sampling drops the rows that ended."""
    if isinstance(value, torch.Tensor):
        return value[rows]
    if isinstance(value, tuple | list):
        return type(value)(keep_rows(item, rows) for item in value)
    if isinstance(value, dict):
        return {key: keep_rows(item, rows) for key, item in value.items()}
    raise TypeError(f"no rows to keep in {type(value).__name__}")


def _segment_max(values: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    """Running max of values (>= -1) that restarts at -1 wherever `segment` (a
    non-decreasing count along dim 1) steps up: one cummax over segment-offset keys."""
    keys = segment * _SEGMENT_STRIDE + values + 1
    return keys.cummax(1).values - segment * _SEGMENT_STRIDE - 1


def _grammar_tables(grammar: Grammar, vocab_size: int) -> dict[str, torch.Tensor]:
    """Per-token lookup tables for the grammar mask, built from grammar.next_kinds. A token
    whose kind the grammar does not know (a plan token under the first format) maps to the
    PAD state, and no state allows it."""
    kinds = [token_kind(TOKENS[i]) for i in range(vocab_size)]
    states = grammar.states
    allowed = torch.ones(len(states), vocab_size, dtype=torch.bool)
    for row, state in enumerate(states):
        if state in grammar.next_kinds:  # after EOS or PAD nothing is scored: all open
            allowed[row] = torch.tensor([kind in grammar.next_kinds[state] for kind in kinds])

    def index(token: int, in_header: bool) -> int:
        state = grammar_state(token, in_header=in_header)
        return states.index(state) if state in states else states.index("PAD")

    is_instrument = torch.zeros(vocab_size, dtype=torch.bool)
    is_instrument[list(INSTRUMENT_IDS)] = True
    return {
        "allowed": allowed,
        "body_state": torch.tensor([index(i, False) for i in range(vocab_size)]),
        "header_state": torch.tensor([index(i, True) for i in range(vocab_size)]),
        "position_value": torch.tensor([position_value(i) for i in range(vocab_size)]),
        "pitch_value": torch.tensor([pitch_value(i) for i in range(vocab_size)]),
        "starts_segment": torch.tensor([kind in SEGMENT_KINDS for kind in kinds]),
        "is_instrument": is_instrument,
    }


def _choose(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: Generators,
) -> torch.Tensor:
    """Draw one token per row from the tempered, truncated distribution: from one generator
    for the whole batch, or each row from its own."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) > top_p  # keep the token crossing p
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    if isinstance(generator, Sequence):
        # One draw per row, each from its row's generator: a row's tokens are then the same
        # whatever else is in the batch (a clip sampled with a batch equals it sampled alone).
        return torch.cat([
            torch.multinomial(probs[row : row + 1], 1, generator=row_generator)[:, 0]
            for row, row_generator in enumerate(generator)
        ])  # fmt: skip
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
