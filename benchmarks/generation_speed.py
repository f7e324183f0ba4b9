"""Generation speed of the procedural backend: audio seconds per wall second, per stage.

    .venv/bin/python benchmarks/generation_speed.py [--clips 30] [--seconds 10]

Renders clips for varied prompts in one process after loading the SoundFont once (as a warm
worker does), and times each stage: composing, FluidSynth rendering, and loudness
normalisation plus Opus encoding. The baseline in the same run is real time: a ratio above 1
means a clip is ready faster than it plays. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generation.music.backends import ProceduralBackend
from generation.music.prompts import EXAMPLE_PROMPTS, parse_prompt
from generation.music.render import SAMPLE_RATE, encode_normalized, render_piece, warm_up

PROMPTS = EXAMPLE_PROMPTS


def time_clip(backend: ProceduralBackend, prompt: str, seed: int, seconds: float) -> dict:
    started = time.perf_counter()
    piece = backend.compose(prompt, seed=seed, duration_seconds=seconds)
    composed = time.perf_counter()
    audio = render_piece(piece, duration_seconds=seconds)
    rendered = time.perf_counter()
    encode_normalized(audio, SAMPLE_RATE)
    encoded = time.perf_counter()
    return {
        "compose": composed - started,
        "render": rendered - composed,
        "normalise_encode": encoded - rendered,
        "total": encoded - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    load_started = time.perf_counter()
    warm_up()
    soundfont_load = time.perf_counter() - load_started
    backend = ProceduralBackend()
    parse_prompt(PROMPTS[0])
    timings = [
        time_clip(backend, PROMPTS[i % len(PROMPTS)], seed=i, seconds=args.seconds)
        for i in range(args.clips)
    ]
    medians = {stage: statistics.median(t[stage] for t in timings) for stage in timings[0]}
    realtime_factor = args.seconds / medians["total"]
    print(f"SoundFont load (once per worker process): {soundfont_load:.2f} s")
    print(f"{args.clips} clips of {args.seconds:g} s; median seconds per clip by stage:")
    for stage, value in medians.items():
        print(f"  {stage:<17} {value * 1000:8.1f} ms")
    print(f"audio seconds per wall second (median clip): {realtime_factor:.1f}x real time")
    figures = {
        "benchmark": "generation_speed",
        "clips": args.clips,
        "clip_seconds": args.seconds,
        "soundfont_load_s": round(soundfont_load, 3),
        "median_ms": {stage: round(value * 1000, 1) for stage, value in medians.items()},
        "audio_seconds_per_wall_second": round(realtime_factor, 2),
        "baseline": "real time (1.0)",
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
