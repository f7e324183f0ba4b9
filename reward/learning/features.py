"""Log-mel features of a clip, computed with torch alone (there is no CPU torchaudio here).

Every reward model reads audio through this one function, so a model works for any generator
backend (procedural, learned symbolic, MusicGen): it only ever sees the rendered sound.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import soundfile
import torch
from scipy.signal import resample_poly


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16_000  # music below 8 kHz carries what these models judge
    n_fft: int = 1024
    hop_length: int = 320  # 20 ms: 50 frames per second
    n_mels: int = 64
    f_min: float = 30.0
    f_max: float = 8_000.0
    # dB values are mapped to roughly [-1, 1]: clips are loudness-normalised, so a fixed
    # affine map keeps level differences visible where per-clip normalisation would erase them.
    db_floor: float = -80.0
    db_offset: float = 40.0
    db_scale: float = 40.0

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


DEFAULT_MEL = MelConfig()


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(config: MelConfig = DEFAULT_MEL) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filters, each normalised to unit area so
    that wide high-frequency bands do not dominate (the "slaney" normalisation)."""
    bins = np.linspace(0.0, config.sample_rate / 2, config.n_fft // 2 + 1)
    edges_mel = np.linspace(_hz_to_mel(config.f_min), _hz_to_mel(config.f_max), config.n_mels + 2)
    edges = _mel_to_hz(edges_mel)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= 2.0 / (upper - lower)  # unit area
    return torch.from_numpy(filters.astype(np.float32))


@lru_cache(maxsize=8)
def _window(n_fft: int) -> torch.Tensor:
    return torch.hann_window(n_fft)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(frames,) float32 from (frames,) or (frames, channels)."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio.mean(axis=1) if audio.ndim == 2 else audio


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    divisor = math.gcd(source_rate, target_rate)
    out = resample_poly(audio, target_rate // divisor, source_rate // divisor)
    return out.astype(np.float32)


def log_mel(audio: np.ndarray, sample_rate: int, config: MelConfig = DEFAULT_MEL) -> torch.Tensor:
    """(n_mels, frames) float32 log-mel spectrogram of mono or multichannel audio."""
    mono = resample(to_mono(audio), sample_rate, config.sample_rate)
    if len(mono) < config.n_fft:
        mono = np.pad(mono, (0, config.n_fft - len(mono)))
    spectrum = torch.stft(
        torch.from_numpy(mono),
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        window=_window(config.n_fft),
        center=True,
        return_complex=True,
    )
    power = spectrum.real.square() + spectrum.imag.square()
    mel = mel_filterbank(config) @ power
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))
    db = db.clamp_min(config.db_floor)
    return ((db + config.db_offset) / config.db_scale).contiguous()


def log_mel_from_bytes(data: bytes, config: MelConfig = DEFAULT_MEL) -> torch.Tensor:
    """Decode any file libsndfile reads (the platform stores Ogg/Opus) and take its log-mel."""
    audio, sample_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return log_mel(audio, sample_rate, config)
