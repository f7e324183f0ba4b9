"""Prompt adherence of the shipped generator, its parent and the composer (the ceiling), on
held-out prompts, in one run.

    .venv/bin/python benchmarks/adherence.py [--prompts 240] [--seed 1234]
        [--checkpoint generation/checkpoints/planned-small-v3.pt]
        [--parent generation/checkpoints/planned-small-v2.pt]

Prompts are drawn from the shipped model's own pretraining streams (captions and short
prompts) on the held-out side of its hash split, so none was trained on. Each generator
samples one piece per prompt at its shipped settings (temperature 1, no truncation); the
composer plays the attributes `parse_prompt` reads from the prompt, which is the ground
truth, so its figures are the ceiling the measurements allow (the key and density estimates
are imperfect even on the composer's own notes).

Per generator: mean attribute fit (tempo, instruments, drums, mode, density, as
`attributes_measure.adherence` scores them) and each part, key, the share of well-formed
samples, the plan's own fit, and how well the notes keep to the declared plan (for the
composer: its plan read off its own notes, the ceiling of that agreement), plus sampling
seconds and CPU seconds per piece. `--examples` adds a table of the example prompts
(`EXAMPLE_PROMPTS`, which pretraining may have seen) with what the shipped model played beside
what was asked: the README's demo table. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generation.music.backends import PARENT_GENERATOR, SHIPPED_GENERATOR

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("tempo", "instruments", "drums", "mode", "density", "key")
AGREEMENT = ("instruments", "drums", "key", "mode", "density", "register")


def held_out_prompts(train_settings: dict, count: int) -> list[str]:
    import random

    from generation.music.pretrain import TrainConfig, corpus_prompt

    config = TrainConfig(
        seed=train_settings.get("seed", 0),
        held_out_share=train_settings.get("held_out_share", 0.1),
        short_prompt_share=train_settings.get("short_prompt_share", 0.5),
    )
    rng = random.Random(20_261_205 + config.seed)  # a stream of its own, held-out side only
    prompts: list[str] = []
    while len(prompts) < count:
        prompt, _ = corpus_prompt(rng, config, held_out=True)
        if prompt not in prompts:
            prompts.append(prompt)
    return prompts


def model_report(path: Path, prompts: list[str], seed: int) -> dict:
    from generation.music.evaluation import GeneratedPiece, adherence_report
    from generation.music.learned import SymbolicTransformerBackend

    backend = SymbolicTransformerBackend.load(path)
    backend.embed(prompts)  # the text encoder's load and the prompts' embeddings, untimed
    wall, cpu = time.perf_counter(), time.process_time()
    samples = backend.sample(prompts, 1, seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    pieces = [GeneratedPiece(s.prompt, s.piece, s.plan, s.well_formed) for s in samples]
    report = adherence_report(pieces)
    report["temperature"] = backend.sampling.temperature
    report["seconds_per_piece"] = round(wall / len(prompts), 4)
    report["cpu_seconds_per_piece"] = round(cpu / len(prompts), 4)
    return report


def composer_report(prompts: list[str], seed: int, max_bars: int) -> dict:
    from generation.music.composer import compose
    from generation.music.evaluation import GeneratedPiece, adherence_report
    from generation.music.plan import plan_for_piece
    from generation.music.prompts import parse_prompt
    from generation.music.tokenizer import crop_piece

    pieces = []
    wall, cpu = time.perf_counter(), time.process_time()
    for index, prompt in enumerate(prompts):
        attrs = parse_prompt(prompt)
        seconds = max_bars * 240 / attrs.tempo_bpm
        piece = crop_piece(compose(attrs, seed=seed + index, duration_seconds=seconds), max_bars)
        pieces.append(GeneratedPiece(prompt, piece, plan_for_piece(attrs, piece)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    report = adherence_report(pieces)
    report["seconds_per_piece"] = round(wall / len(prompts), 4)
    report["cpu_seconds_per_piece"] = round(cpu / len(prompts), 4)
    return report


def example_rows(path: Path, seed: int) -> list[dict[str, str]]:
    """One sample per example prompt: asked (parse_prompt) and played (measured notes)."""
    from generation.music.attributes_measure import measure
    from generation.music.learned import SymbolicTransformerBackend
    from generation.music.prompts import EXAMPLE_PROMPTS, KEY_NAMES, PROGRAM_NAMES, parse_prompt

    def names(programs: tuple[int, ...] | list[int], drums: bool) -> str:
        named = [PROGRAM_NAMES.get(p, f"program {p}") for p in programs]
        return ", ".join(named + (["drums"] if drums else []))

    backend = SymbolicTransformerBackend.load(path)
    rows = []
    for sample in backend.sample(list(EXAMPLE_PROMPTS), 1, seed):
        asked = parse_prompt(sample.prompt)
        played = measure(sample.piece, lead_hint=asked.instruments[0])
        key = f"{KEY_NAMES[played.key_root]} {played.mode}" if played.mode else "-"
        rows.append(
            {
                "prompt": sample.prompt,
                "asked": f"{asked.tempo_bpm} BPM; {names(asked.instruments, asked.drums)}; "
                f"{KEY_NAMES[asked.key_root]} {asked.mode}",
                "played": f"{played.tempo_bpm} BPM; {names(played.programs, played.drums)}; {key}",
            }
        )
    return rows


def print_table(reports: dict[str, dict]) -> None:
    names = list(reports)
    print(f"{'':<28}" + "".join(f"{name:>14}" for name in names))

    def row(label: str, values: list[object]) -> None:
        cells = "".join(f"{v:>14.3f}" if isinstance(v, float) else f"{'-':>14}" for v in values)
        print(f"{label:<28}{cells}")

    row("mean attribute fit", [reports[n]["mean_fit"] for n in names])
    for part in PARTS:
        row(f"  {part}", [reports[n]["fit"][part] for n in names])
    row("well formed", [reports[n]["well_formed"] for n in names])
    row("plan fit (declared)", [None] * len(names))
    for part in PARTS:
        row(f"  {part}", [reports[n].get("plan_fit", {}).get(part) for n in names])
    row("plays what it declares", [reports[n].get("plan_agreement", {}).get("mean") for n in names])
    for part in AGREEMENT:
        row(f"  {part}", [reports[n].get("plan_agreement", {}).get(part) for n in names])
    row("seconds per piece", [reports[n]["seconds_per_piece"] for n in names])
    row("CPU seconds per piece", [reports[n]["cpu_seconds_per_piece"] for n in names])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=240)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / SHIPPED_GENERATOR)
    parser.add_argument("--parent", type=Path, default=ROOT / PARENT_GENERATOR)
    parser.add_argument("--examples", action="store_true", help="print the demo table too")
    args = parser.parse_args()
    if args.prompts < 1:
        parser.error("--prompts must be at least 1")

    import torch

    from generation.music.learned import SymbolicTransformerBackend

    shipped_meta = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    train_settings = shipped_meta.get("metadata", {}).get("train", {})
    max_bars = SymbolicTransformerBackend.load(args.checkpoint).sampling.max_bars
    prompts = held_out_prompts(train_settings, args.prompts)
    print(f"{len(prompts)} held-out prompts (none trained on by {args.checkpoint.name}), e.g.:")
    for prompt in prompts[:3]:
        print(f"  {prompt}")
    reports = {"shipped": model_report(args.checkpoint, prompts, args.seed)}
    if args.parent.exists():
        reports["parent"] = model_report(args.parent, prompts, args.seed)
    reports["composer"] = composer_report(prompts, args.seed, max_bars)
    print_table(reports)
    examples = example_rows(args.checkpoint, args.seed) if args.examples else []
    if examples:
        print("\n| prompt | asked (parsed) | played (measured) |\n|---|---|---|")
        for row in examples:
            print(f"| {row['prompt']} | {row['asked']} | {row['played']} |")
    shipped, ceiling = reports["shipped"], reports["composer"]
    print(
        f"shipped mean fit {shipped['mean_fit']:.3f}, composer ceiling {ceiling['mean_fit']:.3f}"
        + (f", parent {reports['parent']['mean_fit']:.3f}" if "parent" in reports else "")
    )
    print(
        json.dumps(
            {
                "benchmark": "adherence",
                "prompts": len(prompts),
                "checkpoint": args.checkpoint.name,
                "parent": args.parent.name if "parent" in reports else None,
                "baseline": "composer given the parsed attributes (ceiling)",
                "ratio_to_ceiling": round(shipped["mean_fit"] / ceiling["mean_fit"], 4),
                "reports": reports,
                "examples": examples,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
