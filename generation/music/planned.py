"""The planned generator: a planner that reads the prompt and writes the plan, and a body
that reads the plan and plays it.

One sequence, two networks (`tokenizer.PLAN_GRAMMAR` gives the sequence's form):

    BOS  Genre Mood Tempo Key Mode Density Program.. Drums? Register  Bar ... notes ... EOS
         |<---------------- planner: prompt -> plan ------------------->|<--- body ------->

- The planner is a small prompt-conditioned `MusicGPT` (prefix vectors and a per-token
  prompt vector from the frozen MiniLM embedding) over the plan tokens only, up to and
  including the Bar that closes the plan. A dozen tokens: it trains on thousands of
  distinct prompts in minutes, and its sampling cost is negligible.
- The body is a decoder over the whole sequence that never sees the prompt: only the plan.
  The plan reaches each body token twice, through attention and as a summary vector (the
  mean of the plan tokens' own embeddings) added to every token after the plan, the direct
  path that the first generator's per-token prompt vector gave it. Each body token also gets
  the running tallies of its melody against the plan (melody_features.py: the onsets the bar
  still owes, which side of the declared register the melody sits on, the bar's place in
  its phrase), so keeping to the declared density and register is a local decision.

Why two networks: training the plan through a conditioning path shared with the notes
damaged the notes (well-formed samples fell from 0.99 to 0.45 in the measurement behind
this design), because that path reaches every position. Here the planner's weights reach no
note and the body's no plan token: each part learns, and is fine-tuned, without moving the
other, yet one sequence log-prob covers both, so RL and DPO move whichever part the reward
lives in through the same `forward` and `sample` as any generator.

`forward` gives the planner's logits at plan positions and the body's elsewhere, masked by
the grammar and by what a plan may declare beyond it (`PlanMask`: a register band it can be
played in and, under a `PromptLock`, its prompt's kept fields as asked); `sample` draws both
in one lockstep loop with the same masks, so teacher-forced scoring matches the log-probs
recorded while sampling.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from generation.music.evaluation import FIT_PARTS
from generation.music.events import quantize_tempo
from generation.music.melody_features import FEATURE_SIZES, MelodyFeatures, MelodyTracker
from generation.music.model import (
    Block,
    Generators,
    GPTConfig,
    GrammarMask,
    KVCache,
    MusicGPT,
    StepSampler,
    init_weights,
    keep_cache_rows,
    keep_rows,
    never_targets,
    new_cache,
)
from generation.music.plan import MAX_PLAN_INSTRUMENTS, nearest_density, playable_registers
from generation.music.tokenizer import (
    BAR_ID,
    BOS_ID,
    PAD_ID,
    PLAN_GRAMMAR,
    TOKEN_TO_ID,
    TOKENS,
    VOCAB_SIZE,
    Grammar,
)

# Room for BOS and the longest plan the grammar allows (six fields, eight instruments,
# drums, register, Bar) after the prefix.
PLANNER_BLOCK = 32


@dataclass(frozen=True)
class BodyConfig:
    vocab_size: int = VOCAB_SIZE
    block_size: int = 1024  # BOS + plan + events
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    # The running tallies of melody_features.py added to each body token. Off in the
    # checkpoints from before them (their configs do not name it), so those still load.
    melody_features: bool = False

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def planner_config(**overrides: Any) -> GPTConfig:
    defaults = {"block_size": PLANNER_BLOCK, "n_layer": 3, "n_head": 4, "n_embd": 128}
    return GPTConfig(grammar=PLAN_GRAMMAR.name, **(defaults | overrides))


@dataclass(frozen=True)
class PlannedConfig:
    planner: GPTConfig = field(default_factory=planner_config)
    body: BodyConfig = field(default_factory=BodyConfig)

    def __post_init__(self) -> None:
        if self.planner.grammar != PLAN_GRAMMAR.name:
            raise ValueError("the planner writes plans: its grammar must be 'plan'")
        if self.planner.vocab_size != self.body.vocab_size:
            raise ValueError("planner and body must share one vocabulary")

    @property
    def vocab_size(self) -> int:
        return self.body.vocab_size

    def to_dict(self) -> dict[str, Any]:
        return {"planner": self.planner.to_dict(), "body": self.body.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannedConfig:
        return cls(planner=GPTConfig(**data["planner"]), body=BodyConfig(**data["body"]))


SIZES: dict[str, PlannedConfig] = {
    "tiny": PlannedConfig(
        planner=planner_config(n_layer=1, n_head=2, n_embd=32, n_prefix=2),
        body=BodyConfig(block_size=512, n_layer=2, n_head=2, n_embd=64, melody_features=True),
    ),
    "small": PlannedConfig(body=BodyConfig(melody_features=True)),
    "base": PlannedConfig(body=BodyConfig(n_layer=6, n_head=8, n_embd=256, melody_features=True)),
}


class BodyGPT(nn.Module):
    """A decoder over plan and notes with no prompt input: what it plays, it reads from the
    plan. Returns unmasked logits; the caller applies the grammar."""

    def __init__(self, config: BodyConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        # The plan summary: its tokens' mean embedding, projected, added to every body token.
        self.plan_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.plan_proj = nn.Linear(config.n_embd, config.n_embd)
        self.melody = MelodyFeatures() if config.melody_features else None
        # One table for all features, each at its own offset; a token gets their sum.
        self.feature_emb = (
            nn.Embedding(sum(FEATURE_SIZES.values()), config.n_embd)
            if config.melody_features
            else None
        )
        self.register_buffer(
            "feature_offsets",
            torch.tensor([0, *itertools.accumulate(FEATURE_SIZES.values())][:-1]),
            persistent=False,
        )
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))  # type: ignore[arg-type]
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight
        init_weights(self, config.n_layer)
        self.register_buffer("logit_mask", never_targets(config.vocab_size), persistent=False)

    def plan_vectors(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T, C): at each token from the plan's closing Bar on, the plan summary; zero
        before it (those positions are the planner's to predict)."""
        in_body = (idx == BAR_ID).cumsum(1) > 0
        in_plan = ~in_body & (idx != BOS_ID) & (idx != PAD_ID)
        weights = in_plan.float()
        total = (self.plan_emb(idx) * weights[..., None]).sum(1)
        summary = self.plan_proj(total / weights.sum(1, keepdim=True).clamp(min=1))
        return summary[:, None] * in_body[..., None]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[1] > self.config.block_size:
            raise ValueError(f"sequence of {idx.shape[1]} exceeds block_size")
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(positions) + self.plan_vectors(idx)
        if self.melody is not None:
            x = x + self.feature_vectors(self.melody.sequence_features(idx))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x)) + self.logit_mask

    def feature_vectors(self, features: torch.Tensor) -> torch.Tensor:
        """(..., C): the summed embeddings of (..., F) melody feature indices."""
        assert self.feature_emb is not None
        return self.feature_emb(features + self.feature_offsets).sum(-2)

    def tracker(self, batch: int) -> MelodyTracker | None:
        return MelodyTracker(self.melody, batch) if self.melody is not None else None

    def step(
        self, token: torch.Tensor, vector: torch.Tensor, caches: list[KVCache], pos: int
    ) -> torch.Tensor:
        """Read the token at `pos` into the caches, with the vector added to it (its plan
        vector and melody features); the next logits."""
        x = (self.tok_emb(token) + vector)[:, None] + self.pos_emb.weight[pos]
        for block, cache in zip(self.blocks, caches, strict=True):
            x = block(x, cache, pos)
        return self.lm_head(self.ln_f(x[:, -1])) + self.logit_mask


