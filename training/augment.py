"""Telephone-channel augmentation (training data only) and the deterministic telephone simulation
used by ``ser-train evaluate --telephone``.

All functions take mono float32 waveforms at the model rate and a seeded ``numpy.random.Generator``;
none of them is ever applied to validation or test audio (see :mod:`training.train`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
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
#: 14 kbit/s (measured on CREMA-D clips, docs/training.md).
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


def packet_loss(y: np.ndarray, *, rate: float, rng: np.random.Generator, sr: int = 8000,
                frame_s: float = 0.02) -> np.ndarray:
    """Zero out 20 ms frames independently with probability ``rate`` (lost RTP packets, no concealment)."""
    frame = round(frame_s * sr)
    n = -(-len(y) // frame)
    lost = np.repeat(rng.random(n) < rate, frame)[: len(y)]
    return np.where(lost, np.float32(0.0), y).astype(np.float32)


def reverb(y: np.ndarray, *, rt60: float, rng: np.random.Generator, sr: int = 8000, wet: float = 0.5) -> np.ndarray:
    """Convolve with a synthetic room response: exponentially decaying noise with reverberation time ``rt60``."""
    n = max(1, int(rt60 * sr))
    t = np.arange(n) / sr
    rir = rng.standard_normal(n).astype(np.float32) * np.exp(-6.9 * t / rt60).astype(np.float32)
    rir[0] = 0.0
    rir /= np.sqrt(np.sum(rir * rir)) + 1e-9
    wet_y = scipy.signal.fftconvolve(y, rir)[: len(y)].astype(np.float32)
    return ((1 - wet) * y + wet * wet_y).astype(np.float32)


def mix_at_snr(y: np.ndarray, other: np.ndarray, *, snr_db: float) -> np.ndarray:
    """Add ``other`` (looped or cut to ``len(y)``) at ``snr_db`` below ``y``'s power."""
    if len(other) == 0:
        return y
    reps = -(-len(y) // len(other))
    o = np.tile(other, reps)[: len(y)].astype(np.float32)
    py, po = float(np.mean(y * y)) + 1e-10, float(np.mean(o * o)) + 1e-10
    return (y + o * np.float32(np.sqrt(py / po / 10 ** (snr_db / 10)))).astype(np.float32)


def speed(y: np.ndarray, *, factor: float) -> np.ndarray:
    """Resample-based speed perturbation: tempo and pitch both scale by ``factor``."""
    if abs(factor - 1.0) < 1e-3:
        return y
    return np.asarray(soxr.resample(y, 10_000 * factor, 10_000, quality="LQ"), dtype=np.float32)


def pink_noise(n: int, *, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of roughly pink (1/f) noise: white noise through a 3-pole filter (Kellet's)."""
    white = rng.standard_normal(n)  # filtered in float64, then float32
    return scipy.signal.lfilter([0.049922, -0.095993, 0.050612, -0.004408],
                                [1.0, -2.494956, 2.017265, -0.522189], white).astype(np.float32)


def add_noise(y: np.ndarray, *, snr_db: float, rng: np.random.Generator, pink: bool = False) -> np.ndarray:
    """Add white (or roughly pink) noise at ``snr_db`` relative to the clip's power."""
    power = float(np.mean(np.square(y))) + 1e-10
    noise = pink_noise(len(y), rng=rng) if pink else rng.standard_normal(len(y)).astype(np.float32)
    noise *= np.sqrt(power / (float(np.mean(np.square(noise))) + 1e-12) / 10 ** (snr_db / 10))
    return (y + noise).astype(np.float32)


def crop_or_pad(y: np.ndarray, *, window: int, rng: np.random.Generator | None) -> np.ndarray:
    """A random ``window``-long crop of a longer clip (start when ``rng`` is None); shorter clips are
    zero-padded at the end, as :func:`models.features.segment` pads the last window."""
    if len(y) > window:
        start = 0 if rng is None else int(rng.integers(0, len(y) - window + 1))
        return y[start : start + window]
    out = np.zeros(window, dtype=np.float32)
    out[: len(y)] = y
    return out


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the telephone-channel augmentation."""

    p_speed: float = 0.5
    speed_range: tuple[float, float] = (0.92, 1.08)
    p_band: float = 0.5
    p_mulaw: float = 0.3
    p_alaw: float = 0.1
    p_noise: float = 0.25
    snr_db: tuple[float, float] = (12.0, 35.0)
    gain_db: tuple[float, float] = (-4.0, 4.0)  # small: absolute level is itself an emotion cue
    p_codec: float = 0.0  # real codec (GSM 06.10, Opus ~8 kbit/s, MP3) instead of companding
    codec_weights: tuple[float, float, float] = (0.5, 0.2, 0.3)  # gsm, opus8, mp3 (order of CODECS; Opus costs
    # ~17 ms a clip against 3-4 ms, so it is drawn least)
    p_loss: float = 0.0  # packet loss (20 ms frames) ...
    loss_rate: tuple[float, float] = (0.01, 0.08)  # ... at this rate
    p_reverb: float = 0.0
    rt60: tuple[float, float] = (0.15, 0.6)
    p_babble: float = 0.0  # other training speakers underneath ...
    babble_snr_db: tuple[float, float] = (8.0, 25.0)  # ... at this SNR

    def to_dict(self) -> dict[str, object]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


#: ``ser-train fit --channel-augment`` (the v2 experiment): real codecs, packet loss, reverberation
#: and babble on top of the defaults (which are the shipped 1.x recipe's telephone channel).
CHANNEL_AUGMENT = {"p_codec": 0.06, "p_loss": 0.1, "p_reverb": 0.15, "p_babble": 0.15}


def augment_clip(y: np.ndarray, *, sr: int, window: int, rng: np.random.Generator,
                 cfg: AugmentConfig = AugmentConfig(), babble: list[np.ndarray] | None = None) -> np.ndarray:
    """One training example; see :func:`augment_example` (this returns only the waveform)."""
    return augment_example(y, sr=sr, window=window, rng=rng, cfg=cfg, babble=babble)[0]


def augment_example(y: np.ndarray, *, sr: int, window: int, rng: np.random.Generator,
                    cfg: AugmentConfig = AugmentConfig(), babble: list[np.ndarray] | None = None
                    ) -> tuple[np.ndarray, float, bool]:
    """One training example: speed, random crop/pad to ``window``, gain, reverberation, band limit,
    babble (``babble``: other speakers' clips to mix in), noise, companding or a real codec, packet loss.

    Returns ``(waveform float32 (window,), gain_db, narrowband)``: the gain applied and whether the
    channel was band-limited or coded (what :mod:`training.history` needs to give the example's
    speaker history the same channel).
    """
    if rng.random() < cfg.p_speed:
        y = speed(y, factor=float(rng.uniform(*cfg.speed_range)))
    y = crop_or_pad(y, window=window, rng=rng)
    gain_db = float(rng.uniform(*cfg.gain_db))
    y = y * np.float32(10 ** (gain_db / 20))
    narrow = False
    if cfg.p_reverb and rng.random() < cfg.p_reverb:
        y = reverb(y, rt60=float(rng.uniform(*cfg.rt60)), rng=rng, sr=sr)
    if rng.random() < cfg.p_band:
        y = band_limit(y, sr=sr, low=float(rng.uniform(200, 400)), high=float(rng.uniform(3000, 3700)))
        narrow = True
    if babble and cfg.p_babble and rng.random() < cfg.p_babble:
        talkers = [babble[int(k)] for k in rng.integers(0, len(babble), size=int(rng.integers(1, 4)))]
        mix = sum((np.resize(t, window) for t in talkers), np.zeros(window, dtype=np.float32))
        y = mix_at_snr(y, np.asarray(mix, dtype=np.float32), snr_db=float(rng.uniform(*cfg.babble_snr_db)))
    if rng.random() < cfg.p_noise:
        y = add_noise(y, snr_db=float(rng.uniform(*cfg.snr_db)), rng=rng, pink=bool(rng.random() < 0.5))
    r = rng.random()
    if r < cfg.p_mulaw:
        y, narrow = mu_law(y), True
    elif r < cfg.p_mulaw + cfg.p_alaw:
        y, narrow = a_law(y), True
    elif r < cfg.p_mulaw + cfg.p_alaw + cfg.p_codec:
        name = list(CODECS)[int(rng.choice(len(CODECS), p=np.asarray(cfg.codec_weights) / sum(cfg.codec_weights)))]
        y, narrow = codec(y, name=name, sr=sr), True
    if cfg.p_loss and rng.random() < cfg.p_loss:
        y = packet_loss(y, rate=float(rng.uniform(*cfg.loss_rate)), rng=rng, sr=sr)
    y = np.clip(y, -1.0, 1.0).astype(np.float32)
    return np.nan_to_num(y, copy=False), gain_db, narrow


def spec_augment(x: np.ndarray, *, rng: np.random.Generator, p: float = 0.8, freq_masks: int = 2,
                 freq_width: int = 8, time_masks: int = 2, time_width: int = 30) -> np.ndarray:
    """SpecAugment-style masking of normalised features ``(k, frames, n_mels)`` in place (mask = 0,
    the normalised mean). Returns ``x``."""
    k, frames, mels = x.shape
    for i in range(k):
        if rng.random() >= p:
            continue
        for _ in range(freq_masks):
            w = int(rng.integers(0, freq_width + 1))
            f0 = int(rng.integers(0, mels - w + 1))
            x[i, :, f0 : f0 + w] = 0.0
        for _ in range(time_masks):
            w = int(rng.integers(0, time_width + 1))
            t0 = int(rng.integers(0, frames - w + 1))
            x[i, t0 : t0 + w, :] = 0.0
    return x
