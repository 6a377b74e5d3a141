"""One producer run: read -> resample -> segment -> VAD gate -> batch -> classify -> ordered output."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO

import numpy as np

from callevents.writer import CallEvents
from models.bundle import load_bundle
from models.errors import AudioError, SERError
from models.features import voiced
from models.speaker import SpeakerTracker
from producer.collector import Collector
from producer.dispatch import Backend, Batch, Batcher, EmbeddedBackend, RedisBackend, StalledError
from producer.metrics import ProducerMetrics
from producer.output import make_writer
from producer.segmenter import Segmenter
from producer.settings import ProducerSettings
from producer.source import open_source
from producer.summary import ChannelStats, Summary, summarise, summary_lines
from workers.contract import sanitize

#: Seconds one blocking XREAD waits while results are outstanding.
FOLLOW_BLOCK_S = 0.5
#: While reading input, look for results at most this often (seconds).
POLL_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Outcome:
    expected: int
    results: int
    failures: int
    jobs: int
    resent: int
    duplicates: int
    seconds: float
    summary: list[str]
    error: str | None = None  # why the run is incomplete (timeout, failed segments), else None
    channels: tuple[str, ...] = ()
    records: tuple[dict[str, Any], ...] = ()  # released records (results and failures), in output order
    per_channel: Summary | None = None  # producer.summary.summarise() of the records
    duration_s: float = 0.0
    model_id: str = ""
    labels: tuple[str, ...] = ()
    retried: int = 0  # batches sent again (no result in time, or after a Redis reconnect)
    reconnects: int = 0  # times Redis was lost (a connection error, or a restart that lost our keys)


def channel_names(given: tuple[str, ...], channels: int) -> list[str]:
    if not given:
        return [f"ch{i}" for i in range(channels)]
    if len(given) != channels:
        raise SERError(f"--channel-names gives {len(given)} name(s) for {channels} channel(s)")
    if len({sanitize(n) for n in given}) != len(given) or not all(given):
        raise SERError(f"--channel-names must be non-empty and distinct in [A-Za-z0-9_-]: {','.join(given)}")
    return list(given)


def make_backend(settings: ProducerSettings, *, spec: Any, bundle: Any, connection: Any) -> Backend:
    if connection is None:
        from models.runtime import EmotionModel

        model = EmotionModel(bundle, threads=1)
        return EmbeddedBackend(spec=spec, stream_id=settings.stream_id, model=model)
    return RedisBackend(spec=spec, stream_id=settings.stream_id, connection=connection, queue=settings.queue,
                        max_pending=settings.max_pending, timeout_s=settings.timeout_s,
                        resend_after_s=settings.resend_after_s)


def run(settings: ProducerSettings, *, stdin: BinaryIO | None, out: TextIO, connection: Any = None) -> Outcome:
    """Produce one call. ``connection``: a redis client (distributed) or None (embedded).

    Raises :class:`SERError` for bad input; an incomplete run (timeout, failed segments) returns an
    :class:`Outcome` whose ``error`` says why.
    """
    t0 = time.monotonic()
    bundle = load_bundle(settings.model_dir)
    spec = bundle.spec
    source = open_source(settings.audio, stdin=stdin, raw=settings.raw)
    names = channel_names(settings.channel_names, source.channels)
    backend = make_backend(settings, spec=spec, bundle=bundle, connection=connection)
    writer = make_writer(settings.output_format, out, spec.labels)
    collector = Collector()
    stats = [ChannelStats(n) for n in names]
    segmenter = Segmenter(spec=spec, in_rate=source.rate, channels=source.channels)
    batcher = Batcher(settings.batch)
    tracker = SpeakerTracker(spec) if spec.speaker is not None else None  # per-channel statistics
    sr = spec.sample_rate
    hop_s = spec.segment.hop_s
    metrics = ProducerMetrics(connection)  # counters in Redis for the workers' /metrics; no-op embedded
    # Call events and the active-call registry (callevents.schema); embedded mode: none.
    calls = CallEvents(connection, call_id=settings.stream_id, source="stdin" if settings.audio == "-" else "file",
                       channels=names, model=spec.model_id, labels=spec.labels, settings=settings.events)
    calls.start()
    writer.start()

    def take(records: list[dict[str, Any]]) -> bool:
        for rec in records:
            collector.add(rec)
        ready = collector.pop_ready()
        for rec in ready:
            writer.write(rec)
        if ready:
            writer.flush()
            calls.add(ready)
        return bool(records)

    def on_idle(block_s: float) -> bool:
        return take(backend.poll(block_s))

    def send(batch: Batch) -> None:
        jobs, waited = backend.jobs, getattr(backend, "backpressure_s", 0.0)
        take(backend.submit(batch, on_idle=on_idle))
        if backend.jobs > jobs:
            metrics.enqueued(len(batch.items))
        metrics.backpressure_wait(getattr(backend, "backpressure_s", 0.0) - waited)

    def cut(cuts: list[Any]) -> None:
        skipped = sum(st.skipped for st in stats)
        for c in cuts:
            mask = voiced(segments=c.samples, sr=sr, params=spec.vad)
            for i, st in enumerate(stats):
                st.cut += 1
                if not mask[i]:
                    st.skipped += 1
                    continue
                st.sent += 1
                collector.expect(st.name, c.seq)
                vec = (tracker.update(st.name, c.samples[i : i + 1], valid=np.array([c.end - c.start]))[0]
                       if tracker is not None else None)
                batch = batcher.add(st.name, c.seq, c.start / sr, c.end / sr, c.samples[i], vec)
                if batch is not None:
                    send(batch)
        skipped = sum(st.skipped for st in stats) - skipped
        metrics.skipped_silence(segments=skipped, seconds=skipped * hop_s)

    error = None
    try:
        last_poll = time.monotonic()
        for block in source.blocks(realtime=settings.realtime):
            cut(segmenter.feed(block))
            if time.monotonic() - last_poll >= POLL_INTERVAL_S:  # one XREAD per block would dominate
                take(backend.poll())
                last_poll = time.monotonic()
        cut(segmenter.finish())
        if segmenter.samples_seen == 0:
            raise AudioError(f"{source.name} holds no audio samples")
        for batch in batcher.flush():
            send(batch)
        backend.finish({
            "kind": "end", "stream_id": settings.stream_id, "segments": collector.expected,
            "duration_s": round(segmenter.samples_seen / sr, 3), "model": spec.model_id,
            "channels": {s.name: {"segments": s.sent, "skipped": s.skipped} for s in stats},
        })
        deadline = time.monotonic() + settings.timeout_s
        while collector.outstanding:
            if take(backend.poll(FOLLOW_BLOCK_S)):
                deadline = time.monotonic() + settings.timeout_s
            elif time.monotonic() > deadline:
                raise StalledError(f"timed out after {settings.timeout_s:g} s without progress: "
                                   f"{collector.outstanding} of {collector.expected} segment(s) have no result")
    except StalledError as exc:
        error = str(exc)
        for rec in collector.pop_arrived():  # print what arrived behind the gaps too
            writer.write(rec)
    except BaseException:
        metrics.call_done(ok=False)
        calls.end(reason="error", duration_s=segmenter.samples_seen / sr,
                  summary=summarise(collector.released, spec.labels))
        raise
    finally:
        writer.flush()
    released = collector.released
    failures = [r for r in released if r["kind"] == "failure"]
    if failures and error is None:
        error = (f"{len(failures)} of {collector.expected} segment(s) failed; first: "
                 f"{failures[0]['channel']} seq {failures[0]['seq']}: {failures[0]['error']}")
    metrics.call_done(ok=error is None)
    per_channel = summarise(released, spec.labels)
    calls.end(reason="completed" if error is None else "incomplete", duration_s=segmenter.samples_seen / sr,
              summary=per_channel)
    return Outcome(
        expected=collector.expected, results=len(released) - len(failures), failures=len(failures),
        jobs=backend.jobs, resent=backend.resent, duplicates=collector.duplicates,
        seconds=time.monotonic() - t0, summary=summary_lines(stats, per_channel, hop_s=hop_s),
        error=error, channels=tuple(names), records=tuple(released), per_channel=per_channel,
        duration_s=segmenter.samples_seen / sr, model_id=spec.model_id, labels=spec.labels,
        retried=getattr(backend, "retried", 0),
        reconnects=getattr(backend, "reconnects", 0) + getattr(backend, "restarts", 0),
    )
