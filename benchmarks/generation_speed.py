"""Generation speed: audio seconds per wall second, for the composer and the learned model.

    .venv/bin/python benchmarks/generation_speed.py [--clips 30] [--seconds 10]
        [--checkpoint generation/checkpoints/planned-small-v3.pt] [--train-steps 20]

Composer: renders clips for varied prompts in one process after loading the SoundFont once
(as a warm worker does), timing each stage: composing, FluidSynth rendering, and loudness
normalisation plus Opus encoding. Learned model (when the checkpoint exists): sampling plus
rendering of 10 s clips at batch 1 and batch 16, and pretraining tokens per second. The
baseline in the same run is real time: a ratio above 1 means clips are ready faster than they
play. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generation.music.backends import SHIPPED_GENERATOR, ProceduralBackend
from generation.music.prompts import EXAMPLE_PROMPTS, parse_prompt
from generation.music.render import SAMPLE_RATE, encode_normalized, render_piece, warm_up

ROOT = Path(__file__).resolve().parent.parent
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


def learned_model_figures(checkpoint: Path, seconds: float, train_steps: int) -> dict:
    """Sampling plus rendering with the learned generator, batch 1 and 16, and training
    throughput of the same size."""
    import tempfile

    from generation.music.learned import SymbolicTransformerBackend
    from generation.music.pretrain import TrainConfig, train

    backend = SymbolicTransformerBackend.load(checkpoint)
    backend.sample([PROMPTS[0]], 1, 0, render=True, duration_seconds=seconds)  # warm up
    single = []
    for index in range(5):
        started = time.perf_counter()
        backend.sample([PROMPTS[index % len(PROMPTS)]], 1, index, render=True,
                       duration_seconds=seconds)  # fmt: skip
        single.append(time.perf_counter() - started)
    prompts16 = [PROMPTS[i % len(PROMPTS)] for i in range(16)]
    started = time.perf_counter()
    backend.sample(prompts16, 1, 7, render=True, duration_seconds=seconds)
    batch16 = time.perf_counter() - started
    size = backend.metadata.get("train", {}).get("size", "small")
    with tempfile.TemporaryDirectory() as scratch:
        trained = train(TrainConfig(size=size), steps=train_steps, checkpoint_dir=scratch,
                        evaluate_after=False)  # fmt: skip
    return {
        "batch1_median_s": round(statistics.median(single), 3),
        "batch1_audio_seconds_per_wall_second": round(seconds / statistics.median(single), 2),
        "batch16_s": round(batch16, 3),
        "batch16_audio_seconds_per_wall_second": round(16 * seconds / batch16, 2),
        "train_size": size,
        "train_tokens_per_second": trained.metrics["tokens_per_second"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / SHIPPED_GENERATOR)
    parser.add_argument("--train-steps", type=int, default=20)
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
    learned = None
    if args.checkpoint.exists():
        learned = learned_model_figures(args.checkpoint, args.seconds, args.train_steps)
        print(f"learned model ({args.checkpoint.name}), sampling plus rendering:")
        print(
            f"  batch 1:  {learned['batch1_median_s']:.2f} s per clip (median), "
            f"{learned['batch1_audio_seconds_per_wall_second']:.1f}x real time"
        )
        print(
            f"  batch 16: {learned['batch16_s']:.2f} s for 16 clips, "
            f"{learned['batch16_audio_seconds_per_wall_second']:.1f}x real time"
        )
        print(
            f"  training ({learned['train_size']}): "
            f"{learned['train_tokens_per_second']:.0f} tokens/s"
        )
    else:
        print(f"no learned generator at {args.checkpoint}; skipped its figures")
    figures = {
        "benchmark": "generation_speed",
        "clips": args.clips,
        "clip_seconds": args.seconds,
        "soundfont_load_s": round(soundfont_load, 3),
        "median_ms": {stage: round(value * 1000, 1) for stage, value in medians.items()},
        "audio_seconds_per_wall_second": round(realtime_factor, 2),
        "baseline": "real time (1.0)",
        "learned": learned,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
