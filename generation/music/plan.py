"""The plan: what a piece declares before its first note, and whether its notes keep to it.

A planned sequence opens with one token per attribute a listener hears and a prompt can ask
for, then the instruments, then the register:

    Genre_ballad Mood_sad Tempo_64 Key_0 Mode_minor Density_30 Program_0 Program_48
    Register_60 | Bar Position_0 Program_0 Pitch_60 ...

The genre and mood carry the style (rhythms, accompaniment, dynamics), the rest what a
listener can check. Instruments are listed in their roles' order: the lead first, the bass
(if any) last, then Drums, so the plan also says which instrument carries the melody.
Register is the band (REGISTER_STEP semitones wide) that holds the median pitch of the
lead's melody (`composer.melody_notes`), counted from the key's tonic pitch class (MIDI
0..11), as the body writes its pitches (tokenizer.py): the body then reads its register
straight off the plan, with no sum of key and band to learn.

`plan_for_piece` reads the plan of a composed piece (its attributes, and what it plays),
which is what pretraining writes; `plan_agreement` checks a piece against a declared plan,
field by field, which is how the benchmark tells whether the body plays its plan.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from generation.music.attributes_measure import (
    density_fit,
    estimate_density,
    estimate_key,
    playable_density,
)
from generation.music.composer import (
    REGISTER_HIGH,
    REGISTER_LOW,
    REGISTER_STEP,
    ComposerStyle,
    compose,
    home_register,
    melody_notes,
    register_band,
)
from generation.music.events import TEMPO_BUCKETS, Piece
from generation.music.prompts import DENSITY_LEVELS, GENRES, MODES, MOODS, MusicAttributes

DENSITY_VALUES: tuple[float, ...] = tuple(sorted(set(DENSITY_LEVELS.values())))

# The plan's own tokens, appended to the event vocabulary (tokenizer.TOKENS).
PLAN_VOCABULARY: list[str] = [
    *(f"Genre_{genre.replace(' ', '-')}" for genre in GENRES),
    *(f"Mood_{mood}" for mood in MOODS),
    *(f"Key_{root}" for root in range(12)),
    *(f"Mode_{mode}" for mode in MODES),
    *(f"Density_{round(value * 100)}" for value in DENSITY_VALUES),
    *(f"Register_{low}" for low in range(REGISTER_LOW, REGISTER_HIGH + 1, REGISTER_STEP)),
]
# The single-token fields before the instruments, in the order a sequence writes them, and
# those after: the grammar (tokenizer.PLAN_GRAMMAR) is built from these.
FIELDS_BEFORE_INSTRUMENTS = ("Genre", "Mood", "Tempo", "Key", "Mode", "Density")
FIELDS_AFTER_INSTRUMENTS = ("Register",)
MAX_PLAN_INSTRUMENTS = 8


@dataclass(frozen=True)
class Plan:
    genre: str
    mood: str
    tempo_bpm: int
    key_root: int
    mode: str
    density: float
    instruments: tuple[int, ...]  # GM programs in role order: lead first, bass last
    drums: bool
    register: int  # the band of the lead's median pitch, in semitones above the tonic

    def __post_init__(self) -> None:
        if self.tempo_bpm not in TEMPO_BUCKETS or self.density not in DENSITY_VALUES:
            raise ValueError(f"tempo or density off the token grid: {self}")
        if len(set(self.instruments)) != len(self.instruments):
            raise ValueError(f"an instrument is listed twice: {self.instruments}")
        if not 0 < len(self.instruments) + self.drums <= MAX_PLAN_INSTRUMENTS:
            raise ValueError(f"a plan names 1 to {MAX_PLAN_INSTRUMENTS} instruments")

    @property
    def lead(self) -> int | None:
        return self.instruments[0] if self.instruments else None

    def events(self) -> list[str]:
        """The plan as the tokens a sequence opens with (before the first Bar)."""
        return [
            f"Genre_{self.genre.replace(' ', '-')}",
            f"Mood_{self.mood}",
            f"Tempo_{self.tempo_bpm}",
            f"Key_{self.key_root}",
            f"Mode_{self.mode}",
            f"Density_{round(self.density * 100)}",
            *(f"Program_{program}" for program in self.instruments),
            *(["Drums"] if self.drums else []),
            f"Register_{self.register}",
        ]

    @classmethod
    def from_events(cls, events: list[str]) -> Plan | None:
        """The plan a header declares, or None if it is not a complete planned header."""
        values: dict[str, str] = {}
        programs: list[int] = []
        drums = False
        for event in events:
            kind, _, value = event.partition("_")
            if kind == "Program":
                programs.append(int(value))
            elif kind == "Drums":
                drums = True
            else:
                values[kind] = value
        if set(values) != {*FIELDS_BEFORE_INSTRUMENTS, *FIELDS_AFTER_INSTRUMENTS}:
            return None
        try:
            return cls(
                genre=values["Genre"].replace("-", " "),
                mood=values["Mood"],
                tempo_bpm=int(values["Tempo"]),
                key_root=int(values["Key"]),
                mode=values["Mode"],
                density=int(values["Density"]) / 100,
                instruments=tuple(programs),
                drums=drums,
                register=int(values["Register"]),
            )
        except ValueError:
            return None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["instruments"] = list(self.instruments)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """The plan `to_dict` gave (a track's stored attributes)."""
        return cls(**{**data, "instruments": tuple(data["instruments"])})


def lead_register(piece: Piece, lead: int | None, key_root: int) -> int | None:
    """The register band of the median pitch of the lead's melody (`melody_notes`), counted
    from the key's tonic; None if the lead plays no melody."""
    pitches = [note.pitch for note in melody_notes(piece.notes, lead)]
    return register_band(statistics.median(pitches) - key_root) if pitches else None


def played_instruments(piece: Piece, role_order: tuple[int, ...]) -> tuple[int, ...]:
    """The pitched programs the piece plays: those of `role_order` in that order, then any
    others in ascending order."""
    played = {note.program for note in piece.notes if not note.is_drum}
    ordered = [program for program in role_order if program in played]
    return (*ordered, *sorted(played - set(ordered)))


def nearest_density(density: float) -> float:
    return min(DENSITY_VALUES, key=lambda value: (abs(value - density), value))


def plan_for_piece(attrs: MusicAttributes, piece: Piece) -> Plan:
    """The plan of a composed piece: the style and key it was asked for, and the
    instruments, drums and register it actually plays (so the plan never declares what the
    notes do not hold)."""
    instruments = played_instruments(piece, attrs.instruments)
    lead = instruments[0] if instruments else None
    register = lead_register(piece, lead, attrs.key_root)
    return Plan(
        genre=attrs.genre,
        mood=attrs.mood,
        tempo_bpm=piece.tempo_bpm,
        key_root=attrs.key_root,
        mode=attrs.mode,
        density=nearest_density(attrs.density),
        instruments=instruments,
        drums=any(note.is_drum for note in piece.notes),
        register=register if register is not None else register_band(60),
    )


AGREEMENT_FIELDS = ("tempo", "instruments", "drums", "key", "mode", "density", "register")
# The fields the body decides: the tempo is the plan's by construction (decoding reads it).
BODY_FIELDS = AGREEMENT_FIELDS[1:]


def plan_agreement(
    plan: Plan,
    piece: Piece,
    fields: Sequence[str] = AGREEMENT_FIELDS,
    *,
    whole_bars: int | None = None,
) -> dict[str, float]:
    """How well the notes keep to a declared plan, per field in [0, 1]: tempo, instruments
    (the played set is the declared one), drums, key and mode (`estimate_key` of the
    notes), density (the onsets per bar of the lead's melody against those the declared
    density means at the plan's tempo, scored as prompt adherence scores it) and register
    (the melody's median pitch lies in the declared band). An empty piece agrees with nothing.
    Only `fields` are measured (the key estimate is the costly one). whole_bars: the piece's
    length when `piece` holds only its first bars (`estimate_density`)."""
    if unknown := set(fields) - set(AGREEMENT_FIELDS):
        raise ValueError(f"no such plan fields: {sorted(unknown)}")
    if not piece.notes:
        return dict.fromkeys(fields, 0.0)
    key_estimate = functools.cache(lambda: estimate_key(piece.notes))  # key and mode share it
    measures: dict[str, Callable[[], float]] = {
        "tempo": lambda: float(piece.tempo_bpm == plan.tempo_bpm),
        "instruments": lambda: float(
            {note.program for note in piece.notes if not note.is_drum} == set(plan.instruments)
        ),
        "drums": lambda: float(any(note.is_drum for note in piece.notes) == plan.drums),
        "key": lambda: float(key_estimate()[0] == plan.key_root),
        "mode": lambda: float(key_estimate()[1] == plan.mode),
        "density": lambda: density_fit(
            estimate_density(piece, plan.lead, whole_bars=whole_bars),
            playable_density(plan.density, plan.tempo_bpm),
        ),
        "register": lambda: float(lead_register(piece, plan.lead, plan.key_root) == plan.register),
    }
    return {name: measures[name]() for name in fields}


MAX_REGISTER_SHIFT = 12  # semitones: ComposerStyle's limit


def plan_piece(plan: Plan, *, seed: int, bars: int) -> Piece:
    """The plan played by the composer: its style, tempo, key, mode, density, instruments and
    drums, with the melody moved to the declared register band. It is what a body that
    plays its plan would play, at a fraction of the cost of sampling one (milliseconds, not a
    third of a second), so a plan can be judged by how it sounds before any notes are
    sampled. A plan of drums alone has no melody to compose: its piece is empty."""
    if not plan.instruments:
        return Piece(notes=[], tempo_bpm=plan.tempo_bpm, bars=bars)
    attrs = MusicAttributes(
        genre=plan.genre,
        tempo_bpm=plan.tempo_bpm,
        key_root=plan.key_root,
        mode=plan.mode,
        instruments=plan.instruments,
        drums=plan.drums,
        mood=plan.mood,
        density=plan.density,
    )
    return compose(
        attrs,
        seed=seed,
        duration_seconds=bars * 240 / plan.tempo_bpm,
        style=ComposerStyle(register_shift=_shift_to(attrs, plan.register)),
    )


@functools.lru_cache(maxsize=8192)
def playable_registers(
    genre: str, mood: str, key_root: int, mode: str, instruments: tuple[int, ...]
) -> frozenset[int]:
    """The register bands a plan with these fields can declare and be played in: its
    melody's home moved by at most MAX_REGISTER_SHIFT semitones, the most the composer
    moves it and so the most pretraining showed the body. A planner free to declare any
    band declares some the body was never shown: a plan stage tuned on the default taste
    (a higher lead) declared bands up to 44 semitones above the base's, heard at most +12 as the
    composer plays them, and the body then kept to its declared band in 0.688 of its
    held-out clips (benchmarks/rl_oracle.py --part plan)."""
    if not instruments:  # drums alone: no melody, so any band is as good as another
        return frozenset(range(REGISTER_LOW, REGISTER_HIGH + 1, REGISTER_STEP))
    # Tempo, drums and density do not move the melody's home.
    attrs = MusicAttributes(
        genre=genre, tempo_bpm=120, key_root=key_root, mode=mode, instruments=instruments,
        drums=False, mood=mood, density=0.5,
    )  # fmt: skip
    shifts = range(-MAX_REGISTER_SHIFT, MAX_REGISTER_SHIFT + 1)
    return frozenset(home_register(attrs, ComposerStyle(register_shift=s)) for s in shifts)


def _shift_to(attrs: MusicAttributes, register: int) -> int:
    """The melody shift nearest the register's distance from home that puts the melody's
    home in that band: the scale tones of a shifted range are not the home range's moved, so
    its middle can land a band off."""
    wanted = register - home_register(attrs)
    shifts = sorted(
        range(-MAX_REGISTER_SHIFT, MAX_REGISTER_SHIFT + 1), key=lambda s: abs(s - wanted)
    )
    for shift in shifts:
        if home_register(attrs, ComposerStyle(register_shift=shift)) == register:
            return shift
    return max(-MAX_REGISTER_SHIFT, min(MAX_REGISTER_SHIFT, wanted))
