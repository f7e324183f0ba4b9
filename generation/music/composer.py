"""Rule-based, seedable composer: attributes -> Piece.

The same (attributes, seed, duration, style) always gives the same piece, because
every random choice is drawn from one `random.Random(seed)` in a fixed order.
The piece has a lead melody built from a repeated motif, a bass line, a comping
or pad part and (optionally) drums, all shaped by genre, mood and density.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace

from generation.music import drums, theory
from generation.music.events import (
    MAX_DURATION_TICKS,
    TICKS_PER_BAR,
    TICKS_PER_BEAT,
    Note,
    Piece,
    canonical_notes,
    quantize_velocity,
)
from generation.music.prompts import (
    BASS_CAPABLE_PROGRAMS,
    POLYPHONIC_PROGRAMS,
    MusicAttributes,
    caption_for,
)
from generation.music.theory import Chord, chord_at, nearest_pitch, voice_chord


@dataclass(frozen=True)
class ComposerStyle:
    """Knobs a generator version can set; they change how, not what, is played."""

    variation: float = 0.5  # 0 = plain and repetitive, 1 = leaps, syncopation, substitutions
    humanize: float = 0.3  # spread of velocities around the mood's level
    density_scale: float = 1.0  # multiplies the prompt's density
    register_shift: int = 0  # semitones the melody's range moves from the lead's usual one

    def __post_init__(self) -> None:
        if not 0.0 <= self.variation <= 1.0 or not 0.0 <= self.humanize <= 1.0:
            raise ValueError("variation and humanize must lie in [0, 1]")
        if not 0.1 <= self.density_scale <= 3.0:
            raise ValueError("density_scale must lie in [0.1, 3]")
        if not -12 <= self.register_shift <= 12:
            raise ValueError("register_shift must lie in [-12, 12] semitones")


MOOD_VELOCITY = {
    "sad": 56, "calm": 58, "dreamy": 56, "romantic": 66, "nostalgic": 62, "happy": 82,
    "playful": 80, "energetic": 100, "dark": 80, "epic": 96, "tense": 84,
}  # fmt: skip
MOOD_REGISTER_SHIFT = {
    "sad": -4, "dark": -5, "happy": 4, "playful": 5, "dreamy": 3, "energetic": 2,
    "tense": -2, "nostalgic": -2,
}  # fmt: skip
MELODY_RANGES = {
    40: (62, 88), 41: (55, 79), 42: (45, 69), 43: (36, 57), 56: (60, 82), 57: (48, 70),
    58: (36, 58), 60: (53, 77), 65: (56, 80), 66: (50, 74), 68: (62, 86), 70: (40, 64),
    71: (55, 82), 73: (67, 93), 75: (62, 86), 22: (60, 84), 24: (55, 79), 25: (55, 79),
    26: (55, 79), 27: (57, 81), 29: (57, 81), 30: (57, 81), 9: (72, 96), 10: (72, 96),
}  # fmt: skip
BASS_TARGET = {42: 45, 43: 36, 58: 40, 70: 43}  # default: electric-bass register
LEGATO = {"techno": 0.5, "house": 0.6, "funk": 0.5, "reggae": 0.6, "hip hop": 0.75}
BASS_STYLE = {
    "techno": "offbeat", "house": "offbeat", "ambient": "whole", "jazz": "walking",
    "rock": "eighths", "classical": "half", "ballad": "whole", "hip hop": "hiphop",
    "lofi": "hiphop", "folk": "half", "pop": "pop", "metal": "eighths", "blues": "walking",
    "reggae": "reggae", "cinematic": "whole", "funk": "funk",
}  # fmt: skip
COMP_STYLE = {
    "techno": "stabs", "house": "stabs", "ambient": "pad", "jazz": "jazz", "rock": "power",
    "classical": "arpeggio", "ballad": "arpeggio", "hip hop": "pad", "lofi": "jazz",
    "folk": "strum", "pop": "block", "metal": "power", "blues": "block", "reggae": "skank",
    "cinematic": "ostinato", "funk": "stabs",
}  # fmt: skip
SUSTAINED_PROGRAMS = frozenset([16, 17, 19, 21, 48, 49, 50, 52, 88, 89, 90, 91, 95])
LEFT_HAND_STYLES = frozenset({"pad", "block", "arpeggio", "strum", "jazz"})
STAB_PATTERNS = {
    "techno": [(2, 6, 10, 14), (3, 6, 11, 14), (0, 3, 6, 10, 12)],
    "house": [(2, 6, 10, 14), (0, 3, 6, 10, 12), (3, 7, 10, 14)],
    "funk": [(0, 3, 6, 8, 11, 14), (2, 4, 7, 10, 12, 15), (0, 3, 5, 8, 10, 13)],
}
ONSET_WEIGHTS = (4, 0.3, 1, 0.3, 2, 0.3, 1, 0.3, 3, 0.3, 1, 0.3, 2, 0.3, 1, 0.3)

PART_VELOCITY_OFFSET = {"lead": 8, "harmony": -12, "bass": 0, "drums": 6}


@dataclass
class _Plan:
    """Everything the part writers share for one piece."""

    attrs: MusicAttributes
    style: ComposerStyle
    rng: random.Random
    bars: int
    chords: list[Chord]
    lead: int
    harmonies: tuple[int, ...]  # the first comps in the genre's style, the others hold pads
    bass: int | None

    @property
    def density(self) -> float:
        return min(1.0, max(0.05, self.attrs.density * self.style.density_scale))

    @property
    def variation(self) -> float:
        return self.style.variation

    def velocity(self, part: str, tick: int) -> float:
        """Mood sets the level, the downbeats get accents, humanize adds spread."""
        base = MOOD_VELOCITY.get(self.attrs.mood, 72) + PART_VELOCITY_OFFSET[part]
        accent = 6 if tick % 16 == 0 else 3 if tick % 8 == 0 else 0 if tick % 4 == 0 else -4
        jitter = self.rng.gauss(0.0, 12.0 * self.style.humanize)
        return base + accent + jitter


def _make_note(start: int, duration: int, pitch: int, velocity: float, program: int) -> Note:
    return Note(
        start=start,
        duration=max(1, min(MAX_DURATION_TICKS, duration)),
        pitch=max(0, min(127, pitch)),
        velocity=quantize_velocity(max(1.0, min(127.0, velocity))),
        program=program,
    )


def bars_for(duration_seconds: float, tempo_bpm: int) -> int:
    """Enough whole bars to cover the duration (the renderer cuts the rest)."""
    seconds_per_bar = 60.0 / tempo_bpm * TICKS_PER_BAR / TICKS_PER_BEAT
    return max(1, math.ceil(duration_seconds / seconds_per_bar - 1e-9))


def assign_roles(instruments: tuple[int, ...]) -> tuple[int, tuple[int, ...], int | None]:
    """(lead, harmonies, bass): lead first, a bass-register instrument last, and
    everything between accompanies. A lone chordal lead accompanies itself."""
    lead = instruments[0]
    has_bass = len(instruments) > 1 and instruments[-1] in BASS_CAPABLE_PROGRAMS
    bass = instruments[-1] if has_bass else None
    middle = tuple(instruments[1:-1] if has_bass else instruments[1:])
    if not middle and lead in POLYPHONIC_PROGRAMS:
        middle = (lead,)
    return lead, middle, bass


# A lead that accompanies itself plays like a pianist's two hands: the melody above this
# pitch, the accompaniment at or below it (a keyboard's split point). Keeping the hands apart
# is what lets a listener, and `melody_notes`, tell the melody's rhythm and register from
# the chords under it.
HANDS_SPLIT = 62  # D4
MIN_MELODY_SPAN = 12  # semitones the melody keeps when the split raises its floor


def accompanies_itself(lead: int, programs: Iterable[int]) -> bool:
    """Whether `lead`, among the pitched `programs` a piece plays, accompanies itself: what
    `assign_roles` decides, read from the set of programs (with a single other program it
    does not matter which of the two a roster lists last)."""
    others = sorted(set(programs) - {lead})
    return assign_roles((lead, *others))[1] == (lead,)


def melody_notes(notes: Iterable[Note], lead: int | None) -> list[Note]:
    """The lead's melody: its notes, and only those above HANDS_SPLIT when it accompanies
    itself. This is the line whose rhythm and register a plan's density and register name."""
    pitched = [note for note in notes if not note.is_drum]
    if lead is None:
        return []
    lead_notes = [note for note in pitched if note.program == lead]
    if accompanies_itself(lead, {note.program for note in pitched}):
        return [note for note in lead_notes if note.pitch > HANDS_SPLIT]
    return lead_notes


