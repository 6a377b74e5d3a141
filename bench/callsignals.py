"""Signals for simulated calls (bench.calls): levels, speech extents, clips, line noise, DTMF,
hold music, babble, codecs. All at :data:`SR`, mono float32."""

from __future__ import annotations

import numpy as np
import scipy.signal

from models.audio import decode, to_mono
from models.features import frame_levels_dbfs
from training.augment import codec as real_codec
from training.augment import mu_law

SR = 8000
#: Nominal active speech level (dBFS over a clip's frames within 30 dB of its loudest; ITU-T P.56's
#: usual -26 dBov): clips are scaled to it unless ``speech_dbfs`` says otherwise, and noise/babble
#: SNRs are relative to it.
SPEECH_DBFS = -26.0
#: A clip's speech extent (:func:`speech_extent`): frames within this many dB of its loudest frame,
TRIM_DB = 35.0
#: above this level,
FLOOR_DBFS = -60.0
#: ... and more than this above the clip's own noise floor.
FLOOR_MARGIN_DB = 10.0
CODECS = ("mulaw", "gsm", "opus8")
#: DTMF digit -> (low, high) Hz.
DTMF = {"1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336),
        "6": (770, 1477), "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "*": (941, 1209),
        "0": (941, 1336), "#": (941, 1477)}
#: Pink-noise filter (Paul Kellet's 3-pole approximation), as training.augment uses.
PINK_B = [0.049922, -0.095993, 0.050612, -0.004408]
PINK_A = [1.0, -2.494956, 2.017265, -0.522189]


def db_gain(db: float) -> float:
    return float(10 ** (db / 20))


def frame_db(y: np.ndarray) -> np.ndarray:
    """Level per 25 ms frame, hop 10 ms (dBFS) of mono ``y`` ``(n,)`` at :data:`SR`."""
    return frame_levels_dbfs(segments=np.asarray(y, dtype=np.float32)[None, :], sr=SR)[0]


def active_level_db(y: np.ndarray) -> float:
    """Mean power (dBFS) of the frames within 30 dB of the loudest: the speech level, pauses ignored."""
    lv = frame_db(y)
    act = lv[lv > lv.max() - 30.0]
    return float(10 * np.log10(np.mean(10 ** (act / 10))))


def speech_extent(y: np.ndarray) -> tuple[int, int] | None:
    """``(first, end)`` sample span of a clip's speech: first to last 25 ms frame above the highest of
    (loudest frame - :data:`TRIM_DB`), (the clip's noise floor, its 10th-percentile frame level,
    + :data:`FLOOR_MARGIN_DB`) and :data:`FLOOR_DBFS`. The floor term trims recorded room noise
    before and after the words of noisy clips (some CREMA-D speakers are 15 dB above theirs)."""
    lv = frame_db(y)
    threshold = max(float(lv.max()) - TRIM_DB, float(np.percentile(lv, 10)) + FLOOR_MARGIN_DB, FLOOR_DBFS)
    on = np.flatnonzero(lv > threshold)
    if len(on) == 0:
        return None
    hop, frame = round(0.010 * SR), round(0.025 * SR)
    return int(on[0] * hop), min(len(y), int(on[-1] * hop + frame))


def load_clip(path: str, *, level_dbfs: float | None = SPEECH_DBFS) -> np.ndarray | None:
    """A clip at :data:`SR`, trimmed to its speech and scaled to an active level of ``level_dbfs``
    (None: as recorded); None if the clip is silent."""
    y, _ = decode(path, sr=SR)
    y = to_mono(y)
    span = speech_extent(y)
    if span is None or span[1] - span[0] < round(0.2 * SR):
        return None
    y = y[span[0] : span[1]]
    if level_dbfs is None:
        return y.astype(np.float32)
    return (y * db_gain(level_dbfs - active_level_db(y))).astype(np.float32)


def noise(n: int, *, kind: str, level_dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """White or pink noise of RMS ``level_dbfs``."""
    z = rng.standard_normal(n + (2000 if kind == "pink" else 0)).astype(np.float32)
    if kind == "pink":
        z = scipy.signal.lfilter(PINK_B, PINK_A, z)[2000:].astype(np.float32)  # drop the filter's start-up
    return (z * db_gain(level_dbfs) / (np.sqrt(np.mean(z * z)) + 1e-12)).astype(np.float32)


def dtmf_burst(digits: str, *, level_dbfs: float = SPEECH_DBFS, on_s: float = 0.08, off_s: float = 0.08
               ) -> np.ndarray:
    """Key presses: each digit ``on_s`` of its two tones, then ``off_s`` of silence; RMS while on = level."""
    t = np.arange(round(on_s * SR)) / SR
    parts = []
    for d in digits:
        lo, hi = DTMF[d]
        tone = (np.sin(2 * np.pi * lo * t) + np.sin(2 * np.pi * hi * t)) * db_gain(level_dbfs)  # RMS = level
        parts += [tone.astype(np.float32), np.zeros(round(off_s * SR), dtype=np.float32)]
    return np.concatenate(parts)


def hold_music(seconds: float, *, rng: np.random.Generator, level_dbfs: float = SPEECH_DBFS) -> np.ndarray:
    """Synthesised hold music: I-V-vi-IV chords (three harmonics each) and a random pentatonic melody
    in quarter notes at 120 bpm, with note envelopes; scaled to an RMS of ``level_dbfs``."""
    n = round(seconds * SR)
    beat = SR // 2
    t = np.arange(beat) / SR
    env = np.minimum(1.0, t / 0.02) * np.exp(-3.0 * t)
    roots = [261.63, 392.0, 440.0, 349.23]  # C G A F
    scale = [523.25, 587.33, 659.25, 783.99, 880.0]
    out = np.zeros(n + beat, dtype=np.float64)
    for b in range(0, n // beat + 1):
        root = roots[(b // 4) % 4]
        minor = (b // 4) % 4 == 2
        chord = [root, root * (2 ** ((3 if minor else 4) / 12)), root * 1.5]
        note = sum(np.sin(2 * np.pi * f * k * t) / k for f in chord for k in (1, 2, 3)) * 0.3
        note += np.sin(2 * np.pi * scale[int(rng.integers(len(scale)))] * t) * 0.8
        out[b * beat : (b + 1) * beat] += note * env
    out = out[:n]
    return (out * db_gain(level_dbfs) / (np.sqrt(np.mean(out * out)) + 1e-12)).astype(np.float32)


def babble(clips: list[np.ndarray], n: int, *, talkers: int, level_dbfs: float, rng: np.random.Generator
           ) -> np.ndarray:
    """Office babble of ``n`` samples: ``talkers`` streams of random clips (short gaps), summed,
    RMS ``level_dbfs``."""
    if not clips:
        raise ValueError("babble needs clips of other speakers")
    out = np.zeros(n, dtype=np.float32)
    for _ in range(talkers):
        pos = -int(rng.integers(0, 2 * SR))
        while pos < n:
            c = clips[int(rng.integers(len(clips)))]
            a, b = max(pos, 0), min(pos + len(c), n)
            if b > a:
                out[a:b] += c[a - pos : b - pos]
            pos += len(c) + int(rng.uniform(0.1, 0.5) * SR)
    return (out * db_gain(level_dbfs) / (np.sqrt(np.mean(out * out)) + 1e-12)).astype(np.float32)


def apply_codec(y: np.ndarray, name: str) -> np.ndarray:
    y = np.clip(y, -1.0, 1.0).astype(np.float32)
    return mu_law(y) if name == "mulaw" else real_codec(y, name=name, sr=SR)
