import struct
import threading

import numpy as np
import pytest

from generation.music import render
from generation.music.composer import compose
from generation.music.prompts import parse_prompt

RATE = render.SAMPLE_RATE
OPUS_FRAME = 960  # 20 ms at 48 kHz


@pytest.fixture(scope="module")
def ballad():
    return compose(parse_prompt("slow sad piano ballad"), seed=1, duration_seconds=10)


@pytest.fixture(scope="module")
def techno():
    return compose(parse_prompt("fast techno with drums"), seed=1, duration_seconds=10)


def _spectrogram(audio: np.ndarray) -> np.ndarray:
    mono = audio.mean(axis=1)
    frames = np.lib.stride_tricks.sliding_window_view(mono, 2048)[::512] * np.hanning(2048)
    return np.abs(np.fft.rfft(frames, axis=1))


def _onsets_per_second(audio: np.ndarray) -> float:
    """Peaks of positive spectral flux on a log-magnitude spectrogram."""
    log_magnitude = np.log1p(100 * _spectrogram(audio))
    flux = np.maximum(0.0, np.diff(log_magnitude, axis=0)).sum(axis=1)
    threshold = np.median(flux) * 1.5
    peaks = (flux[1:-1] > flux[:-2]) & (flux[1:-1] >= flux[2:]) & (flux[1:-1] > threshold)
    return peaks.sum() / (len(audio) / RATE)


def _spectral_centroid_hz(audio: np.ndarray) -> float:
    spectrum = _spectrogram(audio).sum(axis=0)
    frequencies = np.fft.rfftfreq(2048, 1 / RATE)
    return float((frequencies * spectrum).sum() / spectrum.sum())


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio))))


def test_render_has_the_exact_length_and_is_not_silent(ballad):
    audio = render.render_piece(ballad, duration_seconds=7.3)

    assert audio.dtype == np.float32
    assert audio.shape == (round(7.3 * RATE), 1)
    assert _rms(audio) > 1e-3
    assert np.abs(audio[-10:]).max() < 1e-3, "the fade-out ends in silence"


def test_stereo_render_has_two_channels(ballad):
    audio = render.render_piece(ballad, duration_seconds=3, stereo=True)
    assert audio.shape == (3 * RATE, 2)
    assert not np.allclose(audio[:, 0], audio[:, 1]), "instruments are panned"


def test_rendering_depends_only_on_the_piece(ballad, techno):
    first = render.render_piece(ballad, duration_seconds=5)
    # Leaves notes and reverb behind, and a duration that is not a whole number of
    # FluidSynth's 64-frame blocks; a shared synth carried both into the next render (the
    # same clip differed by up to 0.2 of full scale, depending on what came before).
    render.render_piece(techno, duration_seconds=5)
    render.render_piece(techno, duration_seconds=0.37)
    again = render.render_piece(ballad, duration_seconds=5)

    assert np.array_equal(first, again)


def test_concurrent_renders_match_renders_one_at_a_time(ballad, techno, monkeypatch):
    import fluidsynth

    expected = {"ballad": render.render_piece(ballad, duration_seconds=4)}
    expected["techno"] = render.render_piece(techno, duration_seconds=4)
    # The SoundFont stays loaded once per process: the renders' synths borrow it.
    monkeypatch.setattr(fluidsynth.Synth, "sfload", lambda *a: pytest.fail("SoundFont reloaded"))
    results = {}

    def work(name, piece):
        results[name] = render.render_piece(piece, duration_seconds=4)

    threads = [threading.Thread(target=work, args=item) for item in
               [("ballad", ballad), ("techno", techno)] * 2]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, audio in expected.items():
        assert np.array_equal(results[name], audio)


def test_prompts_are_audible_in_the_rendered_audio(ballad, techno):
    ballad_audio = render.render_piece(ballad, duration_seconds=10)
    techno_audio = render.render_piece(techno, duration_seconds=10)

    assert _onsets_per_second(techno_audio) > 1.5 * _onsets_per_second(ballad_audio)
    assert _spectral_centroid_hz(techno_audio) > 2 * _spectral_centroid_hz(ballad_audio)


