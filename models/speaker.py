"""Per-speaker (per-channel) feature statistics: how a model hears a voice relative to itself.

A call gives speaker normalisation for free: each channel is one speaker, and by the time a segment
is classified the stream has already heard that speaker for a while. :class:`ChannelStats` keeps
running sums of the *normalised* log-mel (the model's own input, see
:meth:`models.runtime.EmotionModel.features`) over the voiced frames a channel has produced so far,
and :meth:`ChannelStats.vector` turns them into the model's ``speaker`` input:

``[mean (n_mels), std (n_mels), weight (1)]`` with

- ``mean = (sum + n0 * prior_mean) / (n + n0)`` and likewise for the second moment, so the
  statistics start at the training data's prior (a "typical voice") and move towards the channel's
  own voice as it speaks; ``n0 = prior_frames`` is the warm-up: after ``n0`` voiced frames
  (10 ms each) the channel's own voice and the prior weigh the same;
- ``weight = n / (n + n0)`` tells the network how much of the statistics is the channel's own.

The 2.x recipe simulated exactly this (its ``training.history``, removed with it): the statistics
of a training example were the prior, the example itself and a random, mostly neutral set of the same
speaker's other clips.
Serving includes the segment being classified (causal: only audio up to that segment's end).

Voiced frames are the model's frames (``n_fft`` long, every ``hop_length``) whose RMS level is
within ``rel_db`` of the loudest frame of their segment and above ``floor_dbfs``, so pauses and
line noise do not drag a quiet speaker's statistics towards silence.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from models.errors import ParameterError
from models.features import FeatureParams, compute

#: Warm-up: voiced frames (10 ms each at hop 80 / 8 kHz) after which a channel's own statistics
#: weigh as much as the prior. 500 frames = 5 s of voiced speech.
DEFAULT_PRIOR_FRAMES = 500.0
#: A frame counts as voiced within this many dB of its segment's loudest frame ...
DEFAULT_REL_DB = 30.0
#: ... and above this absolute level (dBFS, RMS over the frame).
DEFAULT_FLOOR_DBFS = -55.0


@dataclass(frozen=True)
class SpeakerParams:
    """How the ``speaker`` input is computed (recorded in ``spec.json`` under ``speaker_stats``).

    ``prior_mean``/``prior_std``: ``(n_mels,)`` statistics of voiced, normalised training frames
    pooled over training speakers; ``input``: the ONNX input name.
    """

    prior_mean: tuple[float, ...]
    prior_std: tuple[float, ...]
    prior_frames: float = DEFAULT_PRIOR_FRAMES
    rel_db: float = DEFAULT_REL_DB
    floor_dbfs: float = DEFAULT_FLOOR_DBFS
    input: str = "speaker"

    def __post_init__(self) -> None:
        if len(self.prior_mean) != len(self.prior_std) or not self.prior_mean:
            raise ParameterError(f"speaker_stats prior_mean/prior_std lengths {len(self.prior_mean)}/"
                                 f"{len(self.prior_std)} must match and be non-zero")
        if not all(np.isfinite(self.prior_mean)) or not all(s > 0 and np.isfinite(s) for s in self.prior_std):
            raise ParameterError("speaker_stats prior must be finite with std > 0")
        if not self.prior_frames > 0:
            raise ParameterError(f"speaker_stats.prior_frames={self.prior_frames!r} must be positive")
        if not self.rel_db > 0:
            raise ParameterError(f"speaker_stats.rel_db={self.rel_db!r} must be positive")

    @property
    def n_mels(self) -> int:
        return len(self.prior_mean)

    @property
    def size(self) -> int:
        """Length of the ``speaker`` vector: ``2 * n_mels + 1``."""
        return 2 * self.n_mels + 1

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["prior_mean"] = [round(float(v), 5) for v in self.prior_mean]
        out["prior_std"] = [round(float(v), 5) for v in self.prior_std]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpeakerParams:
        data = dict(data)
        data.pop("layout", None)
        data["prior_mean"] = tuple(float(v) for v in data["prior_mean"])
        data["prior_std"] = tuple(float(v) for v in data["prior_std"])
        return cls(**data)


def voiced_frames(*, segments: np.ndarray, features: FeatureParams, rel_db: float = DEFAULT_REL_DB,
                  floor_dbfs: float = DEFAULT_FLOOR_DBFS, valid: np.ndarray | None = None) -> np.ndarray:
    """Which model frames carry speech. ``segments`` ``(k, n)`` -> bool ``(k, frames)``.

    ``valid``: optional ``(k,)`` count of real (non-padding) samples per segment; frames that
    reach into the zero padding of a short last segment are never voiced.
    """
    segments = np.asarray(segments, dtype=np.float32)
    if segments.ndim != 2:
        raise ParameterError(f"segments must be 2-D (k, n), got shape {segments.shape}")
    n_frames = features.n_frames(segments.shape[1])
    view = np.lib.stride_tricks.sliding_window_view(segments, features.n_fft, axis=-1)[:, :: features.hop_length]
    view = view[:, :n_frames]
    rms = np.sqrt(np.mean(np.square(view), axis=-1))
    db = 20.0 * np.log10(np.maximum(rms, 1e-7))
    top = db.max(axis=1, keepdims=True)
    mask = (db > top - rel_db) & (db > floor_dbfs)
    if valid is not None:
        ends = np.arange(n_frames) * features.hop_length + features.n_fft
        mask &= ends[None, :] <= np.asarray(valid)[:, None]
    return np.asarray(mask)


def frame_sums(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sufficient statistics of the voiced frames of features ``x`` ``(k, frames, n_mels)`` with
    ``mask`` ``(k, frames)``: ``(k, 2 * n_mels + 1)`` = ``[sum, sum of squares, count]`` per segment."""
    m = mask.astype(np.float64)[..., None]
    xd = x.astype(np.float64)
    s1 = (xd * m).sum(axis=1)
    s2 = (xd * xd * m).sum(axis=1)
    n = m.sum(axis=1)
    return np.concatenate([s1, s2, n], axis=1)


