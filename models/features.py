"""Segmenting, voice-activity gating and log-mel features: the numbers the model sees.

All functions are keyword-only and shared by training and serving, so there is no train/serve
skew. The log-mel is computed with ``scipy.fft`` on a strided frame view (about 3x faster than
``librosa.feature.melspectrogram`` on one core) and agrees with librosa to within 1e-3 dB; the
test suite checks both that agreement and a committed golden array.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft

from models.errors import ParameterError
from models.mel import hann_window, mel_basis

#: Feature kinds: ``logmel`` (the model's own log-mel at the spec's rate, models 1.x/2.x) and
#: ``whisper`` (Whisper's front end at 16 kHz, :mod:`models.whisper`, model 3.x).
KINDS = ("logmel", "whisper")


@dataclass(frozen=True)
class FeatureParams:
    """Log-mel parameters (librosa's names). ``center`` is always False for ``logmel``: segments are
    cut first. ``kind="whisper"`` is Whisper's fixed front end (16 kHz, ``n_fft`` 400, hop 160, 80 bands,
    centred; :mod:`models.whisper`): its other fields must hold those values."""

    n_fft: int = 256
    hop_length: int = 80
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 4000.0
    amin: float = 1e-8
    kind: str = "logmel"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ParameterError(f"features.kind={self.kind!r} is not one this code knows ({', '.join(KINDS)}); "
                                 "upgrade ser-stream to use this bundle")
        if self.kind == "whisper" and (self.n_fft, self.hop_length, self.n_mels) != (400, 160, 80):
            raise ParameterError(f"features.kind='whisper' has n_fft=400, hop_length=160, n_mels=80, got "
                                 f"{self.n_fft}, {self.hop_length}, {self.n_mels}")
        for name in ("n_fft", "hop_length", "n_mels"):
            if int(getattr(self, name)) <= 0:
                raise ParameterError(f"features.{name}={getattr(self, name)!r} must be positive")
        if not 0 <= self.fmin < self.fmax:
            raise ParameterError(f"features.fmin={self.fmin!r} must be >= 0 and below fmax={self.fmax!r}")
        if self.amin <= 0:
            raise ParameterError(f"features.amin={self.amin!r} must be positive")

    def n_frames(self, n_samples: int, sr: int | None = None) -> int:
        """Frames produced for ``n_samples`` samples (``center=False``; ``whisper``: at rate ``sr``)."""
        if self.kind == "whisper":
            from models.whisper import n_frames as whisper_frames

            if sr is None:
                raise ParameterError("features.kind='whisper' needs the sample rate to count frames")
            return whisper_frames(n_samples, sr=sr)
        if n_samples < self.n_fft:
            raise ParameterError(f"n_samples={n_samples} is shorter than n_fft={self.n_fft}")
        return 1 + (n_samples - self.n_fft) // self.hop_length

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class SegmentParams:
    """How audio is cut: windows of ``window_s`` every ``hop_s``; a tail shorter than ``min_s`` is dropped
    (fixed windows), or the shortest segment (utterance segments, :mod:`models.utterances`).

    ``pad``: how speech shorter than the window becomes the model's fixed-length input. The one rule
    (``"end"``): the real samples first, then zeros up to ``window_s`` — what the last window of
    :func:`segment`, utterance segments and the training examples (``training.augment.crop_or_pad``)
    all do, so the network learned exactly the padding it is served.
    """

    window_s: float = 3.0
    hop_s: float = 3.0
    min_s: float = 0.5
    pad: str = "end"

    def __post_init__(self) -> None:
        if self.pad != "end":
            raise ParameterError(f"segment.pad={self.pad!r} is not one this code knows ('end'); upgrade ser-stream")
        if not 0 < self.min_s <= self.window_s:
            raise ParameterError(f"segment.min_s={self.min_s!r} must be in (0, window_s={self.window_s!r}]")
        if not 0 < self.hop_s <= self.window_s:
            raise ParameterError(f"segment.hop_s={self.hop_s!r} must be in (0, window_s={self.window_s!r}]")

    def samples(self, sr: int) -> tuple[int, int, int]:
        """``(window, hop, min)`` in samples at rate ``sr``."""
        return round(self.window_s * sr), round(self.hop_s * sr), round(self.min_s * sr)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class VadParams:
    """Energy gate: a segment is voiced when at least ``min_voiced_ratio`` of its 10 ms frames
    (25 ms long) have an RMS level above ``threshold_dbfs`` (dB relative to full scale)."""

    threshold_dbfs: float = -40.0
    min_voiced_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not -120 <= self.threshold_dbfs <= 0:
            raise ParameterError(f"vad.threshold_dbfs={self.threshold_dbfs!r} must be in [-120, 0]")
        if not 0 <= self.min_voiced_ratio <= 1:
            raise ParameterError(f"vad.min_voiced_ratio={self.min_voiced_ratio!r} must be in [0, 1]")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def segment(*, y: np.ndarray, sr: int, params: SegmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Cut mono ``y`` of shape ``(n,)`` into windows.

    Returns ``(starts, segments)``: ``starts`` int64 of shape ``(k,)`` (sample offsets) and
    ``segments`` float32 of shape ``(k, window)``; the last window is zero-padded. A tail shorter
    than ``params.min_s`` (after at least one full window, or the whole input) yields no segment.
    """
    if y.ndim != 1:
        raise ParameterError(f"y must be 1-D, got shape {y.shape}")
    window, hop, min_len = params.samples(sr)
    n = len(y)
    starts = []
    pos = 0
    while pos < n:
        remaining = n - pos
        if remaining < min_len:
            break
        starts.append(pos)
        if remaining <= window:
            break
        pos += hop
    out = np.zeros((len(starts), window), dtype=np.float32)
    for i, s in enumerate(starts):
        chunk = y[s : s + window]
        out[i, : len(chunk)] = chunk
    return np.asarray(starts, dtype=np.int64), out


