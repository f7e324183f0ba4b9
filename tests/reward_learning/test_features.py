import io

import numpy as np
import soundfile

from reward.learning.features import DEFAULT_MEL, log_mel, log_mel_from_bytes


def tone(frequency: float, seconds: float, sample_rate: int, amplitude: float = 0.5):
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def band_of(frequency: float) -> int:
    """The mel band whose centre is nearest `frequency`, from the HTK mel formula."""
    mel = lambda hz: 2595 * np.log10(1 + hz / 700)  # noqa: E731
    edges = np.linspace(mel(DEFAULT_MEL.f_min), mel(DEFAULT_MEL.f_max), DEFAULT_MEL.n_mels + 2)
    centres = 700 * (10 ** (edges[1:-1] / 2595) - 1)
    return int(np.argmin(np.abs(centres - frequency)))


def test_shape_and_frame_rate_whatever_the_sample_rate():
    assert DEFAULT_MEL.frames_per_second == 50
    for sample_rate in (16_000, 44_100, 48_000):
        mel = log_mel(tone(440, 2.0, sample_rate), sample_rate)
        assert mel.shape == (64, 101)  # centred frames: one per 20 ms, plus the last edge
        assert mel.dtype.is_floating_point


def test_a_tone_peaks_in_its_band():
    for frequency in (440.0, 2_000.0):
        mel = log_mel(tone(frequency, 1.0, 44_100), 44_100)
        peak = int(mel[:, 5:-5].mean(dim=1).argmax())
        assert abs(peak - band_of(frequency)) <= 1
    assert band_of(2_000.0) > band_of(440.0) + 10


def test_louder_is_higher_by_its_decibels():
    quiet = log_mel(tone(440, 1.0, 16_000, amplitude=0.05), 16_000)
    loud = log_mel(tone(440, 1.0, 16_000, amplitude=0.5), 16_000)
    band = band_of(440.0)
    difference = float((loud[band, 5:-5] - quiet[band, 5:-5]).mean())
    assert abs(difference * DEFAULT_MEL.db_scale - 20.0) < 1.0  # 10x amplitude = 20 dB


def test_silence_sits_at_the_floor():
    mel = log_mel(np.zeros(16_000, dtype=np.float32), 16_000)
    assert float(mel.max()) == float(mel.min()) == -1.0


def test_from_bytes_matches_and_mixes_channels_down():
    left, right = tone(440, 1.0, 22_050), tone(880, 1.0, 22_050)
    stereo = np.stack([left, right], axis=1)
    buffer = io.BytesIO()
    soundfile.write(buffer, stereo, 22_050, format="WAV", subtype="FLOAT")
    decoded = log_mel_from_bytes(buffer.getvalue())
    assert np.allclose(decoded.numpy(), log_mel(stereo, 22_050).numpy(), atol=1e-5)
    assert np.allclose(decoded.numpy(), log_mel((left + right) / 2, 22_050).numpy(), atol=1e-5)
