"""The job/result contract between the producer and the workers (the only part of ``workers``
the producer may import).

* Queue: RQ queue :data:`DEFAULT_QUEUE`, JSON-serialised jobs (``rq.serializers.JSONSerializer``)
  calling :data:`JOB_FUNC` with one argument, the payload dict built by :func:`make_payload`.
* PCM: int16 little-endian mono samples of ``len(items)`` segments of ``window`` samples each,
  concatenated, stored under :func:`pcm_key` with a TTL (never inside RQ's job data).
* Results: one Redis Stream per call, :func:`results_key`; each entry has the fields
  ``kind`` (``result``, ``failure``, ``end`` or ``turn``) and ``record`` (the JSON record); workers
  publish ``result``/``failure``, the producer ``end`` and ``turn`` (:mod:`producer.turns`). With a
  model that keeps an embedding history (:mod:`models.history`) a result entry also has the field
  ``embedding`` (base64 float16, read back by the ingestion side only), the job carries the channel's
  history as of its first segment (``history``: its last ``m`` embeddings, ``history_count`` = m,
  ``history_size``), the worker classifies the job's segments one by one, each with the embeddings
  of the segments before it, and each result record says how many earlier segments of its channel
  its history held (``history``). Version 1 jobs (no ``history`` field) are refused for such a model.
* :func:`classify` is the job itself as a pure function, shared by the RQ job and the producer's
  embedded (no Redis) mode, so both give identical records.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from models.history import decode_embeddings, encode_embedding, encode_embeddings
from models.ids import key_id
from models.speaker import decode_vectors, encode_vectors

#: Payload layout version: 2 carries a history model's channel history as embeddings (``history``).
PAYLOAD_VERSION = 2
#: Versions workers accept (others get failure records); 1 only for models without an embedding history.
ACCEPTED_VERSIONS = (1, 2)
#: Default RQ queue name (Redis list ``rq:queue:ser``).
DEFAULT_QUEUE = "ser"
#: Dotted path of the RQ job function (a string, so the producer never imports the job module).
JOB_FUNC = "workers.job.process"
#: Dotted path of the RQ on_failure callback (publishes failure records for crashed jobs).
FAILURE_CALLBACK = "workers.job.on_failure"
#: Key prefixes. Every key the pipeline writes starts with ``ser:``.
RESULTS_PREFIX = "ser:results:"
PCM_PREFIX = "ser:pcm:"
CLAIM_PREFIX = "ser:claim:"
#: Seconds a PCM key lives if no worker picks it up (the job then fails with a failure record).
PCM_TTL_S = 600
#: Seconds a results stream (and a job claim) lives after its last write.
RESULTS_TTL_S = 3600
#: Approximate cap on entries per results stream (``XADD ... MAXLEN ~``).
RESULTS_MAXLEN = 100_000
#: RQ ``result_ttl`` / ``failure_ttl``: short, the results live in the stream, not in RQ.
JOB_RESULT_TTL_S = 60
JOB_FAILURE_TTL_S = 600
#: RQ job timeout (seconds) for one batch.
JOB_TIMEOUT_S = 120
#: Most segments one job may carry, and most PCM bytes one job may reference.
MAX_BATCH = 256
MAX_PCM_BYTES = 32 << 20
#: Largest speaker vector a job may carry (``2 * n_mels + 1`` floats per segment).
MAX_SPEAKER_SIZE = 1025
#: Most embeddings a job's history may carry, and the longest embedding (base64 float16: <= 44 KB a job).
MAX_HISTORY_SEGMENTS = 16
MAX_HISTORY_SIZE = 1024
#: Scale between float samples in [-1, 1] and int16 PCM.
PCM_SCALE = 32768.0

_ID_RE = re.compile(r"[^A-Za-z0-9_-]+")
KINDS = ("result", "failure", "end", "turn")


def sanitize(name: str, *, max_len: int = 64) -> str:
    """Map any name to ``[A-Za-z0-9_-]+`` (channel names, file stems). Lossy: call ids in keys go
    through :func:`models.ids.key_id` instead (distinct ids never share a key)."""
    out = _ID_RE.sub("_", str(name)).strip("_")[:max_len]
    return out or "x"


def redact_url(url: str) -> str:
    """A Redis URL fit for logs and error messages: any password replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable Redis URL>"


