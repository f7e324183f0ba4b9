"""Text prompt -> musical attributes, and attributes -> template caption.

Parsing is keyword driven. `caption_for` writes only words that `parse_prompt`
reads back to the same attributes, so captions of the procedural corpus are
exact ground truth for prompt adherence. A prompt's side of the train/held-out
split is read from its text here too. Prompts made up at random (the corpus,
the fine-tuning pools) are in prompt_sampling.py.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

from generation.music.events import quantize_tempo

KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
MOODS = (
    "sad", "happy", "calm", "energetic", "dark", "epic",
    "romantic", "playful", "tense", "nostalgic", "dreamy",
)  # fmt: skip
DENSITY_LEVELS = {"minimal": 0.15, "sparse": 0.3, "balanced": 0.5, "busy": 0.7, "dense": 0.9}

# Programs that can play chords; the rest only ever carry a single line.
POLYPHONIC_PROGRAMS = frozenset(
    (0, 1, 2, 4, 5, 6, 11, 12, 16, 17, 19, 21, 24, 25, 26, 27, 29, 30, 45, 46,
     48, 49, 50, 52, 61, 62, 88, 89, 90, 91, 95, 105, 108)
)  # fmt: skip
TRUE_BASS_PROGRAMS = frozenset(range(32, 40))
BASS_CAPABLE_PROGRAMS = TRUE_BASS_PROGRAMS | {42, 43, 58, 70}

# Canonical name per program: the only spelling captions use.
PROGRAM_NAMES: dict[int, str] = {
    0: "piano", 4: "electric piano", 6: "harpsichord", 9: "glockenspiel",
    10: "music box", 11: "vibraphone", 12: "marimba", 16: "organ",
    19: "church organ", 21: "accordion", 22: "harmonica", 24: "nylon guitar",
    25: "acoustic guitar", 26: "jazz guitar", 27: "electric guitar",
    29: "overdriven guitar", 30: "distorted guitar", 32: "acoustic bass",
    33: "electric bass", 34: "picked bass", 35: "fretless bass", 38: "synth bass",
    40: "violin", 41: "viola", 42: "cello", 43: "contrabass", 45: "pizzicato strings",
    46: "harp", 48: "strings", 50: "synth strings", 52: "choir", 56: "trumpet",
    57: "trombone", 58: "tuba", 60: "french horn", 61: "brass section",
    62: "synth brass", 65: "sax", 66: "tenor sax", 68: "oboe", 70: "bassoon",
    71: "clarinet", 73: "flute",
    75: "pan flute", 80: "square lead", 81: "saw synth", 88: "new age pad",
    89: "warm pad", 90: "polysynth pad", 91: "choir pad", 95: "sweep pad",
    105: "banjo", 108: "kalimba", 114: "steel drums",
}  # fmt: skip

INSTRUMENT_ALIASES: dict[str, int] = {
    "grand piano": 0, "acoustic piano": 0, "keys": 4, "rhodes": 4, "e-piano": 4,
    "vibes": 11, "hammond": 16, "hammond organ": 16, "pipe organ": 19,
    "classical guitar": 24, "spanish guitar": 24, "clean guitar": 27,
    "distortion guitar": 30, "heavy guitar": 30, "upright bass": 32, "double bass": 32,
    "bass guitar": 33, "slap bass": 33, "string ensemble": 48, "string section": 48,
    "orchestra": 48, "orchestral strings": 48, "voices": 52, "choral": 52,
    "horn": 60, "horns": 61, "brass": 61, "saxophone": 65, "alto sax": 65,
    "synth": 81, "synths": 81, "synthesizer": 81, "synth lead": 81, "lead synth": 81,
    "pad": 89, "synth pad": 89, "pads": 89, "bells": 9, "fiddle": 40,
}  # fmt: skip

# "guitar" and "bass" mean different instruments in different genres.
GENERIC_GUITAR = {"rock": 29, "metal": 30, "jazz": 26, "funk": 27, "blues": 27, "reggae": 27}
GENERIC_BASS = {"techno": 38, "house": 38, "jazz": 32, "folk": 32, "lofi": 33}


@dataclass(frozen=True)
class GenrePreset:
    tempo_bpm: int
    mode: str
    key_root: int
    instruments: tuple[int, ...]  # lead, harmony, [bass]
    drums: bool
    mood: str
    density: float
    noun: str  # how captions name a piece of this genre
    solo_friendly: bool = False  # a named chordal instrument may play alone


GENRE_PRESETS: dict[str, GenrePreset] = {
    "techno": GenrePreset(130, "minor", 9, (81, 62, 38), True, "energetic", 0.7, "techno track"),
    "house": GenrePreset(124, "major", 7, (81, 0, 38), True, "happy", 0.7, "house track"),
    "ambient": GenrePreset(68, "major", 2, (88, 89), False, "calm", 0.3, "ambient piece", True),
    "jazz": GenrePreset(132, "major", 5, (65, 0, 32), True, "playful", 0.5, "jazz tune"),
    "rock": GenrePreset(124, "major", 4, (29, 30, 34), True, "energetic", 0.7, "rock song"),
    "classical": GenrePreset(
        96, "major", 7, (40, 48, 42), False, "calm", 0.5, "classical piece", True
    ),
    "ballad": GenrePreset(72, "major", 0, (0, 48), False, "romantic", 0.3, "ballad", True),
    "hip hop": GenrePreset(90, "minor", 0, (4, 89, 38), True, "dark", 0.5, "hip hop beat"),
    "lofi": GenrePreset(80, "minor", 2, (4, 26, 33), True, "nostalgic", 0.3, "lofi beat"),
    "folk": GenrePreset(104, "major", 7, (73, 25, 32), False, "happy", 0.5, "folk tune", True),
    "pop": GenrePreset(112, "major", 0, (81, 0, 33), True, "happy", 0.5, "pop song"),
    "metal": GenrePreset(160, "minor", 4, (30, 29, 34), True, "dark", 0.9, "metal song"),
    "blues": GenrePreset(92, "major", 9, (27, 0, 33), True, "nostalgic", 0.5, "blues"),
    "reggae": GenrePreset(76, "major", 7, (16, 27, 33), True, "calm", 0.5, "reggae tune"),
    "cinematic": GenrePreset(
        84, "minor", 2, (60, 48, 43), False, "epic", 0.5, "cinematic score", True
    ),
    "funk": GenrePreset(104, "minor", 4, (61, 27, 33), True, "playful", 0.7, "funk groove"),
}
GENRES = tuple(GENRE_PRESETS)

GENRE_ALIASES: dict[str, str] = {
    "hip-hop": "hip hop", "hiphop": "hip hop", "rap": "hip hop", "trap": "hip hop",
    "boom bap": "hip hop", "lo-fi": "lofi", "lo fi": "lofi", "chillhop": "lofi",
    "edm": "techno", "electronic": "techno", "trance": "techno", "rave": "techno",
    "disco": "funk", "soul": "funk", "orchestral": "cinematic", "film": "cinematic",
    "soundtrack": "cinematic", "score": "cinematic", "trailer": "cinematic",
    "baroque": "classical", "sonata": "classical", "symphony": "classical",
    "country": "folk", "punk": "rock", "grunge": "rock", "heavy metal": "metal",
    "funky": "funk", "jazzy": "jazz", "bluesy": "blues", "rocking": "rock",
    "love song": "ballad", "lullaby": "ballad", "dub": "reggae", "ska": "reggae",
}  # fmt: skip

MOOD_WORDS: dict[str, str] = {
    "melancholic": "sad", "melancholy": "sad", "sorrowful": "sad", "lonely": "sad",
    "heartbroken": "sad", "mournful": "sad", "joyful": "happy", "cheerful": "happy",
    "uplifting": "happy", "sunny": "happy", "bright": "happy", "peaceful": "calm",
    "serene": "calm", "relaxing": "calm", "tranquil": "calm", "soothing": "calm",
    "driving": "energetic", "intense": "energetic", "powerful": "energetic",
    "aggressive": "energetic", "ominous": "dark", "eerie": "dark", "sinister": "dark",
    "spooky": "dark", "mysterious": "dark", "heroic": "epic", "triumphant": "epic",
    "majestic": "epic", "grand": "epic", "tender": "romantic", "loving": "romantic",
    "whimsical": "playful", "quirky": "playful", "fun": "playful", "funny": "playful",
    "suspenseful": "tense", "anxious": "tense", "wistful": "nostalgic",
    "dreamlike": "dreamy", "ethereal": "dreamy", "hazy": "dreamy",
}  # fmt: skip
MOOD_MODE_HINT = {
    "sad": "minor", "dark": "minor", "tense": "minor", "epic": "minor",
    "happy": "major", "playful": "major", "romantic": "major", "dreamy": "major",
}  # fmt: skip
MOOD_TEMPO_FACTOR = {"sad": 0.88, "calm": 0.9, "dreamy": 0.9, "energetic": 1.1, "happy": 1.05}
MOOD_WHEN_NO_GENRE = {
    "sad": "ballad", "romantic": "ballad", "calm": "ambient", "dreamy": "ambient",
    "dark": "cinematic", "epic": "cinematic", "tense": "cinematic", "nostalgic": "lofi",
}  # fmt: skip
DEFAULT_GENRE = "pop"

DENSITY_WORDS = {
    **DENSITY_LEVELS, "very sparse": 0.15, "minimalist": 0.15, "simple": 0.3,
    "moderate": 0.5, "complex": 0.7, "lively": 0.7, "very busy": 0.9, "intricate": 0.9,
}  # fmt: skip
DRUM_WORDS = ("drums", "drum", "percussion", "drum machine", "beat", "beats", "808", "groove")
NO_DRUM_PATTERN = re.compile(
    r"\b(no|without|minus)\s+(drums|drum|percussion|beats?)\b|\bdrumless\b"
)
BPM_PATTERN = re.compile(r"\b(\d{2,3})\s*(bpm|beats per minute)\b")
KEY_WITH_MODE_PATTERN = re.compile(
    r"\b([a-g])(#|♯|♭|b|-sharp|-flat| sharp| flat)?\s*(major|minor|maj|min)\b"
)
KEY_AFTER_IN_PATTERN = re.compile(r"\bin ([a-g])(#|♯|♭|b)?(?![\w#♯♭-])")


@dataclass(frozen=True)
class MusicAttributes:
    genre: str
    tempo_bpm: int
    key_root: int  # 0 = C .. 11 = B
    mode: str  # "major" | "minor"
    instruments: tuple[int, ...]  # GM programs: lead first, a bass (if any) last
    drums: bool
    mood: str
    density: float  # 0..1, how many notes per bar

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["instruments"] = list(self.instruments)
        data["key"] = f"{KEY_NAMES[self.key_root]} {self.mode}"
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MusicAttributes:
        fields = {name: data[name] for name in cls.__dataclass_fields__}
        fields["instruments"] = tuple(fields["instruments"])
        return cls(**fields)


# --- parsing ----------------------------------------------------------------


class _Text:
    """Lower-cased prompt whose matched phrases get blanked out, so that a word
    inside an instrument name ("jazz guitar") is not read again as a genre."""

    def __init__(self, text: str) -> None:
        self.original = " ".join(text.split())
        self.value = self.original.lower()

    def take(self, phrases: list[str]) -> list[tuple[int, str]]:
        """Find phrases (longest first, plural 's' allowed); return (position, phrase)."""
        found = []
        for phrase in sorted(phrases, key=len, reverse=True):
            pattern = re.compile(rf"(?<![\w-]){re.escape(phrase)}s?(?![\w-])")
            for match in pattern.finditer(self.value):
                found.append((match.start(), phrase))
                self.blank(match.start(), match.end())
        return sorted(found)

    def take_pattern(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        match = pattern.search(self.value)
        if match:
            self.blank(match.start(), match.end())
        return match

    def blank(self, start: int, end: int) -> None:
        self.value = self.value[:start] + " " * (end - start) + self.value[end:]


def _instrument_table(genre_hint: str | None) -> dict[str, int]:
    table = {name: program for program, name in PROGRAM_NAMES.items()}
    table.update(INSTRUMENT_ALIASES)
    table["guitar"] = GENERIC_GUITAR.get(genre_hint or "", 25)
    table["bass"] = GENERIC_BASS.get(genre_hint or "", 33)
    return table


def _genre_hint(text: str) -> str | None:
    """A quick first look for the genre, only to resolve "guitar" and "bass"."""
    words = sorted({**{g: g for g in GENRES}, **GENRE_ALIASES}.items(), key=lambda kv: -len(kv[0]))
    hits = [(text.find(word), genre) for word, genre in words if re.search(rf"\b{word}\b", text)]
    return min(hits)[1] if hits else None


def _parse_instruments(text: _Text) -> list[int]:
    table = _instrument_table(_genre_hint(text.value))
    programs = [table[phrase] for _, phrase in text.take(list(table))]
    return list(dict.fromkeys(programs))


def _parse_drums(text: _Text) -> bool | None:
    if text.take_pattern(NO_DRUM_PATTERN):
        return False
    return True if text.take(list(DRUM_WORDS)) else None


def _pitch_class(letter: str, accidental: str | None) -> int:
    root = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}[letter]
    accidental = (accidental or "").strip(" -")
    shift = {"#": 1, "♯": 1, "sharp": 1, "b": -1, "♭": -1, "flat": -1}.get(accidental, 0)
    return (root + shift) % 12


def _parse_key(text: _Text) -> tuple[int | None, str | None]:
    match = text.take_pattern(KEY_WITH_MODE_PATTERN)
    if match:
        mode = "minor" if match.group(3).startswith("min") else "major"
        return _pitch_class(match.group(1), match.group(2)), mode
    match = KEY_AFTER_IN_PATTERN.search(text.value)
    # a lower-case "in a" is the article, not the key of A
    if match and not (match.group(1) == "a" and text.original[match.start(1)] == "a"):
        text.blank(match.start(), match.end())
        return _pitch_class(match.group(1), match.group(2)), None
    return None, None


def _parse_mode_word(text: _Text) -> str | None:
    found = text.take(["minor", "major"])
    return found[0][1] if found else None


def _parse_genre(text: _Text) -> str | None:
    words = {**{genre: genre for genre in GENRES}, **GENRE_ALIASES}
    found = text.take(list(words))
    return words[found[0][1]] if found else None


def _parse_mood(text: _Text) -> str | None:
    words = {**{mood: mood for mood in MOODS}, **MOOD_WORDS}
    found = text.take(list(words))
    return words[found[0][1]] if found else None


def _parse_density(text: _Text) -> float | None:
    found = text.take(list(DENSITY_WORDS))
    return DENSITY_WORDS[found[0][1]] if found else None


def _parse_tempo(text: _Text, preset_tempo: int, mood: str | None) -> int:
    match = text.take_pattern(BPM_PATTERN)
    if match:
        return quantize_tempo(min(max(int(match.group(1)), 40), 240))
    adjustments = {
        "very slow": lambda t: max(min(t * 0.7, 66), 40),
        "very fast": lambda t: min(max(t * 1.4, 150), 220),
        "slow": lambda t: max(min(t * 0.85, 84), 52),
        "fast": lambda t: min(max(t * 1.2, 128), 200),
        "upbeat": lambda t: min(max(t * 1.1, 112), 200),
        "relaxed": lambda t: max(min(t * 0.9, 100), 52),
        "laid back": lambda t: max(min(t * 0.9, 100), 52),
        "laid-back": lambda t: max(min(t * 0.9, 100), 52),
        "chill": lambda t: max(min(t * 0.9, 100), 52),
    }
    found = text.take(list(adjustments))
    if found:
        return quantize_tempo(adjustments[found[0][1]](preset_tempo))
    return quantize_tempo(preset_tempo * MOOD_TEMPO_FACTOR.get(mood or "", 1.0))


def complete_instruments(named: list[int], preset: GenrePreset, solo: bool) -> tuple[int, ...]:
    """Named instruments replace the preset's; missing roles are filled from it."""
    if not named:
        return preset.instruments
    melodic = [p for p in named if p not in TRUE_BASS_PROGRAMS]
    basses = [p for p in named if p in TRUE_BASS_PROGRAMS]
    if solo:
        return tuple(melodic + basses)
    if not melodic:
        melodic = list(preset.instruments[:2])
    if not any(p in POLYPHONIC_PROGRAMS for p in melodic):
        melodic.append(preset.instruments[1])
    has_chords = any(p in POLYPHONIC_PROGRAMS for p in named)
    if len(preset.instruments) > 2 and not basses and not (preset.solo_friendly and has_chords):
        basses = [preset.instruments[2]]
    return tuple(dict.fromkeys(melodic + basses))


