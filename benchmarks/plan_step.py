"""Plan-stage speed: seconds and CPU seconds per RLOO step on plans alone, as the closed
loop's plan stages take them (16 prompts x 8 plans, half of each prompt's plans drawn for a
varied prompt, the prompt lock on the fields a tempo taste leaves alone), one thread.

    .venv/bin/python benchmarks/plan_step.py [--steps 6] [--explore-share 0.5]

Each step samples the plans, plays each as the composer would (`plan_piece`), scores them
with a measured-feature preference model (fixed weights: slower than asked is better, the
prompt's fits are liked; the time does not depend on the weights), scores the plans under the
policy and the frozen reference, and takes one optimiser step through the real `train_rloo`
loop on the loop's 2,000 training prompts. The first step (loading, caches) is not counted.
Printed: the median wall and CPU seconds per step and per 1,000 plans; the last line is one
JSON object. No baseline runs in the same process: run it on two commits to compare them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS_PER_STEP = 16
PLANS_PER_PROMPT = 8
KEPT = ("instruments", "drums", "mode", "density", "key")
WEIGHTS = {"tempo_vs_request": -0.5, "tempo_fit": 0.2, "instruments_fit": 0.3, "mode_fit": 0.2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--explore-share", type=float, default=0.5)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first is not counted)")

    import numpy as np
    import torch

    from generation.music.backends import SHIPPED_GENERATOR
    from generation.music.events import piece_to_events
    from generation.music.learned import SymbolicTransformerBackend
    from generation.music.prompt_sampling import prompt_pools
    from reward.learning.loop import LoopConfig
    from reward.learning.measured import FEATURE_NAMES, MeasuredPreferenceModel
    from reward.learning.rl import RLOOConfig, train_rloo

    torch.manual_seed(0)
    train_prompts, held_out = prompt_pools(
        [], train_count=2000, held_out_count=64, test_share=0.2, split_seed=0, seed=0
    )
    weights = np.array([WEIGHTS.get(name, 0.0) for name in FEATURE_NAMES])
    model = MeasuredPreferenceModel(
        FEATURE_NAMES, np.zeros(len(FEATURE_NAMES)), np.ones(len(FEATURE_NAMES)), weights
    )

    def reward_fn(samples: list) -> dict[str, torch.Tensor]:
        prompts = [sample.prompt for sample in samples]
        events = [piece_to_events(sample.piece) for sample in samples]
        return {"taste": torch.tensor(model.scores(prompts, events))}

    checkpoint = ROOT / SHIPPED_GENERATOR
    policy = SymbolicTransformerBackend.load(checkpoint)
    reference = SymbolicTransformerBackend.load(checkpoint)
    policy.sampling = replace(policy.sampling, num_threads=1, kept_fields=KEPT)
    reference.sampling = replace(reference.sampling, num_threads=1, kept_fields=KEPT)
    config = RLOOConfig(
        loop=LoopConfig(steps=args.steps, learning_rate=1e-3, checkpoint_every=10**6,
                        eval_every=10**6, num_threads=1),
        prompts_per_step=PROMPTS_PER_STEP, samples_per_prompt=PLANS_PER_PROMPT, part="plan",
        reward_weights={"taste": 1.0}, beta=0.02, kl_loss=0.02,
        explore_share=args.explore_share, explore_fields=("tempo",), kept_fields=KEPT,
        keep_weight=2.0, heard_seconds=4.0,
    )  # fmt: skip
    marks: list[tuple[float, float]] = []

    def progress(step: int, total: int, entry: dict[str, float]) -> None:
        marks.append((time.perf_counter(), time.process_time()))

    with tempfile.TemporaryDirectory() as directory:
        marks.append((time.perf_counter(), time.process_time()))
        train_rloo(
            config, policy, reference, train_prompts, held_out[:4], reward_fn, Path(directory),
            on_progress=progress,
        )  # fmt: skip
    # marks[0] is the start, marks[1] the end of the first (uncounted) step.
    counted = list(pairwise(marks[1:]))
    wall = statistics.median(b[0] - a[0] for a, b in counted)
    cpu = statistics.median(b[1] - a[1] for a, b in counted)
    plans = PROMPTS_PER_STEP * PLANS_PER_PROMPT
    print(f"{len(counted)} plan steps of {plans} plans (explore_share {args.explore_share}), "
          f"one thread: median {wall:.2f} s a step, {cpu:.2f} CPU s "
          f"({1000 * cpu / plans:.1f} CPU s per 1,000 plans)")  # fmt: skip
    print(json.dumps({
        "benchmark": "plan_step", "steps_counted": len(counted), "plans_per_step": plans,
        "explore_share": args.explore_share, "median_seconds_per_step": round(wall, 3),
        "median_cpu_seconds_per_step": round(cpu, 3),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
