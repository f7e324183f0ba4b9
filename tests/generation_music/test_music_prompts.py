import json

import pytest

from generation.music.prompts import (
    GENRE_PRESETS,
    GENRES,
    POLYPHONIC_PROGRAMS,
    MusicAttributes,
    caption_for,
    parse_prompt,
)

PIANO, STRINGS, VIOLIN, CELLO, FLUTE, SAX = 0, 48, 40, 42, 73, 65


def test_key_and_mode_are_read_from_in_d_minor():
    attrs = parse_prompt("a gentle piano piece in D minor")
    assert (attrs.key_root, attrs.mode) == (2, "minor")


@pytest.mark.parametrize(
    ("text", "root", "mode"),
    [
        ("jazz in Bb major", 10, "major"),
        ("rock in F# minor", 6, "minor"),
        ("folk song in E flat major", 3, "major"),
        ("techno in C", 0, "minor"),  # mode falls back to the genre's
        ("ambient in A", 9, "major"),
    ],
)
def test_keys_with_accidentals_and_without_mode(text, root, mode):
    attrs = parse_prompt(text)
    assert (attrs.key_root, attrs.mode) == (root, mode)


def test_the_article_a_is_not_read_as_a_key():
    assert parse_prompt("music in a happy mood").key_root == GENRE_PRESETS["pop"].key_root


def test_explicit_bpm_wins_over_tempo_words():
    assert parse_prompt("slow house at 140 bpm").tempo_bpm == 140
    assert parse_prompt("techno, 128 BPM").tempo_bpm == 128


def test_tempo_words_move_the_genre_tempo():
    house = GENRE_PRESETS["house"].tempo_bpm
    assert parse_prompt("slow house").tempo_bpm < house < parse_prompt("fast house").tempo_bpm
    assert parse_prompt("upbeat house").tempo_bpm > house
    assert parse_prompt("relaxed house").tempo_bpm < house


@pytest.mark.parametrize("genre", GENRES)
def test_every_genre_is_recognised(genre):
    assert parse_prompt(f"some {genre} please").genre == genre


@pytest.mark.parametrize(
    ("text", "genre"),
    [
        ("lo-fi chill beat", "lofi"),
        ("hip-hop instrumental", "hip hop"),
        ("epic orchestral", "cinematic"),
    ],
)
def test_genre_aliases(text, genre):
    assert parse_prompt(text).genre == genre


def test_instruments_are_read_and_missing_roles_filled_from_the_genre():
    attrs = parse_prompt("jazz with sax and upright bass")
    assert attrs.instruments[0] == SAX
    assert attrs.instruments[-1] == 32  # upright bass
    assert any(p in POLYPHONIC_PROGRAMS for p in attrs.instruments), "someone plays chords"


def test_solo_chordal_instrument_in_a_ballad_plays_alone():
    assert parse_prompt("slow sad piano ballad").instruments == (PIANO,)


def test_generic_guitar_depends_on_the_genre():
    assert parse_prompt("metal guitar").instruments[0] == 30
    assert parse_prompt("folk guitar").instruments[0] == 25
    assert parse_prompt("rock with electric guitar").instruments[0] == 27


def test_drums_can_be_requested_and_refused():
    assert parse_prompt("ballad with drums").drums is True
    assert parse_prompt("ballad").drums is False
    assert parse_prompt("techno without drums").drums is False
    assert parse_prompt("techno").drums is True


def test_mood_sets_mode_and_density_words_set_density():
    sad = parse_prompt("sad pop song, sparse")
    assert (sad.mood, sad.mode, sad.density) == ("sad", "minor", 0.3)
    happy = parse_prompt("joyful busy pop")
    assert (happy.mood, happy.mode, happy.density) == ("happy", "major", 0.7)


def test_unknown_prompt_gives_valid_defaults():
    attrs = parse_prompt("xyzzy 42 ###")
    assert attrs.genre in GENRES
    assert 40 <= attrs.tempo_bpm <= 240
    assert attrs.instruments


def test_mood_without_genre_picks_a_fitting_genre():
    assert parse_prompt("something sad").genre == "ballad"
    assert parse_prompt("calm and dreamy").genre == "ambient"


def test_caption_reads_like_the_brief():
    attrs = parse_prompt("slow sad piano ballad in D minor at 68 bpm, sparse")
    assert caption_for(attrs) == "A slow sad ballad in D minor at 68 BPM with piano, sparse."


def test_attributes_serialise_to_json_and_back():
    attrs = parse_prompt("cinematic strings in E minor")
    data = json.loads(json.dumps(attrs.to_dict()))
    assert data["key"] == "E minor"
    assert MusicAttributes.from_dict(data) == attrs