# --- melody -----------------------------------------------------------------


@dataclass
class _Motif:
    rhythm: list[tuple[int, int]]  # (tick within bar, duration)
    steps: list[int]  # scale-index moves between consecutive notes


# The melody's home: the REGISTER_STEP-wide band of pitches (counted from the tonic's pitch
# class, as a plan's Register is) that holds the middle of its range. A walk free to wander
# puts its median anywhere within a few bands of home, so a register read off afterwards
# would name where one random walk ended up, which a note-by-note player can only match by
# luck. Drawing the walk back once nearly half its notes lie on one side of the band makes
# the band a target kept bar by bar, by a rule that reads only the notes so far (as the
# body's `melody_features` tallies do).
REGISTER_STEP = 4  # semitones per register band: a major third
REGISTER_LOW, REGISTER_HIGH = 12, 104  # semitones above the tonic's pitch class
HOME_PULL = 1.5  # how hard a step is held back, per note it would put that side past the margin
HOME_MARGIN = 2  # notes a side may come within half of before the pull starts


def register_band(pitch: float) -> int:
    """The lowest pitch of the REGISTER_STEP-wide band that holds `pitch`."""
    band = REGISTER_LOW + REGISTER_STEP * int((pitch - REGISTER_LOW) // REGISTER_STEP)
    return min(REGISTER_HIGH, max(REGISTER_LOW, band))


@dataclass
class _Home:
    """The melody's home band (absolute pitches [low, low + REGISTER_STEP)) and how many of
    its notes so far lie below it, above it, and in all."""

    low: int
    below: int = 0
    above: int = 0
    count: int = 0

    def _side(self, pitch: int) -> int | None:
        if pitch < self.low:
            return self.below
        return self.above if pitch >= self.low + REGISTER_STEP else None

    def weight(self, pitch: int) -> float:
        side = self._side(pitch)
        if side is None:
            return 1.0
        lead = 2 * side + 1 - self.count  # that side minus the others, counting this note
        return math.exp(-HOME_PULL * max(0, lead + HOME_MARGIN))

    def add(self, pitch: int, sign: int = 1) -> None:
        self.below += sign * (pitch < self.low)
        self.above += sign * (pitch >= self.low + REGISTER_STEP)
        self.count += sign

    def replay_weight(self, pitches: Iterable[int]) -> float:
        """The weight of playing `pitches` one after another (the first best on ties)."""
        trial, weight = _Home(self.low, self.below, self.above, self.count), 1.0
        for pitch in pitches:
            weight *= trial.weight(pitch)
            trial.add(pitch)
        return weight


def home_register(attrs: MusicAttributes, style: ComposerStyle | None = None) -> int:
    """The register band (counted from the tonic, as a plan's Register is) that the lead's
    melody keeps to: the one holding the middle of its range."""
    lead, harmonies, _ = assign_roles(attrs.instruments)
    pitches, center = _melody_pitches(attrs, style or ComposerStyle(), lead, harmonies)
    return register_band(pitches[center] - attrs.key_root)


def _melody_pitches(
    attrs: MusicAttributes, style: ComposerStyle, lead: int, harmonies: tuple[int, ...]
) -> tuple[list[int], int]:
    """Allowed melody pitches (scale tones in the lead's range) and the start index."""
    low, high = MELODY_RANGES.get(lead, (60, 84))
    shift = MOOD_REGISTER_SHIFT.get(attrs.mood, 0) + style.register_shift
    low, high = max(24, low + shift), min(108, high + shift)
    if lead in harmonies:  # the right hand: above the accompanying left
        low = max(low, HANDS_SPLIT + 1)
        high = max(high, low + MIN_MELODY_SPAN)
    scale = set(theory.melody_steps(attrs.genre, attrs.key_root, attrs.mode))
    pitches = [pitch for pitch in range(low, high + 1) if pitch % 12 in scale]
    return pitches, len(pitches) // 2


def tempo_factor(tempo_bpm: float) -> float:
    """How a tempo scales the lead's onsets per bar: slow pieces fit more into a bar."""
    return min(1.2, max(0.6, 120 / tempo_bpm))


def lead_onsets_per_bar(density: float, tempo_bpm: float) -> int:
    """The lead's onsets in a bar that is not a phrase ending (`attributes_measure`
    inverts this to estimate the density the notes play)."""
    return round(1 + density * 7 * tempo_factor(tempo_bpm))


def is_phrase_ending(bar: int, bars: int) -> bool:
    return bar % 4 == 3 or bar == bars - 1


def _notes_per_bar(plan: _Plan, bar: int) -> int:
    count = lead_onsets_per_bar(plan.density, plan.attrs.tempo_bpm)
    if is_phrase_ending(bar, plan.bars):
        count = max(1, count // 2)  # phrase endings breathe
    return count


def _rhythm(plan: _Plan, bar: int) -> list[tuple[int, int]]:
    weights = [w if w >= 1 else w * (0.2 + 2 * plan.variation) for w in ONSET_WEIGHTS]
    ticks = list(range(TICKS_PER_BAR))
    onsets = []
    for _ in range(min(_notes_per_bar(plan, bar), TICKS_PER_BAR)):
        (tick,) = plan.rng.choices(ticks, weights)
        index = ticks.index(tick)
        del ticks[index], weights[index]
        onsets.append(tick)
    return _with_durations(plan, sorted(onsets), hold_last=bar % 4 == 3)


def _with_durations(plan: _Plan, onsets: list[int], hold_last: bool) -> list[tuple[int, int]]:
    legato = LEGATO.get(plan.attrs.genre, 0.95)
    ends = [*onsets[1:], TICKS_PER_BAR]
    rhythm = [
        (tick, max(1, int((end - tick) * legato))) for tick, end in zip(onsets, ends, strict=True)
    ]
    if hold_last and rhythm:
        rhythm[-1] = (rhythm[-1][0], TICKS_PER_BAR - rhythm[-1][0])
    return rhythm


def _step_weight(plan: _Plan, distance: int, drift: int, chord_tone: bool, strong: bool) -> float:
    weight = math.exp(-abs(distance) * (1.1 - 0.7 * plan.variation))
    if distance == 0:
        weight *= 0.5
    if chord_tone:
        weight *= 4.0 if strong else 1.5
    return weight * math.exp(-abs(drift) / 5)


def _next_index(
    plan: _Plan, pitches: list[int], current: int, tick: int, center: int, home: _Home
) -> int:
    chord = chord_at(plan.chords, tick)
    max_leap = 2 + round(4 * plan.variation)
    candidates = range(max(0, current - max_leap), min(len(pitches), current + max_leap + 1))
    strong = tick % 8 == 0
    weights = [
        _step_weight(plan, c - current, c - center, pitches[c] % 12 in chord.tones, strong)
        * home.weight(pitches[c])
        for c in candidates
    ]
    index = plan.rng.choices(list(candidates), weights)[0]
    home.add(pitches[index])
    return index


def _nearest_chord_tone(pitches: list[int], index: int, tones: tuple[int, ...]) -> int:
    matches = [i for i, pitch in enumerate(pitches) if pitch % 12 in tones]
    return min(matches, key=lambda i: (abs(i - index), i)) if matches else index


def _walk(
    plan: _Plan,
    bar: int,
    rhythm: list[tuple[int, int]],
    pitches: list[int],
    current: int,
    center: int,
    home: _Home,
) -> list[int]:
    """Scale-index path for one bar's onsets; the piece's last note lands on the tonic."""
    indices = []
    for tick, _ in rhythm:
        current = _next_index(plan, pitches, current, bar * TICKS_PER_BAR + tick, center, home)
        indices.append(current)
    if bar == plan.bars - 1 and plan.bars > 1 and indices:
        tonic = (plan.attrs.key_root,)
        home.add(pitches[indices[-1]], sign=-1)
        indices[-1] = _nearest_chord_tone(pitches, indices[-1], tonic)  # end on the tonic
        home.add(pitches[indices[-1]])
    return indices


def _motif_from(start: int, motif: _Motif, pitches: list[int]) -> list[int]:
    indices = [start]
    for step in motif.steps:
        indices.append(max(0, min(len(pitches) - 1, indices[-1] + step)))
    return indices


def _repeat_motif(
    plan: _Plan, motif: _Motif, bar: int, pitches: list[int], current: int, home: _Home
) -> tuple[list[tuple[int, int]], list[int]]:
    """Replay the phrase's opening motif, moved onto the current chord: from the chord tone
    nearest the current note, or the next one up or down if that keeps the melody home."""
    chord = chord_at(plan.chords, bar * TICKS_PER_BAR)
    chord_tones = [i for i, pitch in enumerate(pitches) if pitch % 12 in chord.tones]
    starts = sorted(chord_tones, key=lambda i: (abs(i - current), i))[:3] or [current]
    replays = [_motif_from(start, motif, pitches) for start in starts]
    indices = max(replays, key=lambda replay: home.replay_weight(pitches[i] for i in replay))
    for index in indices:
        home.add(pitches[index])
    return motif.rhythm, indices


def _melody_part(plan: _Plan) -> list[Note]:
    pitches, center = _melody_pitches(plan.attrs, plan.style, plan.lead, plan.harmonies)
    home = _Home(low=plan.attrs.key_root + home_register(plan.attrs, plan.style))
    current, motif, notes = center, None, []
    for bar in range(plan.bars):
        if bar % 4 == 2 and motif and plan.rng.random() > 0.6 * plan.variation:
            rhythm, indices = _repeat_motif(plan, motif, bar, pitches, current, home)
        else:
            rhythm = _rhythm(plan, bar)
            indices = _walk(plan, bar, rhythm, pitches, current, center, home)
            if bar % 4 == 0 and indices:
                motif = _Motif(rhythm, [b - a for a, b in itertools.pairwise(indices)])
        for (tick, duration), index in zip(rhythm, indices, strict=True):
            start = bar * TICKS_PER_BAR + tick
            velocity = plan.velocity("lead", start)
            notes.append(_make_note(start, duration, pitches[index], velocity, plan.lead))
        current = indices[-1] if indices else current
    return notes


# --- bass ---------------------------------------------------------------------

BassHit = tuple[int, int, int]  # (tick within bar, duration, pitch)


def _fixed_bass_patterns(root: int, third: int, fifth: int) -> dict[str, list[BassHit]]:
    octave = root + 12
    return {
        "half": [(0, 8, root), (8, 8, fifth)],
        "hiphop": [(0, 6, root), (7, 2, root), (10, 4, root)],
        "reggae": [(0, 3, root), (4, 2, root), (6, 2, fifth), (10, 2, root), (12, 3, third)],
        "funk": [
            (0, 2, root), (3, 1, octave), (6, 1, root), (7, 2, fifth),
            (10, 1, octave), (12, 2, root), (14, 1, fifth),
        ],
        "pop": [
            (0, 3, root), (3, 3, root), (6, 2, root), (8, 3, root), (11, 3, fifth), (14, 2, root),
        ],
    }  # fmt: skip


def _bass_pattern(
    style: str, root: int, chord: Chord, approach: int, density: float
) -> list[BassHit]:
    fifth = root + 7 if root + 7 <= 55 else root - 5
    third = nearest_pitch(chord.tones[1], root + 3)
    if style == "eighths":
        step = 2 if density >= 0.4 else 4
        return [(t, step, root) for t in range(0, 16, step)]
    if style == "offbeat":
        ticks = [t for t in range(16) if t % 4] if density > 0.75 else [2, 6, 10, 14]
        return [(t, 1 if density > 0.75 else 2, root) for t in ticks]
    if style == "walking":
        return [(0, 4, root), (4, 4, third), (8, 4, fifth), (12, 4, approach)]
    patterns = _fixed_bass_patterns(root, third, fifth)
    if style == "pop" and density < 0.4:
        return patterns["half"]
    return patterns.get(style, [(0, 16, root)])


def _bass_bar(plan: _Plan, bar: int, target: int) -> list[BassHit]:
    bar_start = bar * TICKS_PER_BAR
    chord = chord_at(plan.chords, bar_start)
    root = nearest_pitch(chord.root, target)
    style = BASS_STYLE.get(plan.attrs.genre, "whole")
    if style == "whole":
        return [(0, min(chord.length, 32), root)] if chord.start == bar_start else []
    next_root = nearest_pitch(chord_at(plan.chords, bar_start + TICKS_PER_BAR).root, target)
    approach = next_root + plan.rng.choice([-1, 1])
    return _bass_pattern(style, root, chord, approach, plan.density)


def _bass_part(plan: _Plan) -> list[Note]:
    if plan.bass is None:
        return []
    target = BASS_TARGET.get(plan.bass, 38)
    notes = []
    for bar in range(plan.bars):
        for tick, duration, pitch in _bass_bar(plan, bar, target):
            start = bar * TICKS_PER_BAR + tick
            notes.append(
                _make_note(start, duration, pitch, plan.velocity("bass", start), plan.bass)
            )
    return notes


# --- harmony ------------------------------------------------------------------

ChordHit = tuple[int, int, list[int]]  # (tick within bar, duration, pitches)


def _comp_style(plan: _Plan, program: int) -> str:
    style = COMP_STYLE.get(plan.attrs.genre, "block")
    # re-striking pads and organs only blurs them (and piles up costly release voices)
    if program in SUSTAINED_PROGRAMS and style not in {"ostinato", "skank"}:
        return "pad"
    return style


def _block_ticks(density: float, rng: random.Random, variation: float) -> list[int]:
    if density < 0.4:
        return [0]
    if density < 0.7:
        return [0, 8] if rng.random() > variation * 0.5 else [0, 6, 10]
    return [0, 4, 8, 12] if rng.random() > variation * 0.5 else [0, 3, 6, 10, 12]


def _arpeggio(voicing: list[int], density: float) -> list[ChordHit]:
    step = 4 if density < 0.2 else 2 if density < 0.75 else 1
    tones = [*voicing, voicing[0] + 12]
    order = [0, 1, 2, len(tones) - 1, 2, 1, 0, 1] if len(tones) > 3 else [0, 1, 2, 1]
    return [
        (tick, min(step * 3, 16 - tick), [tones[order[i % len(order)]]])
        for i, tick in enumerate(range(0, 16, step))
    ]


def _hits_until_next(ticks: list[int], pitches: list[int], scale: float = 1.0) -> list[ChordHit]:
    ends = [*ticks[1:], 16]
    return [
        (t, max(1, int((end - t) * scale)), pitches) for t, end in zip(ticks, ends, strict=True)
    ]


def _power_chord(chord: Chord, density: float, genre: str) -> list[ChordHit]:
    root = nearest_pitch(chord.root, 45)
    pitches = [root, root + 7, root + 12]
    if density < 0.4:
        return [(0, 8, pitches), (8, 8, pitches)]
    step = 1 if genre == "metal" and density > 0.8 else 2
    return [(t, step, pitches) for t in range(0, 16, step)]


def _harmony_hits(plan: _Plan, style: str, chord: Chord, voicing: list[int], pattern):
    rng, density = plan.rng, plan.density
    if style == "arpeggio":
        return _arpeggio(voicing, density)
    if style == "strum":
        return _hits_until_next([0, 8] if density < 0.4 else [0, 4, 6, 10, 12, 14], voicing)
    if style == "stabs":
        return [(t, 2 if plan.attrs.genre != "funk" else 1, voicing) for t in pattern]
    if style == "jazz":
        ticks = sorted(rng.sample([0, 3, 6, 8, 10, 14], 2 + (density > 0.5)))
        return [(t, 3, voicing[1:] or voicing) for t in ticks]
    if style == "power":
        return _power_chord(chord, density, plan.attrs.genre)
    if style == "skank":
        return [(t, 2, voicing) for t in ([4, 12] if density < 0.6 else [4, 6, 12, 14])]
    if style == "ostinato":
        root = nearest_pitch(chord.root, 52)
        cycle = [root, nearest_pitch(chord.fifth, root + 7), root + 12, root + 7]
        step = 4 if density < 0.35 else 2
        return [(t, step, [cycle[(t // step) % 4]]) for t in range(0, 16, step)]
    return _hits_until_next(_block_ticks(density, rng, plan.variation), voicing, 0.9)


def _harmony_bar(
    plan: _Plan, bar: int, style: str, pattern, center: int, left_hand: bool
) -> list[ChordHit]:
    bar_start = bar * TICKS_PER_BAR
    chord = chord_at(plan.chords, bar_start)
    voicing = voice_chord(chord.tones, center)
    if style == "pad":
        hits = [(0, min(chord.length, 32), voicing)] if chord.start == bar_start else []
    else:
        hits = _harmony_hits(plan, style, chord, voicing, pattern)
    if left_hand and style in LEFT_HAND_STYLES and chord.start == bar_start:
        hits.append((0, min(chord.length, 32), [nearest_pitch(chord.root, 40)]))
    return hits


def _harmony_part(plan: _Plan) -> list[Note]:
    notes = []
    for index, program in enumerate(plan.harmonies):
        style = _comp_style(plan, program) if index == 0 else "pad"
        center = 55 if program == plan.lead else 60 + 7 * index
        left_hand = index == 0 and plan.bass is None
        notes += _accompaniment(plan, program, style, center, left_hand)
    return notes


def _accompaniment(
    plan: _Plan, program: int, style: str, center: int, left_hand: bool
) -> list[Note]:
    pattern = plan.rng.choice(STAB_PATTERNS.get(plan.attrs.genre, STAB_PATTERNS["techno"]))
    notes = []
    for bar in range(plan.bars):
        for tick, duration, pitches in _harmony_bar(plan, bar, style, pattern, center, left_hand):
            start = bar * TICKS_PER_BAR + tick
            velocity = plan.velocity("harmony", start)
            if program == plan.lead:  # the left hand stays below the split
                pitches = [_below_split(pitch) for pitch in pitches]
            notes += [_make_note(start, duration, p, velocity, program) for p in pitches]
    return notes


def _below_split(pitch: int) -> int:
    return pitch - 12 * math.ceil(max(0, pitch - HANDS_SPLIT) / 12)


# --- drums and assembly ---------------------------------------------------------


def _drum_part(plan: _Plan) -> list[Note]:
    if not plan.attrs.drums:
        return []
    notes = []
    for bar in range(plan.bars):
        hits = drums.drum_bar(
            plan.attrs.genre, bar, plan.bars, plan.density, plan.variation, plan.rng
        )
        base = plan.velocity("drums", 0) - 6  # one humanised level per bar
        notes += drums.drum_notes(hits, bar, base)
    return [
        Note(n.start, n.duration, n.pitch, quantize_velocity(n.velocity), n.program, True)
        for n in notes
    ]


def _tidy(notes: list[Note], bars: int) -> list[Note]:
    """Drop duplicates and shorten a note that is still sounding when its key is struck
    again on the same instrument: a synth channel cannot play one key twice at once."""
    end = bars * TICKS_PER_BAR
    unique: dict[tuple[int, bool, int, int], Note] = {}
    for note in notes:
        key = (note.start, note.is_drum, note.program, note.pitch)
        if note.start < end and (key not in unique or note.velocity > unique[key].velocity):
            unique[key] = note
    by_voice = sorted(unique.values(), key=lambda n: (n.is_drum, n.program, n.pitch, n.start))
    tidied = []
    for note, following in zip(by_voice, [*by_voice[1:], None], strict=True):
        if following is not None and _same_key(note, following) and note.end > following.start:
            note = replace(note, duration=following.start - note.start)
        tidied.append(note)
    return canonical_notes(tidied)


def _same_key(a: Note, b: Note) -> bool:
    return (a.is_drum, a.program, a.pitch) == (b.is_drum, b.program, b.pitch)


def compose(
    attrs: MusicAttributes,
    *,
    seed: int,
    duration_seconds: float,
    style: ComposerStyle | None = None,
) -> Piece:
    """Compose a piece long enough to fill duration_seconds at the attributes' tempo."""
    if not attrs.instruments:
        raise ValueError("attributes name no instruments")
    style = style or ComposerStyle()
    rng = random.Random(seed)
    bars = bars_for(duration_seconds, attrs.tempo_bpm)
    chords = theory.build_chords(
        attrs.genre, attrs.key_root, attrs.mode, bars, rng, style.variation
    )
    lead, harmonies, bass = assign_roles(attrs.instruments)
    plan = _Plan(attrs, style, rng, bars, chords, lead, harmonies, bass)
    notes = _melody_part(plan) + _harmony_part(plan) + _bass_part(plan) + _drum_part(plan)
    return Piece(
        notes=_tidy(notes, bars),
        tempo_bpm=attrs.tempo_bpm,
        bars=bars,
        caption=caption_for(attrs),
        attributes=attrs.to_dict(),
    )