def frame_levels_dbfs(*, segments: np.ndarray, sr: int) -> np.ndarray:
    """RMS level per 25 ms frame, hop 10 ms, in dBFS. ``segments``: ``(k, n)`` -> ``(k, frames)``."""
    frame, hop = round(0.025 * sr), round(0.010 * sr)
    if segments.shape[-1] < frame:
        return np.full((segments.shape[0], 1), -120.0, dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(segments, frame, axis=-1)[..., ::hop, :]
    rms = np.sqrt(np.mean(np.square(view, dtype=np.float32), axis=-1))
    return (20.0 * np.log10(np.maximum(rms, 1e-6))).astype(np.float32)


def voiced(*, segments: np.ndarray, sr: int, params: VadParams) -> np.ndarray:
    """Boolean mask of shape ``(k,)``: which of ``segments`` ``(k, n)`` carry speech energy."""
    levels = frame_levels_dbfs(segments=segments, sr=sr)
    ratio = (levels > params.threshold_dbfs).mean(axis=-1)
    return np.asarray(ratio >= params.min_voiced_ratio)


def clip_segments(*, y: np.ndarray, sr: int, segment_params: SegmentParams, vad_params: VadParams) -> np.ndarray:
    """The segments a whole clip is classified by: the voiced windows of mono ``y`` ``(n,)``, or all
    of them when none passes the VAD gate (a quiet clip still gets a label). ``(k, window)``."""
    _, segs = segment(y=y, sr=sr, params=segment_params)
    if len(segs) == 0:
        return segs
    mask = voiced(segments=segs, sr=sr, params=vad_params)
    return segs[mask] if mask.any() else segs


#: Segments per FFT chunk in :func:`logmel`: 4 x 297 x 256 float32 frames (1.2 MB) stay in cache;
#: measured 0.27 ms per 3 s segment at 8 kHz against 0.36 ms for 16 at once (docs/benchmark.md).
CHUNK = 4


def logmel(*, y: np.ndarray, sr: int, params: FeatureParams) -> np.ndarray:
    """Log-mel power spectrogram in dB (``10 log10(max(S, amin))``, no top_db clipping).

    ``y``: ``(n,)`` or ``(k, n)`` float32 -> ``(n_frames, n_mels)`` or ``(k, n_frames, n_mels)``
    float32, with ``n_frames = 1 + (n - n_fft) // hop_length`` (``center=False``).
    Equals ``librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft,
    hop_length=hop_length, center=False, n_mels=n_mels, fmin=fmin, fmax=fmax), amin=amin,
    top_db=None).T`` to within 1e-3 dB.
    """
    if params.fmax > sr / 2:
        raise ParameterError(f"features.fmax={params.fmax} is above the Nyquist frequency of sr={sr}")
    y = np.asarray(y, dtype=np.float32)
    n_frames = params.n_frames(y.shape[-1])  # validates the length
    basis = mel_basis(sr, params.n_fft, params.n_mels, params.fmin, params.fmax)
    window = hann_window(params.n_fft)
    rows = y.reshape(-1, y.shape[-1])
    out = np.empty((len(rows), n_frames, params.n_mels), dtype=np.float32)
    for i in range(0, len(rows), CHUNK):  # a few segments at a time: the frame stack stays in cache
        frames = np.lib.stride_tricks.sliding_window_view(rows[i : i + CHUNK], params.n_fft, axis=-1)
        frames = frames[:, :: params.hop_length, :] * window
        spec = scipy.fft.rfft(frames, axis=-1, overwrite_x=True)
        power = np.square(spec.real) + np.square(spec.imag)
        np.matmul(power, basis, out=out[i : i + CHUNK])
    np.maximum(out, params.amin, out=out)
    np.log10(out, out=out)
    out *= 10.0
    return out.reshape(y.shape[:-1] + (n_frames, params.n_mels))


def compute(*, y: np.ndarray, sr: int, params: FeatureParams) -> np.ndarray:
    """The model's features of segments ``y`` ``(n,)`` or ``(k, n)`` at ``sr``, as ``params.kind`` says:
    :func:`logmel` or Whisper's front end (:func:`models.whisper.log_mel`). ``(k, frames, n_mels)``."""
    if params.kind == "whisper":
        from models.whisper import log_mel

        return log_mel(y=y, sr=sr)
    return logmel(y=y, sr=sr, params=params)
