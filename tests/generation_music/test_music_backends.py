import json

import numpy as np
import pytest

from generation.music import render
from generation.music.backends import (
    GeneratedClip,
    ProceduralBackend,
    available_backends,
    get_backend,
    register_backend,
)

OPUS_FRAME = 960  # 20 ms at 48 kHz


@pytest.fixture(scope="module")
def backend():
    return ProceduralBackend()


@pytest.fixture(scope="module")
def clips(backend):
    prompts = ["slow sad piano ballad", "fast techno with drums"]
    return [backend.generate(prompt, seed=3, duration_seconds=10) for prompt in prompts]


def test_clip_is_ogg_opus_of_exactly_the_requested_duration(clips):
    for clip in clips:
        audio, sample_rate = render.decode_audio(clip.audio_bytes)

        assert (clip.file_extension, clip.mime_type) == ("ogg", "audio/ogg")
        assert sample_rate == clip.sample_rate == 48000
        assert clip.duration_seconds == 10.0
        assert abs(len(audio) - 10 * sample_rate) <= OPUS_FRAME


def test_both_clips_of_a_pair_decode_to_the_same_length(clips):
    lengths = {len(render.decode_audio(clip.audio_bytes)[0]) for clip in clips}
    assert len(lengths) == 1, "a length difference could give the version away"


def test_clip_is_audible_normalised_and_below_full_scale(clips):
    for clip in clips:
        audio, sample_rate = render.decode_audio(clip.audio_bytes)

        assert np.sqrt(np.mean(np.square(audio))) > 0.02
        assert render.integrated_loudness(audio, sample_rate) == pytest.approx(-16.0, abs=1.5)
        assert np.abs(audio).max() < 1.0


def test_clip_carries_caption_attributes_and_events(clips):
    ballad, techno = clips

    assert ballad.caption.startswith("A slow sad ballad")
    assert json.loads(json.dumps(ballad.attributes))["genre"] == "ballad"
    assert techno.attributes["drums"] is True
    assert techno.events[0].startswith("Tempo_") and "Drums" in techno.events
    assert "Drums" not in ballad.events


def test_same_inputs_give_the_same_music_and_seed_changes_it(backend, clips):
    again = backend.compose("slow sad piano ballad", seed=3, duration_seconds=10)
    other = backend.compose("slow sad piano ballad", seed=4, duration_seconds=10)
    from generation.music.events import piece_to_events

    assert piece_to_events(again) == clips[0].events
    assert piece_to_events(other) != clips[0].events


def test_config_knobs_make_versions_sound_different(backend):
    tame = get_backend("procedural", {"variation": 0.1, "humanize": 0.0})
    wild = get_backend("procedural", {"variation": 0.9, "density_scale": 1.5})
    kwargs = {"seed": 8, "duration_seconds": 4}

    tame_clip, wild_clip = tame.generate("pop", **kwargs), wild.generate("pop", **kwargs)

    assert tame_clip.events != wild_clip.events
    assert len(wild_clip.events) > len(tame_clip.events)
    assert tame_clip.caption == wild_clip.caption, "the prompt is read the same way"


def test_stereo_and_loudness_target_are_configurable():
    clip = get_backend("procedural", {"stereo": True, "target_lufs": -20}).generate(
        "jazz", seed=1, duration_seconds=4
    )
    audio, sample_rate = render.decode_audio(clip.audio_bytes)

    assert audio.shape[1] == 2
    assert render.integrated_loudness(audio, sample_rate) == pytest.approx(-20.0, abs=1.5)


@pytest.mark.parametrize(
    "config",
    [{"tempreture": 1.0}, {"variation": 2.0}, {"variation": "high"}, {"stereo": "yes"}],
)
def test_bad_configs_are_refused(config):
    with pytest.raises(ValueError):
        get_backend("procedural", config)


def test_durations_outside_the_supported_range_are_refused(backend):
    with pytest.raises(ValueError):
        backend.generate("pop", seed=1, duration_seconds=0.2)


def test_registry_knows_procedural_and_accepts_new_backends():
    assert isinstance(get_backend("procedural"), ProceduralBackend)
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("nope")

    class Silent:
        name = "silent-test"

        def __init__(self, config=None):
            self.config = config

        def generate(self, prompt_text, *, seed, duration_seconds):
            return GeneratedClip(b"", "ogg", "audio/ogg", 48000, duration_seconds, "", {}, [])

    register_backend(Silent.name, Silent)
    assert "silent-test" in available_backends()
    assert get_backend("silent-test", {"x": 1}).config == {"x": 1}