class PlanSummary:
    """The body's plan vector built token by token while sampling, as `plan_vectors` builds
    it from a whole sequence: the running mean of the plan tokens' embeddings, applied from
    the closing Bar on."""

    def __init__(self, body: BodyGPT, batch: int) -> None:
        self.body = body
        self.total = torch.zeros(batch, body.config.n_embd)
        self.count = torch.zeros(batch, 1)

    def vector(self, token: torch.Tensor, in_body: torch.Tensor) -> torch.Tensor:
        """The plan vector to add to `token`; in_body: the grammar's, after this token."""
        in_plan = (~in_body & (token != PAD_ID) & (token != BOS_ID)).float()[:, None]
        self.total = self.total + self.body.plan_emb(token) * in_plan
        self.count = self.count + in_plan
        summary = self.body.plan_proj(self.total / self.count.clamp(min=1))
        return summary * in_body.float()[:, None]

    def keep(self, rows: torch.Tensor) -> None:
        """Only `rows` go on (sampling dropped the rows that ended)."""
        self.total, self.count = self.total[rows], self.count[rows]


def _ids_by_kind() -> dict[str, dict[int, str]]:
    """{token kind: {id: its value}}, e.g. {"Register": {id of Register_60: "60", ...}}."""
    by_kind: dict[str, dict[int, str]] = {}
    for index, token in enumerate(TOKENS):
        kind, _, value = token.partition("_")
        by_kind.setdefault(kind, {})[index] = value
    return by_kind


