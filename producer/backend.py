"""Batches and the backend interface, and the embedded backend (no Redis).

Every backend builds the same JSON payload and the same int16 PCM; the embedded one calls the very
function the RQ job calls (:func:`workers.contract.classify`), so its records match the distributed
ones (:class:`producer.dispatch.RedisBackend`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.bundle import Spec
from models.errors import SERError
from workers.contract import Classifier, classify, make_payload, pcm_encode


class StalledError(Exception):
    """No progress for the configured timeout (``redis_down``: because Redis did not answer)."""

    def __init__(self, message: str, *, redis_down: bool = False) -> None:
        super().__init__(message)
        self.redis_down = redis_down


@dataclass
class Batch:
    channel: str
    items: list[tuple[int, float, float]] = field(default_factory=list)  # (seq, start_s, end_s)
    segments: list[np.ndarray] = field(default_factory=list)
    speaker: list[np.ndarray] = field(default_factory=list)  # per segment, when the model takes them
    #: A model with an embedding history: the channel's history before the first segment ``(m, size)``,
    #: set when the batch is sent (``producer.session``).
    history: np.ndarray | None = None


class Batcher:
    """Groups each channel's voiced segments into batches of ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._open: dict[str, Batch] = {}

    def add(self, channel: str, seq: int, start_s: float, end_s: float, samples: np.ndarray,
            speaker: np.ndarray | None = None) -> Batch | None:
        batch = self._open.setdefault(channel, Batch(channel))
        batch.items.append((seq, start_s, end_s))
        batch.segments.append(samples)
        if speaker is not None:
            batch.speaker.append(speaker)
        if len(batch.items) >= self.size:
            return self._open.pop(channel)
        return None

    def flush(self) -> list[Batch]:
        out = list(self._open.values())
        self._open.clear()
        return out


class Backend:
    def __init__(self, *, spec: Spec, stream_id: str) -> None:
        self.spec, self.stream_id = spec, stream_id
        self.window = spec.segment.samples(spec.sample_rate)[0]
        self.jobs = 0
        self.resent = 0  # segments already claimed by an earlier send (idempotent re-send)

    def payload(self, batch: Batch, key: str) -> dict[str, Any]:
        """The job payload; a batch over the job limits is refused (SERError), never enqueued."""
        try:
            return make_payload(stream_id=self.stream_id, channel=batch.channel, model_id=self.spec.model_id,
                                sample_rate=self.spec.sample_rate, window=self.window, items=batch.items,
                                pcm_key=key, speaker=np.stack(batch.speaker) if batch.speaker else None,
                                history=batch.history)
        except ValueError as exc:
            raise SERError(f"refusing to enqueue a batch: {exc}") from None

    def submit(self, batch: Batch, *, on_idle: Any = None) -> list[dict[str, Any]]:
        """Send a batch; returns any records already available."""
        raise NotImplementedError

    def poll(self, block_s: float = 0.0) -> list[dict[str, Any]]:
        return []

    def accept(self, entries: list[Any]) -> list[dict[str, Any]]:
        """Results-stream entries read by someone else (a shared reader): the records among them."""
        return []

    def finish(self, end_record: dict[str, Any], *, patient: bool = True) -> None:
        """The call is over and every record is in: announce it (distributed mode publishes the ``end``
        record, the call's last). ``patient`` False: one try, Redis errors ignored (a run giving up)."""

    def publish(self, records: list[dict[str, Any]]) -> None:
        """Records the producer derives itself (``turn``): distributed mode adds them to the results stream."""

    def queue_length(self) -> int:
        return 0


class EmbeddedBackend(Backend):
    """Runs the job function in this process, with no Redis."""

    def __init__(self, *, spec: Spec, stream_id: str, model: Classifier) -> None:
        super().__init__(spec=spec, stream_id=stream_id)
        self.model = model

    def submit(self, batch: Batch, *, on_idle: Any = None) -> list[dict[str, Any]]:
        self.jobs += 1
        return classify(self.model, self.payload(batch, ""), pcm_encode(np.stack(batch.segments)))
