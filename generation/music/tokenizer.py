"""Token ids for the symbolic transformer, on top of the REMI-like events.

The vocabulary is `events.EVENT_VOCABULARY` followed by the plan's own tokens
(`plan.PLAN_VOCABULARY`), so the round trip to notes is the lossless one of `events.py`;
this module adds what a language model needs: a header, EOS framing, a bar budget, a strict
well-formedness check for sampled sequences, and cropping/looping, because the model writes
a few bars that the renderer repeats to the clip length (a short loop keeps sampling fast on
a CPU).

A sequence opens with a header that states the piece's global attributes before any note.
Two header formats exist, each with its grammar:

- `PLAN_GRAMMAR` (the planned generator): the full plan of `plan.py`,

      Genre_ballad Mood_sad Tempo_64 Key_0 Mode_minor Density_30 Program_0 Program_48
      Register_60 | Bar Position_0 Program_0 Pitch_60 ...

  with the instruments in role order (lead first), each at most once, and the body's pitched
  notes written relative to the plan's key (Pitch_n: n semitones above the tonic's pitch
  class), so the body learns one set of patterns per mode rather than twelve transposed ones;
- `HEADER_GRAMMAR` (the first learned generator, kept so its checkpoints still load):

      Tempo_72 Program_0 Program_48 Drums | Bar Position_0 Program_0 Pitch_60 ...

  with the instruments in ascending order.

Either way the body's first `Bar` ends the header (the body always opens with a Bar and its
Program/Drums only follow a Position or a note, so the first Bar is an unambiguous end
marker), and the body may only play instruments the header declared.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from generation.music.events import (
    BAR,
    DRUMS,
    EVENT_TO_ID,
    EVENT_VOCABULARY,
    TICKS_PER_BAR,
    Piece,
    canonical_notes,
    events_to_piece,
    ids_to_events,
    piece_to_events,
)
from generation.music.plan import (
    FIELDS_AFTER_INSTRUMENTS,
    FIELDS_BEFORE_INSTRUMENTS,
    MAX_PLAN_INSTRUMENTS,
    PLAN_VOCABULARY,
    Plan,
)

# Every token: the events, then the plan's tokens (appended, so the first generator's ids,
# and its checkpoints' embedding rows, stay what they were).
TOKENS: tuple[str, ...] = (*EVENT_VOCABULARY, *PLAN_VOCABULARY)
TOKEN_TO_ID: dict[str, int] = {token: index for index, token in enumerate(TOKENS)}
VOCAB_SIZE = len(TOKENS)
EVENT_VOCAB_SIZE = len(EVENT_VOCABULARY)
PAD_ID = EVENT_TO_ID["PAD"]
BOS_ID = EVENT_TO_ID["BOS"]
EOS_ID = EVENT_TO_ID["EOS"]
BAR_ID = EVENT_TO_ID[BAR]
DRUMS_ID = EVENT_TO_ID[DRUMS]
SPECIAL_IDS = frozenset({PAD_ID, BOS_ID, EOS_ID})
# The tokens that name an instrument (Program_0..127 and Drums), in the header or body.
INSTRUMENT_IDS: tuple[int, ...] = (*(EVENT_TO_ID[f"Program_{p}"] for p in range(128)), DRUMS_ID)

# What may follow each body state; the header's states come from each Grammar. A state is
# the kind of the last token read, with instruments in the header named "HeaderProgram" /
# "HeaderDrums". After EOS (and PAD) nothing is scored, so those states allow anything.
BODY_NEXT_KINDS: dict[str, frozenset[str]] = {
    "Bar": frozenset({"Bar", "Position", "EOS"}),
    "Position": frozenset({"Program", "Drums"}),
    "Program": frozenset({"Pitch"}),
    "Drums": frozenset({"Pitch"}),
    "Pitch": frozenset({"Velocity"}),
    "Velocity": frozenset({"Duration"}),
    "Duration": frozenset({"Pitch", "Program", "Drums", "Position", "Bar", "EOS"}),
}
# Tokens after which the body's instruments start over: each onset's instrument list after
# Bar/Position. Within such a segment instruments are written in ascending id order
# (Program_0..127, then Drums), as `note_sort_key` orders them, so each appears at most once.
SEGMENT_KINDS = frozenset({"Tempo", "Bar", "Position"})


@dataclass(frozen=True)
class Grammar:
    """A header format and the rules every sequence of it obeys (the model's sampling mask
    enforces the same rules, `is_well_formed` checks them).

    fields_before / fields_after: single-token fields before and after the instrument list;
    ordered_header: header instruments ascend (else they are in role order, each once);
    max_header_instruments: a cap on the header's instruments (None: none)."""

    name: str
    fields_before: tuple[str, ...]
    fields_after: tuple[str, ...]
    ordered_header: bool
    max_header_instruments: int | None
    empty_header_allowed: bool  # the first format let a header declare nothing

    @cached_property
    def next_kinds(self) -> dict[str, frozenset[str]]:
        instruments = frozenset({"Program", "Drums"})
        after = frozenset(self.fields_after[:1] or ("Bar",))
        header: dict[str, frozenset[str]] = {"start": frozenset(self.fields_before[:1])}
        for field, following in zip(self.fields_before, self.fields_before[1:], strict=False):
            header[field] = frozenset({following})
        last = self.fields_before[-1]
        header[last] = instruments | (after | {"EOS"} if self.empty_header_allowed else set())
        header["HeaderProgram"] = instruments | after
        header["HeaderDrums"] = after
        for field, following in zip(self.fields_after, self.fields_after[1:], strict=False):
            header[field] = frozenset({following})
        if self.fields_after:
            header[self.fields_after[-1]] = frozenset({"Bar"})
        return header | BODY_NEXT_KINDS

    @cached_property
    def states(self) -> tuple[str, ...]:
        return (*self.next_kinds, "EOS", "PAD")

    def header_kinds(self) -> frozenset[str]:
        return frozenset({*self.fields_before, *self.fields_after})