_BY_KIND = _ids_by_kind()
_PROGRAM_IDS = frozenset(_BY_KIND["Program"])
_REGISTER_IDS = list(_BY_KIND["Register"])
_DRUMS_ID = TOKEN_TO_ID["Drums"]


@dataclass(frozen=True)
class PromptLock:
    """Plan fields a sample declares only as its prompt asks: at each of them every other
    token is forbidden. A generator tuned to keep these fields (RL's kept_fields: those the
    votes did not pull) samples with the lock, so no plan it writes can stray on them,
    however its weights moved: a plan stage on the default taste that only penalised
    straying left held-out plans' drums fit at 0.957 and instrument fit at 0.915 (the
    base's: 1.000, 0.991), as a higher register, written right after the instruments,
    competes with one more of them.
    fixed: (token kind, the only id allowed), e.g. ("Tempo", id of Tempo_120);
    instruments: the Program ids the plan declares, all of them and no other (None: free);
    drums: whether it declares Drums (None: free)."""

    fixed: tuple[tuple[str, int], ...]
    instruments: frozenset[int] | None
    drums: bool | None

    @classmethod
    def of(cls, target: Any, fields: Sequence[str]) -> PromptLock:
        """The lock for a prompt's parsed target (prompts.MusicAttributes) on `fields`."""
        if unknown := set(fields) - set(FIT_PARTS):
            raise ValueError(f"no such prompt fields to keep: {sorted(unknown)}")
        wanted = {
            "tempo": ("Tempo", f"Tempo_{quantize_tempo(target.tempo_bpm)}"),
            "key": ("Key", f"Key_{target.key_root}"),
            "mode": ("Mode", f"Mode_{target.mode}"),
            "density": ("Density", f"Density_{round(nearest_density(target.density) * 100)}"),
        }
        fixed = tuple(
            (wanted[name][0], TOKEN_TO_ID[wanted[name][1]]) for name in fields if name in wanted
        )
        instruments = None
        if "instruments" in fields:
            instruments = frozenset(TOKEN_TO_ID[f"Program_{p}"] for p in target.instruments)
        return cls(fixed, instruments, bool(target.drums) if "drums" in fields else None)

    @functools.cached_property
    def always_forbidden(self) -> list[int]:
        """What the lock forbids whatever the plan has read: the other values of its fixed
        fields, and instruments it does not name. Computed once: `forbidden` runs at every
        plan position of every row sampled or scored."""
        out = [
            index for kind, allowed in self.fixed for index in _BY_KIND[kind] if index != allowed
        ]
        if self.instruments is not None:
            out += [index for index in _PROGRAM_IDS if index not in self.instruments]
        return out

    def forbidden(self, prefix: list[int]) -> list[int]:
        """The ids a plan opening with `prefix` may not write next under the lock (where the
        grammar allows other kinds, forbidding these changes nothing)."""
        declared = set(prefix)
        missing = self.instruments is not None and not self.instruments <= declared
        out = list(self.always_forbidden)
        if self.drums is False or missing:  # the instruments come first, then Drums
            out.append(_DRUMS_ID)
        if self.drums and _DRUMS_ID not in declared:
            out += _REGISTER_IDS
            # Drums count towards the grammar's cap: leave them room.
            if len(declared & _PROGRAM_IDS) >= MAX_PLAN_INSTRUMENTS - 1:
                out += _PROGRAM_IDS
        elif missing:
            out += _REGISTER_IDS
        return out


