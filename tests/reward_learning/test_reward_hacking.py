"""What watches an RL run for reward hacking: the samples' diversity and prompt adherence on
its curves, and the guards that warn when the KL or the diversity crosses its limit."""

import dataclasses
import functools
import itertools

import pytest
import torch

from generation.music.attributes_measure import adherence
from generation.music.composer import compose, is_phrase_ending, melody_notes
from generation.music.evaluation import FIT_PARTS, piece_fit
from generation.music.events import TICKS_PER_BAR
from generation.music.learned import Sample
from generation.music.plan import plan_agreement, plan_for_piece
from generation.music.prompts import parse_prompt
from reward.learning.reward_hacking import (
    GuardState,
    check_guards,
    diversity,
    fit_figures,
    guard_warnings,
    strayed,
)
from reward.learning.rl import RLOOConfig


def test_diversity_is_the_mean_pairwise_jaccard_distance_of_4_gram_sets_per_prompt():
    def sample(ids):
        return type("S", (), {"token_ids": ids})()

    same = [sample([10, 11, 12, 13, 14]), sample([10, 11, 12, 13, 14])]
    apart = [sample([10, 11, 12, 13]), sample([20, 21, 22, 23])]
    half = [sample([10, 11, 12, 13, 14]), sample([10, 11, 12, 13, 15])]  # 1 of 3 shared

    assert diversity(same, 2) == 0.0
    assert diversity(apart, 2) == 1.0
    assert diversity(half, 2) == pytest.approx(2 / 3)
    assert diversity(same + apart, 2) == 0.5  # averaged over prompts
    assert diversity(apart, 1) == 1.0  # one sample per prompt: across prompts


def test_fit_figures_are_the_notes_prompt_adherence_per_attribute():
    prompt = "slow sad piano ballad"
    target = parse_prompt(prompt)
    played = compose(target, seed=3, duration_seconds=8)
    other = compose(parse_prompt("fast techno with drums"), seed=3, duration_seconds=8)
    sample = functools.partial(
        Sample, prompt=prompt, token_ids=[], logprobs=torch.zeros(0), well_formed=True
    )

    figures = fit_figures([sample(piece=played), sample(piece=other)], prefix="heldout_")

    assert figures["heldout_fit_tempo"] == 0.5  # the composer's tempo fits, techno's cannot
    assert figures["heldout_fit_drums"] == 0.5
    assert figures["heldout_fit_score"] == pytest.approx(
        (adherence(target, played).score + adherence(target, other).score) / 2
    )


def test_a_sample_strays_by_the_fit_it_gives_up_on_the_kept_fields_as_its_plan_declares():
    prompt = "slow sad piano ballad in D minor"
    target = parse_prompt(prompt)
    piece = compose(target, seed=3, duration_seconds=8)
    plan = plan_for_piece(target, piece)
    sample = functools.partial(
        Sample, prompt=prompt, token_ids=[], logprobs=torch.zeros(0), well_formed=True,
        piece=piece,
    )  # fmt: skip
    as_asked = sample(plan=plan)
    transposed = sample(plan=dataclasses.replace(plan, key_root=(plan.key_root + 2) % 12))
    in_major = sample(plan=dataclasses.replace(plan, mode="major"))
    others = [name for name in FIT_PARTS if name != "key"]

    assert plan.key_root == target.key_root and plan.mode == target.mode == "minor"
    assert strayed([as_asked, transposed, in_major], ["key"]).tolist() == [0.0, 1.0, 0.0]
    assert strayed([as_asked, transposed, in_major], ["key", "mode"]).tolist() == [0.0, 1.0, 1.0]
    # A field not kept costs nothing, however far it moves.
    assert torch.equal(strayed([transposed], others), strayed([as_asked], others))
    assert strayed([as_asked], []).tolist() == [0.0]
    # A sample without a plan is judged on its notes.
    fit = piece_fit(target, piece)
    assert strayed([sample(plan=None)], FIT_PARTS).item() == pytest.approx(
        sum(1 - fit[name] for name in FIT_PARTS)
    )
    with pytest.raises(ValueError, match="no such prompt fields"):
        strayed([as_asked], ["genre"])