def segment_sums(segments: np.ndarray, x: np.ndarray, *, params: SpeakerParams, features: FeatureParams,
                 valid: np.ndarray | None = None) -> np.ndarray:
    """:func:`frame_sums` of segments ``(k, window)`` whose normalised features are ``x``, over the
    frames :func:`voiced_frames` keeps with ``params``' gate: ``(k, 2 * n_mels + 1)``."""
    mask = voiced_frames(segments=segments, features=features, rel_db=params.rel_db, floor_dbfs=params.floor_dbfs,
                         valid=valid)
    return frame_sums(x, mask)


def stats_vector(sums: np.ndarray, params: SpeakerParams) -> np.ndarray:
    """``[sum, sumsq, count]`` ``(..., 2 * n_mels + 1)`` -> the model's ``speaker`` input
    ``(..., 2 * n_mels + 1)`` float32 = ``[mean, std, weight]`` blended with the prior."""
    sums = np.asarray(sums, dtype=np.float64)
    f = params.n_mels
    if sums.shape[-1] != 2 * f + 1:
        raise ParameterError(f"speaker sums have {sums.shape[-1]} values, expected {2 * f + 1}")
    pm = np.asarray(params.prior_mean, dtype=np.float64)
    ps = np.asarray(params.prior_std, dtype=np.float64)
    n = sums[..., -1:]
    n0 = params.prior_frames
    mean = (sums[..., :f] + n0 * pm) / (n + n0)
    second = (sums[..., f : 2 * f] + n0 * (ps * ps + pm * pm)) / (n + n0)
    std = np.sqrt(np.maximum(second - mean * mean, 1e-4))
    weight = n / (n + n0)
    return np.concatenate([mean, std, weight], axis=-1).astype(np.float32)


