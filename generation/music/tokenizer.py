"""Token ids for the symbolic transformer, on top of the REMI-like events.

The vocabulary is `events.EVENT_VOCABULARY` unchanged (so the round trip to notes
is the lossless one of `events.py`); this module adds what a language model needs:
EOS framing, a bar budget, a strict well-formedness check for sampled sequences,
and cropping/looping, because the model writes a few bars that the renderer
repeats to the clip length (a short loop keeps sampling fast on a CPU).
"""

from __future__ import annotations

from dataclasses import replace

from generation.music.events import (
    BAR,
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
SPECIAL_IDS = frozenset({PAD_ID, BOS_ID, EOS_ID})

# What may follow each kind of event in a sequence `piece_to_events` writes.
_NEXT_KINDS: dict[str, frozenset[str]] = {
    "start": frozenset({"Tempo"}),
    "Tempo": frozenset({"Bar"}),
    "Bar": frozenset({"Bar", "Position", "EOS"}),
    "Position": frozenset({"Program", "Drums"}),
    "Program": frozenset({"Pitch"}),
    "Drums": frozenset({"Pitch"}),
    "Pitch": frozenset({"Velocity"}),
    "Velocity": frozenset({"Duration"}),
    "Duration": frozenset({"Pitch", "Program", "Drums", "Position", "Bar", "EOS"}),
}


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


def encode_piece(
    piece: Piece, *, max_bars: int | None = None, max_tokens: int | None = None
) -> list[int]:
    """Piece -> ids ending in EOS (no BOS: the model feeds BOS itself). A sequence cut
    at `max_tokens` loses its EOS, so the model never learns to stop mid-bar."""
    if max_bars is not None:
        piece = crop_piece(piece, max_bars)
    ids = [EVENT_TO_ID[event] for event in piece_to_events(piece)] + [EOS_ID]
    return ids if max_tokens is None else ids[:max_tokens]


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
    """Tolerant decoding: sampled sequences with small grammar slips still give music."""
    piece = events_to_piece(ids_to_events(content_ids(ids)))
    return crop_piece(piece, max_bars) if max_bars is not None else piece


def _kind(token: str) -> str:
    return token.partition("_")[0]


def is_well_formed(ids: list[int], *, max_bars: int | None = None) -> bool:
    """Strict check: the grammar `piece_to_events` writes, at least one note, onsets
    rising within each bar, and a proper end (EOS, or one Bar past the bar budget)."""
    previous, position, bars, notes = "start", -1, 0, 0
    for token in ids_to_events([i for i in ids if i != PAD_ID]):
        kind = _kind(token)
        if kind not in _NEXT_KINDS[previous]:
            return False
        if kind == "EOS":
            return notes > 0
        if kind == "Bar":
            bars, position = bars + 1, -1
            if max_bars is not None and bars > max_bars:
                return notes > 0
        elif kind == "Position":
            value = int(token.partition("_")[2])
            if value <= position:
                return False
            position = value
        notes += kind == "Duration"
        previous = kind
    return False  # ran out of tokens before a proper end


def piece_token_count(piece: Piece) -> int:
    return len(piece_to_events(piece)) + 1