def read_url_file(path: str, *, option: str = "--redis-url-file") -> str:
    """The Redis URL stored in a file (first non-empty line), so that no password is in argv. ``option``:
    the command-line option named in errors (``archive.db.read_url_file`` reads database URLs with it)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    return line.strip()
    except OSError as exc:
        raise ValueError(f"cannot read {option} {path}: {exc.strerror or exc}") from None
    raise ValueError(f"{option} {path} is empty")


def job_id(stream_id: str, channel: str, seq: int) -> str:
    """Deterministic job id ``{stream_id}-{channel}-{seq}`` of the batch starting at ``seq``."""
    return f"{key_id(stream_id)}-{sanitize(channel)}-{int(seq)}"


def results_key(stream_id: str) -> str:
    return RESULTS_PREFIX + key_id(stream_id)


def pcm_key(jid: str) -> str:
    return PCM_PREFIX + jid


def claims_key(stream_id: str) -> str:
    """The call's claims hash: field :func:`claim_field` -> id of the job that carries the segment."""
    return CLAIM_PREFIX + key_id(stream_id)


def claim_field(channel: str, seq: int) -> str:
    return f"{sanitize(channel)}-{int(seq)}"


def pcm_encode(segments: np.ndarray) -> bytes:
    """Float segments ``(k, window)`` -> int16 little-endian bytes (rounded, clipped)."""
    q = np.clip(np.rint(np.asarray(segments, dtype=np.float32) * PCM_SCALE), -32768, 32767)
    return q.astype("<i2").tobytes()


def pcm_decode(data: bytes, *, k: int, window: int) -> np.ndarray:
    """int16 bytes -> float32 ``(k, window)``; raises ValueError when the size does not match."""
    if len(data) != 2 * k * window:
        raise ValueError(f"PCM holds {len(data)} bytes, expected {2 * k * window} ({k} x {window} int16)")
    out = np.frombuffer(data, dtype="<i2").astype(np.float32)
    out *= np.float32(1.0 / PCM_SCALE)  # exact: a power of two, in place
    return out.reshape(k, window)


def make_payload(
    *, stream_id: str, channel: str, model_id: str, sample_rate: int, window: int,
    items: Sequence[tuple[int, float, float]], pcm_key: str, speaker: np.ndarray | None = None,
    history: np.ndarray | None = None,
) -> dict[str, Any]:
    """The JSON job argument. ``items``: ``(seq, start_s, end_s)`` per segment, in PCM order.

    ``speaker``: optional ``(len(items), size)`` speaker vectors (the channel's running statistics up
    to each segment, :mod:`models.speaker`), carried as base64 float32 in ``speaker`` with
    ``speaker_size``; a worker whose model takes them uses them, and the prior when they are absent.
    ``history``: for a model with an embedding history, the channel's history before the first segment,
    ``(m, size)`` embeddings (m may be 0), carried as base64 float16 with ``history_count`` and ``history_size``.
    """
    if not 1 <= len(items) <= MAX_BATCH:
        raise ValueError(f"a job carries 1-{MAX_BATCH} segments, got {len(items)}")
    if 2 * len(items) * window > MAX_PCM_BYTES:
        raise ValueError(f"a job may reference at most {MAX_PCM_BYTES} PCM bytes")
    out = {
        "v": PAYLOAD_VERSION, "stream_id": stream_id, "channel": channel, "model_id": model_id,
        "sample_rate": int(sample_rate), "window": int(window), "pcm_key": pcm_key,
        "results_key": results_key(stream_id),
        "items": [[int(s), round(float(a), 3), round(float(b), 3)] for s, a, b in items],
    }
    if speaker is not None:
        if speaker.ndim != 2 or len(speaker) != len(items) or not 1 <= speaker.shape[1] <= MAX_SPEAKER_SIZE:
            raise ValueError(f"speaker vectors have shape {speaker.shape}, "
                             f"expected ({len(items)}, <= {MAX_SPEAKER_SIZE})")
        out["speaker"] = encode_vectors(speaker)
        out["speaker_size"] = int(speaker.shape[1])
    if history is not None:
        if history.ndim != 2 or len(history) > MAX_HISTORY_SEGMENTS or not 1 <= history.shape[1] <= MAX_HISTORY_SIZE:
            raise ValueError(f"history embeddings have shape {history.shape}, "
                             f"expected (<= {MAX_HISTORY_SEGMENTS}, <= {MAX_HISTORY_SIZE})")
        out.update(history=encode_embeddings(history), history_count=len(history), history_size=int(history.shape[1]))
    return out