HEADER_GRAMMAR = Grammar(
    name="header",
    fields_before=("Tempo",),
    fields_after=(),
    ordered_header=True,
    max_header_instruments=None,
    empty_header_allowed=True,
)
PLAN_GRAMMAR = Grammar(
    name="plan",
    fields_before=FIELDS_BEFORE_INSTRUMENTS,
    fields_after=FIELDS_AFTER_INSTRUMENTS,
    ordered_header=False,
    max_header_instruments=MAX_PLAN_INSTRUMENTS,
    empty_header_allowed=False,
)
GRAMMARS = {grammar.name: grammar for grammar in (HEADER_GRAMMAR, PLAN_GRAMMAR)}


def grammar_of(ids: list[int]) -> Grammar:
    """The format a sequence is written in, told by its first token."""
    first = next((token for token in ids if token != PAD_ID), None)
    if first is not None and token_kind(TOKENS[first]) == PLAN_GRAMMAR.fields_before[0]:
        return PLAN_GRAMMAR
    return HEADER_GRAMMAR


def token_kind(token: str) -> str:
    return token.partition("_")[0]


def grammar_state(token_id: int, *, in_header: bool) -> str:
    """The state after reading `token_id` (in_header: no Bar read yet, this one included)."""
    kind = token_kind(TOKENS[token_id])
    if kind == "BOS":
        return "start"
    return "Header" + kind if in_header and kind in ("Program", "Drums") else kind


def position_value(token_id: int) -> int:
    """The onset of a Position token, -1 for any other token."""
    kind, _, value = TOKENS[token_id].partition("_")
    return int(value) if kind == "Position" else -1


def pitch_value(token_id: int) -> int:
    """The pitch of a Pitch token, -1 for any other token."""
    kind, _, value = TOKENS[token_id].partition("_")
    return int(value) if kind == "Pitch" else -1


