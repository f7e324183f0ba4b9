"""Symbolic music model and a REMI-like event format.

Time is measured in ticks of a 16th-note grid (4 ticks per beat, 16 per 4/4 bar).
The event format is what the symbolic transformer is trained on, so it has to be
a lossless view of a quantised piece: every value the composer emits lies on the
grids defined here (tempo buckets, velocity levels, durations of 1..64 ticks).

A piece is written bar by bar:

    Tempo_120 Bar Position_0 Program_0 Pitch_60 Velocity_87 Duration_4
              Position_4 Pitch_64 Velocity_79 Duration_4 ... Bar ...

`Position_*` is written when the onset changes within a bar, `Program_*`/`Drums`
when the instrument changes (or after a new position), and each note is the
triple Pitch, Velocity, Duration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TICKS_PER_BEAT = 4
TICKS_PER_BAR = 16
MAX_DURATION_TICKS = 64
DRUM_PROGRAM = 0  # drum notes carry program 0 so that the round trip is exact

VELOCITY_LEVELS: tuple[int, ...] = tuple(7 + 8 * i for i in range(16))  # 7..127
TEMPO_BUCKETS: tuple[int, ...] = tuple(range(40, 242, 2))  # 40..240 BPM

SPECIAL_TOKENS: tuple[str, ...] = ("PAD", "BOS", "EOS")
BAR = "Bar"
DRUMS = "Drums"


@dataclass(frozen=True)
class Note:
    start: int  # ticks from the beginning of the piece
    duration: int  # ticks, 1..MAX_DURATION_TICKS
    pitch: int  # MIDI pitch (GM drum key when is_drum)
    velocity: int
    program: int  # GM program 0..127; DRUM_PROGRAM for drums
    is_drum: bool = False

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ValueError(f"negative start: {self.start}")
        if not 1 <= self.duration <= MAX_DURATION_TICKS:
            raise ValueError(f"duration out of range: {self.duration}")
        if not 0 <= self.pitch <= 127 or not 1 <= self.velocity <= 127:
            raise ValueError(f"pitch/velocity out of range: {self.pitch}/{self.velocity}")
        if not 0 <= self.program <= 127:
            raise ValueError(f"program out of range: {self.program}")

    @property
    def end(self) -> int:
        return self.start + self.duration


@dataclass
class Piece:
    notes: list[Note]
    tempo_bpm: int
    bars: int
    caption: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds_per_tick(self) -> float:
        return 60.0 / self.tempo_bpm / TICKS_PER_BEAT

    @property
    def duration_seconds(self) -> float:
        return self.bars * TICKS_PER_BAR * self.seconds_per_tick


def _nearest(value: float, grid: tuple[int, ...]) -> int:
    return min(grid, key=lambda level: (abs(level - value), level))


def quantize_velocity(velocity: float) -> int:
    return _nearest(velocity, VELOCITY_LEVELS)


def quantize_tempo(tempo_bpm: float) -> int:
    return _nearest(tempo_bpm, TEMPO_BUCKETS)


def note_sort_key(note: Note) -> tuple[int, bool, int, int, int, int]:
    """Canonical note order: the order in which events list them."""
    return (note.start, note.is_drum, note.program, note.pitch, note.duration, note.velocity)


def canonical_notes(notes: list[Note]) -> list[Note]:
    return sorted(notes, key=note_sort_key)


def _build_vocabulary() -> list[str]:
    tokens = list(SPECIAL_TOKENS)
    tokens += [f"Tempo_{bpm}" for bpm in TEMPO_BUCKETS]
    tokens.append(BAR)
    tokens += [f"Position_{tick}" for tick in range(TICKS_PER_BAR)]
    tokens += [f"Program_{program}" for program in range(128)]
    tokens.append(DRUMS)
    tokens += [f"Pitch_{pitch}" for pitch in range(128)]
    tokens += [f"Velocity_{velocity}" for velocity in VELOCITY_LEVELS]
    tokens += [f"Duration_{ticks}" for ticks in range(1, MAX_DURATION_TICKS + 1)]
    return tokens


EVENT_VOCABULARY: list[str] = _build_vocabulary()
EVENT_TO_ID: dict[str, int] = {token: index for index, token in enumerate(EVENT_VOCABULARY)}


def _instrument_token(note: Note) -> str:
    return DRUMS if note.is_drum else f"Program_{note.program}"


def piece_to_events(piece: Piece) -> list[str]:
    """Serialise a piece; velocities and tempo are snapped onto their grids."""
    notes = canonical_notes(piece.notes)
    last_bar = max([piece.bars - 1] + [note.start // TICKS_PER_BAR for note in notes])
    events = [f"Tempo_{quantize_tempo(piece.tempo_bpm)}"]
    notes_by_bar: dict[int, list[Note]] = {}
    for note in notes:
        notes_by_bar.setdefault(note.start // TICKS_PER_BAR, []).append(note)
    for bar in range(last_bar + 1):
        events.append(BAR)
        events += _bar_events(notes_by_bar.get(bar, []))
    return events


def _bar_events(notes: list[Note]) -> list[str]:
    events: list[str] = []
    position, instrument = None, None
    for note in notes:
        note_position = note.start % TICKS_PER_BAR
        if note_position != position:
            position, instrument = note_position, None
            events.append(f"Position_{position}")
        if _instrument_token(note) != instrument:
            instrument = _instrument_token(note)
            events.append(instrument)
        events += [
            f"Pitch_{note.pitch}",
            f"Velocity_{quantize_velocity(note.velocity)}",
            f"Duration_{note.duration}",
        ]
    return events


@dataclass
class _DecodeState:
    """Decoder state; tolerant so that sampled (imperfect) sequences still decode."""

    tempo_bpm: int | None = None
    bar: int = -1
    position: int = 0
    program: int = 0
    is_drum: bool = False
    pitch: int | None = None
    velocity: int | None = None
    notes: list[Note] = field(default_factory=list)


def _split_token(token: str) -> tuple[str, int | None]:
    name, _, value = token.partition("_")
    return name, int(value) if value.isdigit() else None


def _apply_event(state: _DecodeState, token: str) -> None:
    name, value = _split_token(token)
    if token == BAR:
        state.bar, state.position = state.bar + 1, 0
    elif token == DRUMS:
        state.is_drum, state.program = True, DRUM_PROGRAM
    elif value is None or token not in EVENT_TO_ID:
        return  # special or unknown tokens carry no musical content
    elif name == "Tempo":
        state.tempo_bpm = state.tempo_bpm or value
    elif name == "Position":
        state.position = value
    elif name == "Program":
        state.is_drum, state.program = False, value
    elif name == "Pitch":
        state.pitch, state.velocity = value, None
    elif name == "Velocity" and state.pitch is not None:
        state.velocity = value
    elif name == "Duration" and state.velocity is not None:
        _emit_note(state, value)


def _emit_note(state: _DecodeState, duration: int) -> None:
    assert state.pitch is not None and state.velocity is not None
    start = max(state.bar, 0) * TICKS_PER_BAR + state.position
    state.notes.append(
        Note(start, duration, state.pitch, state.velocity, state.program, state.is_drum)
    )
    state.pitch, state.velocity = None, None


def events_to_piece(events: list[str], *, default_tempo_bpm: int = 120) -> Piece:
    """Inverse of `piece_to_events`. Malformed fragments are skipped, not fatal."""
    state = _DecodeState()
    for token in events:
        _apply_event(state, token)
    notes = canonical_notes(state.notes)
    bars = max([state.bar + 1] + [note.start // TICKS_PER_BAR + 1 for note in notes])
    return Piece(notes=notes, tempo_bpm=state.tempo_bpm or default_tempo_bpm, bars=bars)


def events_to_ids(events: list[str]) -> list[int]:
    return [EVENT_TO_ID[token] for token in events]


def ids_to_events(ids: list[int]) -> list[str]:
    return [EVENT_VOCABULARY[index] for index in ids]
