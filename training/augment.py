"""Channel building blocks: companding, the telephone band, real codecs and pink noise.

:mod:`training.lines` draws the recipe's line augmentation and evaluation conditions from them, and
``ser-train evaluate --telephone`` is :func:`telephone`. All take mono float32 waveforms.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import scipy.signal
import soundfile as sf
import soxr

MU = 255.0
A_LAW = 87.6


def mu_law(y: np.ndarray, *, bits: int = 8) -> np.ndarray:
    """mu-law compand, quantise to ``bits`` and expand back (G.711 style, mu=255)."""
    x = np.clip(y, -1.0, 1.0)
    f = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    levels = 2 ** bits - 1
    f = np.round((f + 1.0) / 2.0 * levels) / levels * 2.0 - 1.0
    return (np.sign(f) * np.expm1(np.abs(f) * np.log1p(MU)) / MU).astype(np.float32)


def a_law(y: np.ndarray, *, bits: int = 8) -> np.ndarray:
    """A-law compand, quantise to ``bits`` and expand back (A=87.6)."""
    x = np.clip(y, -1.0, 1.0)
    ax = np.abs(x)
    denom = 1.0 + np.log(A_LAW)
    small = ax < 1.0 / A_LAW
    f = np.where(small, A_LAW * ax / denom, (1.0 + np.log(np.maximum(A_LAW * ax, 1e-12))) / denom)
    levels = 2 ** bits - 1
    f = np.round((np.sign(x) * f + 1.0) / 2.0 * levels) / levels * 2.0 - 1.0
    af = np.abs(f)
    inv = np.where(af < 1.0 / denom, af * denom / A_LAW, np.exp(af * denom - 1.0) / A_LAW)
    return (np.sign(f) * inv).astype(np.float32)


@lru_cache(maxsize=64)
def _bandpass(low: int, high: int, sr: int) -> np.ndarray:
    high = min(high, int(sr / 2 * 0.95))
    return scipy.signal.butter(4, [low, high], btype="bandpass", fs=sr, output="sos")


def band_limit(y: np.ndarray, *, sr: int, low: float = 300.0, high: float = 3400.0) -> np.ndarray:
    """4th-order Butterworth band-pass (causal, as a real channel is)."""
    sos = _bandpass(int(round(low)), int(round(high)), sr)
    return scipy.signal.sosfilt(sos, y).astype(np.float32)


def telephone(y: np.ndarray, *, sr: int) -> np.ndarray:
    """Deterministic narrow-band telephone channel: to 8 kHz, 300-3400 Hz band, 8-bit mu-law, back."""
    z = y if sr == 8000 else soxr.resample(y, sr, 8000, quality="HQ").astype(np.float32)
    z = mu_law(band_limit(z, sr=8000))
    if sr != 8000:
        z = soxr.resample(z, 8000, sr, quality="HQ").astype(np.float32)
        z = z[: len(y)] if len(z) >= len(y) else np.pad(z, (0, len(y) - len(z)))
    return np.asarray(z, dtype=np.float32)


#: Real codecs through libsndfile: name -> (container, subtype, compression level). The Opus level
#: 1.0 (its lowest bitrate) gives about 9 kbit/s on 8 kHz speech with the Ogg overhead, MP3 0.9 about
#: 14 kbit/s (measured on CREMA-D clips, docs/measurements.md).
CODECS: dict[str, tuple[str, str, float | None]] = {
    "gsm": ("WAV", "GSM610", None),
    "opus8": ("OGG", "OPUS", 1.0),
    "mp3": ("MP3", "MPEG_LAYER_III", 0.9),
}


def codec(y: np.ndarray, *, name: str, sr: int = 8000) -> np.ndarray:
    """Encode ``y`` (mono float32 at ``sr``) with a real codec (:data:`CODECS`) and decode it back;
    the output has ``len(y)`` samples (codec delay/padding trimmed or zero-filled)."""
    if name not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {name!r}")
    fmt, subtype, level = CODECS[name]
    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1.0, 1.0).astype(np.float32), sr, format=fmt, subtype=subtype,
             compression_level=level)
    buf.seek(0)
    z, _ = sf.read(buf, dtype="float32")
    z = z if z.ndim == 1 else z.mean(axis=1)
    out = np.zeros(len(y), dtype=np.float32)
    out[: min(len(y), len(z))] = z[: len(y)]
    return out


def pink_noise(n: int, *, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of roughly pink (1/f) noise: white noise through a 3-pole filter (Kellet's)."""
    white = rng.standard_normal(n)  # filtered in float64, then float32
    return scipy.signal.lfilter([0.049922, -0.095993, 0.050612, -0.004408],
                                [1.0, -2.494956, 2.017265, -0.522189], white).astype(np.float32)
