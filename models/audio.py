"""Decode audio from files, bytes or raw PCM to float32 per channel, resampled to the model rate.

Everything goes through libsndfile (``soundfile``): WAV (PCM 8/16/24/32-bit, float, mu-law, A-law),
FLAC, Ogg/Vorbis, Ogg/Opus and MP3. Resampling uses soxr (the resampler librosa uses by default).
Arrays are ``(channels, n_samples)`` float32 in [-1, 1] (values outside that are allowed: clipping
is the caller's business, NaN and inf are not).
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
import soxr

from models.errors import AudioError

#: Lowest and highest input sample rates accepted (Hz). Outside this range the input is surely wrong.
MIN_INPUT_RATE = 4000
MAX_INPUT_RATE = 384_000
#: Most channels a call may carry (agent, customer, … conference legs).
MAX_CHANNELS = 8
#: Raw PCM encodings accepted by :func:`decode_raw` (name -> libsndfile subtype, bytes per sample).
RAW_ENCODINGS: dict[str, tuple[str, int]] = {
    "pcm16": ("PCM_16", 2),
    "pcm24": ("PCM_24", 3),
    "pcm32": ("PCM_32", 4),
    "pcmu8": ("PCM_U8", 1),
    "float32": ("FLOAT", 4),
    "mulaw": ("ULAW", 1),
    "alaw": ("ALAW", 1),
}

Source = Union[str, "os.PathLike[str]", bytes, BinaryIO]


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return (np.where(sign != 0, -magnitude, magnitude) / 32768.0).astype(np.float32)


#: mu-law byte -> float32 sample in [-1, 1) (ITU-T G.711, as libsndfile decodes it; tested).
ULAW = _ulaw_table()
#: int16 -> float32 as libsndfile scales it (a power of two: exact).
PCM16_SCALE = np.float32(1 / 32768)


def ulaw_decode(data: bytes) -> np.ndarray:
    """``(n,)`` float32 from ``n`` mu-law bytes (a table lookup: ~20x cheaper than libsndfile on a
    20 ms frame)."""
    return ULAW.take(np.frombuffer(data, dtype=np.uint8))


def _fast_raw(data: bytes, *, encoding: str, channels: int) -> np.ndarray | None:
    """``(channels, n)`` of the encodings decoded without libsndfile (same values, bit for bit), else None."""
    if encoding == "mulaw":
        flat = ulaw_decode(data)
    elif encoding == "pcm16":
        flat = np.frombuffer(data, dtype="<i2").astype(np.float32) * PCM16_SCALE
    else:
        return None
    return np.ascontiguousarray(flat.reshape(-1, channels).T)


def check_rate(sr: int, *, what: str = "sample rate") -> int:
    """Return ``sr`` as int if it is a plausible audio sample rate, else raise :class:`AudioError`."""
    if not isinstance(sr, (int, np.integer)) or isinstance(sr, bool):
        raise AudioError(f"{what} must be an integer number of Hz, got {sr!r}")
    if not MIN_INPUT_RATE <= int(sr) <= MAX_INPUT_RATE:
        raise AudioError(
            f"{what} {int(sr)} Hz is outside the supported range {MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz"
        )
    return int(sr)


def check_channels(channels: int) -> int:
    """Return ``channels`` if it is between 1 and :data:`MAX_CHANNELS`, else raise :class:`AudioError`."""
    if not 1 <= int(channels) <= MAX_CHANNELS:
        raise AudioError(f"{int(channels)} channels is outside the supported range 1-{MAX_CHANNELS}")
    return int(channels)


def validate(y: np.ndarray, *, what: str = "audio") -> np.ndarray:
    """Check a ``(channels, n)`` float array: finite, at least one sample, at most MAX_CHANNELS."""
    if y.ndim != 2:
        raise AudioError(f"{what} must be 2-D (channels, samples), got shape {y.shape}")
    check_channels(y.shape[0])
    if y.shape[1] == 0:
        raise AudioError(f"{what} holds no samples")
    if not np.isfinite(y).all():
        raise AudioError(f"{what} contains NaN or infinite samples")
    return y


def resample(*, y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample ``y`` of shape ``(channels, n)`` from ``orig_sr`` to ``target_sr`` (soxr, HQ).

    Returns float32 of shape ``(channels, round(n * target_sr / orig_sr))``.
    """
    if orig_sr == target_sr:
        return np.ascontiguousarray(y, dtype=np.float32)
    out = soxr.resample(np.ascontiguousarray(y.T, dtype=np.float32), orig_sr, target_sr, quality="HQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(len(out), -1).T)


def _read(handle: BinaryIO | str, *, name: str, **kwargs: object) -> tuple[np.ndarray, int]:
    try:
        data, sr = sf.read(handle, dtype="float32", always_2d=True, **kwargs)  # type: ignore[arg-type]
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"cannot decode {name}: {str(exc).strip() or type(exc).__name__}") from None
    return np.ascontiguousarray(data.T), int(sr)


def decode(source: Source, *, sr: int | None = None) -> tuple[np.ndarray, int]:
    """Decode a file path, bytes or binary file object to ``(y, sr)``.

    ``y`` has shape ``(channels, n_samples)``, float32. With ``sr`` given, the audio is resampled
    to it and ``sr`` is returned; otherwise the file's own rate is returned.
    Raises :class:`AudioError` for anything that is not usable audio.
    """
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if not os.path.isfile(name):
            raise AudioError(f"no such audio file: {name}")
        if os.path.getsize(name) == 0:
            raise AudioError(f"{name} is empty")
        y, file_sr = _read(name, name=name)
    else:
        name = "audio data"
        if isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise AudioError("audio data is empty")
            source = io.BytesIO(bytes(source))
        y, file_sr = _read(source, name=name)
    check_rate(file_sr, what=f"{name}: sample rate")
    validate(y, what=name)
    if sr is None:
        return y, file_sr
    return resample(y=y, orig_sr=file_sr, target_sr=sr), sr


def decode_raw(
    data: bytes, *, sr: int, channels: int, encoding: str = "pcm16", target_sr: int | None = None
) -> tuple[np.ndarray, int]:
    """Decode headerless interleaved little-endian PCM to ``(y, sr)``; see :data:`RAW_ENCODINGS`.

    ``y`` has shape ``(channels, n_frames)``; a trailing partial frame is an error.
    """
    check_rate(sr)
    check_channels(channels)
    if encoding not in RAW_ENCODINGS:
        raise AudioError(f"unknown raw encoding {encoding!r}; choose one of {', '.join(RAW_ENCODINGS)}")
    subtype, width = RAW_ENCODINGS[encoding]
    if len(data) == 0:
        raise AudioError("raw audio data is empty")
    if len(data) % (width * channels):
        raise AudioError(
            f"raw {encoding} data of {len(data)} bytes is not a whole number of "
            f"{channels}-channel frames"
        )
    y = _fast_raw(data, encoding=encoding, channels=channels)
    if y is None:
        y, _ = _read(
            io.BytesIO(data), name=f"raw {encoding} data", samplerate=sr, channels=channels,
            format="RAW", subtype=subtype, endian="LITTLE",
        )
        validate(y, what=f"raw {encoding} data")
    if target_sr is None:
        return y, sr
    return resample(y=y, orig_sr=sr, target_sr=target_sr), target_sr


def to_mono(y: np.ndarray) -> np.ndarray:
    """Average a ``(channels, n)`` array to ``(n,)`` (training treats corpora clips as mono)."""
    return np.asarray(y.mean(axis=0), dtype=np.float32)
