"""Fine-tuning speed: seconds per RLOO iteration (8 prompts x 4 samples, 10-second clips) and per
DPO step, on this CPU, with the shipped learned generator (planned-small).

    .venv/bin/python benchmarks/rl_iteration.py [--iterations 5] [--dpo-steps 10]

RLOO: each iteration samples 32 sequences, renders each as the platform would (looped to 10 s,
FluidSynth, -16 LUFS), computes its log-mel, scores it with a learned reward network (an
untrained RewardNet of the production size: the timing does not depend on its weights) and with
the exact attribute match, scores the samples under the frozen reference, and takes one policy
step through the real train_rloo loop. The reward function is timed separately, so the output
splits an iteration into rewards (rendering + scoring) and the rest (sampling, log-probs,
backward, optimiser). Baseline in the same run: real time, i.e. the 320 s of audio an iteration
judges; the ratio says how many times faster than real time the loop hears its samples.
DPO: steps of 8 pairs of real sampled sequences through train_dpo.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = 8
SAMPLES = 4
CLIP_SECONDS = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--dpo-steps", type=int, default=10)
    args = parser.parse_args()

    import random

    import torch

    from generation.music.backends import SHIPPED_GENERATOR
    from generation.music.events import piece_to_events
    from generation.music.learned import SymbolicTransformerBackend
    from generation.music.prompt_sampling import random_attributes, short_prompt
    from generation.music.render import SAMPLE_RATE, normalize_loudness, render_piece
    from reward.learning.adherence import attribute_match_scores
    from reward.learning.dpo import DPOConfig, DPOPair, train_dpo
    from reward.learning.features import log_mel
    from reward.learning.loop import LoopConfig
    from reward.learning.nets import RewardNet, RewardNetConfig
    from reward.learning.rl import RLOOConfig, train_rloo
    from reward.learning.scoring import Scorer

    rng = random.Random(0)
    prompts = [short_prompt(random_attributes(rng), rng) for _ in range(64)]
    held_out = prompts[:4]
    checkpoint = ROOT / SHIPPED_GENERATOR
    policy = SymbolicTransformerBackend.load(checkpoint)
    reference = SymbolicTransformerBackend.load(checkpoint)
    policy.embed(prompts)  # MiniLM loaded and the prompts cached before timing
    scorer = Scorer(RewardNet(RewardNetConfig()).eval(), "preference", {}, {})
    reward_seconds: list[float] = []

    def rewards(samples):
        started = time.perf_counter()
        mels = []
        for sample in samples:
            piece = policy.clip_piece(sample, CLIP_SECONDS)
            audio = render_piece(piece, duration_seconds=CLIP_SECONDS)
            mels.append(log_mel(normalize_loudness(audio, SAMPLE_RATE, -16.0, -1.5), SAMPLE_RATE))
        texts = [sample.prompt for sample in samples]
        out = {
            "preference": scorer.score(mels, policy.embed(texts)).float(),
            "adherence": torch.tensor(
                attribute_match_scores(texts, [piece_to_events(s.piece) for s in samples])
            ),
        }
        if len(samples) == PROMPTS * SAMPLES:  # training batches, not held-out evaluations
            reward_seconds.append(time.perf_counter() - started)
        return out

    step_times: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        config = RLOOConfig(
            loop=LoopConfig(steps=args.iterations + 1, learning_rate=3e-4, warmup_steps=1,
                            checkpoint_every=1000, eval_every=1000, weight_decay=0.0),
            prompts_per_step=PROMPTS, samples_per_prompt=SAMPLES, beta=0.05,
            reward_weights={"preference": 1.0, "adherence": 1.0}, checkpoint_samples=0,
        )  # fmt: skip
        train_rloo(
            config,
            policy,
            reference,
            prompts,
            held_out,
            rewards,
            scratch,
            on_progress=lambda step, total, entry: step_times.append(time.perf_counter()),
        )
    # The first step pays one-off costs (FluidSynth's SoundFont load): it starts the clock.
    iterations = [b - a for a, b in pairwise(step_times)]
    iteration_s = statistics.median(iterations)
    reward_s = statistics.median(reward_seconds[1:])

    samples = policy.sample(prompts[:16], 2, seed=7)
    pairs = [
        DPOPair(a.prompt, a.token_ids, b.token_ids)
        for a, b in zip(samples[::2], samples[1::2], strict=True)
    ]
    dpo_times: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        train_dpo(
            DPOConfig(loop=LoopConfig(steps=args.dpo_steps + 1, learning_rate=1e-4, warmup_steps=1,
                                      checkpoint_every=1000, eval_every=1000), batch_size=8),
            policy, reference, pairs, pairs[:2], scratch,
            on_progress=lambda step, total, entry: dpo_times.append(time.perf_counter()),
        )  # fmt: skip
    dpo_step_s = statistics.median(b - a for a, b in pairwise(dpo_times))

    audio_seconds = PROMPTS * SAMPLES * CLIP_SECONDS
    figures = {
        "rloo_prompts": PROMPTS,
        "rloo_samples_per_prompt": SAMPLES,
        "clip_seconds": CLIP_SECONDS,
        "rloo_iterations_timed": len(iterations),
        "rloo_iteration_s_median": round(iteration_s, 2),
        "rloo_iteration_s_all": [round(t, 2) for t in iterations],
        "rloo_rewards_s_median": round(reward_s, 2),
        "rloo_rest_s_median": round(iteration_s - reward_s, 2),
        "audio_seconds_judged_per_iteration": audio_seconds,
        "x_real_time": round(audio_seconds / iteration_s, 1),
        "dpo_pairs_per_step": 8,
        "dpo_step_s_median": round(dpo_step_s, 3),
        "torch_threads": torch.get_num_threads(),
    }
    for key, value in figures.items():
        print(f"{key:>36}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