class PlanMask:
    """What a plan may declare beyond the grammar's rules: only a register band it can be
    played in (`plan.playable_registers`: its melody's home moved by at most the composer's
    shift, given the fields and instruments it declared before), and, under a PromptLock,
    only what its prompt asks on the locked fields. The register is the one plan field a
    prompt never names and a taste may pull far (a higher lead): unmasked, a tuned planner
    declared bands the body was never shown and does not keep to. Rules of what can be
    played and kept, not weights, so every planned checkpoint gets them."""

    def __init__(self) -> None:
        self.bands = {index: int(value) for index, value in _BY_KIND["Register"].items()}
        # Lists, not tensors: one made under sampling's inference mode cannot index a
        # tensor that autograd records.
        self._unplayable: dict[tuple[Any, ...], list[int]] = {}

    def unplayable(self, prefix: list[int]) -> list[int]:
        """The Register ids a plan opening with `prefix` cannot be played in (none for a
        prefix that declares no instrument yet, or lacks a field)."""
        values: dict[str, str] = {}
        programs: list[int] = []
        for token in prefix:
            kind, _, value = TOKENS[token].partition("_")
            if kind == "Program":
                programs.append(int(value))
            elif kind in ("Genre", "Mood", "Key", "Mode"):
                values[kind] = value
        if not programs or len(values) < 4:
            return []
        fields = (values["Genre"].replace("-", " "), values["Mood"], int(values["Key"]),
                  values["Mode"], tuple(programs))  # fmt: skip
        if fields not in self._unplayable:
            playable = playable_registers(*fields)
            self._unplayable[fields] = [
                index for index, band in self.bands.items() if band not in playable
            ]
        return self._unplayable[fields]

    def apply(
        self,
        logits: torch.Tensor,
        rows: list[int],
        prefix: Callable[[int], list[int]],
        locks: Callable[[int], PromptLock | None],
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """logits (N, V); rows: those reading a plan, row n after prefix(n), under locks(n):
        -inf on what row n's plan may not declare next. With targets (N,), teacher forcing:
        a row's own next token stays open, so a sequence that declares what no sample could
        (a corpus piece whose melody's middle landed a band off its home) scores finitely
        among what is allowed, and a sampled one scores as it was drawn."""
        forbidden_rows, forbidden_ids = [], []
        # Read once: indexing a tensor per forbidden id was most of a plan step's masking.
        target_ids = None if targets is None else targets.tolist()
        for row in rows:
            read = prefix(row)
            forbidden = self.unplayable(read)
            if (lock := locks(row)) is not None:
                forbidden = forbidden + lock.forbidden(read)
            if target_ids is not None:
                forbidden = [index for index in forbidden if index != target_ids[row]]
            forbidden_rows += [row] * len(forbidden)
            forbidden_ids += forbidden
        if not forbidden_rows:
            return logits
        mask = torch.zeros(logits.shape, dtype=torch.bool)
        mask[forbidden_rows, forbidden_ids] = True
        masked = logits.masked_fill(mask, float("-inf"))
        # A lock the grammar cannot meet (a prompt asking for more instruments than a plan
        # may declare) leaves a row nothing to draw: that row keeps the grammar's choice.
        stuck = ~torch.isfinite(masked).any(-1)
        return torch.where(stuck[:, None], logits, masked) if bool(stuck.any()) else masked


PLAN_MASK = PlanMask()


class PlannedMusicGPT(nn.Module):
    def __init__(self, config: PlannedConfig) -> None:
        super().__init__()
        self.config = config
        self.planner = MusicGPT(config.planner)
        self.body = BodyGPT(config.body)
        self.grammar_mask = GrammarMask(PLAN_GRAMMAR, config.vocab_size)

    @property
    def grammar(self) -> Grammar:
        return self.grammar_mask.grammar

    @property
    def max_sequence_tokens(self) -> int:
        """The longest token sequence (without BOS) the model can score."""
        return self.config.body.block_size - 1

    def set_text_statistics(self, embeddings: torch.Tensor) -> None:
        self.planner.set_text_statistics(embeddings)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameter_parts(self) -> dict[str, list[nn.Parameter]]:
        """The weights of each network, for optimisers that step them at different rates:
        the planner's reach only plan tokens, the body's only notes."""
        return {"planner": list(self.planner.parameters()), "body": list(self.body.parameters())}

    def forward(
        self,
        text_emb: torch.Tensor,
        idx: torch.Tensor,
        locks: Sequence[PromptLock | None] | None = None,
    ) -> torch.Tensor:
        """Masked logits at each token of idx (BOS first): position i predicts idx[:, i + 1],
        by the planner while the plan is open (no Bar read yet), by the body after. locks:
        each row's PromptLock (or None), as its sample was drawn."""
        state = self.grammar_mask.state(idx)
        in_plan = ~state[4]
        plan_end = int(in_plan.sum(1).max())  # the longest plan (with BOS), in tokens
        room = self.config.planner.block_size - self.config.planner.n_prefix
        if plan_end > room:
            raise ValueError(f"a plan of {plan_end} tokens exceeds the planner's {room}")
        plan_logits = self.planner.raw_logits(text_emb, idx[:, :plan_end])
        logits = self.body(idx)
        head = torch.where(in_plan[:, :plan_end, None], plan_logits, logits[:, :plan_end])
        logits = torch.cat([head, logits[:, plan_end:]], dim=1)
        logits = self.grammar_mask.apply(logits, state)
        # Position t of a plan has read idx[:, : t + 1] and predicts idx[:, t + 1]. The last
        # position's target is not in idx (PAD stands in): only a sequence cut off inside
        # its plan could have a forbidden token there.
        head = logits[:, :plan_end]
        targets = idx[:, 1 : plan_end + 1]
        targets = F.pad(targets, (0, plan_end - targets.shape[1]), value=PAD_ID)
        head = PLAN_MASK.apply(
            head.reshape(-1, head.shape[-1]),
            in_plan[:, :plan_end].reshape(-1).nonzero()[:, 0].tolist(),
            lambda n: idx[n // plan_end, 1 : n % plan_end + 1].tolist(),
            lambda n: locks[n // plan_end] if locks else None,
            targets.reshape(-1),
        ).view_as(head)
        return torch.cat([head, logits[:, plan_end:]], dim=1)

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
        locks: Sequence[PromptLock | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As `MusicGPT.sample`: (tokens, logprobs, lengths). Each step draws every row's
        token from the planner (rows still planning) or the body (the others); the body
        reads every token, the planner only until every plan is closed. locks: each row's
        PromptLock (or None)."""
        batch = len(text_emb)
        max_new_tokens = min(max_new_tokens, self.max_sequence_tokens)
        planner_length = self.config.planner.block_size
        plan_caches = self.planner.new_cache(batch, planner_length)
        body_caches = new_cache(self.config.body, batch, 1 + max_new_tokens)  # type: ignore[arg-type]
        cond = self.planner.conditioning(text_emb)
        summary = PlanSummary(self.body, batch)
        tracker = self.body.tracker(batch)

        def body_vector(token: torch.Tensor, in_body: torch.Tensor) -> torch.Tensor:
            vector = summary.vector(token, in_body)
            if tracker is not None:
                vector = vector + self.body.feature_vectors(tracker.advance(token))
            return vector

        mask = self.grammar_mask
        state = mask.initial(batch)
        bos = torch.full((batch,), BOS_ID, dtype=torch.long)
        plan_logits = self.planner.start(text_emb, plan_caches)
        body_logits = self.body.step(bos, body_vector(bos, state[4]), body_caches, 0)
        sampler = StepSampler(
            batch, max_bars, temperature, top_k, top_p, generator, bar_limit_of_token
        )
        for index in range(1, max_new_tokens + 1):
            planning = ~state[4]
            logits = mask.apply(torch.where(planning[:, None], plan_logits, body_logits), state)
            if bool(planning.any()):
                logits = PLAN_MASK.apply(
                    logits,
                    planning.nonzero()[:, 0].tolist(),
                    lambda n: sampler.prefix(int(sampler.running[n])),
                    lambda n: locks[int(sampler.running[n])] if locks else None,
                )
            token = sampler.draw(logits)
            state = mask.advance(state, token)
            if sampler.done or index == max_new_tokens:
                break
            if (kept := sampler.drop_finished()) is not None:
                token, state, cond, plan_logits = keep_rows((token, state, cond, plan_logits), kept)
                planner_filled = min(self.config.planner.n_prefix + index, planner_length)
                plan_caches = keep_cache_rows(plan_caches, kept, planner_filled)
                body_caches = keep_cache_rows(body_caches, kept, index)
                summary.keep(kept)
                if tracker is not None:
                    tracker.keep(kept)
            if bool((~state[4]).any()):
                plan_logits = self.planner.feed(token, cond, plan_caches, index)
            body_logits = self.body.step(token, body_vector(token, state[4]), body_caches, index)
        return sampler.result()
