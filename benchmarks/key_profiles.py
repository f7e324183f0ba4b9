"""Fit the key profiles `attributes_measure.estimate_key` uses, and compare them with the
Krumhansl-Kessler profiles on held-out pieces of the composer, in one run.

    .venv/bin/python benchmarks/key_profiles.py [--fit 2000] [--held-out 800]

The fit and the held-out pieces are two separate streams of corpus attributes
(`random_attributes`, seeds 1 and 2), composed for 10 s. The composer plays exactly the key
and mode it is given, so the share it finds is the estimator's accuracy. Prints the fitted
profiles as Python (for `KEY_PROFILES`), the held-out accuracies, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generation.music.attributes_measure import (
    KEY_PROFILES,
    estimate_key,
    fit_key_profiles,
)
from generation.music.composer import compose
from generation.music.events import Note
from generation.music.prompt_sampling import random_attributes
from generation.music.prompts import MusicAttributes

# The baseline: Krumhansl-Kessler probe-tone ratings, index 0 = tonic, whole piece only.
KRUMHANSL_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KRUMHANSL_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def krumhansl_key(notes: list[Note]) -> tuple[int | None, str | None]:
    histogram = np.zeros(12)
    for note in notes:
        if not note.is_drum:
            histogram[note.pitch % 12] += note.duration
    if np.count_nonzero(histogram) < 2:
        return None, None
    best = max(
        (float(np.corrcoef(histogram, np.roll(profile, root))[0, 1]), root, mode)
        for mode, profile in (("major", KRUMHANSL_MAJOR), ("minor", KRUMHANSL_MINOR))
        for root in range(12)
    )
    return best[1], best[2]


def composed(seed: int, count: int) -> list[tuple[MusicAttributes, list[Note]]]:
    rng = random.Random(seed)
    attributes = [random_attributes(rng) for _ in range(count)]
    return [
        (attrs, compose(attrs, seed=seed * 1_000_003 + index, duration_seconds=10).notes)
        for index, attrs in enumerate(attributes)
    ]


def accuracy(estimates: list[tuple[int | None, str | None]], pieces: list) -> dict[str, float]:
    pairs = list(zip(estimates, (attrs for attrs, _ in pieces), strict=True))
    return {
        "key": round(float(np.mean([key == attrs.key_root for (key, _), attrs in pairs])), 4),
        "mode": round(float(np.mean([mode == attrs.mode for (_, mode), attrs in pairs])), 4),
        "both": round(
            float(np.mean([est == (attrs.key_root, attrs.mode) for est, attrs in pairs])), 4
        ),
    }


def python_constant(profiles: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    def array(values: np.ndarray) -> list[str]:
        halves = [", ".join(f"{value:.4f}" for value in values[i : i + 6]) for i in (0, 6)]
        return [f"        np.array([{halves[0]},", f"                  {halves[1]}]),"]

    lines = ["KEY_PROFILES: dict[str, tuple[np.ndarray, np.ndarray]] = {"]
    for mode, (whole, closing) in profiles.items():
        lines += [f'    "{mode}": (', *array(whole), *array(closing), "    ),"]
    return "\n".join([*lines, "}  # fmt: skip"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", type=int, default=2000)
    parser.add_argument("--held-out", type=int, default=800)
    args = parser.parse_args()
    started = time.perf_counter()
    fitting, held_out = composed(1, args.fit), composed(2, args.held_out)
    fitted = fit_key_profiles((notes, a.key_root, a.mode) for a, notes in fitting)
    shipped_matches_fit = all(
        np.allclose(np.round(new, 4), old, atol=1e-4)
        for mode in fitted
        for new, old in zip(fitted[mode], KEY_PROFILES[mode], strict=True)
    )
    results = {
        "krumhansl": accuracy([krumhansl_key(notes) for _, notes in held_out], held_out),
        "fitted": accuracy([estimate_key(notes) for _, notes in held_out], held_out),
    }
    print(python_constant(fitted))
    print(f"shipped KEY_PROFILES equal this fit to 4 decimals: {shipped_matches_fit}")
    for name, figures in results.items():
        key, mode, both = figures["key"], figures["mode"], figures["both"]
        print(f"{name:>10}: key {key:.3f}  mode {mode:.3f}  both {both:.3f}")
    print(
        json.dumps(
            {
                "benchmark": "key_profiles",
                "fit_pieces": args.fit,
                "held_out_pieces": args.held_out,
                "baseline": "krumhansl",
                "results": results,
                "ratio_both": round(results["fitted"]["both"] / results["krumhansl"]["both"], 4),
                "shipped_matches_fit": shipped_matches_fit,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
