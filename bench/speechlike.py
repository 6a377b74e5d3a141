"""Seeded synthetic speech-like signals for VAD and segmentation tests (no corpus audio).

:func:`vowels` is a source-filter "voice": a glottal pulse train with a wandering pitch through
three formant resonators that move from vowel to vowel, amplitude-modulated at syllable rate.
Silero VAD calls it speech; it calls noise, tones and DTMF non-speech (tests/test_models_vad.py).
Used by the tests and by ``python -m bench`` (a speech-like call for bundles with the Silero VAD).
"""

from __future__ import annotations

import numpy as np
import scipy.signal

SR = 8000
#: Formants (Hz) of a few vowels: a, i, u, e, o.
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))


def vowels(seconds: float, *, seed: int = 0, f0: float = 140.0, level_dbfs: float = -26.0, sr: int = SR) -> np.ndarray:
    """``(round(seconds * sr),)`` float32 of syllables (~0.2 s each) at an RMS level of ``level_dbfs``."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    pitch = f0 * (1 + 0.12 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) + 0.03 * rng.standard_normal())
    phase = np.cumsum(pitch / sr)
    source = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    source = scipy.signal.lfilter([1.0], [1.0, -0.95], source)  # glottal roll-off
    syl = int(0.2 * sr)
    out = np.zeros(n)
    for k, a in enumerate(range(0, n, syl)):
        seg = source[a : a + syl]
        y = np.zeros_like(seg)
        for f in VOWELS[(k + int(rng.integers(0, 5))) % len(VOWELS)]:
            r = np.exp(-np.pi * 80 / sr)
            b, a_ = [1 - r], [1, -2 * r * np.cos(2 * np.pi * f / sr), r * r]
            y += scipy.signal.lfilter(b, a_, seg)
        env = np.sin(np.pi * np.arange(len(seg)) / len(seg)) ** 0.5
        out[a : a + len(seg)] = y * env
    out += 0.02 * np.std(out) * rng.standard_normal(n)
    return scale(out, level_dbfs)


def scale(y: np.ndarray, level_dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(y)))) or 1.0
    return (y * (10 ** (level_dbfs / 20) / rms)).astype(np.float32)


def noise(seconds: float, *, seed: int = 0, level_dbfs: float = -40.0, sr: int = SR) -> np.ndarray:
    return scale(np.random.default_rng(seed).standard_normal(int(round(seconds * sr))), level_dbfs)


def tone(seconds: float, *, freq: float = 440.0, level_dbfs: float = -20.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return scale(np.sin(2 * np.pi * freq * t), level_dbfs)


def dtmf(seconds: float, *, seed: int = 0, level_dbfs: float = -20.0, sr: int = SR) -> np.ndarray:
    """Key presses (two tones, 0.1 s on, 0.1 s off)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n)
    lows, highs = (697, 770, 852, 941), (1209, 1336, 1477)
    for a in range(0, n, int(0.2 * sr)):
        m = min(int(0.1 * sr), n - a)
        t = np.arange(m) / sr
        out[a : a + m] = np.sin(2 * np.pi * lows[rng.integers(4)] * t) + np.sin(2 * np.pi * highs[rng.integers(3)] * t)
    return scale(out, level_dbfs)


def call(parts: list[tuple[str, float]], *, seed: int = 0, floor_dbfs: float = -70.0
         ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Concatenate ``("speech"|"silence", seconds)`` parts over a quiet noise floor; returns the signal
    and the speech spans in seconds."""
    ys, spans, pos = [], [], 0.0
    for k, (kind, sec) in enumerate(parts):
        if kind == "speech":
            ys.append(vowels(sec, seed=seed + k))
            spans.append((pos, pos + sec))
        else:
            ys.append(np.zeros(int(round(sec * SR)), dtype=np.float32))
        pos += sec
    y = np.concatenate(ys)
    return y + noise(len(y) / SR, seed=seed + 99, level_dbfs=floor_dbfs), spans


def stereo(seconds: float, utterances: list[tuple[int, int, float, int]], *, floor_seed: int = 0,
           floor_dbfs: float = -70.0) -> np.ndarray:
    """A two-channel call ``(2, round(seconds * SR))`` float32: each channel's noise floor (seeded
    ``floor_seed + channel``) plus ``utterances`` ``(channel, start sample, seconds, seed)`` of
    :func:`vowels` (cut at the call's end)."""
    y = np.stack([noise(seconds, seed=floor_seed + c, level_dbfs=floor_dbfs) for c in (0, 1)])
    n = y.shape[1]
    for c, a, sec, seed in utterances:
        v = vowels(sec, seed=seed)[: max(0, n - a)]
        y[c, a : a + len(v)] += v
    return y


def write_wav(path: object, y: np.ndarray, *, sr: int = SR) -> np.ndarray:
    """Write ``(channels, n)`` audio at :data:`SR` as 16-bit PCM at ``sr`` (soxr); returns what was written."""
    import soundfile as sf
    import soxr

    out = soxr.resample(y.T, SR, sr) if sr != SR else y.T
    sf.write(str(path), np.clip(out, -1, 1), sr, subtype="PCM_16")
    return np.asarray(out)