def _check_history(payload: dict[str, Any]) -> None:
    count, size, text = payload.get("history_count"), payload.get("history_size"), payload.get("history")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (count, size)) or not isinstance(text, str) \
            or not 0 <= count <= MAX_HISTORY_SEGMENTS or not 1 <= size <= MAX_HISTORY_SIZE:  # type: ignore[operator]
        raise ValueError(f"payload history must be base64 text with history_count 0-{MAX_HISTORY_SEGMENTS} "
                         f"and history_size 1-{MAX_HISTORY_SIZE}")
    if len(text) != 4 * -(-2 * count * size // 3):  # type: ignore[operator]
        raise ValueError(f"payload history holds {len(text)} base64 characters, not {count} x {size} float16")


def check_payload(payload: Any) -> dict[str, Any]:
    """Validate a job payload as a worker receives it (from anyone who can write to the queue);
    raises ValueError with a one-line reason. Keys must stay under ``ser:``, sizes under the limits."""
    if not isinstance(payload, dict):
        raise ValueError(f"payload is a {type(payload).__name__}, not an object")
    for name, kind in (("stream_id", str), ("channel", str), ("model_id", str), ("pcm_key", str),
                       ("results_key", str), ("window", int), ("sample_rate", int), ("items", list)):
        if not isinstance(payload.get(name), kind) or isinstance(payload.get(name), bool):
            raise ValueError(f"payload field {name!r} is missing or not a {kind.__name__}")
    if not payload["pcm_key"].startswith(PCM_PREFIX) or not payload["results_key"].startswith(RESULTS_PREFIX):
        raise ValueError(f"payload keys must start with {PCM_PREFIX!r} and {RESULTS_PREFIX!r}")
    items = payload["items"]
    if not 1 <= len(items) <= MAX_BATCH:
        raise ValueError(f"a job carries 1-{MAX_BATCH} segments, got {len(items)}")
    if not all(isinstance(it, list) and len(it) == 3 and all(isinstance(v, (int, float)) for v in it)
               for it in items):
        raise ValueError("payload items must be [seq, start_s, end_s] numbers")
    if not 1 <= payload["window"] or 2 * len(items) * payload["window"] > MAX_PCM_BYTES:
        raise ValueError(f"a job may reference 1 to {MAX_PCM_BYTES} PCM bytes")
    if "speaker" in payload:
        size = payload.get("speaker_size")
        if not isinstance(payload["speaker"], str) or not isinstance(size, int) or isinstance(size, bool) \
                or not 1 <= size <= MAX_SPEAKER_SIZE or len(payload["speaker"]) > 8 * len(items) * size:
            raise ValueError(f"payload speaker vectors must be base64 text with speaker_size 1-{MAX_SPEAKER_SIZE}")
    if any(k in payload for k in ("history", "history_count", "history_size")):
        _check_history(payload)
    return payload


def base_record(payload: dict[str, Any], item: Sequence[Any]) -> dict[str, Any]:
    seq, start_s, end_s = item
    return {"stream_id": payload["stream_id"], "channel": payload["channel"], "seq": int(seq),
            "start_s": float(start_s), "end_s": float(end_s)}


def failure_records(payload: dict[str, Any], error: str, *, model: str | None = None) -> list[dict[str, Any]]:
    """One ``failure`` record per segment of ``payload`` (error: a one-line reason)."""
    reason = " ".join(str(error).split())[:500] or "unknown error"
    return [{**base_record(payload, it), "kind": "failure", "error": reason, "model": model}
            for it in payload.get("items", [])]


class Classifier(Protocol):
    """What :func:`classify` needs of a model (``models.runtime.EmotionModel`` fits)."""

    @property
    def labels(self) -> tuple[str, ...]: ...

    @property
    def model_id(self) -> str: ...

    @property
    def uncertain_below(self) -> float: ...

    def features(self, segments: np.ndarray) -> np.ndarray: ...

    def predict_features(self, x: np.ndarray, speaker: np.ndarray | None = None) -> np.ndarray: ...


def _history_outputs(model: Any, feats: np.ndarray, payload: dict[str, Any]
                     ) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """Probabilities, and for a model with an embedding history (``uses_history``) each segment's
    embedding and the count of earlier segments its history held: the job's segments one by one, each
    after the job's ``history`` and the segments before it (``models.history.causal``)."""
    if not getattr(model, "uses_history", False):
        speaker = (decode_vectors(payload["speaker"], k=len(feats), size=int(payload["speaker_size"]))
                   if "speaker" in payload else None)
        return model.predict_features(feats, speaker), None, []
    past = (decode_embeddings(payload["history"], count=int(payload["history_count"]),
                              size=int(payload["history_size"])) if "history" in payload else None)
    return model.predict_causal(feats, past)  # type: ignore[no-any-return]


def _refusal(model: Classifier, payload: dict[str, Any]) -> str | None:
    """Why ``model`` will not run this job (failure records say so), or None."""
    if payload.get("v") not in ACCEPTED_VERSIONS:
        return f"payload version {payload.get('v')!r} is not one of {list(ACCEPTED_VERSIONS)}"
    if payload["model_id"] != model.model_id:
        return f"model mismatch: job wants {payload['model_id']}, worker has {model.model_id}"
    if getattr(model, "uses_history", False) and payload.get("v") == 1:
        return (f"payload version 1 carries no embedding history, which {model.model_id} needs: "
                f"upgrade the producer (ser-produce, ser-gateway) to payload version {PAYLOAD_VERSION}")
    hist = getattr(getattr(model, "spec", None), "history", None)
    if hist is not None and payload.get("history_size", hist.size) != hist.size:
        return f"history embeddings of size {payload['history_size']} do not fit {model.model_id} (size {hist.size})"
    return None


#: ``timer(stage)`` -> context manager; stages: ``decode``, ``features``, ``inference`` (and the
#: worker's ``publish``), the names workers.metrics uses.
StageTimer = Callable[[str], AbstractContextManager[Any]]


def no_timer(stage: str) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


def classify(model: Classifier, payload: dict[str, Any], pcm: bytes,
             timer: StageTimer = no_timer) -> list[dict[str, Any]]:
    """The job as a pure function: payload + its PCM -> one record per segment.

    A mismatch between the job's model and ``model`` gives failure records, not an exception.
    """
    refused = _refusal(model, payload)
    if refused is not None:
        return failure_records(payload, refused, model=model.model_id)
    items = payload["items"]
    with timer("decode"):
        segs = pcm_decode(pcm, k=len(items), window=int(payload["window"]))
    with timer("features"):
        feats = model.features(segs)
    with timer("inference"):
        probs, emb, counts = _history_outputs(model, feats, payload)
    labels = model.labels
    below = model.uncertain_below
    out = []
    for i, (item, p) in enumerate(zip(items, probs, strict=True)):
        best = int(np.argmax(p))
        rec = {**base_record(payload, item), "kind": "result", "label": labels[best],
               "confidence": round(float(p[best]), 6), "uncertain": bool(p[best] < below),
               "probs": {lab: round(float(v), 6) for lab, v in zip(labels, p, strict=True)},
               "model": model.model_id}
        if emb is not None:  # the channel's history: what it held, and what this segment adds to it
            rec["history"] = counts[i]
            rec["embedding"] = encode_embedding(emb[i])
        out.append(rec)
    return out


def encode_entry(record: dict[str, Any]) -> dict[str, str]:
    """Stream entry fields for one record: ``{"kind": ..., "record": json}``; a result's ``embedding``
    (models with an embedding history) goes in a field of its own, ``embedding``, beside the record,
    so that readers of records (dashboard, reports) never carry it."""
    rec = dict(record)
    emb = rec.pop("embedding", None)
    out = {"kind": str(rec["kind"]), "record": json.dumps(rec, separators=(",", ":"))}
    if isinstance(emb, str):
        out["embedding"] = emb
    return out


def decode_entry(fields: dict[Any, Any], *, embedding: bool = False) -> dict[str, Any]:
    """Inverse of :func:`encode_entry` (accepts bytes or str keys/values). ``embedding``: also put the
    entry's ``embedding`` field (base64 text) back into the record, for the ingestion side's history."""
    raw = fields.get(b"record", fields.get("record"))
    if raw is None:
        raise ValueError("stream entry has no 'record' field")
    record = json.loads(raw)
    if not isinstance(record, dict) or record.get("kind") not in KINDS:
        raise ValueError("stream entry holds no valid record")
    if embedding:
        emb = fields.get(b"embedding", fields.get("embedding"))
        if emb is not None:
            record["embedding"] = emb.decode("ascii", "replace") if isinstance(emb, bytes) else str(emb)
    return record
