"""Noise that real lines have, at SNRs measured against *active* speech (as a telephone engineer does).

:func:`active_level` is the mean power of the 25 ms frames within 30 dB of the loudest one (pauses and
padding do not count), so "10 dB SNR" means the noise is 10 dB under the speech while someone speaks,
whatever the clip's share of silence. Noise kinds: white, pink, brown (random walk), mains hum with
harmonics, comfort noise (low, band-shaped hiss as VoIP gateways insert) and babble (other speakers'
clips summed). Used by the v3 training augmentation (:func:`line_augment`) and by the evaluation
conditions (:data:`CONDITIONS`: white/pink at 20 and 10 dB, hum), which are deterministic per clip.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

from training.augment import CODECS, codec, mu_law, pink_noise, telephone

NOISES = ("white", "pink", "brown", "hum", "comfort", "babble")
#: Evaluation conditions beyond the codecs: name -> (noise, SNR dB against active speech).
NOISE_CONDITIONS: dict[str, tuple[str, float]] = {
    "white20": ("white", 20.0), "white10": ("white", 10.0), "pink20": ("pink", 20.0), "pink10": ("pink", 10.0),
    "hum": ("hum", 20.0),
}
ACTIVE_DB = 30.0


def active_level(y: np.ndarray, *, sr: int, within_db: float = ACTIVE_DB) -> float:
    """Mean power of the 25 ms frames (10 ms hop) within ``within_db`` of the loudest: the active speech level."""
    frame, hop = round(0.025 * sr), round(0.010 * sr)
    if len(y) < frame:
        return float(np.mean(np.square(y))) + 1e-12
    view = np.lib.stride_tricks.sliding_window_view(np.asarray(y, dtype=np.float32), frame)[::hop]
    power = np.mean(np.square(view), axis=-1) + 1e-12
    keep = power >= power.max() * 10 ** (-within_db / 10)
    return float(power[keep].mean())


def noise(kind: str, n: int, *, sr: int, rng: np.random.Generator, babble: list[np.ndarray] | None = None
          ) -> np.ndarray:
    """``n`` samples of a noise ``kind`` (:data:`NOISES`), unit-free (scaled by :func:`at_snr`)."""
    if kind == "white":
        return rng.standard_normal(n).astype(np.float32)
    if kind == "pink":
        return pink_noise(n, rng=rng)
    if kind == "brown":
        z = np.cumsum(rng.standard_normal(n))
        return scipy.signal.lfilter([1.0, -1.0], [1.0, -0.995], z).astype(np.float32)
    if kind == "hum":
        f0 = 50.0 if rng.random() < 0.5 else 60.0
        t = np.arange(n) / sr
        out = sum(a * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
                  for h, a in zip((1, 2, 3, 5, 7), (1.0, 0.5, 0.35, 0.2, 0.1), strict=True))
        return (np.asarray(out) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    if kind == "comfort":
        sos = scipy.signal.butter(2, [200, min(3000, sr // 2 - 100)], btype="bandpass", fs=sr, output="sos")
        return scipy.signal.sosfilt(sos, rng.standard_normal(n)).astype(np.float32)
    if kind == "babble":
        if not babble:
            return noise("pink", n, sr=sr, rng=rng)
        out = np.zeros(n, dtype=np.float32)
        for j in rng.choice(len(babble), size=min(4, len(babble)), replace=False):
            b = babble[int(j)]
            start = int(rng.integers(0, max(1, len(b) - n)))
            piece = np.resize(b[start:], n) if len(b) else np.zeros(n, np.float32)
            out += piece / (np.sqrt(np.mean(piece * piece)) + 1e-6)
        return out
    raise ValueError(f"noise kind must be one of {', '.join(NOISES)}, got {kind!r}")


def at_snr(y: np.ndarray, n: np.ndarray, *, snr_db: float, sr: int) -> np.ndarray:
    """``y`` plus noise ``n`` scaled to ``snr_db`` under ``y``'s active speech level."""
    pn = float(np.mean(np.square(n))) + 1e-12
    gain = np.sqrt(active_level(y, sr=sr) / pn / 10 ** (snr_db / 10))
    return np.clip(y + gain * n, -1.0, 1.0).astype(np.float32)


def condition(y: np.ndarray, *, name: str, sr: int, seed: int) -> np.ndarray:
    """An evaluation condition (:data:`NOISE_CONDITIONS`, a codec, ``telephone`` or ``clean``), seeded."""
    if name == "clean":
        return y
    if name == "telephone":
        return telephone(y, sr=sr)
    if name in CODECS:
        return codec(y, name=name, sr=sr)
    if name in NOISE_CONDITIONS:
        kind, snr = NOISE_CONDITIONS[name]
        rng = np.random.default_rng(seed)
        return at_snr(y, noise(kind, len(y), sr=sr, rng=rng), snr_db=snr, sr=sr)
    raise ValueError(f"unknown condition {name!r}")


def line_augment(y: np.ndarray, *, sr: int, rng: np.random.Generator, babble: list[np.ndarray] | None = None,
                 p_noise: float = 0.85, p_codec: float = 0.5, snr_db: tuple[float, float] = (0.0, 30.0)
                 ) -> tuple[np.ndarray, str]:
    """A training example as a real line delivers it: a level change, then (``p_noise``) a noise
    floor at an SNR drawn uniformly from ``snr_db`` against active speech, then (``p_codec``) a
    channel or codec. Returns the waveform and a short description."""
    desc = []
    gain_db = float(rng.uniform(-20.0, 6.0))
    y = np.clip(y * 10 ** (gain_db / 20), -1.0, 1.0).astype(np.float32)
    desc.append(f"gain{gain_db:+.0f}")
    if rng.random() < p_noise:
        kind = NOISES[int(rng.integers(len(NOISES)))]
        snr = float(rng.uniform(*snr_db))
        y = at_snr(y, noise(kind, len(y), sr=sr, rng=rng, babble=babble), snr_db=snr, sr=sr)
        desc.append(f"{kind}{snr:.0f}")
    if rng.random() < p_codec:
        ch = ("gsm", "opus8", "mulaw", "telephone")[int(rng.integers(4))]
        y = mu_law(y) if ch == "mulaw" else (telephone(y, sr=sr) if ch == "telephone" else codec(y, name=ch, sr=sr))
        desc.append(ch)
    return y, "+".join(desc)
