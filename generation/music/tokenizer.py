"""Token ids for the symbolic transformer, on top of the REMI-like events.

The vocabulary is `events.EVENT_VOCABULARY` unchanged (so the round trip to notes
is the lossless one of `events.py`); this module adds what a language model needs:
a header, EOS framing, a bar budget, a strict well-formedness check for sampled
sequences, and cropping/looping, because the model writes a few bars that the
renderer repeats to the clip length (a short loop keeps sampling fast on a CPU).

The header ("plan") states the piece's global attributes before any note:

    Tempo_72 Program_0 Program_48 Drums | Bar Position_0 Program_0 Pitch_60 ...

Tempo, one Program per melodic instrument (ascending), Drums if there are drum
notes; the body's first `Bar` ends it (no new token: the body always opens with a
Bar and its Program/Drums only follow a Position or a note, so the first Bar is an
unambiguous end marker, and the vocabulary stays that of `events.py`). The prompt
alone decides these few tokens, so they are learned as quickly as the tempo; the
notes after them then read the instruments from the context instead of from a
prompt signal of 1 token in 400.
"""

from __future__ import annotations

from dataclasses import replace

from generation.music.events import (
    BAR,
    DRUMS,
    EVENT_TO_ID,
    EVENT_VOCABULARY,
    TICKS_PER_BAR,
    Piece,
    events_to_piece,
    ids_to_events,
    piece_to_events,
)

VOCAB_SIZE = len(EVENT_VOCABULARY)
PAD_ID = EVENT_TO_ID["PAD"]
BOS_ID = EVENT_TO_ID["BOS"]
EOS_ID = EVENT_TO_ID["EOS"]
BAR_ID = EVENT_TO_ID[BAR]
DRUMS_ID = EVENT_TO_ID[DRUMS]
SPECIAL_IDS = frozenset({PAD_ID, BOS_ID, EOS_ID})
# The tokens that name an instrument (Program_0..127 and Drums), in the header or body.
INSTRUMENT_IDS: tuple[int, ...] = (*(EVENT_TO_ID[f"Program_{p}"] for p in range(128)), DRUMS_ID)

# What may follow each grammar state in a sequence `encode_piece` writes. A state
# is the kind of the last token read ("start" before any), with instruments in the
# header named "HeaderProgram"/"HeaderDrums": there an instrument follows an
# instrument. After EOS (and PAD) nothing is scored, so those states allow anything.
NEXT_KINDS: dict[str, frozenset[str]] = {
    "start": frozenset({"Tempo"}),
    "Tempo": frozenset({"Program", "Drums", "Bar", "EOS"}),
    "HeaderProgram": frozenset({"Program", "Drums", "Bar"}),
    "HeaderDrums": frozenset({"Bar"}),
    "Bar": frozenset({"Bar", "Position", "EOS"}),
    "Position": frozenset({"Program", "Drums"}),
    "Program": frozenset({"Pitch"}),
    "Drums": frozenset({"Pitch"}),
    "Pitch": frozenset({"Velocity"}),
    "Velocity": frozenset({"Duration"}),
    "Duration": frozenset({"Pitch", "Program", "Drums", "Position", "Bar", "EOS"}),
}
GRAMMAR_STATES: tuple[str, ...] = (*NEXT_KINDS, "EOS", "PAD")
# Tokens after which the instruments start over: the header after Tempo, and each
# onset's instrument list after Bar/Position. Within such a segment instruments are
# written in ascending id order (Program_0..127, then Drums), as `note_sort_key` and
# `header_events` order them, so each instrument appears at most once.
SEGMENT_KINDS = frozenset({"Tempo", "Bar", "Position"})


def token_kind(token: str) -> str:
    return token.partition("_")[0]


def grammar_state(token_id: int, *, in_header: bool) -> str:
    """The state after reading `token_id` (in_header: no Bar read yet, this one included)."""
    kind = token_kind(EVENT_VOCABULARY[token_id])
    if kind == "BOS":
        return "start"
    return "Header" + kind if in_header and kind in ("Program", "Drums") else kind


def position_value(token_id: int) -> int:
    """The onset of a Position token, -1 for any other token."""
    kind, _, value = EVENT_VOCABULARY[token_id].partition("_")
    return int(value) if kind == "Position" else -1


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


def header_events(piece: Piece) -> list[str]:
    """The header after the tempo: the melodic programs used (ascending), then Drums."""
    programs = sorted({note.program for note in piece.notes if not note.is_drum})
    header = [f"Program_{program}" for program in programs]
    return header + ([DRUMS] if any(note.is_drum for note in piece.notes) else [])


def sequence_events(piece: Piece) -> list[str]:
    """Header + body: `piece_to_events` with the instruments declared after the tempo."""
    events = piece_to_events(piece)
    return events[:1] + header_events(piece) + events[1:]


def encode_piece(
    piece: Piece, *, max_bars: int | None = None, max_tokens: int | None = None
) -> list[int]:
    """Piece -> ids ending in EOS (no BOS: the model feeds BOS itself). A sequence cut
    at `max_tokens` loses its EOS, so the model never learns to stop mid-bar. The
    header is written for the cropped piece, so it declares exactly what is played."""
    if max_bars is not None:
        piece = crop_piece(piece, max_bars)
    ids = [EVENT_TO_ID[event] for event in sequence_events(piece)] + [EOS_ID]
    return ids if max_tokens is None else ids[:max_tokens]


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
    The header only contributes its tempo; the notes (and their instruments) are the
    body's, so a header that over-declares cannot add or change a note."""
    ids = content_ids(ids)
    split = header_length(ids)
    tempo = [t for t in ids[:split] if EVENT_VOCABULARY[t].startswith("Tempo_")][:1]
    piece = events_to_piece(ids_to_events(tempo + ids[split:]))
    return crop_piece(piece, max_bars) if max_bars is not None else piece


def is_well_formed(ids: list[int], *, max_bars: int | None = None) -> bool:
    """Strict check: the grammar `encode_piece` writes (header, then bars; the rules
    that the model's sampling mask enforces too), at least one note, and a proper end
    (EOS, or one Bar past the bar budget). The rules: onsets rise within each bar,
    instruments ascend within the header and within each onset, and body instruments
    are among those the header declares. An empty header (Tempo alone, as written
    before headers existed) declares nothing and so constrains nothing."""
    state, position, instrument, bars, notes = "start", -1, -1, 0, 0
    declared: set[int] = set()
    for token_id in (i for i in ids if i != PAD_ID):
        kind = token_kind(EVENT_VOCABULARY[token_id])
        if kind not in NEXT_KINDS[state]:
            return False
        if kind == "EOS":
            return notes > 0
        if kind in SEGMENT_KINDS:
            instrument = -1
        if kind == "Bar":
            bars, position = bars + 1, -1
            if max_bars is not None and bars > max_bars:
                return notes > 0
        elif kind == "Position":
            if position_value(token_id) <= position:
                return False
            position = position_value(token_id)
        elif kind in ("Program", "Drums"):
            if token_id <= instrument or (bars and declared and token_id not in declared):
                return False
            instrument = token_id
            declared |= {token_id} if bars == 0 else set()
        notes += kind == "Duration"
        state = grammar_state(token_id, in_header=bars == 0)
    return False  # ran out of tokens before a proper end


def piece_token_count(piece: Piece) -> int:
    return len(sequence_events(piece)) + 1
