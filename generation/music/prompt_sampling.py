"""Prompts and attributes made up at random: the attributes of the composer's pretraining
corpus (their captions parse back exactly), terse prompts as people type them, and the
training and held-out prompt pools that fine-tuning draws from.

Every draw takes its RNG from the caller, so a seed fixes the stream.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from generation.music.events import quantize_tempo
from generation.music.prompts import (
    DENSITY_LEVELS,
    GENRE_ALIASES,
    GENRE_PRESETS,
    GENRES,
    MODES,
    MOOD_MODE_HINT,
    MOOD_WORDS,
    POLYPHONIC_PROGRAMS,
    PROGRAM_NAMES,
    MusicAttributes,
    caption_for,
    complete_instruments,
    normalised_prompt,
    parse_prompt,
    prompt_is_held_out,
)

# --- sampling a corpus --------------------------------------------------------

LEAD_POOLS: dict[str, tuple[int, ...]] = {
    "techno": (81, 80, 90), "house": (81, 0, 4), "ambient": (88, 11, 46, 108, 73),
    "jazz": (65, 66, 56, 0, 11, 26), "rock": (29, 30, 27, 16), "classical": (40, 0, 73, 68, 71),
    "ballad": (0, 40, 42, 73, 24), "hip hop": (4, 0, 81, 56), "lofi": (4, 0, 11, 26, 73),
    "folk": (73, 40, 25, 105, 22, 21), "pop": (81, 0, 4, 27, 80), "metal": (30, 29),
    "blues": (27, 22, 65, 0, 16), "reggae": (16, 27, 65, 56, 4),
    "cinematic": (60, 40, 42, 52, 73, 0), "funk": (61, 27, 4, 56, 65),
}  # fmt: skip
HARMONY_POOLS: dict[str, tuple[int, ...]] = {
    "techno": (62, 90, 0), "house": (0, 4, 90), "ambient": (89, 88, 95, 48, 52),
    "jazz": (0, 4, 26), "rock": (30, 29, 16), "classical": (48, 0, 46, 6),
    "ballad": (48, 0, 46, 24, 89), "hip hop": (89, 0, 4, 48), "lofi": (26, 0, 4, 89),
    "folk": (25, 24, 46, 21), "pop": (0, 4, 27, 89, 48), "metal": (29, 30),
    "blues": (0, 16, 27), "reggae": (27, 16, 0), "cinematic": (48, 52, 50, 0, 46),
    "funk": (27, 4, 16, 61),
}  # fmt: skip
BASS_POOLS: dict[str, tuple[int, ...]] = {
    "techno": (38,), "house": (38, 33), "jazz": (32, 33), "rock": (34, 33),
    "classical": (42, 43), "hip hop": (38, 33), "lofi": (33, 32), "folk": (32, 33),
    "pop": (33, 38), "metal": (34,), "blues": (33, 32), "reggae": (33,),
    "cinematic": (43, 42), "funk": (33, 34),
}  # fmt: skip
GENRE_MOODS: dict[str, tuple[str, ...]] = {
    "techno": ("energetic", "dark", "tense"), "house": ("happy", "energetic", "dreamy"),
    "ambient": ("calm", "dreamy", "dark", "sad"), "jazz": ("playful", "romantic", "calm"),
    "rock": ("energetic", "happy", "dark"), "classical": ("calm", "romantic", "sad", "epic"),
    "ballad": ("romantic", "sad", "nostalgic"), "hip hop": ("dark", "calm", "energetic"),
    "lofi": ("nostalgic", "calm", "dreamy"), "folk": ("happy", "nostalgic", "sad"),
    "pop": ("happy", "energetic", "romantic"), "metal": ("dark", "energetic", "epic"),
    "blues": ("nostalgic", "sad", "playful"), "reggae": ("calm", "happy"),
    "cinematic": ("epic", "tense", "dark", "sad"), "funk": ("playful", "energetic", "happy"),
}  # fmt: skip


def _random_instruments(rng: random.Random, genre: str) -> tuple[int, ...]:
    preset = GENRE_PRESETS[genre]
    lead = rng.choice(LEAD_POOLS[genre])
    harmonies = [p for p in HARMONY_POOLS[genre] if p != lead]
    chosen = [lead]
    if lead not in POLYPHONIC_PROGRAMS or rng.random() < 0.6:
        chosen.append(rng.choice(harmonies))
    solo_allowed = preset.solo_friendly and lead in POLYPHONIC_PROGRAMS
    basses = [p for p in BASS_POOLS.get(genre, ()) if p not in chosen]
    if basses and not (solo_allowed and rng.random() < 0.5):
        chosen.append(rng.choice(basses))
    # keep exactly what parse_prompt would rebuild from the caption
    return complete_instruments(chosen, preset, solo=False)


def random_attributes(rng: random.Random) -> MusicAttributes:
    """Sample attributes for the pretraining corpus (captions parse back exactly)."""
    genre = rng.choice(GENRES)
    preset = GENRE_PRESETS[genre]
    mood = rng.choice(GENRE_MOODS[genre])
    default_mode = MOOD_MODE_HINT.get(mood, preset.mode)
    return MusicAttributes(
        genre=genre,
        tempo_bpm=quantize_tempo(preset.tempo_bpm * rng.uniform(0.8, 1.2)),
        key_root=rng.randrange(12),
        mode=default_mode if rng.random() < 0.75 else MODES[1 - MODES.index(default_mode)],
        instruments=_random_instruments(rng, genre),
        drums=preset.drums if rng.random() < 0.85 else not preset.drums,
        mood=mood,
        density=rng.choice(list(DENSITY_LEVELS.values())),
    )


# --- a prompt varied along one axis it controls ----------------------------------------

PROMPT_VARIANT_AXES = ("tempo", "mode", "drums", "instruments", "density")
PROMPT_TEMPO_FACTORS = (0.8, 1.25)


def prompt_variant(
    prompt_text: str, rng: random.Random, axes: Sequence[str] = PROMPT_VARIANT_AXES
) -> str:
    """The caption of what `prompt_text` asks for, changed along one of `axes` (each a
    PROMPT_VARIANT_AXES axis a prompt controls): the tempo 0.8x or 1.25x, the other mode,
    drums in or out, one accompanying instrument left out (where the caption then asks for
    fewer: a genre's bass left out comes back), or another density. A generator that plays
    each prompt as asked never plays anything else for it; sampled for this caption instead,
    it plays what the prompt's own samples never would (RL's exploration, rl.py). A prompt
    with a single instrument has none to leave out: with "instruments" the only axis, the
    prompt itself is returned."""
    if unknown := set(axes) - set(PROMPT_VARIANT_AXES):
        raise ValueError(f"no such variant axes: {sorted(unknown)}")
    attrs = parse_prompt(prompt_text)
    fewer = [
        dataclasses.replace(
            attrs, instruments=attrs.instruments[:index] + attrs.instruments[index + 1 :]
        )
        for index in range(1, len(attrs.instruments))
    ]
    fewer = [
        changed for changed in fewer
        if parse_prompt(caption_for(changed)).instruments != attrs.instruments
    ]  # fmt: skip
    axes = [axis for axis in PROMPT_VARIANT_AXES if axis in axes]
    possible = [axis for axis in axes if axis != "instruments" or fewer]
    if not possible:
        return prompt_text
    axis = rng.choice(possible)
    if axis == "tempo":
        tempo = quantize_tempo(attrs.tempo_bpm * rng.choice(PROMPT_TEMPO_FACTORS))
        changed = dataclasses.replace(attrs, tempo_bpm=tempo)
    elif axis == "mode":
        changed = dataclasses.replace(attrs, mode=MODES[1 - MODES.index(attrs.mode)])
    elif axis == "drums":
        changed = dataclasses.replace(attrs, drums=not attrs.drums)
    elif axis == "instruments":
        changed = rng.choice(fewer)
    else:
        others = sorted(value for value in set(DENSITY_LEVELS.values()) if value != attrs.density)
        changed = dataclasses.replace(attrs, density=rng.choice(others))
    return caption_for(changed)


# --- generated prompts ---------------------------------------------------------

TEMPO_WORDS = ("", "", "slow", "very slow", "fast", "very fast", "upbeat", "chill")
DENSITY_PHRASES = ("", "", "", "sparse", "busy", "minimal", "dense")


def short_prompt(attrs: MusicAttributes, rng: random.Random) -> str:
    """A terse prompt in the way people write them, built from some of the attributes."""
    genre_words = [attrs.genre] + [w for w, g in GENRE_ALIASES.items() if g == attrs.genre]
    mood_words = [attrs.mood] + [w for w, m in MOOD_WORDS.items() if m == attrs.mood]
    named = [PROGRAM_NAMES[p] for p in attrs.instruments if p in PROGRAM_NAMES]
    instruments = rng.sample(named, k=min(len(named), rng.choice((0, 1, 1, 2))))
    drums = rng.choice(("", "", "with drums", "without drums"))
    words = [rng.choice(TEMPO_WORDS), rng.choice(DENSITY_PHRASES)]
    words += [rng.choice(mood_words) if rng.random() < 0.7 else ""]
    if instruments and rng.random() < 0.5:
        words += [instruments.pop(0)]  # "piano ballad" as well as "ballad with piano"
    words += [rng.choice(genre_words) if rng.random() < 0.85 else "music"]
    extras = [f"with {' and '.join(instruments)}"] if instruments else []
    extras += [drums] if drums else []
    return " ".join(word for word in words + extras if word)


def random_prompt_text(
    rng: random.Random, *, short_prompt_share: float = 0.5
) -> tuple[str, MusicAttributes]:
    """A prompt from the corpus's distribution (a terse prompt as people type them, or a
    template caption) and the attributes it asks for."""
    attrs = random_attributes(rng)
    if rng.random() < short_prompt_share:
        prompt = short_prompt(attrs, rng)
        return prompt, parse_prompt(prompt)
    return caption_for(attrs), attrs


def prompt_pools(
    curated: list[str],
    *,
    train_count: int,
    held_out_count: int,
    test_share: float,
    split_seed: int,
    seed: int,
) -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts) for fine-tuning: the curated prompts, each on its
    side of the `prompt_is_held_out` split, then generated prompts (`random_prompt_text`,
    a stream fixed by `seed`) until each side holds its count. No text is on both sides, and
    no text twice: the split is by a hash of the normalised text, and repeats are skipped.
    Every curated prompt is kept; the held-out side is cut to held_out_count (curated first),
    so a run is judged on exactly that many."""
    if train_count < 1 or held_out_count < 1:
        raise ValueError("both pools need at least one prompt")
    train: list[str] = []
    held_out: list[str] = []
    seen: set[str] = set()

    def place(text: str) -> None:
        key = normalised_prompt(text)
        if key in seen:
            return
        seen.add(key)
        side = held_out if prompt_is_held_out(
            text, test_share=test_share, split_seed=split_seed
        ) else train  # fmt: skip
        side.append(text)

    for text in curated:
        place(text)
    rng = random.Random(seed)
    # A split that starves one side (a test_share near 0 or 1) stops with an error after a
    # bounded number of draws rather than looping: 0.01 still fills 64 held-out prompts.
    attempts = 200 * (train_count + held_out_count)
    while len(train) < train_count or len(held_out) < held_out_count:
        attempts -= 1
        if attempts < 0:
            raise ValueError(f"could not draw {train_count} + {held_out_count} distinct prompts")
        text, _ = random_prompt_text(rng)
        wanted = held_out if prompt_is_held_out(
            text, test_share=test_share, split_seed=split_seed
        ) else train  # fmt: skip
        limit = held_out_count if wanted is held_out else train_count
        if len(wanted) < limit:
            place(text)
    return train, held_out[:held_out_count]
