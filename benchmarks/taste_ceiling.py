"""How high a taste's win rate against the base can go while the prompt is still played as
asked: the composer's own pieces, over its style knobs, judged against the base's samples.

    .venv/bin/python benchmarks/taste_ceiling.py [--taste default_preference ...] [--threads 1]

The loop's bar is a win rate of 0.90 against its parent. Whether a taste allows that is a
property of the taste and of what the generator can play, before any RL: a taste for a
higher lead, say, can be met only as far as the lead can be moved up, and a candidate that
plays every sample 12 semitones higher still loses the pairs in which the base happened to
play higher itself. This measures it. On the loop's 64 held-out prompts, two 4-second clips
of the base each (the raters' clip length, as the evaluation campaign hears them), it judges
the composer (`compose`, given the prompt's parsed attributes, so tempo, instruments, drums,
key, mode and density are as asked) playing each prompt with one of its style knobs moved:

- register_shift: the melody moved -12..+12 semitones (the range pretraining showed the body);
- variation: 0 (plain, repetitive) to 1 (leaps, syncopation, substitutions);
- density_scale: 0.5x to 2x the prompt's density;
- tempo_scale: 0.8x or 1.25x the prompt's tempo;
- mode: every prompt played in minor, or in major;
- note_length_scale: each pitched note cut to 0.5x or 0.3x of its length (the touch, which
  only a body decides: the composer has no knob for it, so its pieces are cut afterwards).

Density, tempo and mode are prompt attributes: the adherence printed beside them says what moving
them costs. Dynamics have no knob here, so a taste for them measures 0.5 against the base,
whatever a candidate could reach. Two settings move two knobs at once (minor, and the melody
an octave down or up), for tastes that want both.

Printed per taste: the expected win rate (the mean probability the taste gives the
composer's clip against the base's, ties aside) of each setting, the composer at its
defaults (the baseline: what playing the prompt exactly as asked is worth), and the best
setting, with its prompt adherence (`piece_fit`). The best is a lower bound on what any
candidate that keeps the prompt's attributes can reach. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HELD_OUT_SEEDS = (7, 8)  # as benchmarks/rl_oracle.py judges its tuned model
CLIP_SECONDS = 4.0
KNOBS: dict[str, tuple[float | str, ...]] = {
    "register_shift": (-12, -8, -4, 4, 8, 12),
    "variation": (0.0, 1.0),
    "density_scale": (0.5, 2.0),
    "tempo_scale": (0.8, 1.25),
    "mode": ("minor", "major"),
    "note_length_scale": (0.5, 0.3),
}
# Knobs moved together, for tastes that want two things at once.
COMBINED_KNOBS: tuple[dict[str, float | str], ...] = (
    {"mode": "minor", "register_shift": -12},
    {"mode": "minor", "register_shift": 12},
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taste", nargs="+", default=["default_preference"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from generation.music.backends import SHIPPED_GENERATOR
    from generation.music.composer import ComposerStyle, compose
    from generation.music.evaluation import piece_fit
    from generation.music.events import piece_to_events, quantize_tempo
    from generation.music.learned import SymbolicTransformerBackend, torch_threads
    from generation.music.prompt_sampling import prompt_pools
    from generation.music.prompts import parse_prompt
    from ratings.simulation import tastes

    chosen = {name: getattr(tastes, name, None) for name in args.taste}
    if missing := [name for name, taste in chosen.items() if not callable(taste)]:
        parser.error(f"ratings.simulation.tastes has no taste {', '.join(missing)}")
    _, held_out = prompt_pools(
        [], train_count=2000, held_out_count=64, test_share=0.2, split_seed=0, seed=0
    )

    def heard(prompt: str, piece) -> tastes.SimulatedClip:
        attributes = tastes.heard_attributes({}, piece_to_events(piece), prompt)
        return tastes.SimulatedClip(b"", prompt, attributes, "clip")

    started = time.perf_counter()
    base = SymbolicTransformerBackend.load(ROOT / SHIPPED_GENERATOR)
    with torch_threads(args.threads):
        samples = [
            sample
            for seed in HELD_OUT_SEEDS
            for sample in base.sample(held_out, 1, seed, heard_seconds=CLIP_SECONDS)
        ]
    judges = [(s.prompt, heard(s.prompt, base.clip_piece(s, CLIP_SECONDS))) for s in samples]

    def played(prompt: str, index: int, knobs: dict[str, float | str]):
        attributes, style = parse_prompt(prompt), ComposerStyle()
        for knob, value in knobs.items():
            if knob == "tempo_scale":
                tempo = quantize_tempo(attributes.tempo_bpm * value)
                attributes = dataclasses.replace(attributes, tempo_bpm=tempo)
            elif knob == "mode":
                attributes = dataclasses.replace(attributes, mode=value)
            elif knob != "note_length_scale":
                style = dataclasses.replace(style, **{knob: value})
        piece = compose(attributes, seed=index, duration_seconds=CLIP_SECONDS, style=style)
        if scale := knobs.get("note_length_scale"):
            notes = [
                note
                if note.is_drum
                else dataclasses.replace(note, duration=max(1, int(note.duration * scale)))
                for note in piece.notes
            ]
            piece = dataclasses.replace(piece, notes=notes)
        return piece

    def setting_name(knob: str, value: float | str) -> str:
        if knob == "mode":
            return f"mode {value}"
        if knob.endswith("_scale"):
            return f"{knob} x{value:g}"
        return f"{knob} {value:+g}" if knob == "register_shift" else f"{knob} {value:g}"

    settings: list[tuple[str, dict[str, float | str]]] = [("defaults", {})]
    settings += [
        (setting_name(knob, value), {knob: value})
        for knob, values in KNOBS.items()
        for value in values
    ]
    settings += [
        (", ".join(setting_name(knob, value) for knob, value in knobs.items()), knobs)
        for knobs in COMBINED_KNOBS
    ]
    pieces = {
        label: [played(prompt, index, knobs) for index, (prompt, _) in enumerate(judges)]
        for label, knobs in settings
    }
    clips = {
        label: [heard(prompt, piece) for (prompt, _), piece in zip(judges, made, strict=True)]
        for label, made in pieces.items()
    }
    fits = {
        label: statistics.fmean(
            piece_fit(parse_prompt(prompt), piece)["score"]
            for (prompt, _), piece in zip(judges, made, strict=True)
        )
        for label, made in pieces.items()
    }
    base_fit = statistics.fmean(
        piece_fit(parse_prompt(s.prompt), s.piece)["score"] for s in samples
    )

    results = {}
    for name, taste in chosen.items():
        rates = {
            label: statistics.fmean(
                taste(prompt, clip, judge)
                for clip, (prompt, judge) in zip(made, judges, strict=True)
            )
            for label, made in clips.items()
        }
        best = max(rates, key=rates.__getitem__)
        print(f"{name}: expected win rate of the composer against {len(judges)} base clips")
        for label, rate in rates.items():
            marker = "  <- best" if label == best else ""
            print(f"  {label:<32} {rate:.3f}   adherence {fits[label]:.3f}{marker}")
        results[name] = {
            "win_rates": {label: round(rate, 3) for label, rate in rates.items()},
            "composer_defaults": round(rates["defaults"], 3),
            "best": best,
            "ceiling": round(rates[best], 3),
            "ceiling_adherence": round(fits[best], 3),
        }
    print(f"the base's own adherence on these clips' pieces: {base_fit:.3f}")
    print(f"{time.perf_counter() - started:.0f} s")
    print(json.dumps({"benchmark": "taste_ceiling", "base_adherence": round(base_fit, 3),
                      "tastes": results}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
