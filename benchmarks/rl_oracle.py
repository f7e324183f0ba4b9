"""What RL can do when its reward is the raters' taste itself: RLOO on the shipped generator
with a simulated taste as the exact reward, no votes and no reward model in between.

    .venv/bin/python benchmarks/rl_oracle.py [--taste default_preference] [--steps 60]
        [--learning-rate 1e-4] [--planner-lr-scale 1] [--kl-loss 0.25] [--beta 0.02]
        [--prompts-per-step 8] [--samples-per-prompt 4] [--best-of 8] [--threads 2]
        [--estimator rloo|best_of_group] [--plan-kl-weight 0] [--part all|plan]
        [--heard-seconds 4] [--explore-share 0.25] [--explore-fields tempo ...]
        [--kept-fields tempo instruments drums mode density key] [--keep-weight 2]
        [--save tuned.pt]

The closed loop (`musicrl_loop`) can fall short for two reasons: its preference model got the
taste wrong, or RL cannot move the generator far enough. This separates them. The reward of a
sample is u = logit P(sample beats a fixed sample of the base for the same prompt) under the
taste (any function in `ratings.simulation.tastes`): for a Bradley-Terry taste that is its
utility up to a per-prompt constant, which the leave-one-out baseline cancels. RL runs through
the real `train_rloo` on the loop's prompt pools (2,000 training, 64 held-out prompts) with the
given settings. Nothing here needs Django: the tastes are plain functions.

Printed: the curve (10-step means of the training reward, KL and adherence), then on the 64
held-out prompts (two samples each, against two fresh samples of the base):
- the expected win rate of the tuned model against the base under the taste (the mean
  probability the taste gives it, what the raters' votes would estimate, ties aside);
- the baseline measured in the same run: best-of-N of the base itself (the sample the taste
  likes best of N, judged against a fresh base sample), the win rate available without
  leaving what the base already plays;
- held-out prompt adherence per attribute of the tuned model and the base;
- RL wall seconds and CPU seconds per step.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HELD_OUT_SEEDS = (7, 8)


def logit(probability: float) -> float:
    """Clamped, so a certain preference (or an empty sample's 0) stays finite."""
    probability = min(max(probability, 1e-6), 1 - 1e-6)
    return math.log(probability / (1 - probability))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taste", default="default_preference")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--planner-lr-scale", type=float, default=1.0)
    parser.add_argument("--kl-loss", type=float, default=0.25)
    parser.add_argument("--beta", type=float, default=0.02)
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--samples-per-prompt", type=int, default=4)
    parser.add_argument("--best-of", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--estimator", choices=("rloo", "best_of_group"), default="rloo")
    parser.add_argument("--plan-kl-weight", type=float, default=0.0)
    parser.add_argument(
        "--explore-share", type=float, default=0.0,
        help="share of each prompt's samples drawn for a varied prompt (rl.py)",
    )  # fmt: skip
    parser.add_argument(
        "--explore-fields", nargs="+", default=None,
        help="the axes exploration varies (default: all of them)",
    )  # fmt: skip
    parser.add_argument(
        "--kept-fields", nargs="*", default=[],
        help="prompt fields each sample must keep as asked (rl.py's kept_fields)",
    )  # fmt: skip
    parser.add_argument("--keep-weight", type=float, default=2.0)
    parser.add_argument("--save", type=Path, help="save the tuned generator to this file")
    parser.add_argument(
        "--part", choices=("all", "plan"), default="all",
        help="plan: RL on plans alone, each heard as the composer plays it (rl.py).",
    )  # fmt: skip
    parser.add_argument(
        "--heard-seconds", type=float, default=None,
        help="judge clips of this length, as the loop's raters do (4), and sample only the "
        "bars they play; default: whole pieces",
    )  # fmt: skip
    args = parser.parse_args()
    if args.steps < 1 or args.best_of < 1:
        parser.error("--steps and --best-of must be at least 1")

    import torch

    from generation.music.backends import SHIPPED_GENERATOR
    from generation.music.evaluation import FIT_PARTS, mean_by_key, piece_fit
    from generation.music.events import piece_to_events
    from generation.music.learned import SymbolicTransformerBackend, torch_threads
    from generation.music.plan import plan_agreement
    from generation.music.prompt_sampling import PROMPT_VARIANT_AXES, prompt_pools
    from generation.music.prompts import parse_prompt
    from ratings.simulation import tastes
    from reward.learning.loop import LoopConfig
    from reward.learning.rl import RLOOConfig, train_rloo

    taste = getattr(tastes, args.taste, None)
    if not callable(taste):
        parser.error(f"ratings.simulation.tastes has no taste {args.taste!r}")
    train_prompts, held_out = prompt_pools(
        [], train_count=2000, held_out_count=64, test_share=0.2, split_seed=0, seed=args.seed
    )
    checkpoint = ROOT / SHIPPED_GENERATOR
    base = SymbolicTransformerBackend.load(checkpoint)
    policy = SymbolicTransformerBackend.load(checkpoint)
    reference = SymbolicTransformerBackend.load(checkpoint)

    def sampled(backend, prompts, n: int, seed: int):
        return backend.sample(prompts, n, seed, heard_seconds=args.heard_seconds)

    def heard(sample) -> tastes.SimulatedClip:
        """The sample as the simulated raters hear a clip of it."""
        piece = sample.piece
        if args.heard_seconds is not None:
            piece = base.clip_piece(sample, args.heard_seconds)
        attributes = tastes.heard_attributes({}, piece_to_events(piece), sample.prompt)
        return tastes.SimulatedClip(b"", sample.prompt, attributes, "sample")

    anchors: dict[str, tastes.SimulatedClip] = {}  # one base sample per prompt

    def anchor_prompts(prompts) -> None:
        missing = sorted(set(prompts) - set(anchors))
        for anchor in sampled(base, missing, 1, 99) if missing else []:
            anchors[anchor.prompt] = heard(anchor)

    def utility(sample) -> float:
        if not sample.piece.notes:
            return logit(0.0)
        return logit(taste(sample.prompt, heard(sample), anchors[sample.prompt]))

    def reward_fn(samples):
        anchor_prompts(s.prompt for s in samples)
        return {"taste": torch.tensor([utility(s) for s in samples])}

    config = RLOOConfig(
        loop=LoopConfig(
            steps=args.steps,
            learning_rate=args.learning_rate,
            min_learning_rate=args.learning_rate,
            warmup_steps=min(10, max(1, args.steps // 10)),
            weight_decay=0.0,
            checkpoint_every=args.steps,
            eval_every=args.steps,
            seed=args.seed,
            num_threads=args.threads,
            part_lr_scales={"planner": args.planner_lr_scale},
        ),
        prompts_per_step=args.prompts_per_step,
        samples_per_prompt=args.samples_per_prompt,
        beta=args.beta,
        kl_loss=args.kl_loss,
        reward_weights={"taste": 1.0},
        estimator=args.estimator,
        plan_kl_weight=args.plan_kl_weight,
        explore_share=args.explore_share,
        explore_fields=tuple(args.explore_fields or PROMPT_VARIANT_AXES),
        kept_fields=tuple(args.kept_fields),
        keep_weight=args.keep_weight,
        part=args.part,
        heard_seconds=args.heard_seconds,
    )
    curve: list[dict[str, float]] = []

    def progress(step: int, total: int, entry: dict[str, float]) -> None:
        curve.append(entry)
        if step % 10 == 0 or step == total:
            window = curve[-10:]
            means = {
                key: statistics.fmean(e[key] for e in window)
                for key in ("reward_taste", "kl", "fit_score", "length")
            }
            print(
                f"step {step:>4}  reward {means['reward_taste']:6.2f}  KL {means['kl']:5.1f}  "
                f"fit {means['fit_score']:.3f}  tokens {means['length']:.0f}",
                flush=True,
            )

    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as directory:
        train_rloo(config, policy, reference, train_prompts, held_out, reward_fn, directory,
                   on_progress=progress)  # fmt: skip
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if args.save is not None:
        policy.save(args.save)

    with torch_threads(args.threads), torch.no_grad():
        tuned_probs, base_fits, tuned_fits = [], [], []
        lead_shifts, registers_kept = [], []
        for seed in HELD_OUT_SEEDS:
            tuned = sampled(policy, held_out, 1, seed)
            judges = sampled(base, held_out, 1, seed + 100)
            for candidate, judge in zip(tuned, judges, strict=True):
                heard_candidate, heard_judge = heard(candidate), heard(judge)
                tuned_probs.append(taste(candidate.prompt, heard_candidate, heard_judge))
                target = parse_prompt(candidate.prompt)
                tuned_fits.append(piece_fit(target, candidate.piece))
                base_fits.append(piece_fit(target, judge.piece))
                lead_shifts.append(tastes._difference(heard_candidate, heard_judge, "lead_pitch"))
                if candidate.plan is not None:
                    agreement = plan_agreement(candidate.plan, candidate.piece)
                    registers_kept.append(agreement["register"])
        best_probs = []
        anchor_prompts(held_out)  # the selection's yardstick: any fixed clip per prompt
        pool = sampled(base, held_out, args.best_of, 5)
        judges = sampled(base, held_out, 1, 500)
        for index, judge in enumerate(judges):
            options = [heard(s) for s in pool[index * args.best_of : (index + 1) * args.best_of]]
            anchor = anchors[judge.prompt]
            best = max(options, key=lambda clip: taste(judge.prompt, clip, anchor))
            best_probs.append(taste(judge.prompt, best, heard(judge)))

    parts = (*FIT_PARTS, "score")
    result = {
        "benchmark": "rl_oracle",
        "taste": args.taste,
        "settings": vars(args),
        "win_rate_vs_base": round(statistics.fmean(tuned_probs), 3),
        "baseline": f"best of {args.best_of} samples of the base, by the taste",
        "best_of_n_win_rate": round(statistics.fmean(best_probs), 3),
        "adherence_tuned": {k: round(v, 3) for k, v in mean_by_key(tuned_fits, parts).items()},
        "adherence_base": {k: round(v, 3) for k, v in mean_by_key(base_fits, parts).items()},
        # Where the tuned model's lead sits against the base's, and whether its body plays
        # the register its plan declares: a plan that moved but a body that did not follow
        # shows as a small shift with a low share.
        "lead_pitch_shift": round(statistics.fmean(lead_shifts), 2),
        "body_plays_declared_register": (
            round(statistics.fmean(registers_kept), 3) if registers_kept else None
        ),
        "final_kl": round(statistics.fmean(e["kl"] for e in curve[-10:]), 2),
        "rl_seconds": round(wall, 1),
        "cpu_seconds_per_step": round(cpu / args.steps, 2),
    }
    print(f"expected win rate against the base: {result['win_rate_vs_base']:.3f} (best of "
          f"{args.best_of} of the base itself: {result['best_of_n_win_rate']:.3f})")  # fmt: skip
    print(f"lead pitch against the base's: {result['lead_pitch_shift']:+.2f} semitones; body "
          f"plays its declared register: {result['body_plays_declared_register']}")  # fmt: skip
    for name in ("tuned", "base"):
        fits = result[f"adherence_{name}"]
        print(f"adherence {name:<6}" + "  ".join(f"{k} {v:.3f}" for k, v in fits.items()))
    print(f"RL {wall:.0f} s, {result['cpu_seconds_per_step']} CPU s per step")
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
