"""One producer run: read a file or stdin and push it through the shared ingestion core
(:mod:`producer.session`: resample -> segment -> VAD gate -> batch -> classify -> ordered output,
with turns)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO

from models.bundle import load_bundle
from models.errors import SERError
from producer.dispatch import Backend, EmbeddedBackend, RedisBackend, StalledError
from producer.output import make_writer
from producer.progress import Progress
from producer.session import FOLLOW_BLOCK_S, POLL_INTERVAL_S, CallSession  # noqa: F401  (re-exported)
from producer.settings import ProducerSettings
from producer.source import open_source
from producer.summary_lines import Summary, summary_lines
from workers.contract import sanitize


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
    per_channel: Summary | None = None  # producer.summary_lines.summarise() of the records
    duration_s: float = 0.0
    model_id: str = ""
    labels: tuple[str, ...] = ()
    retried: int = 0  # batches sent again (no result in time, or after a Redis reconnect)
    reconnects: int = 0  # times Redis was lost (a connection error, or a restart that lost our keys)
    dynamics: dict[str, Any] | None = None  # producer.dynamics: the call's totals, silences and overtalks
    turns: tuple[dict[str, Any], ...] = ()  # turn records (producer.turns), in the order they were written
    end_record: dict[str, Any] | None = None  # the ``end`` record (docs/pipeline.md, "Records")


@dataclass(frozen=True)
class Loaded:
    """The bundle and, in embedded mode, its model (the onnxruntime session): loaded once per command and
    shared by every call it produces."""

    bundle: Any
    model: Any = None


def load(model_dir: str | None, *, embedded: bool) -> Loaded:
    bundle = load_bundle(model_dir)
    if not embedded:
        return Loaded(bundle)
    from models.runtime import EmotionModel

    return Loaded(bundle, EmotionModel(bundle, threads=1))


def channel_names(given: tuple[str, ...], channels: int) -> list[str]:
    if not given:
        return [f"ch{i}" for i in range(channels)]
    if len(given) != channels:
        raise SERError(f"--channel-names gives {len(given)} name(s) for {channels} channel(s)")
    if len({sanitize(n) for n in given}) != len(given) or not all(given):
        raise SERError(f"--channel-names must be non-empty and distinct in [A-Za-z0-9_-]: {','.join(given)}")
    return list(given)


def make_backend(settings: ProducerSettings, *, spec: Any, loaded: Loaded, connection: Any) -> Backend:
    if connection is None:
        model = loaded.model if loaded.model is not None else load(settings.model_dir, embedded=True).model
        return EmbeddedBackend(spec=spec, stream_id=settings.stream_id, model=model)
    return RedisBackend(spec=spec, stream_id=settings.stream_id, connection=connection, queue=settings.queue,
                        max_pending=settings.max_pending, timeout_s=settings.timeout_s,
                        resend_after_s=settings.resend_after_s)


def run(settings: ProducerSettings, *, stdin: BinaryIO | None, out: TextIO, connection: Any = None,
        progress: TextIO | None = None, loaded: Loaded | None = None, bar: Progress | None = None,
        collect: list[dict[str, Any]] | None = None, keep: list[dict[str, Any]] | None = None,
        header: bool = True) -> Outcome:
    """Produce one call from a file or stdin through a :class:`~producer.session.CallSession`.
    ``connection``: a redis client (distributed) or None (embedded). ``progress``: a stream to show
    progress on when it is a terminal (``producer.progress``; nothing otherwise), or ``bar``: a progress
    of several files to report to instead. ``loaded``: the bundle (and model) already loaded (else loaded
    here). ``collect``: a list to append the call's events to, computed also without Redis; ``keep``: a list
    to append the records written to, whole (the outcome keeps them slimmed); both for ``--archive``.
    ``header``: start the output with its header (a CSV's column row, the table's heading).

    Raises :class:`SERError` for bad input; an incomplete run (timeout, failed segments) returns an
    :class:`Outcome` whose ``error`` says why.
    """
    t0 = time.monotonic()
    loaded = loaded or Loaded(load_bundle(settings.model_dir))
    spec = loaded.bundle.spec
    source = open_source(settings.audio, stdin=stdin, raw=settings.raw)
    names = channel_names(settings.channel_names, source.channels)
    backend = make_backend(settings, spec=spec, loaded=loaded, connection=connection)
    writer = make_writer(settings.output_format, out, spec.labels)
    frames = int(getattr(source, "frames", 0))  # a file's length; a stream has none
    total_s = frames / source.rate if frames else None
    bar = bar or Progress(progress, total_s=total_s, name=source.name)

    audio_t0: list[float] = []  # wall clock of the first audio block (--realtime stamps)

    def sink(records: list[dict[str, Any]]) -> None:
        if keep is not None:
            keep.extend(records)
        for rec in records:
            if settings.realtime and audio_t0 and "end_s" in rec:
                # --realtime: when the record came out, on the call's clock, and how long after its audio
                wall = time.monotonic() - audio_t0[0]
                rec = {**rec, "wall_s": round(wall, 3), "latency_s": round(wall - float(rec["end_s"]), 3)}
            writer.write(rec)
        writer.flush()
        bar.classified(sum(1 for r in records if r.get("kind") == "result"))

    # Call events and the active-call registry (callevents.schema); embedded mode: none.
    session = CallSession(spec=spec, backend=backend, names=names, in_rate=source.rate, batch=settings.batch,
                          connection=connection, call_id=settings.stream_id,
                          source="stdin" if settings.audio == "-" else "file", events=settings.events, sink=sink,
                          params=dict(settings.params), collect=collect)
    session.start()
    if header:
        writer.start()
    error = None
    try:
        for block in source.blocks(realtime=settings.realtime):
            if not audio_t0:  # the first block arrives once its audio has been spoken
                audio_t0.append(time.monotonic() - block.shape[1] / source.rate)
            session.push(block)
            bar.audio(block.shape[1] / source.rate)
        session.close(empty=f"{source.name} holds no audio samples")
        session.follow(timeout_s=settings.timeout_s)
    except StalledError as exc:
        error = str(exc)
        session.salvage(publish_end=not exc.redis_down)  # print what arrived behind the gaps too
    except BaseException:
        session.end(reason="error")
        raise
    finally:
        writer.flush()
        bar.close()
    per_channel = session.end(error=error)
    return outcome_of(session, per_channel, seconds=time.monotonic() - t0)


def outcome_of(session: CallSession, per_channel: dict[str, Any], *, seconds: float) -> Outcome:
    """The :class:`Outcome` of an ended session (``per_channel``: what :meth:`CallSession.end` returned)."""
    backend, spec, collector = session.backend, session.spec, session.collector
    released = collector.released
    failures = [r for r in released if r["kind"] == "failure"]
    return Outcome(
        expected=collector.expected, results=len(released) - len(failures), failures=len(failures),
        jobs=backend.jobs, resent=backend.resent, duplicates=collector.duplicates,
        seconds=seconds, summary=summary_lines(session.stats, per_channel, hop_s=spec.segment.hop_s,
                                               dynamics=session.dynamics.summary()),
        error=session.error, channels=tuple(session.names), records=tuple(released), per_channel=per_channel,
        duration_s=session.duration_s, model_id=spec.model_id, labels=spec.labels,
        retried=getattr(backend, "retried", 0),
        reconnects=getattr(backend, "reconnects", 0) + getattr(backend, "restarts", 0),
        turns=tuple(session.turns), dynamics=session.dynamics.episodes_summary(), end_record=session.end_record,
    )
