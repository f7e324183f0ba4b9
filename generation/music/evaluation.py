"""How well generated pieces follow their prompts, and their plans: the figures that
pretraining stores with a generator and `benchmarks/adherence.py` prints.

For each piece the prompt's target is `parse_prompt` (the ground truth the composer follows):

- fit: prompt adherence of the notes, per attribute (`attributes_measure.adherence`), and
  their mean (tempo, instruments, drums, mode, density), plus the key's root;
- plan fit: the same for what the plan declared, so a shortfall can be told apart as the
  planner's (a wrong plan) or the body's (a plan not played);
- plan agreement: whether the notes keep to the declared plan (`plan.plan_agreement`), per
  field and as the mean over the fields the body decides (all but the tempo, which decoding
  takes from the plan);
- well formed: the share of samples in the strict grammar.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from generation.music.attributes_measure import (
    Adherence,
    adherence,
    attribute_fit,
    estimate_key,
    playable_density,
)
from generation.music.events import Piece
from generation.music.plan import AGREEMENT_FIELDS, BODY_FIELDS, Plan, plan_agreement
from generation.music.prompts import MusicAttributes, parse_prompt

ADHERENCE_PARTS = ("tempo", "instruments", "drums", "mode", "density")


@dataclass(frozen=True)
class GeneratedPiece:
    prompt: str
    piece: Piece  # the generated bars, not looped
    plan: Plan | None  # what the generator declared (None: it declares no plan)
    well_formed: bool = True


def plan_adherence(target: MusicAttributes, plan: Plan) -> Adherence:
    """Prompt adherence of a declared plan, scored as `adherence` scores notes (its density
    as the onsets it means at its tempo, as the target's is)."""
    return attribute_fit(
        target,
        tempo_bpm=plan.tempo_bpm,
        programs=set(plan.instruments),
        drums=plan.drums,
        mode=plan.mode,
        density=playable_density(plan.density, plan.tempo_bpm),
    )


FIT_PARTS = (*ADHERENCE_PARTS, "key")


def plan_fit(target: MusicAttributes, plan: Plan) -> dict[str, float]:
    """How well a declared plan follows the prompt's target: each of FIT_PARTS in [0, 1] (the
    key: whether it is the one asked for), and "score", as `piece_fit` scores notes."""
    return plan_adherence(target, plan).to_dict() | {"key": float(plan.key_root == target.key_root)}


def piece_fit(
    target: MusicAttributes, piece: Piece, *, lead: int | None = None
) -> dict[str, float]:
    """How well one piece's notes follow the prompt's target: each of FIT_PARTS in [0, 1],
    and "score", the mean of ADHERENCE_PARTS (`Adherence.score`). lead: the part whose
    melody carries the density (`attributes_measure.adherence`)."""
    fit = adherence(target, piece, lead=lead).to_dict()
    fit["key"] = float(estimate_key(piece.notes)[0] == target.key_root)
    return fit


def mean_by_key(rows: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, float]:
    """Each key's mean over the rows, to 4 decimals (JSON-ready figures)."""
    return {key: round(statistics.fmean(row[key] for row in rows), 4) for key in keys}


def adherence_report(pieces: Sequence[GeneratedPiece]) -> dict[str, object]:
    """The figures above, as means over the pieces (one JSON-ready dict)."""
    if not pieces:
        raise ValueError("no pieces to evaluate")
    fits, plan_fits, agreements = [], [], []
    for item in pieces:
        target = parse_prompt(item.prompt)
        fits.append(piece_fit(target, item.piece))
        if item.plan is not None:
            plan_fits.append(plan_fit(target, item.plan))
            agreements.append(plan_agreement(item.plan, item.piece))
    report: dict[str, object] = {
        "prompts": len(pieces),
        "mean_fit": round(statistics.fmean(fit["score"] for fit in fits), 4),
        "fit": mean_by_key(fits, FIT_PARTS),
        "well_formed": round(statistics.fmean(float(item.well_formed) for item in pieces), 4),
    }
    if plan_fits:
        report["plan_fit"] = mean_by_key(plan_fits, FIT_PARTS)
        body_means = [statistics.fmean(row[field] for field in BODY_FIELDS) for row in agreements]
        report["plan_agreement"] = mean_by_key(agreements, AGREEMENT_FIELDS) | {
            "mean": round(statistics.fmean(body_means), 4)  # over the fields the body decides
        }
    return report


def composer_ceiling(
    prompts: Sequence[str],
    *,
    duration_seconds: float,
    seed: int = 0,
    piece_bars: int | None = None,
    cut: bool = True,
) -> dict[str, float]:
    """Mean `piece_fit` per attribute of the composer given each prompt's parsed attributes:
    the most the measurements can credit a generator with on these prompts (the estimators
    miss some of what the composer plays as asked).

    A generator that writes pieces of `piece_bars` bars and loops or crops them to the clip
    (as the learned one does) is measured on the composer's pieces of that length presented
    the same way: a clip shorter than the piece stops before its cadence, where the key
    estimate reads the closing bar, so the ceiling of whole short pieces (piece_bars None)
    would credit a key and mode that no crop can show. cut=False: the pieces of `piece_bars`
    bars whole, the ceiling of whole pieces a generator writes."""
    from generation.music.composer import bars_for, compose
    from generation.music.tokenizer import loop_piece

    rows = []
    for index, target in enumerate(parse_prompt(prompt) for prompt in prompts):
        seconds = duration_seconds if piece_bars is None else piece_bars * 240 / target.tempo_bpm
        piece = compose(target, seed=seed + index, duration_seconds=seconds)
        if piece_bars is not None and cut:
            piece = loop_piece(piece, bars_for(duration_seconds, piece.tempo_bpm))
        rows.append(piece_fit(target, piece))
    return mean_by_key(rows, (*FIT_PARTS, "score"))
