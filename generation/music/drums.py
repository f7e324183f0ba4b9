"""Genre drum patterns on the 16-step grid (General MIDI percussion keys)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from generation.music.events import DRUM_PROGRAM, TICKS_PER_BAR, Note

KICK, SIDE_STICK, SNARE, CLAP, FLOOR_TOM, CLOSED_HAT = 36, 37, 38, 39, 41, 42
PEDAL_HAT, LOW_TOM, OPEN_HAT, MID_TOM, CRASH, HIGH_TOM, RIDE = 44, 45, 46, 47, 49, 50, 51
TAMBOURINE, SHAKER = 54, 70

# "x" = accented hit, "o" = normal hit, "g" = ghost note, "." = rest.
PATTERNS: dict[str, dict[int, str]] = {
    "four_floor": {
        KICK: "x...x...x...x...",
        CLAP: "....x.......x...",
        OPEN_HAT: "..o...o...o...o.",
    },
    "house": {
        KICK: "x...x...x...x...",
        CLAP: "....x.......x...",
        CLOSED_HAT: "..o...o...o...o.",
        SHAKER: "gogogogogogogogo",
    },
    "backbeat": {
        KICK: "x.......x.o.....",
        SNARE: "....x.......x...",
        CLOSED_HAT: "o.o.o.o.o.o.o.o.",
    },
    "metal": {
        KICK: "x.o.x.o.x.o.x.o.",
        SNARE: "....x.......x...",
        CRASH: "o.......o.......",
    },
    "swing": {
        RIDE: "o...o..go...o..g",
        PEDAL_HAT: "....o.......o...",
        KICK: "g...............",
    },
    "boom_bap": {
        KICK: "x......o.o......",
        SNARE: "....x.......x...",
        CLOSED_HAT: "o.o.o.o.o.o.o.o.",
    },
    "lofi": {
        KICK: "x.....o...o.....",
        SIDE_STICK: "....o.......o...",
        CLOSED_HAT: "g.g.g.g.g.g.g.g.",
    },
    "one_drop": {
        KICK: "........x.......",
        SIDE_STICK: "........x.......",
        CLOSED_HAT: "o.o.o.o.o.o.o.o.",
    },
    "funk": {
        KICK: "x..o..o...o..o..",
        SNARE: "....x..g.g..x..g",
        CLOSED_HAT: "oooooooooooooooo",
    },
    "shuffle": {
        KICK: "x.......x.......",
        SNARE: "....x.......x...",
        CLOSED_HAT: "o..go..go..go..g",
    },
    "folk": {
        KICK: "x.......x.......",
        SNARE: "....o.......o...",
        TAMBOURINE: "..o...o...o...o.",
    },
    "soft": {
        KICK: "x.......o.......",
        SIDE_STICK: "....o.......o...",
        CLOSED_HAT: "g.g.g.g.g.g.g.g.",
    },
    "cinematic": {
        FLOOR_TOM: "x.....o.o.......",
        LOW_TOM: "....o.......o..o",
        KICK: "x.......x.......",
    },
}
GENRE_DRUM_STYLE = {
    "techno": "four_floor", "house": "house", "rock": "backbeat", "pop": "backbeat",
    "metal": "metal", "jazz": "swing", "hip hop": "boom_bap", "lofi": "lofi",
    "reggae": "one_drop", "funk": "funk", "blues": "shuffle", "folk": "folk",
    "ballad": "soft", "classical": "soft", "ambient": "soft", "cinematic": "cinematic",
}  # fmt: skip
HIT_LEVEL = {"x": 1.0, "o": 0.8, "g": 0.45}
NO_CRASH_STYLES = frozenset({"swing", "lofi", "soft", "one_drop"})


@dataclass(frozen=True)
class DrumHit:
    tick: int  # within the bar
    key: int
    level: float  # 0..1, scaled to a velocity by the caller


def _pattern_hits(pattern: dict[int, str]) -> list[DrumHit]:
    return [
        DrumHit(tick, key, HIT_LEVEL[symbol])
        for key, steps in pattern.items()
        for tick, symbol in enumerate(steps)
        if symbol != "."
    ]


def _adjust_for_density(hits: list[DrumHit], style: str, density: float) -> list[DrumHit]:
    """Sparse: drop off-beat cymbals and ghosts. Busy: add 16th hats."""
    if density < 0.35:
        return [hit for hit in hits if hit.level > 0.5 and (hit.tick % 4 == 0 or hit.key == KICK)]
    if density > 0.65 and style in {"four_floor", "backbeat", "boom_bap", "metal"}:
        ticks = {hit.tick for hit in hits if hit.key == CLOSED_HAT}
        hits = hits + [DrumHit(t, CLOSED_HAT, 0.45) for t in range(16) if t not in ticks]
    if density > 0.8 and style == "metal":
        hits = [hit for hit in hits if hit.key != KICK] + [DrumHit(t, KICK, 0.8) for t in range(16)]
    return hits


def _fill(rng: random.Random) -> list[DrumHit]:
    toms = rng.choice([(SNARE, SNARE, SNARE, SNARE), (HIGH_TOM, MID_TOM, LOW_TOM, FLOOR_TOM)])
    return [DrumHit(12 + step, key, 0.7 + 0.1 * step) for step, key in enumerate(toms)]


def drum_bar(
    genre: str, bar: int, bars: int, density: float, variation: float, rng: random.Random
) -> list[DrumHit]:
    """The hits of one bar: the genre groove, a crash on phrase starts, fills at phrase ends."""
    style = GENRE_DRUM_STYLE.get(genre, "backbeat")
    hits = _adjust_for_density(_pattern_hits(PATTERNS[style]), style, density)
    if bar % 4 == 0 and bar > 0 and style not in NO_CRASH_STYLES:
        hits.append(DrumHit(0, CRASH, 0.9))
    if bar % 4 == 3 and bar < bars - 1 and rng.random() < 0.3 + 0.6 * variation:
        hits = [hit for hit in hits if hit.tick < 12 or hit.key == KICK] + _fill(rng)
    if rng.random() < 0.4 * variation:  # an occasional extra kick keeps loops alive
        hits.append(DrumHit(rng.choice([3, 7, 11, 14]), KICK, 0.6))
    return hits


def drum_notes(hits: list[DrumHit], bar: int, base_velocity: float) -> list[Note]:
    return [
        Note(
            start=bar * TICKS_PER_BAR + hit.tick,
            duration=1,
            pitch=hit.key,
            velocity=max(1, min(127, round(base_velocity * hit.level))),
            program=DRUM_PROGRAM,
            is_drum=True,
        )
        for hit in hits
    ]
