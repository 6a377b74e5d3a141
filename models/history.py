"""Per-channel history of the model's own embeddings: how a Whisper-encoder model hears a voice
relative to the same voice a moment earlier.

A call gives speaker normalisation for free: each channel is one speaker (and one line), and by the
time a segment is classified the call has already heard that channel. A bundle with an
``embedding_history`` section has a second graph input ``history`` ``(k, size)`` and a second output
``embedding`` ``(k, size)`` (each segment's pooled encoder frames; it does not depend on ``history``);
the head sees the segment's frames *minus* ``history``, the channel's recent mean embedding shrunk
towards the training prior:

``history = (sum of the last m embeddings + n0 * prior) / (m + n0)``, ``m <= max_segments``

with ``n0 = prior_segments`` the warm-up (after ``n0`` segments the channel's own voice weighs as
much as the prior).

**The contract** (the same in embedded, distributed and live runs, whatever the batch size): a
segment's history is the embeddings of the last ``max_segments`` earlier segments of its channel that
have a result (a failed segment has no embedding and is skipped), each rounded to float16 (the
precision they travel at). A job carries the channel's history as of its first segment
(:func:`encode_embeddings`); the worker classifies its segments one by one (:func:`causal`), adding
each segment's embedding to the history of the next, so a segment never sees itself or anything after
it. The ingestion side (:class:`CallHistory`, folded from the results) sends a channel's next job only
once the previous one's records are in (``producer.session``). Each record names the history it used
(``history``: the number of earlier segments ``m``).

Training simulates this (``training.fit.history_means``): ``0..max_segments`` other clips
of the same speaker, drawn without looking at labels, the same prior and ``n0``.

The graph's input is the mean; :func:`wire_vector` appends ``m``: ``(size + 1,)``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.errors import ParameterError

#: Warm-up: segments after which a channel's own mean weighs as much as the prior.
DEFAULT_PRIOR_SEGMENTS = 3.0
#: Most recent segments of a channel in its history (training drew 0 to this many clips).
DEFAULT_MAX_SEGMENTS = 10


@dataclass(frozen=True)
class HistoryParams:
    """The ``embedding_history`` section of ``spec.json``.

    ``prior``: ``(size,)`` mean embedding of the training clips; ``input``/``output``: the ONNX names.
    """

    prior: tuple[float, ...]
    prior_segments: float = DEFAULT_PRIOR_SEGMENTS
    max_segments: int = DEFAULT_MAX_SEGMENTS
    input: str = "history"
    output: str = "embedding"

    def __post_init__(self) -> None:
        if not self.prior or not all(np.isfinite(self.prior)):
            raise ParameterError("embedding_history.prior must be a non-empty list of finite numbers")
        if not self.prior_segments > 0:
            raise ParameterError(f"embedding_history.prior_segments={self.prior_segments!r} must be positive")
        if isinstance(self.max_segments, bool) or not isinstance(self.max_segments, int) or self.max_segments < 1:
            raise ParameterError(f"embedding_history.max_segments={self.max_segments!r} must be an integer >= 1")

    @property
    def size(self) -> int:
        """Length of an embedding (and of the graph's ``history`` input)."""
        return len(self.prior)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["prior"] = [round(float(v), 5) for v in self.prior]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HistoryParams:
        data = dict(data)
        data["prior"] = tuple(float(v) for v in data["prior"])
        return cls(**data)


def shrunk_mean(embeddings: np.ndarray, params: HistoryParams) -> np.ndarray:
    """The ``history`` input for a channel whose earlier embeddings are ``embeddings`` ``(m, size)``
    (``m`` may be 0; only the last ``max_segments`` count): ``(size,)`` float32."""
    e = np.asarray(embeddings, dtype=np.float64).reshape(-1, params.size)[-params.max_segments :]
    n0 = params.prior_segments
    return ((e.sum(axis=0) + n0 * np.asarray(params.prior)) / (len(e) + n0)).astype(np.float32)


def wire_vector(embeddings: np.ndarray, params: HistoryParams) -> np.ndarray:
    """What a job carries per segment: ``[shrunk mean (size), m]`` ``(size + 1,)`` float32."""
    e = np.asarray(embeddings, dtype=np.float32).reshape(-1, params.size)
    return np.append(shrunk_mean(e, params), np.float32(min(len(e), params.max_segments))).astype(np.float32)


def prior_wire(params: HistoryParams, k: int) -> np.ndarray:
    """``(k, size + 1)`` wire vectors of a channel that has not spoken yet (the prior, ``m`` = 0)."""
    return np.repeat(wire_vector(np.zeros((0, params.size)), params)[None, :], k, axis=0)


class CallHistory:
    """The embeddings each channel of one call has returned so far, by segment ``seq``.

    Results may come back out of order; the history of a channel is its ``max_segments`` highest
    ``seq`` among those that came back, whatever the order they arrived in.
    """

    def __init__(self, params: HistoryParams) -> None:
        self.params = params
        self._seen: dict[str, dict[int, np.ndarray]] = {}

    def add(self, channel: str, seq: int, embedding: np.ndarray) -> None:
        e = as_sent(np.asarray(embedding, dtype=np.float32).reshape(-1))
        if e.shape != (self.params.size,):
            raise ParameterError(f"embedding has {e.size} values, expected {self.params.size}")
        per = self._seen.setdefault(channel, {})
        per[int(seq)] = e
        if len(per) > 4 * self.params.max_segments:  # keep memory bounded on long calls
            for old in sorted(per)[: len(per) - self.params.max_segments]:
                del per[old]

    def recent(self, channel: str) -> np.ndarray:
        """The channel's history: its last ``max_segments`` embeddings by ``seq`` ``(m, size)`` float32."""
        per = self._seen.get(channel, {})
        recent = [per[s] for s in sorted(per)[-self.params.max_segments :]]
        return np.stack(recent) if recent else np.zeros((0, self.params.size), np.float32)

    def wire(self, channel: str) -> np.ndarray:
        """The channel's current wire vector ``(size + 1,)``."""
        return wire_vector(self.recent(channel), self.params)


def as_sent(e: np.ndarray) -> np.ndarray:
    """An embedding at the precision a history holds it (float16, as results carry it), as float32."""
    return np.asarray(e, dtype=np.float32).astype("<f2").astype(np.float32)


#: ``predict(x (1, frames, bands), wire (1, size + 1))`` -> ``(probs (1, n), embedding (1, size))``.
Predict = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def causal(predict: Predict, x: np.ndarray, past: np.ndarray, params: HistoryParams
           ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Classify one channel's consecutive segments ``x`` ``(k, frames, bands)`` in order, each with the
    history of everything before it: ``past`` ``(m, size)`` (the channel's history as of the first
    segment) and the embeddings of the segments before it in ``x``. One segment per graph run, so a
    segment's output never depends on how its channel was batched. Returns probabilities ``(k, n)``,
    embeddings ``(k, size)`` (float16 precision) and each segment's ``m``."""
    window = [as_sent(e) for e in np.asarray(past, dtype=np.float32).reshape(-1, params.size)[-params.max_segments :]]
    probs, embs, counts = [], [], []
    for i in range(len(x)):
        hist = np.stack(window) if window else np.zeros((0, params.size), np.float32)
        p, e = predict(x[i : i + 1], wire_vector(hist, params)[None, :])
        emb = as_sent(e[0])
        probs.append(p[0])
        embs.append(emb)
        counts.append(len(window))
        window = [*window, emb][-params.max_segments :]
    if not embs:
        return np.zeros((0, 0), np.float32), np.zeros((0, params.size), np.float32), []
    return np.stack(probs), np.stack(embs), counts


def encode_embedding(e: np.ndarray) -> str:
    """One embedding ``(size,)`` -> base64 of little-endian float16 (what a result record carries)."""
    return base64.b64encode(np.ascontiguousarray(e, dtype="<f2").tobytes()).decode("ascii")


def encode_embeddings(e: np.ndarray) -> str:
    """``(m, size)`` embeddings (a job's history) -> base64 of little-endian float16, row after row."""
    return encode_embedding(np.asarray(e).reshape(-1))


def decode_embeddings(text: Any, *, count: int, size: int) -> np.ndarray:
    """Inverse of :func:`encode_embeddings`: ``(count, size)``; ValueError unless it holds that many finite values."""
    return decode_embedding(text, size=count * size).reshape(count, size)


def decode_embedding(text: Any, *, size: int) -> np.ndarray:
    """Inverse of :func:`encode_embedding`; raises ValueError unless it holds ``size`` finite values."""
    if not isinstance(text, str):
        raise ValueError("embedding is not base64 text")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"embedding is not valid base64: {exc}") from None
    if len(raw) != 2 * size:
        raise ValueError(f"embedding holds {len(raw)} bytes, expected {2 * size} ({size} float16)")
    e = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    if not np.isfinite(e).all():
        raise ValueError("embedding holds non-finite values")
    return e