def crop_piece(piece: Piece, bars: int) -> Piece:
    """The first `bars` bars; notes that start later are dropped."""
    limit = bars * TICKS_PER_BAR
    notes = [note for note in piece.notes if note.start < limit]
    return replace(piece, notes=notes, bars=min(piece.bars, bars))


def loop_piece(piece: Piece, bars: int) -> Piece:
    """Repeat the piece's bars until it has `bars` bars (or crop it to that)."""
    if piece.bars >= bars or piece.bars == 0:
        return crop_piece(piece, bars)
    period = piece.bars * TICKS_PER_BAR
    repeats = -(-bars // piece.bars)
    notes = [replace(n, start=n.start + k * period) for k in range(repeats) for n in piece.notes]
    return crop_piece(replace(piece, notes=notes, bars=piece.bars * repeats), bars)


def one_strike_per_key(piece: Piece) -> Piece:
    """The piece without a note that strikes a key its instrument already strikes at the same
    onset (the first, in canonical order, stays): one key sounds once per onset, and the
    grammar (pitches rise within an onset's instrument) admits nothing else."""
    seen: set[tuple[int, bool, int, int]] = set()
    notes = []
    for note in canonical_notes(piece.notes):
        key = (note.start, note.is_drum, note.program, note.pitch)
        if key not in seen:
            seen.add(key)
            notes.append(note)
    return replace(piece, notes=notes)


def header_events(piece: Piece) -> list[str]:
    """The first format's header after the tempo: the melodic programs used (ascending),
    then Drums."""
    programs = sorted({note.program for note in piece.notes if not note.is_drum})
    header = [f"Program_{program}" for program in programs]
    return header + ([DRUMS] if any(note.is_drum for note in piece.notes) else [])


def transpose_pitched(piece: Piece, semitones: int) -> Piece:
    """The piece with every pitched (non-drum) note moved by `semitones`; a note that would
    leave MIDI's 0..127 moves by an octave less, so nothing is lost."""
    notes = []
    for note in piece.notes:
        pitch = note.pitch if note.is_drum else note.pitch + semitones
        while pitch < 0:
            pitch += 12
        while pitch > 127:
            pitch -= 12
        notes.append(replace(note, pitch=pitch))
    return replace(piece, notes=canonical_notes(notes))


def sequence_events(piece: Piece, plan: Plan | None = None) -> list[str]:
    """Header + body: `piece_to_events` behind the plan (or, without one, behind the first
    format's header of tempo and instruments). Behind a plan, pitched notes are written
    relative to the plan's key (Pitch_n is n semitones above the tonic's pitch class at
    MIDI 0..11): the body then learns one set of scale-degree patterns per mode instead of
    twelve transposed copies, and a declared key is played by construction."""
    if plan is not None:
        relative = piece_to_events(transpose_pitched(piece, -plan.key_root))
        return plan.events() + relative[1:]
    events = piece_to_events(piece)
    return events[:1] + header_events(piece) + events[1:]


def encode_piece(
    piece: Piece,
    *,
    plan: Plan | None = None,
    max_bars: int | None = None,
    max_tokens: int | None = None,
) -> list[int]:
    """Piece -> ids ending in EOS (no BOS: the model feeds BOS itself). A sequence cut
    at `max_tokens` loses its EOS, so the model never learns to stop mid-bar. Without a
    plan the header is written for the cropped piece, so it declares exactly what is
    played; a plan is the caller's (`plan.plan_for_piece` reads it off the cropped piece)."""
    if max_bars is not None:
        piece = crop_piece(piece, max_bars)
    ids = [TOKEN_TO_ID[event] for event in sequence_events(piece, plan)] + [EOS_ID]
    return ids if max_tokens is None else ids[:max_tokens]


def decode_plan(ids: list[int]) -> Plan | None:
    """The plan a planned sequence declares (None for the first format, or a broken header)."""
    ids = content_ids(ids)
    return Plan.from_events([TOKENS[token] for token in ids[: header_length(ids)]])


def header_length(ids: list[int]) -> int:
    """How many leading ids form the header: those before the first Bar (or EOS)."""
    for index, token in enumerate(ids):
        if token in (BAR_ID, EOS_ID):
            return index
    return len(ids)


def content_ids(ids: list[int]) -> list[int]:
    """Ids up to the first EOS, without padding or framing tokens."""
    out = []
    for token in ids:
        if token == EOS_ID:
            break
        if token not in SPECIAL_IDS:
            out.append(token)
    return out


def decode_ids(ids: list[int], *, max_bars: int | None = None) -> Piece:
    """Tolerant decoding: sampled sequences with small grammar slips still give music.
    The header only contributes its tempo (and a plan its key, which the body's pitches are
    written relative to); the notes and their instruments are the body's, so a header that
    over-declares cannot add a note."""
    ids = content_ids(ids)
    split = header_length(ids)
    tempo = [t for t in ids[:split] if TOKENS[t].startswith("Tempo_")][:1]
    piece = events_to_piece(ids_to_events(tempo + ids[split:]))
    plan = Plan.from_events([TOKENS[token] for token in ids[:split]])
    if plan is not None:  # the body's pitches are relative to the plan's key
        piece = transpose_pitched(piece, plan.key_root)
    return crop_piece(piece, max_bars) if max_bars is not None else piece


def is_well_formed(
    ids: list[int], *, max_bars: int | None = None, grammar: Grammar | None = None
) -> bool:
    """Strict check against `grammar` (by default the one the sequence's first token
    names): the header, then bars, at least one note, and a proper end (EOS, or one Bar
    past the bar budget). The rules are those the model's sampling mask enforces: onsets
    rise within each bar, instruments ascend within each onset, pitches rise within each
    onset's instrument, header instruments ascend
    (first format) or appear once each and at most max_header_instruments times (plan),
    and body instruments are among those the header declares. An empty first-format
    header (Tempo alone, as written before headers existed) constrains nothing."""
    grammar = grammar or grammar_of(ids)
    state, position, instrument, pitch, bars, notes = "start", -1, -1, -1, 0, 0
    declared: set[int] = set()
    for token_id in (i for i in ids if i != PAD_ID):
        kind = token_kind(TOKENS[token_id])
        if kind not in grammar.next_kinds[state]:
            return False
        if kind == "EOS":
            return notes > 0
        if kind in SEGMENT_KINDS:
            instrument = -1
        if kind in SEGMENT_KINDS or kind in ("Program", "Drums"):
            pitch = -1
        if kind == "Pitch":
            if pitch_value(token_id) <= pitch:
                return False
            pitch = pitch_value(token_id)
        if kind == "Bar":
            bars, position = bars + 1, -1
            if max_bars is not None and bars > max_bars:
                return notes > 0
        elif kind == "Position":
            if position_value(token_id) <= position:
                return False
            position = position_value(token_id)
        elif kind in ("Program", "Drums"):
            if not _instrument_allowed(grammar, token_id, instrument, declared, in_header=not bars):
                return False
            instrument = token_id
            declared |= {token_id} if bars == 0 else set()
        notes += kind == "Duration"
        state = grammar_state(token_id, in_header=bars == 0)
    return False  # ran out of tokens before a proper end


def _instrument_allowed(
    grammar: Grammar, token_id: int, previous: int, declared: set[int], *, in_header: bool
) -> bool:
    if not in_header:
        return token_id > previous and (not declared or token_id in declared)
    if grammar.ordered_header:
        return token_id > previous
    cap = grammar.max_header_instruments
    return token_id not in declared and (cap is None or len(declared) < cap)


def piece_token_count(piece: Piece, plan: Plan | None = None) -> int:
    return len(sequence_events(piece, plan)) + 1