@functools.lru_cache(maxsize=16384)
def parse_prompt(text: str) -> MusicAttributes:
    """Read attributes from free text; anything not mentioned comes from genre defaults.
    Cached (the attributes are frozen): RL parses each sample's prompt several times a step,
    and a plan step of 128 samples spent 0.6 CPU s on it."""
    prompt = _Text(text)
    named = _parse_instruments(prompt)
    drums = _parse_drums(prompt)
    key_root, mode = _parse_key(prompt)
    mode = mode or _parse_mode_word(prompt)
    genre = _parse_genre(prompt)
    mood = _parse_mood(prompt)
    density = _parse_density(prompt)
    solo = bool(prompt.take(["solo", "alone", "unaccompanied"]))
    genre = genre or MOOD_WHEN_NO_GENRE.get(mood or "", DEFAULT_GENRE)
    preset = GENRE_PRESETS[genre]
    return MusicAttributes(
        genre=genre,
        tempo_bpm=_parse_tempo(prompt, preset.tempo_bpm, mood),
        key_root=preset.key_root if key_root is None else key_root,
        mode=mode or MOOD_MODE_HINT.get(mood or "", preset.mode),
        instruments=complete_instruments(named, preset, solo),
        drums=(preset.drums and not solo) if drums is None else drums,
        mood=mood or preset.mood,
        density=preset.density if density is None else density,
    )


