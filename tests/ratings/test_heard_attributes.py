"""The simulated raters judge what a clip plays, not what it was asked for: a learned
generator records its prompt's attributes, and only its notes say whether it followed them."""

from generation.music.composer import compose
from generation.music.events import piece_to_events
from generation.music.prompts import parse_prompt
from ratings.simulation import SimulatedClip, heard_attributes, prefers_faster


def test_the_oracle_measures_the_notes_instead_of_trusting_the_recorded_attributes():
    asked = parse_prompt("fast techno with drums at 150 bpm").to_dict()
    played = compose(parse_prompt("slow piano ballad at 70 bpm"), seed=1, duration_seconds=4)

    heard = heard_attributes(asked, piece_to_events(played))

    assert asked["tempo_bpm"] == 150 and asked["drums"] is True
    assert abs(heard["tempo_bpm"] - 70) <= 5
    assert heard["drums"] is False
    assert heard["genre"] == asked["genre"]  # not measurable: kept as recorded


def test_without_notes_the_recorded_attributes_stand():
    assert heard_attributes({"tempo_bpm": 90}, []) == {"tempo_bpm": 90}


def test_the_faster_taste_prefers_the_faster_clip():
    slow = SimulatedClip(b"", "", {"tempo_bpm": 80, "instruments": [0]}, "v")
    fast = SimulatedClip(b"", "", {"tempo_bpm": 120, "instruments": [0]}, "v")
    assert prefers_faster("any", fast, slow) > 0.99
    assert prefers_faster("any", slow, fast) < 0.01