def test_loudness_is_normalised_and_peaks_are_limited(ballad, techno):
    for piece in (ballad, techno):
        audio = render.render_piece(piece, duration_seconds=10)
        normalised = render.normalize_loudness(audio, RATE, target_lufs=-16.0)

        assert render.integrated_loudness(normalised, RATE) == pytest.approx(-16.0, abs=0.5)
        assert np.abs(normalised).max() <= 10 ** (-1 / 20) + 1e-6


def test_limiter_holds_a_ceiling_on_spiky_input_and_leaves_quiet_audio_alone():
    rng = np.random.default_rng(0)
    quiet = (0.1 * rng.standard_normal((RATE, 1))).astype(np.float32)
    spiky = quiet.copy()
    spiky[::4800] = 3.0

    assert np.array_equal(render.limit_peaks(quiet, RATE, ceiling_dbfs=0.0), quiet)
    limited = render.limit_peaks(spiky, RATE, ceiling_dbfs=-1.0)
    assert np.abs(limited).max() <= 10 ** (-1 / 20) + 1e-9
    assert _rms(limited[2400:2600]) == pytest.approx(_rms(spiky[2400:2600]), rel=1e-6)


def test_quiet_sine_is_brought_to_target_and_silence_stays_silent():
    t = np.arange(5 * RATE) / RATE
    sine = (0.01 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]

    louder = render.normalize_loudness(sine, RATE, target_lufs=-20.0)
    assert render.integrated_loudness(louder, RATE) == pytest.approx(-20.0, abs=0.2)
    silence = np.zeros((RATE, 1), np.float32)
    assert np.array_equal(render.normalize_loudness(silence, RATE), silence)


def _opus_comments(data: bytes) -> tuple[str, list[str]]:
    start = data.index(b"OpusTags") + 8
    (vendor_length,) = struct.unpack_from("<I", data, start)
    vendor = data[start + 4 : start + 4 + vendor_length].decode()
    offset = start + 4 + vendor_length
    (count,) = struct.unpack_from("<I", data, offset)
    comments, offset = [], offset + 4
    for _ in range(count):
        (length,) = struct.unpack_from("<I", data, offset)
        comments.append(data[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    return vendor, comments


def test_opus_encoding_round_trips_length_and_carries_no_tags(ballad):
    audio = render.normalize_loudness(render.render_piece(ballad, duration_seconds=6), RATE)

    data = render.encode_ogg_opus(audio, RATE)
    decoded, sample_rate = render.decode_audio(data)

    assert data[:4] == b"OggS" and b"OpusHead" in data
    assert sample_rate == RATE
    assert abs(len(decoded) - len(audio)) <= OPUS_FRAME
    vendor, comments = _opus_comments(data)
    assert vendor.startswith("libopus")
    assert comments == []
    assert not any(key in data for key in (b"TITLE", b"COMMENT", b"ENCODER", b"ARTIST"))


def test_opus_rejects_sample_rates_it_cannot_encode():
    with pytest.raises(ValueError):
        render.encode_ogg_opus(np.zeros((44100, 1), np.float32), 44100)


def test_encode_normalized_keeps_decoded_peaks_below_full_scale_despite_codec_overshoot():
    # bright, transient-rich material is where Opus overshoots the most
    piece = compose(parse_prompt("dense fast metal with drums"), seed=0, duration_seconds=6)
    audio = render.render_piece(piece, duration_seconds=6)

    data = render.encode_normalized(audio, RATE, target_lufs=-14.0)
    decoded, _ = render.decode_audio(data)

    assert 20 * np.log10(np.abs(decoded).max()) <= -0.1
    assert render.integrated_loudness(decoded, RATE) == pytest.approx(-14.0, abs=1.0)