def test_the_notes_density_is_read_on_every_bar_of_an_opening_the_body_wrote_in_full():
    """RL samples only the bars a clip plays, the first 2 of the policy's 4, say. Read as a
    whole 2-bar piece, the second bar is a phrase ending and goes unread, so a body could
    change its rhythm there for free; read as the opening of 4 bars, it is charged."""
    prompt = "upbeat funk with piano, bass and drums"
    target = parse_prompt(prompt)
    piece = compose(target, seed=5, duration_seconds=16)
    plan = plan_for_piece(target, piece)
    assert piece.bars >= 4 and not is_phrase_ending(1, piece.bars)  # bar 1 plays in full
    opening = dataclasses.replace(
        piece, notes=[n for n in piece.notes if n.start < 2 * TICKS_PER_BAR], bars=2
    )
    melody_onsets = sorted(
        {n.start for n in melody_notes(opening.notes, plan.lead) if n.start >= TICKS_PER_BAR}
    )
    busy = [  # bar 1's melody onsets doubled: a note added halfway to each next onset
        *opening.notes,
        *(
            dataclasses.replace(n, start=(n.start + later) // 2)
            for n in melody_notes(opening.notes, plan.lead)
            for start, later in itertools.pairwise(melody_onsets)
            if n.start == start
        ),
    ]
    busier = dataclasses.replace(opening, notes=busy)
    sample = functools.partial(
        Sample, prompt=prompt, token_ids=[], logprobs=torch.zeros(0), well_formed=True, plan=plan
    )

    assert len(melody_onsets) >= 3
    assert strayed([sample(piece=opening)], ["density"], whole_bars=4).tolist() == [0.0]
    assert strayed([sample(piece=busier)], ["density"]).tolist() == [0.0]  # bar 1 unread
    charged = strayed([sample(piece=busier)], ["density"], whole_bars=4).item()
    assert charged == pytest.approx(
        1 - plan_agreement(plan, busier, ["density"], whole_bars=4)["density"]
    )
    assert charged > 0.2


def test_a_planned_sample_whose_notes_leave_its_plan_strays_on_what_the_notes_show():
    prompt = "upbeat funk with piano, bass and drums"
    target = parse_prompt(prompt)
    piece = compose(target, seed=5, duration_seconds=8)
    plan = plan_for_piece(target, piece)  # declares the prompt's fields, as a locked plan does
    sample = functools.partial(
        Sample, prompt=prompt, token_ids=[], logprobs=torch.zeros(0), well_formed=True, plan=plan
    )
    lead_notes = [n for n in piece.notes if n.program == plan.lead]
    # Every other onset of the lead left out: fewer, more detached notes than declared.
    sparse = dataclasses.replace(
        piece, notes=[n for n in piece.notes if n.program != plan.lead or n in lead_notes[::2]]
    )
    # The bass left out; and every note moved up a tone (key and mode are not read off notes).
    no_bass = dataclasses.replace(
        piece, notes=[n for n in piece.notes if n.is_drum or n.program != plan.instruments[-1]]
    )
    moved = dataclasses.replace(
        piece, notes=[n if n.is_drum else dataclasses.replace(n, pitch=n.pitch + 2)
                      for n in piece.notes],
    )  # fmt: skip
    kept_density = plan_agreement(plan, sparse, ["density"])["density"]

    assert len(plan.instruments) == 2 and plan.drums  # piano, then the bass
    assert strayed([sample(piece=piece)], FIT_PARTS).tolist() == [0.0]
    assert kept_density < 0.7
    assert strayed([sample(piece=sparse)], ["density"]).item() == pytest.approx(1 - kept_density)
    assert strayed([sample(piece=sparse)], ["tempo", "key"]).tolist() == [0.0]  # density not kept
    assert strayed([sample(piece=no_bass)], ["instruments"]).tolist() == [1.0]
    assert strayed([sample(piece=moved)], ["key", "mode"]).tolist() == [0.0]


def test_guards_warn_at_the_first_crossing_and_then_when_twice_as_bad():
    settings = RLOOConfig(reward_weights={"r": 1.0}, kl_limit=2.0, diversity_floor=0.5)
    curve = [(0.0, 0.8), (1.0, 0.7), (2.5, 0.5), (3.0, 0.39), (5.1, 0.3), (4.0, 0.21), (10.5, 0.1)]
    history = [{"step": s, "kl": kl, "diversity": d} for s, (kl, d) in enumerate(curve, 1)]

    warnings = guard_warnings(settings, history)

    assert [(w["step"], w["kind"], w["value"]) for w in warnings] == [
        (3, "kl_limit", 2.5),
        (4, "diversity_floor", 0.39),
        (5, "kl_limit", 5.1),
        (7, "kl_limit", 10.5),
        (7, "diversity_floor", 0.1),
    ]
    assert all(w["limit"] == pytest.approx(0.4) for w in warnings if w["kind"] != "kl_limit")
    # the live check keeps its memory in buffers, so a resumed run goes on where it was
    state = GuardState()
    for entry in history[:5]:
        check_guards(settings, state, entry)
    restored = GuardState()
    restored.load_state_dict(state.state_dict())
    assert check_guards(settings, restored, history[5]) == []
    assert [w["step"] for w in check_guards(settings, restored, history[6])] == [7, 7]
