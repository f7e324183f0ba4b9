"""Piece -> audio with FluidSynth, loudness normalisation and Ogg/Opus encoding.

Rendering is offline: no audio driver is started; samples are pulled with
`Synth.get_samples` in blocks that end exactly at the next MIDI event. Each
render gets a synth of its own, so its audio depends on its piece alone. A synth
that rendered before keeps a trace of it that neither `system_reset` nor 30 s of
silence clears, and pulling a single frame more before a render changes the
render (FluidSynth works in 64-frame blocks): the same piece came out differently
depending on what the process had rendered before. The SoundFont is loaded once
per process, into a synth that never plays, and each render's synth borrows it
(`fluid_synth_add_sfont`): a fresh `sfload` would cost about 25 ms a render.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import soundfile
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from generation.music.events import Note, Piece

SAMPLE_RATE = 48000  # Opus only runs at 48 kHz (and its divisors)
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf3/FluidR3Mono_GM.sf3",  # Debian fluidr3mono-gm-soundfont
    "/usr/share/sounds/sf3/default-GM.sf3",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # Debian fluid-soundfont-gm
    "/usr/share/sounds/sf2/default-GM.sf2",
)
DRUM_CHANNEL = 9
MELODIC_CHANNELS = tuple(channel for channel in range(16) if channel != DRUM_CHANNEL)
CHANNEL_PANS = (64, 40, 88, 52, 76, 34, 94, 58, 70, 46, 82, 64, 64, 64, 64)
SYNTH_GAIN = 0.6  # headroom: the synth writes int16, so clipping there would be final
SYNTH_POLYPHONY = 96  # long pad releases pile up; stealing the oldest saves CPU unheard
FADE_OUT_SECONDS = 0.5
OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
FLUID_WARN = 2  # FluidSynth's log level for warnings


def _installed_soundfont() -> str | None:
    return next((path for path in SOUNDFONT_CANDIDATES if Path(path).is_file()), None)


# $SOUNDFONT_PATH wins; otherwise the first General MIDI SoundFont Debian installed.
SOUNDFONT_PATH: str | None = os.environ.get("SOUNDFONT_PATH") or _installed_soundfont()


def _resolve_soundfont(path: str | None) -> str:
    resolved = path or SOUNDFONT_PATH
    if not resolved:
        raise FileNotFoundError(
            "No General MIDI SoundFont found: apt-get install fluidr3mono-gm-soundfont "
            "or set SOUNDFONT_PATH"
        )
    return resolved


# --- synthesizers --------------------------------------------------------------


@dataclass
class _LoadedSynth:
    synth: Any  # fluidsynth.Synth, imported lazily
    soundfont_id: int


@dataclass
class _SoundFont:
    owner: _LoadedSynth  # loaded it and keeps it; never plays
    handle: int  # the C fluid_sfont_t*, lent to each render's synth


_SOUNDFONTS_LOCK = threading.Lock()
_SOUNDFONTS: dict[tuple[str, int], _SoundFont] = {}
_SYNTH_CHANNELS = 16  # pyfluidsynth's default is 256; the renders use 16


def _new_synth(sample_rate: int) -> Any:
    import fluidsynth  # imported lazily: the C library is only needed to render

    synth = fluidsynth.Synth(
        gain=SYNTH_GAIN,
        samplerate=float(sample_rate),
        channels=_SYNTH_CHANNELS,
        **{"synth.polyphony": SYNTH_POLYPHONY},
    )
    synth.setting("synth.chorus.active", 0)  # chorus smears the mono SoundFont; reverb stays
    return synth


def _soundfont(soundfont_path: str, sample_rate: int) -> _SoundFont:
    import fluidsynth

    key = (soundfont_path, sample_rate)
    with _SOUNDFONTS_LOCK:
        if key not in _SOUNDFONTS:
            synth = _new_synth(sample_rate)
            soundfont_id = synth.sfload(soundfont_path)
            if soundfont_id < 0:
                synth.delete()
                raise RuntimeError(f"FluidSynth could not load SoundFont {soundfont_path}")
            handle = fluidsynth.fluid_synth_get_sfont_by_id(synth.synth, soundfont_id)
            _SOUNDFONTS[key] = _SoundFont(_LoadedSynth(synth, soundfont_id), handle)
        return _SOUNDFONTS[key]


@functools.cache
def _fluid(name: str, result: Any, *arguments: tuple[str, Any]) -> Any:
    """A FluidSynth C function that pyfluidsynth does not wrap."""
    import fluidsynth

    return fluidsynth.cfunc(name, result, *((arg, kind, 1) for arg, kind in arguments))


_SYNTH_AND_FONT = (("synth", ctypes.c_void_p), ("sfont", ctypes.c_void_p))


@contextmanager
def _render_synth(soundfont_path: str, sample_rate: int) -> Iterator[_LoadedSynth]:
    """A fresh synth that borrows the process's loaded SoundFont, handed back before the
    synth is deleted (deleting a synth deletes the SoundFonts it holds)."""
    soundfont = _soundfont(soundfont_path, sample_rate)
    synth = _new_synth(sample_rate)
    soundfont_id = _fluid("fluid_synth_add_sfont", ctypes.c_int, *_SYNTH_AND_FONT)(
        synth.synth, soundfont.handle
    )
    try:
        if soundfont_id < 0:
            raise RuntimeError(f"FluidSynth could not share SoundFont {soundfont_path}")
        yield _LoadedSynth(synth, soundfont_id)
    finally:
        if soundfont_id >= 0:
            with _fluid_warnings_off():  # every channel says it lost its preset
                _fluid("fluid_synth_remove_sfont", ctypes.c_int, *_SYNTH_AND_FONT)(
                    synth.synth, soundfont.handle
                )
        synth.delete()


_LOG_LOCK = threading.Lock()  # the log handler is global: one thread swaps it at a time


@contextmanager
def _fluid_warnings_off() -> Iterator[None]:
    set_log = _fluid(
        "fluid_set_log_function",
        ctypes.c_void_p,  # the handler it replaces
        ("level", ctypes.c_int),
        ("fun", ctypes.c_void_p),
        ("data", ctypes.c_void_p),
    )
    with _LOG_LOCK:
        previous = set_log(FLUID_WARN, None, None)
        try:
            yield
        finally:
            set_log(FLUID_WARN, previous, None)


def warm_up(soundfont_path: str | None = None, sample_rate: int = SAMPLE_RATE) -> None:
    """Load the SoundFont now (e.g. at worker start) instead of on the first request."""
    _soundfont(_resolve_soundfont(soundfont_path), sample_rate)


# --- scheduling ---------------------------------------------------------------


@dataclass(frozen=True, order=True)
class _MidiEvent:
    sample: int
    is_note_on: bool  # False sorts first: a key is released before it is struck again
    channel: int
    key: int
    velocity: int


def _channel_programs(piece: Piece) -> dict[int, int]:
    """program -> channel, in the attributes' role order (lead gets the centre pan).
    More than 15 melodic programs share the last channel (only sampled pieces do that)."""
    preferred = [p for p in piece.attributes.get("instruments", []) if isinstance(p, int)]
    used = [note.program for note in piece.notes if not note.is_drum]
    ordered = list(dict.fromkeys([p for p in preferred if p in used] + used))
    last = len(MELODIC_CHANNELS) - 1
    return {program: MELODIC_CHANNELS[min(i, last)] for i, program in enumerate(ordered)}


def _note_events(note: Note, channel: int, samples_per_tick: float) -> list[_MidiEvent]:
    start = round(note.start * samples_per_tick)
    end = max(start + 1, round(note.end * samples_per_tick))
    return [
        _MidiEvent(start, True, channel, note.pitch, note.velocity),
        _MidiEvent(end, False, channel, note.pitch, 0),
    ]


def _schedule(piece: Piece, sample_rate: int, channels: dict[int, int]) -> list[_MidiEvent]:
    samples_per_tick = piece.seconds_per_tick * sample_rate
    events: list[_MidiEvent] = []
    for note in piece.notes:
        channel = DRUM_CHANNEL if note.is_drum else channels[note.program]
        events += _note_events(note, channel, samples_per_tick)
    return sorted(events)


# --- rendering ----------------------------------------------------------------


def _prepare_channels(loaded: _LoadedSynth, channels: dict[int, int]) -> None:
    synth = loaded.synth
    for program, channel in channels.items():
        synth.program_select(channel, loaded.soundfont_id, 0, program)
        synth.cc(channel, 10, CHANNEL_PANS[MELODIC_CHANNELS.index(channel)])
    synth.program_select(DRUM_CHANNEL, loaded.soundfont_id, 128, 0)


def _pull(synth: Any, frames: int) -> np.ndarray:
    interleaved = synth.get_samples(frames)
    return np.asarray(interleaved, dtype=np.float32).reshape(-1, 2) / 32768.0


def _run_events(synth: Any, events: list[_MidiEvent], total_frames: int) -> np.ndarray:
    blocks, position = [], 0
    for event in events:
        if event.sample >= total_frames:
            break
        if event.sample > position:
            blocks.append(_pull(synth, event.sample - position))
            position = event.sample
        if event.is_note_on:
            synth.noteon(event.channel, event.key, event.velocity)
        else:
            synth.noteoff(event.channel, event.key)
    if total_frames > position:
        blocks.append(_pull(synth, total_frames - position))
    return np.concatenate(blocks) if blocks else np.zeros((0, 2), np.float32)


def _fade_out(audio: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    frames = min(len(audio), int(seconds * sample_rate))
    if frames > 0:
        audio[-frames:] *= np.linspace(1.0, 0.0, frames, dtype=np.float32)[:, None]
    return audio


def render_piece(
    piece: Piece,
    *,
    duration_seconds: float,
    sample_rate: int = SAMPLE_RATE,
    soundfont_path: str | None = None,
    stereo: bool = False,
) -> np.ndarray:
    """float32 audio of shape (frames, channels), exactly round(duration * rate) frames.
    Mono by default: it halves the Opus encoding time and the bytes sent to browsers."""
    total_frames = round(duration_seconds * sample_rate)
    channels = _channel_programs(piece)
    events = _schedule(piece, sample_rate, channels)
    with _render_synth(_resolve_soundfont(soundfont_path), sample_rate) as loaded:
        _prepare_channels(loaded, channels)
        audio = _run_events(loaded.synth, events, total_frames)
    if not stereo:
        audio = audio.mean(axis=1, keepdims=True)
    fade = min(FADE_OUT_SECONDS, duration_seconds / 4)
    return _fade_out(audio, sample_rate, fade)


# --- loudness -----------------------------------------------------------------


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """ITU-R BS.1770-4 integrated loudness in LUFS (-inf for silence)."""
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(audio.astype(np.float64)))


def limit_peaks(
    audio: np.ndarray, sample_rate: int, ceiling_dbfs: float = -1.0, lookahead_ms: float = 10.0
) -> np.ndarray:
    """Look-ahead peak limiter. The gain curve is the running minimum of the gain
    each sample needs, smoothed by a window no wider than that minimum's reach,
    so smoothing never lets a peak through and never clicks."""
    ceiling = 10 ** (ceiling_dbfs / 20)
    peaks = np.abs(audio).max(axis=1) if audio.ndim == 2 else np.abs(audio)
    needed = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
    reach = max(1, int(sample_rate * lookahead_ms / 1000))
    gain = uniform_filter1d(minimum_filter1d(needed, 2 * reach + 1, mode="nearest"), reach)
    limited = audio * (gain[:, None] if audio.ndim == 2 else gain)
    return np.clip(limited, -ceiling, ceiling)


def normalize_loudness(
    audio: np.ndarray,
    sample_rate: int,
    target_lufs: float = -16.0,
    ceiling_dbfs: float = -1.0,
) -> np.ndarray:
    """Gain to target_lufs, then limit peaks to the ceiling. Limiting lowers the
    loudness again, so gain and limiting repeat until they agree (a few rounds)."""
    result = audio.astype(np.float64)
    for _ in range(4):
        loudness = integrated_loudness(result, sample_rate)
        if not np.isfinite(loudness):
            break  # silence: nothing to normalise
        gain_db = target_lufs - loudness
        if abs(gain_db) < 0.05:
            break
        result = limit_peaks(result * 10 ** (gain_db / 20), sample_rate, ceiling_dbfs)
    return result.astype(np.float32)


# --- encoding -----------------------------------------------------------------


def _opus_available() -> bool:
    return "OPUS" in soundfile.available_subtypes("OGG")


def encode_ogg_opus(audio: np.ndarray, sample_rate: int) -> bytes:
    """Ogg/Opus bytes (Ogg/Vorbis if this libsndfile lacks Opus). No tags are
    written: only the encoder's vendor string, identical for every version."""
    subtype = "OPUS" if _opus_available() else "VORBIS"
    if subtype == "OPUS" and sample_rate not in OPUS_SAMPLE_RATES:
        raise ValueError(f"Opus cannot encode at {sample_rate} Hz")
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, sample_rate, format="OGG", subtype=subtype)
    return buffer.getvalue()


def encode_normalized(
    audio: np.ndarray,
    sample_rate: int,
    *,
    target_lufs: float = -16.0,
    ceiling_dbfs: float = -1.5,
    decoded_peak_limit_dbfs: float = -0.1,
) -> bytes:
    """Normalise and encode. Opus overshoots the input's peaks by up to ~1 dB on
    sharp transients, hence a ceiling 0.5 dB under the usual -1 dBFS; if the
    decoded peak still passes the limit, lower the ceiling by the excess and
    encode again, so listeners never hear clipping."""
    for _ in range(3):
        normalized = normalize_loudness(audio, sample_rate, target_lufs, ceiling_dbfs)
        data = encode_ogg_opus(normalized, sample_rate)
        decoded, _ = decode_audio(data)
        peak_dbfs = 20 * np.log10(max(float(np.abs(decoded).max()), 1e-9))
        if peak_dbfs <= decoded_peak_limit_dbfs:
            break
        ceiling_dbfs -= peak_dbfs - decoded_peak_limit_dbfs + 0.2
    return data


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode any libsndfile-readable bytes to float32 (frames, channels)."""
    audio, sample_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio, sample_rate
