"""The simulated raters judge what a clip plays, not what it was asked for: a learned
generator records its prompt's attributes, and only its notes say whether it followed them.
Every taste is a plain function of what a listener hears."""

import dataclasses

import pytest

from generation.music.composer import compose
from generation.music.events import Note, Piece, piece_to_events
from generation.music.prompts import parse_prompt
from ratings.simulation.tastes import (
    SimulatedClip,
    default_preference,
    heard_attributes,
    prefers_darker,
    prefers_faster,
    prefers_higher_register,
    prefers_slower,
    prefers_staccato,
    prompt_adherence,
)

BALLAD = "slow sad piano ballad"


def test_the_oracle_measures_the_notes_instead_of_trusting_the_recorded_attributes():
    asked = parse_prompt("fast techno with drums at 150 bpm").to_dict()
    played = compose(parse_prompt("slow piano ballad at 70 bpm"), seed=1, duration_seconds=4)

    heard = heard_attributes(asked, piece_to_events(played), "fast techno with drums")

    assert asked["tempo_bpm"] == 150 and asked["drums"] is True
    assert abs(heard["tempo_bpm"] - 70) <= 5
    assert heard["drums"] is False
    assert "genre" not in heard and "mood" not in heard  # labels, not something heard
    assert heard["listening"]["tempo_vs_request"] < -0.5  # far slower than asked


def test_without_notes_the_recorded_attributes_stand():
    assert heard_attributes({"tempo_bpm": 90}, []) == {"tempo_bpm": 90}


def clip_of(piece: Piece, prompt: str = BALLAD) -> SimulatedClip:
    return SimulatedClip(b"", "", heard_attributes({}, piece_to_events(piece), prompt), "v")


def test_the_faster_and_slower_tastes_mirror_each_other():
    slow = SimulatedClip(b"", "", {"tempo_bpm": 80, "instruments": [0]}, "v")
    fast = SimulatedClip(b"", "", {"tempo_bpm": 120, "instruments": [0]}, "v")
    assert prefers_faster("any", fast, slow) > 0.99
    assert prefers_faster("any", slow, fast) < 0.01
    assert prefers_slower("any", slow, fast) == pytest.approx(prefers_faster("any", fast, slow))


def test_register_and_mode_tastes_hear_the_notes():
    piece = compose(parse_prompt(BALLAD), seed=2, duration_seconds=6)
    higher = dataclasses.replace(
        piece, notes=[dataclasses.replace(n, pitch=n.pitch + 12) for n in piece.notes]
    )
    assert prefers_higher_register(BALLAD, clip_of(higher), clip_of(piece)) > 0.95
    # The darker taste: the lower clip wins, and so does the minor one at the same register.
    assert prefers_darker(BALLAD, clip_of(piece), clip_of(higher)) > 0.95
    minor = compose(parse_prompt("sad piano ballad in A minor"), seed=3, duration_seconds=6)
    major = compose(parse_prompt("happy piano ballad in C major"), seed=3, duration_seconds=6)
    assert clip_of(minor).attributes["mode"] == "minor" != clip_of(major).attributes["mode"]

    def heard_as(minor_mode: float, lead_pitch: float) -> SimulatedClip:
        listening = {"minor_mode": minor_mode, "lead_pitch": lead_pitch}
        return SimulatedClip(b"", "", {"listening": listening}, "v")

    # Minor is 2 logits, and 2 semitones lower one more: the formula, by hand.
    assert prefers_darker(BALLAD, heard_as(1, 60), heard_as(0, 60)) == pytest.approx(
        0.8808, abs=1e-4
    )
    assert prefers_darker(BALLAD, heard_as(0, 58), heard_as(0, 60)) == pytest.approx(
        0.7311, abs=1e-4
    )
    assert prefers_darker(BALLAD, heard_as(1, 64), heard_as(0, 60)) == pytest.approx(0.5)


def test_the_staccato_taste_lives_in_the_notes_alone():
    held = [
        Note(start=4 * i, duration=4, pitch=60 + i % 3, velocity=80, program=0) for i in range(8)
    ]
    short = [dataclasses.replace(note, duration=1) for note in held]
    legato, staccato = clip_of(Piece(held, 80, 2)), clip_of(Piece(short, 80, 2))
    assert staccato.attributes["listening"]["articulation"] == pytest.approx(0.25)
    # Same tempo, instruments, drums and pitches: only the touch differs.
    assert {k: v for k, v in legato.attributes.items() if k != "listening"} == {
        k: v for k, v in staccato.attributes.items() if k != "listening"
    }
    assert prefers_staccato(BALLAD, staccato, legato) > 0.99  # 7.5 logits


def test_the_default_population_wants_the_prompt_first_and_then_a_higher_lead():
    asked = compose(parse_prompt(BALLAD), seed=4, duration_seconds=6)
    techno = compose(parse_prompt("fast techno with drums"), seed=4, duration_seconds=6)
    higher = dataclasses.replace(
        asked, notes=[dataclasses.replace(n, pitch=n.pitch + 5) for n in asked.notes]
    )
    asked_clip, higher_clip = clip_of(asked), clip_of(higher)

    assert default_preference(BALLAD, asked_clip, clip_of(techno)) > 0.8  # the prompt first
    # Transposed up a fourth, it may change the measured mode: compare what is left of it.
    liking = default_preference(BALLAD, higher_clip, asked_clip)
    adherence = prompt_adherence(BALLAD, higher_clip, asked_clip)
    assert liking > adherence  # the higher lead adds 2.5 logits on top of adherence
    assert prompt_adherence(BALLAD, asked_clip, asked_clip) == 0.5


def test_the_package_still_answers_to_the_names_of_the_old_module() -> None:
    """Tastes written against `ratings.simulation` when it was one module, and --preference
    paths naming it, keep working; the tastes alone load no Django."""
    import subprocess
    import sys

    from django.utils.module_loading import import_string

    import ratings.simulation as simulation
    from ratings.simulation import raters, swarm, tastes

    assert import_string("ratings.simulation.prefers_faster") is tastes.prefers_faster
    assert simulation.heard_attributes is tastes.heard_attributes
    assert simulation.RaterSwarm is swarm.RaterSwarm
    assert simulation.rater_judgement is raters.rater_judgement
    pure = "import sys, ratings.simulation as s; s.prefers_darker; print('django' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", pure], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
