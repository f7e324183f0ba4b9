"""A small decoder-only transformer over event tokens, conditioned on a prompt.

nanoGPT-style: the config is a dataclass beside the module. The prompt enters as
`n_prefix` vectors projected from a frozen sentence embedding and placed before
BOS, so every event token can attend to it. Sampling keeps a preallocated
key/value cache per layer, which makes each new token cost one token's compute.

Sequences open with a header that declares the instruments (see tokenizer.py).
Tokens the grammar forbids get probability 0 (a logit mask): the kind that may
come next, rising onsets, ascending instruments, and, once the body has begun,
only the instruments the header declared. So every sample is well formed and
plays exactly its plan, and a tiny model spends none of its few minutes of
training on syntax. The mask is applied in sampling and in teacher-forced
scoring alike, so `forward` scores exactly the policy that `sample` draws from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from generation.music.events import EVENT_VOCABULARY
from generation.music.tokenizer import (
    BAR_ID,
    BOS_ID,
    EOS_ID,
    GRAMMAR_STATES,
    INSTRUMENT_IDS,
    NEXT_KINDS,
    PAD_ID,
    SEGMENT_KINDS,
    VOCAB_SIZE,
    grammar_state,
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

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


SIZES: dict[str, GPTConfig] = {
    "tiny": GPTConfig(block_size=512, n_layer=2, n_head=2, n_embd=64, n_prefix=2),
    "small": GPTConfig(block_size=1024, n_layer=4, n_head=4, n_embd=128),
    "base": GPTConfig(block_size=1024, n_layer=6, n_head=8, n_embd=256),
}

KVCache = tuple[torch.Tensor, torch.Tensor]
# (state kind index, current onset, current instrument id, declared (.., V), in body)
GrammarState = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


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
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                # GPT-2: scale residual projections by depth so activations stay O(1)
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * config.n_layer))
        # PAD and BOS are never targets; masking them everywhere keeps sampling and
        # teacher-forced scoring on exactly the same distribution.
        mask = torch.zeros(config.vocab_size)
        mask[[PAD_ID, BOS_ID]] = float("-inf")
        self.register_buffer("logit_mask", mask, persistent=False)
        for name, value in _grammar_tables(config.vocab_size).items():
            self.register_buffer(name, value, persistent=False)
        # Prompt embeddings share a large common direction; centring and scaling them
        # (statistics set from the corpus before training) makes the differences
        # between prompts, which are what conditioning needs, the bulk of the input.
        self.register_buffer("text_mean", torch.zeros(config.text_dim))
        self.register_buffer("text_scale", torch.ones(config.text_dim))

    def set_text_statistics(self, embeddings: torch.Tensor) -> None:
        self.text_mean.copy_(embeddings.mean(0))
        self.text_scale.copy_(1.0 / (embeddings.std(0) * math.sqrt(len(self.text_scale)) + 1e-6))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

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

    def _grammar_mask(self, logits: torch.Tensor, state: GrammarState) -> torch.Tensor:
        """-inf for the tokens the grammar forbids after `state` (see module doc). A
        header that declares nothing (a checkpoint from before headers) constrains
        nothing, so every state leaves at least one token open. Shapes broadcast:
        logits (..., V), the state's per-row fields (...) and declared (..., V)."""
        kind, position, instrument, declared, in_body = state
        vocab = torch.arange(self.config.vocab_size, device=logits.device)
        allowed = self.grammar_allowed[kind]
        allowed = allowed & ~(
            (self.position_value >= 0) & (self.position_value <= position[..., None])
        )
        allowed = allowed & ~(self.is_instrument & (vocab <= instrument[..., None]))
        undeclared = self.is_instrument & ~declared & declared.any(-1, keepdim=True)
        allowed = allowed & ~(undeclared & in_body[..., None])
        return logits.masked_fill(~allowed, float("-inf"))

    def grammar_state(self, idx: torch.Tensor) -> GrammarState:
        """The grammar state after each input token, for teacher forcing; `sample`
        keeps the same state step by step. "Current" onset and instrument are the
        largest since the segment began; declared holds all header instruments (the
        header is complete before the first body position consults it)."""
        in_body = (idx == BAR_ID).cumsum(1) > 0
        kind = torch.where(in_body, self.body_state[idx], self.header_state[idx])
        position = _segment_max(self.position_value[idx], (idx == BAR_ID).cumsum(1))
        instruments = torch.where(self.is_instrument[idx], idx, -1)
        instrument = _segment_max(instruments, self.starts_segment[idx].cumsum(1))
        declared = torch.zeros(
            len(idx), self.config.vocab_size, dtype=torch.bool, device=idx.device
        )
        declared.scatter_(1, idx.masked_fill(in_body, PAD_ID), True)  # PAD: no instrument
        return kind, position, instrument, (declared & self.is_instrument)[:, None], in_body

    def _advance(self, state: GrammarState, token: torch.Tensor) -> GrammarState:
        """The grammar state after one more token per row (`grammar_state`, stepwise)."""
        _, position, instrument, declared, in_body = state
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
        rows = torch.arange(len(token), device=token.device)
        declared = declared.clone()
        declared[rows, token] |= ~in_body & self.is_instrument[token]
        return kind, position, instrument, declared, in_body

    def forward(self, text_emb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Logits at each token of idx (BOS first): position i predicts idx[:, i + 1]."""
        x = self._embed(text_emb, idx)
        for block in self.blocks:
            x = block(x)
        logits = self._logits(x[:, self.config.n_prefix :])
        return self._grammar_mask(logits, self.grammar_state(idx))

    def new_cache(self, batch: int, length: int) -> list[KVCache]:
        head_dim = self.config.n_embd // self.config.n_head
        shape = (batch, self.config.n_head, length, head_dim)
        return [(torch.empty(shape), torch.empty(shape)) for _ in self.blocks]

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
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Autoregressive sampling for a batch of prompts.

        Returns (tokens, logprobs, lengths): tokens (B, T) padded with PAD after each
        row's end, logprobs (B, T) of each token under the model itself (temperature
        1, no truncation: the policy that `forward` scores, as RL needs), 0 at PAD.
        A row ends at EOS, or at the Bar token that would open bar `max_bars + 1`.
        """
        batch = len(text_emb)
        max_new_tokens = min(max_new_tokens, self.config.block_size - self.config.n_prefix - 1)
        caches = self.new_cache(batch, self.config.n_prefix + 1 + max_new_tokens)
        cond = self.cond(self._standardise(text_emb))
        bos = torch.full((batch, 1), BOS_ID, dtype=torch.long)
        state = self.grammar_state(bos)
        state = (*(field[:, 0] for field in state[:3]), state[3][:, 0], state[4][:, 0])
        logits = self._grammar_mask(self._step(self._embed(text_emb, bos), caches, 0), state)
        pos = self.config.n_prefix + 1
        tokens, logprobs = [], []
        finished = torch.zeros(batch, dtype=torch.bool)
        bars = torch.zeros(batch, dtype=torch.long)
        for _ in range(max_new_tokens):
            token = _choose(logits, temperature, top_k, top_p, generator)
            logprob = F.log_softmax(logits, dim=-1).gather(1, token[:, None])[:, 0]
            token = token.masked_fill(finished, PAD_ID)
            tokens.append(token)
            logprobs.append(logprob.masked_fill(finished, 0.0))
            state = self._advance(state, token)
            bars += token == BAR_ID
            finished = finished | (token == EOS_ID)
            if max_bars is not None:
                finished = finished | (bars > max_bars)
            if bool(finished.all()):
                break
            x = (self.tok_emb(token) + cond)[:, None] + self.pos_emb.weight[pos]
            logits = self._grammar_mask(self._step(x, caches, pos), state)
            pos += 1
        tokens_t, logprobs_t = torch.stack(tokens, 1), torch.stack(logprobs, 1)
        return tokens_t, logprobs_t, (tokens_t != PAD_ID).sum(1)


def _segment_max(values: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    """Running max of values (>= -1) that restarts at -1 wherever `segment` (a
    non-decreasing count along dim 1) steps up: one cummax over segment-offset keys."""
    keys = segment * _SEGMENT_STRIDE + values + 1
    return keys.cummax(1).values - segment * _SEGMENT_STRIDE - 1


def _grammar_tables(vocab_size: int) -> dict[str, torch.Tensor]:
    """Per-token lookup tables for the grammar mask, built from tokenizer.NEXT_KINDS."""
    kinds = [token_kind(EVENT_VOCABULARY[i]) for i in range(vocab_size)]
    allowed = torch.ones(len(GRAMMAR_STATES), vocab_size, dtype=torch.bool)
    for row, state in enumerate(GRAMMAR_STATES):
        if state in NEXT_KINDS:  # after EOS or PAD nothing is scored: all open
            allowed[row] = torch.tensor([kind in NEXT_KINDS[state] for kind in kinds])
    index = GRAMMAR_STATES.index
    is_instrument = torch.zeros(vocab_size, dtype=torch.bool)
    is_instrument[list(INSTRUMENT_IDS)] = True
    return {
        "grammar_allowed": allowed,
        "body_state": torch.tensor(
            [index(grammar_state(i, in_header=False)) for i in range(vocab_size)]
        ),
        "header_state": torch.tensor(
            [index(grammar_state(i, in_header=True)) for i in range(vocab_size)]
        ),
        "position_value": torch.tensor([position_value(i) for i in range(vocab_size)]),
        "starts_segment": torch.tensor([kind in SEGMENT_KINDS for kind in kinds]),
        "is_instrument": is_instrument,
    }


def _choose(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Draw one token per row from the tempered, truncated distribution."""
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
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]
