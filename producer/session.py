"""The shared ingestion core: one call you *push* audio blocks into, per channel, that hands back
records and call events.

:class:`CallSession` owns everything between audio and the queue that ``ser-produce`` and
``ser-gateway`` share: the segmenter (resample, cut), the VAD gate, per-channel speaker statistics,
batching, the backend (embedded, or RQ through Redis with idempotent job ids, per-segment claims,
backpressure and re-send on worker death), the ordered collector, the ``turn`` records built from
the released records (:mod:`producer.turns`), the ``end`` record and the call events
(:mod:`callevents`). It is driven by :func:`producer.pipeline.run` (a file or stdin, one blocking loop)
and by the gateway (many calls in one event loop: it calls the blocking methods in a thread, one at a
time per session, and delivers the call's results-stream entries read by one shared reader through
:meth:`deliver` instead of letting each session poll Redis).

Usage::

    s = CallSession(spec=spec, backend=backend, names=["customer", "agent"], in_rate=8000, batch=1,
                    connection=conn, call_id="CA123", source="twilio", sink=print)
    s.start()
    s.push(block)            # (channels, n) float32 at in_rate; may block on backpressure
    s.close()                # last window, last batches
    s.follow(timeout_s=60)   # wait for every record (or: deliver() + poll() from the caller); then
                             # the last turns and the ``end`` record go out
    outcome = s.end()        # call_ended; raises nothing
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from callevents.rules import EventSettings
from callevents.writer import CallEvents
from models.bundle import Spec
from models.errors import AudioError
from models.features import voiced
from models.history import CallHistory, decode_embedding
from models.speaker import SpeakerTracker
from models.vad import SileroParams
from producer.collector import Collector
from producer.dispatch import Backend, Batch, Batcher, StalledError
from producer.dynamics import Dynamics
from producer.metrics import ProducerMetrics
from producer.segmenter import Cut, make_segmenter
from producer.summary_lines import ChannelStats, summarise
from producer.turns import TurnBuilder

#: Seconds one blocking wait for results lasts while results are outstanding.
FOLLOW_BLOCK_S = 0.5
#: While audio comes in, look for results at most this often (seconds; every block while a batch is held).
POLL_INTERVAL_S = 0.05
#: Seconds one wait for results lasts while ``max_pending`` batches are held.
HELD_POLL_S = 0.05

Records = list[dict[str, Any]]


class CallSession:
    """One call's ingestion state. Not thread-safe: call its methods from one thread at a time
    (:meth:`deliver` excepted: any thread, it only queues)."""

    def __init__(self, *, spec: Spec, backend: Backend, names: Sequence[str], in_rate: int, batch: int,
                 connection: Any, call_id: str, source: str, params: Mapping[str, str] | None = None,
                 events: EventSettings | None = None, sink: Callable[[Records], None] | None = None,
                 shared_reader: bool = False, collect: list[dict[str, Any]] | None = None) -> None:
        self.spec, self.backend, self.call_id = spec, backend, call_id
        self.names = list(names)
        self.collector = Collector()
        self.stats = [ChannelStats(n) for n in self.names]
        self.segmenter = make_segmenter(spec=spec, in_rate=in_rate, channels=len(self.names))
        self.batcher = Batcher(batch)
        self.tracker = SpeakerTracker(spec) if spec.speaker is not None else None
        #: The channels' embedding history (models.history), fed by the results, sent with later jobs.
        self.history = CallHistory(spec.history) if spec.history is not None else None
        #: A model with a history: each channel's batches not sent yet (its previous job's records are
        #: not all in: its history is not known yet), and the seqs of its job in flight without a record.
        self._held: dict[str, deque[Batch]] = {}
        self._flight: dict[str, set[int]] = {}
        self._sending = self._releasing = False
        # The backend's view of Redis (None embedded): events and metrics skip Redis while it is down.
        link = getattr(backend, "link", None)
        self.metrics = ProducerMetrics(connection, link=link)  # no-op embedded
        self.calls = CallEvents(connection, call_id=call_id, source=source, channels=self.names,
                                model=spec.model_id, labels=spec.labels, params=params, settings=events,
                                collect=collect, link=link)  # collect: the events also kept in this list (--archive)
        self.sink = sink or (lambda records: None)
        # Conversation dynamics (producer.dynamics) from the speech the VAD found: settled once no
        # later segment can still add speech before that time (a long utterance's first segment
        # comes window_s after its onset; a short one's min_silence_s after its end).
        lag_s = spec.segment.window_s + (spec.vad.min_silence_s + 0.1 if isinstance(spec.vad, SileroParams) else 0.0)
        self.dynamics = Dynamics(channels=self.names, lag_s=lag_s, settings=(events or EventSettings()).dynamics,
                                 sr=spec.sample_rate)
        self.calls.other_alerts = self.dynamics.alerts.open
        #: Results-stream entries handed over by a shared reader (None: the backend polls Redis itself).
        self.inbox: queue.SimpleQueue[list[Any]] | None = queue.SimpleQueue() if shared_reader else None
        self.closed = False
        self.error: str | None = None
        # Turns (producer.turns): fed the released records; closed turns go to the sink after the record
        # that closed them and to the results stream; the open ones once every record is in.
        self.turn_builder = TurnBuilder(uncertain_below=spec.calibration.uncertain_below if spec.calibration else 0.0)
        self.turns: Records = []
        self.turns_done = False
        #: The ``end`` record, built when input is over (:meth:`close`) and published once every record
        #: of the call is in the stream: a consumer may stop reading at it (docs/pipeline.md, "Records").
        self.end_record: dict[str, Any] | None = None
        self.end_published = False
        self._last_poll = time.monotonic()

    # --- results ----------------------------------------------------------------------------------
    def take(self, records: Records) -> bool:
        """Collect records; release those now in order (each followed by the turn it closed) to the
        sink, and the results to the call events. True: any record arrived."""
        for rec in records:
            embedding = rec.pop("embedding", None)
            if self.collector.add(rec):  # a segment's first record only: a later duplicate changes nothing
                self._fold(rec, embedding)
            if rec.get("kind") in ("result", "failure"):
                self._flight.get(str(rec.get("channel")), set()).discard(int(rec.get("seq", -1)))
        self._release()
        ready = self.collector.pop_ready()
        if ready:
            out = self.turn_builder.interleave(ready)
            self.sink(out)  # output and call events first: a Redis that refuses the turns loses neither
            self.calls.add(ready)
            self._turns([r for r in out if r["kind"] == "turn"])
        if self.closed and not self.collector.outstanding:
            self._finish_turns()
        return bool(records)

    def _fold(self, rec: dict[str, Any], text: Any) -> None:
        """A result's embedding (taken out of the record: it is the model's internal state, not output;
        the results stream keeps it) goes into its channel's history. A failure adds nothing."""
        if self.history is None or text is None or rec.get("kind") != "result":
            return
        try:
            emb = decode_embedding(text, size=self.history.params.size)
            self.history.add(str(rec["channel"]), int(rec["seq"]), emb)
        except (ValueError, KeyError, TypeError):
            pass  # a malformed embedding is left out of the history; the record itself stands

    def _turns(self, turns: Records, *, publish: bool = True) -> None:
        self.turns.extend(turns)
        if turns and publish:
            self.backend.publish(turns)

    def _finish_turns(self, *, publish: bool = True) -> None:
        """Every record is in (or given up on): close the open turns, to the sink (and the stream),
        then publish the ``end`` record after them (``publish``: when every record is in)."""
        if self.turns_done:
            return
        self.turns_done = True
        turns = self.turn_builder.finish()
        if turns:
            self.sink(turns)
            self._turns(turns, publish=publish)
        if publish:
            self._publish_end(patient=True)

    def _publish_end(self, *, patient: bool) -> None:
        """The ``end`` record, once, after the call's last record (the workers' results were read back
        from the stream, the turns were added to it). ``patient`` False: one try, errors ignored (a
        run giving up: Redis may be what failed)."""
        if self.end_record is None or self.end_published:
            return
        self.end_published = True
        self.backend.finish(self.end_record, patient=patient)

    def deliver(self, entries: list[Any]) -> None:
        """Queue raw results-stream entries ``[(id, fields), ...]`` read by a shared reader."""
        assert self.inbox is not None, "deliver() needs shared_reader=True"
        self.inbox.put(entries)

    def poll(self, block_s: float = 0.0) -> bool:
        """Take what results arrived (waiting up to ``block_s`` for some). True: any record arrived.
        Also the call's heartbeat (:meth:`CallEvents.beat`): :meth:`push` polls every
        :data:`POLL_INTERVAL_S` while audio arrives, :meth:`follow` while results are awaited."""
        self.calls.beat()
        if self.inbox is None:
            return self.take(self.backend.poll(block_s))
        entries: list[Any] = []
        try:
            entries.extend(self.inbox.get(timeout=block_s) if block_s > 0 else self.inbox.get_nowait())
            while True:
                entries.extend(self.inbox.get_nowait())
        except queue.Empty:
            pass
        return self.take(self.backend.accept(entries))

    # --- audio ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Register the call and publish ``call_started``."""
        self.calls.start()

    def _queue(self, batch: Batch) -> None:
        """Send ``batch``, or (a model with a history) hold it until its channel's job in flight has all
        its records: its history holds every earlier segment of the channel. At most ``max_pending``
        batches are held in all: beyond that this waits for results (the producer stops reading)."""
        if self.history is None:
            self._send(batch)
            return
        self._held.setdefault(batch.channel, deque()).append(batch)
        self._release()
        limit = max(1, int(getattr(self.backend, "max_pending", 1)))
        timeout_s = float(getattr(self.backend, "timeout_s", 60.0))
        deadline = time.monotonic() + timeout_s
        while self.held >= limit:
            if self.poll(HELD_POLL_S):
                deadline = time.monotonic() + timeout_s
            elif time.monotonic() > deadline:
                raise StalledError(f"{self.held} batch(es) held for {timeout_s:g} s waiting for their channel's "
                                   f"previous results (--max-pending {limit}): are workers running?")

    @property
    def held(self) -> int:
        """Batches formed but not sent yet (a model with a history: waiting for their channel's results)."""
        return sum(len(q) for q in self._held.values())

    def _release(self) -> None:
        """Send each channel's next held batch once its previous job has all its records (failures
        count: a failed segment adds nothing to the history), with the channel's history as of now."""
        if self._sending or self._releasing or self.history is None:
            return  # the loop below (or the send under way) sends what this frees
        self._releasing = True
        try:
            moved = True
            while moved:
                moved = False
                for channel, held in self._held.items():
                    if held and not self._flight.get(channel):
                        batch = held.popleft()
                        batch.history = self.history.recent(channel)
                        self._flight[channel] = {int(s) for s, _, _ in batch.items}
                        self._send(batch)
                        moved = True
        finally:
            self._releasing = False

    def _send(self, batch: Batch) -> None:
        jobs, waited = self.backend.jobs, getattr(self.backend, "backpressure_s", 0.0)
        self._sending = True
        try:
            records = self.backend.submit(batch, on_idle=self.poll)
        finally:
            self._sending = False
        if self.backend.jobs > jobs:
            self.metrics.enqueued(len(batch.items))
        self.metrics.backpressure_wait(getattr(self.backend, "backpressure_s", 0.0) - waited)
        self.take(records)

    def _cut(self, cuts: list[Cut]) -> None:
        sr = self.spec.sample_rate
        skipped = sum(st.skipped for st in self.stats)
        for c in cuts:
            if c.channel is not None:  # one channel's utterance segment: the VAD already heard speech
                self.dynamics.speech(c.channel, start_s=c.speech_start / sr, end_s=c.speech_end / sr)
                st = self.stats[c.channel]
                new = max(c.speech_start, st.speech_until)  # the speech not measured yet (windows overlap)
                if c.speech_end > new:
                    self._events(self.dynamics.level(c.channel, c.samples[0, new - c.start : c.speech_end - c.start],
                                                     start_s=new / sr))
                st.cut += 1
                st.speech_s += max(0, c.speech_end - new) / sr
                st.speech_until = max(st.speech_until, c.speech_end)
                self._enqueue(st, c, c.samples)
                continue
            mask = voiced(segments=c.samples, sr=sr, params=self.spec.vad)  # type: ignore[arg-type]
            for i, st in enumerate(self.stats):
                st.cut += 1
                if not mask[i]:
                    st.skipped += 1
                    continue
                self.dynamics.speech(i, start_s=c.start / sr, end_s=c.end / sr)  # 1.x: window resolution
                self._enqueue(st, c, c.samples[i : i + 1])
        skipped = sum(st.skipped for st in self.stats) - skipped
        self.metrics.skipped_silence(segments=skipped, seconds=skipped * self.spec.segment.hop_s)

    def _enqueue(self, st: ChannelStats, c: Cut, samples: np.ndarray) -> None:
        """Send one channel's segment ``samples`` ``(1, window)``; its records carry the cut's extent."""
        st.sent += 1
        self.collector.expect(st.name, c.seq)
        vec = (self.tracker.update(st.name, samples, valid=np.array([c.end - c.start]))[0]
               if self.tracker is not None else None)
        sr = self.spec.sample_rate
        batch = self.batcher.add(st.name, c.seq, c.start / sr, c.end / sr, samples[0], vec)
        if batch is not None:
            self._queue(batch)

    def _events(self, events: list[dict[str, Any]]) -> None:
        if events:
            self.calls.publish(events)

    def push(self, block: np.ndarray) -> None:
        """Add a ``(channels, n)`` float32 block at the input rate; cut, gate, batch and send what it completes."""
        self._cut(self.segmenter.feed(block))
        self._events(self.dynamics.advance(clock_s=self.duration_s))
        if self.held or time.monotonic() - self._last_poll >= POLL_INTERVAL_S:  # one read per block would dominate
            self.poll()
            self._last_poll = time.monotonic()

    def close(self, *, empty: str | None = None) -> None:
        """Input is over: cut the last window, send the last batches, build the ``end`` record. It is
        published once every record is in (:meth:`take`, here when none is outstanding), after the
        last result and the closing turns, never before them.
        ``empty``: raise :class:`AudioError` with this message when no sample came at all."""
        self._cut(self.segmenter.finish())
        if empty is not None and self.segmenter.samples_seen == 0:
            raise AudioError(empty)
        for batch in self.batcher.flush():
            self._queue(batch)
        self.calls.publish(self.dynamics.finish(duration_s=self.duration_s))
        self.end_record = {
            "kind": "end", "stream_id": self.call_id, "segments": self.collector.expected,
            "duration_s": round(self.duration_s, 3), "model": self.spec.model_id,
            "channels": {s.name: {"segments": s.sent, "skipped": s.skipped} for s in self.stats},
            "dynamics": self.dynamics.episodes_summary(),
        }
        self.closed = True
        if not self.collector.outstanding:  # embedded, a silent call, a re-sent one: every record is in
            self._finish_turns()

    # --- the end ----------------------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        return self.segmenter.samples_seen / self.spec.sample_rate

    @property
    def outstanding(self) -> int:
        return self.collector.outstanding

    def stalled(self, timeout_s: float) -> StalledError:
        return StalledError(f"timed out after {timeout_s:g} s without progress: {self.collector.outstanding} "
                            f"of {self.collector.expected} segment(s) have no result")

    def follow(self, *, timeout_s: float) -> None:
        """Wait until every expected segment has its record; :class:`StalledError` after ``timeout_s``
        without progress."""
        deadline = time.monotonic() + timeout_s
        while self.collector.outstanding:
            if self.poll(FOLLOW_BLOCK_S):
                deadline = time.monotonic() + timeout_s
            elif time.monotonic() > deadline:
                raise self.stalled(timeout_s)

    def salvage(self, *, publish_end: bool = True) -> Records:
        """Give up waiting: every record that arrived, in order, even behind gaps (to the sink too);
        ``publish_end`` False when Redis itself is down (one more try would only cost a socket timeout)."""
        out = self.collector.pop_arrived()
        if out:  # turns of what arrived go to the output, not to the stream (Redis may be what failed)
            both = self.turn_builder.interleave(out)
            self.sink(both)
            self._turns([r for r in both if r["kind"] == "turn"], publish=False)
        self._finish_turns(publish=False)
        if publish_end:
            self._publish_end(patient=False)  # consumers waiting for the end learn that the call is over
        return out

    def failures_error(self) -> str | None:
        failures = [r for r in self.collector.released if r["kind"] == "failure"]
        if not failures:
            return None
        return (f"{len(failures)} of {self.collector.expected} segment(s) failed; first: "
                f"{failures[0]['channel']} seq {failures[0]['seq']}: {failures[0]['error']}")

    def end(self, *, reason: str | None = None, error: str | None = None) -> dict[str, Any]:
        """Count the call and publish ``call_ended`` (alerts still open close). ``reason`` None: ``completed``
        when ``error`` (or a failed segment) is None, else ``incomplete``. Returns the per-channel summary."""
        if error is None and reason is None:
            error = self.failures_error()
        self.error = error
        if reason is None:
            reason = "completed" if error is None else "incomplete"
        self.metrics.call_done(ok=reason == "completed")
        self.dynamics.finish(duration_s=self.duration_s)  # a call that ends in error before close()
        self.metrics.dynamics(self.dynamics.summary())
        self.calls.end_fields["dynamics"] = self.dynamics.episodes_summary()
        per_channel = summarise([*self.collector.released, *self.turns], self.spec.labels)
        self.calls.end(reason=reason, duration_s=self.duration_s, summary=per_channel)
        return per_channel
