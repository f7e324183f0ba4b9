"""Pretraining speed of the planned generator: seconds per step with the data worker (a
process that composes and embeds the next batches while a step trains) against composing
in line, in one run.

    .venv/bin/python benchmarks/pretrain_speed.py [--size small] [--steps 60] [--repeats 1]

Each setting trains `--steps` steps from scratch in a temporary directory (no evaluation).
Per setting: the median seconds per step after the first five (the worker's start and the
first batches are left out), the whole run's wall time including the worker's start, and
CPU seconds per step of this process and of its children (the worker). Needs an idle
machine: both settings want both cores. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WARMUP_STEPS = 5


def run(size: str, steps: int, data_workers: int) -> dict[str, float]:
    from generation.music.pretrain import TrainConfig, train
    from generation.music.text_encoder import get_text_encoder

    encoder = get_text_encoder()
    config = TrainConfig(size=size, data_workers=data_workers, checkpoint_every=10**6)
    stamps: list[float] = []
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as directory:
        train(
            config,
            steps=steps,
            checkpoint_dir=directory,
            text_encoder=encoder,
            evaluate_after=False,
            progress_callback=lambda step, total, entry: stamps.append(time.perf_counter()),
        )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    step_seconds = [b - a for a, b in itertools.pairwise(stamps[WARMUP_STEPS:])]
    return {
        "median_seconds_per_step": round(statistics.median(step_seconds), 4),
        "run_seconds": round(wall, 2),
        "cpu_seconds_per_step": round(cpu / steps, 4),
        "worker_cpu_seconds_per_step": round(children_cpu / steps, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS + 1:
        parser.error(f"--steps must exceed {WARMUP_STEPS + 1}")

    results: dict[str, list[dict[str, float]]] = {"in_line": [], "data_worker": []}
    for _ in range(args.repeats):
        results["in_line"].append(run(args.size, args.steps, 0))
        results["data_worker"].append(run(args.size, args.steps, 1))
    medians = {
        name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for name, rows in results.items()
    }
    for name, figures in medians.items():
        print(
            f"{name:<12} {figures['median_seconds_per_step']:.3f} s/step (median), "
            f"run {figures['run_seconds']:.1f} s, CPU {figures['cpu_seconds_per_step']:.3f} s/step "
            f"+ worker {figures['worker_cpu_seconds_per_step']:.3f} s/step"
        )
    ratio = (
        medians["in_line"]["median_seconds_per_step"]
        / medians["data_worker"]["median_seconds_per_step"]
    )
    print(f"speed-up with the data worker: {ratio:.2f}x")
    print(
        json.dumps(
            {
                "benchmark": "pretrain_speed",
                "size": args.size,
                "steps": args.steps,
                "repeats": args.repeats,
                "baseline": "in_line",
                "speedup": round(ratio, 3),
                "results": medians,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