class ChannelStats:
    """Running statistics of one channel (one speaker), fed segment by segment in call order.

    ``update`` takes the normalised features of segments in order and returns, for each, the
    ``speaker`` vector that includes that segment and everything before it (causal).
    """

    def __init__(self, params: SpeakerParams) -> None:
        self.params = params
        self.sums = np.zeros(params.size, dtype=np.float64)

    @property
    def frames(self) -> float:
        """Voiced frames heard so far."""
        return float(self.sums[-1])

    def update(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Fold in segments ``x`` ``(k, frames, n_mels)`` (voiced ``mask`` ``(k, frames)``), in order;
        returns ``(k, 2 * n_mels + 1)`` speaker vectors, the i-th including segments ``<= i``."""
        return self.add(frame_sums(x, mask))

    def add(self, per: np.ndarray) -> np.ndarray:
        """Fold in per-segment sums ``(k, 2 * n_mels + 1)`` in order; returns the speaker vectors."""
        running = self.sums + np.cumsum(per, axis=0)
        if len(per):
            self.sums = running[-1].copy()
        return stats_vector(running, self.params)

    def vector(self) -> np.ndarray:
        """The current ``speaker`` vector ``(2 * n_mels + 1,)``."""
        return stats_vector(self.sums, self.params)


def prior_vector(params: SpeakerParams) -> np.ndarray:
    """The ``speaker`` vector of a channel that has not spoken yet (the prior, weight 0)."""
    return stats_vector(np.zeros(params.size), params)


class SpeakerSpec(Protocol):
    """What :class:`SpeakerTracker` reads of a bundle's spec (:class:`models.bundle.Spec` has it all;
    a protocol, so this module does not import the bundle module, which imports it)."""

    @property
    def model_id(self) -> str: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def features(self) -> FeatureParams: ...
    @property
    def norm_mean(self) -> np.ndarray: ...
    @property
    def norm_std(self) -> np.ndarray: ...
    @property
    def speaker(self) -> SpeakerParams | None: ...


class SpeakerTracker:
    """The running statistics of every channel of one call, for whoever cuts the call (the
    producer, a gateway): feed each channel's voiced segments in order, get their speaker vectors.

    Features are the model's own (:func:`models.features.logmel`, normalised with the spec's
    mean/std), computed here once more than the worker does (about 0.3 ms per 3 s segment), because
    only the ingestion side sees a channel's segments in order.
    """

    def __init__(self, spec: SpeakerSpec) -> None:
        if spec.speaker is None:
            raise ParameterError(f"{spec.model_id} takes no speaker statistics")
        self.spec = spec
        self.params: SpeakerParams = spec.speaker
        self._mean = spec.norm_mean.astype(np.float32)
        self._inv_std = (1.0 / spec.norm_std).astype(np.float32)
        self.channels: dict[str, ChannelStats] = {}

    def update(self, channel: str, segments: np.ndarray, *, valid: np.ndarray | None = None) -> np.ndarray:
        """Speaker vectors ``(k, 2 * n_mels + 1)`` of ``segments`` ``(k, window)`` of ``channel``
        (``valid``: real samples per segment; the rest is padding)."""
        x = compute(y=segments, sr=self.spec.sample_rate, params=self.spec.features)
        x -= self._mean
        x *= self._inv_std
        stats = self.channels.setdefault(channel, ChannelStats(self.params))
        return stats.add(segment_sums(segments, x, params=self.params, features=self.spec.features, valid=valid))


def encode_vectors(v: np.ndarray) -> str:
    """Speaker vectors ``(k, size)`` -> base64 of little-endian float32 (compact, exact, JSON-safe)."""
    return base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii")


def decode_vectors(text: str, *, k: int, size: int) -> np.ndarray:
    """Inverse of :func:`encode_vectors`; raises ValueError unless it holds ``k x size`` finite floats."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"speaker vectors are not valid base64: {exc}") from None
    if len(raw) != 4 * k * size:
        raise ValueError(f"speaker vectors hold {len(raw)} bytes, expected {4 * k * size} ({k} x {size} float32)")
    v = np.frombuffer(raw, dtype="<f4").reshape(k, size).astype(np.float32)
    if not np.isfinite(v).all():
        raise ValueError("speaker vectors hold non-finite values")
    return v