# --- held-out split ---


def normalised_prompt(prompt_text: str) -> str:
    """The text two prompts must share to count as one: case and spacing do not matter."""
    return " ".join(prompt_text.casefold().split())


def prompt_is_held_out(prompt_text: str, *, test_share: float, split_seed: int) -> bool:
    """A prompt's side of a train/held-out split, from a hash of its normalised text: every
    vote on a prompt lands on the same side, the same prompt typed twice is still one
    prompt, and pretraining, reward models and fine-tuning all split the same way."""
    key = f"{split_seed}:{normalised_prompt(prompt_text)}".encode()
    fraction = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
    return fraction < test_share


# --- captions ---------------------------------------------------------------


def _tempo_word(tempo_bpm: int) -> str:
    if tempo_bpm < 80:
        return "slow"
    if tempo_bpm < 108:
        return "mid-tempo"
    return "upbeat" if tempo_bpm < 132 else "fast"


def _density_word(density: float) -> str:
    return min(DENSITY_LEVELS, key=lambda word: abs(DENSITY_LEVELS[word] - density))


def _join_words(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def caption_for(attrs: MusicAttributes) -> str:
    """E.g. "A slow sad ballad in D minor at 68 BPM with piano, sparse." """
    preset = GENRE_PRESETS[attrs.genre]
    names = [PROGRAM_NAMES.get(p, f"GM program {p}") for p in attrs.instruments]
    if attrs.drums:
        names.append("drums")
    no_drums = ", without drums" if preset.drums and not attrs.drums else ""
    key = f"{KEY_NAMES[attrs.key_root]} {attrs.mode}"
    tempo_word = _tempo_word(attrs.tempo_bpm)
    article = "An" if tempo_word[0] in "aeiou" else "A"
    return (
        f"{article} {tempo_word} {attrs.mood} {preset.noun} in {key} "
        f"at {attrs.tempo_bpm} BPM with {_join_words(names)}{no_drums}, "
        f"{_density_word(attrs.density)}."
    )


# Prompts that show the range of the composer; the demo campaigns and benchmarks use them.
EXAMPLE_PROMPTS = (
    "slow sad piano ballad",
    "fast techno with drums",
    "calm ambient pad with strings",
    "upbeat jazz with saxophone and piano",
    "energetic rock with electric guitar and drums",
    "happy folk song with acoustic guitar and flute",
    "dark cinematic strings in D minor",
    "lofi hip hop beat at 80 bpm",
)
