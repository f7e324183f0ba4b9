"""Sampling speed of the learned generator, against its own earlier ways in the same run.

    .venv/bin/python benchmarks/sampling_speed.py [--prompts 32] [--repeats 3] [--threads 1]
        [--clip-seconds 4] [--checkpoint generation/checkpoints/planned-small-v3.pt]

1. A batch of loop prompts (`short_prompt` of random attributes, as the closed loop draws
   them), one sample each, as RL samples them: rows that ended leave the model's batch
   (`StepSampler.drop_finished`), against the same sampler running every row to the batch's
   longest (the baseline), for the bars a clip plays (`heard_seconds`) and for whole pieces.
   Both give the same tokens; the script checks it.
2. Campaign clips: `generate_many` (the prompts' clips sampled together, each row from its own
   seed, then rendered), against `generate` one clip at a time (the baseline), which gives the
   same clips.

Medians over the repeats, wall and CPU seconds, and CPU seconds per 1,000 sampled tokens (the
machine is shared: CPU time is the steadier figure). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(work: Callable[[], Any], repeats: int) -> tuple[dict[str, float], Any]:
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = work()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clip-seconds", type=float, default=4.0)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()

    import torch

    from generation.music.backends import SHIPPED_GENERATOR
    from generation.music.learned import SymbolicTransformerBackend
    from generation.music.model import StepSampler
    from generation.music.prompt_sampling import random_attributes, short_prompt

    torch.set_num_threads(args.threads)
    backend = SymbolicTransformerBackend.load(args.checkpoint or SHIPPED_GENERATOR)
    rng = random.Random(0)
    prompts = [short_prompt(random_attributes(rng), rng) for _ in range(args.prompts)]
    backend.sample(prompts[:2], 1, seed=0)  # loads the text encoder, warms the kernels
    dropping = StepSampler.drop_finished
    results: dict[str, Any] = {"prompts": args.prompts, "threads": args.threads}

    for label, heard in (("heard bars", args.clip_seconds), ("whole pieces", None)):
        figures = {}
        tokens = {}
        for way, drop in (("dropping ended rows", dropping), ("whole batch", lambda _: None)):
            StepSampler.drop_finished = drop  # type: ignore[method-assign]
            figures[way], samples = timed(
                lambda heard=heard: backend.sample(prompts, 1, seed=1, heard_seconds=heard),
                args.repeats,
            )
            tokens[way] = [sample.token_ids for sample in samples]
        StepSampler.drop_finished = dropping  # type: ignore[method-assign]
        if tokens["dropping ended rows"] != tokens["whole batch"]:
            raise SystemExit(f"{label}: dropping rows changed the samples")
        lengths = [len(ids) for ids in tokens["whole batch"]]
        for way, figure in figures.items():
            figure["cpu_s_per_1000_tokens"] = 1000 * figure["cpu_s"] / sum(lengths)
            print(
                f"{label:>12}, {way:<19}: {figure['wall_s']:6.2f} s wall, "
                f"{figure['cpu_s']:6.2f} CPU s, {figure['cpu_s_per_1000_tokens']:.3f} CPU s "
                f"per 1,000 tokens"
            )
        ratio = figures["whole batch"]["cpu_s"] / figures["dropping ended rows"]["cpu_s"]
        print(
            f"{label:>12}: {sum(lengths):,} tokens, rows of {min(lengths)} to {max(lengths)}; "
            f"dropping ended rows is {ratio:.2f}x less CPU (same tokens)"
        )
        results[label] = {**figures, "tokens": sum(lengths), "cpu_ratio": ratio}

    requests = [(prompt, 1000 + index) for index, prompt in enumerate(prompts)]
    seconds = args.clip_seconds
    together, clips = timed(
        lambda: backend.generate_many(requests, duration_seconds=seconds), args.repeats
    )
    alone, single = timed(
        lambda: [backend.generate(p, seed=s, duration_seconds=seconds) for p, s in requests],
        args.repeats,
    )
    if [clip.events for clip in clips] != [clip.events for clip in single]:
        raise SystemExit("generate_many made other clips than generate")
    ratio = alone["wall_s"] / together["wall_s"]
    print(
        f"campaign clips ({len(requests)} of {seconds:g} s): generate_many "
        f"{together['wall_s']:.2f} s wall ({together['cpu_s']:.2f} CPU s), one by one "
        f"{alone['wall_s']:.2f} s ({alone['cpu_s']:.2f} CPU s): {ratio:.2f}x faster together"
    )
    results["campaign clips"] = {"generate_many": together, "one_by_one": alone, "ratio": ratio}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
