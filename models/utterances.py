"""Utterance-aligned segments: speech onset to pause, per channel, live or offline.

The one segmenter that training, ``ser-produce`` (files and stdin), the embedded path and
``ser-gateway`` share for bundles whose ``vad.kind`` is ``silero``:

1. :class:`models.vad.VadStream` gives a speech probability per 32 ms window and channel.
2. Hysteresis: speech starts at ``p >= threshold`` and ends after ``min_silence_s`` of
   ``p < off_threshold``; pauses shorter than that stay inside the utterance. Detections shorter
   than ``min_speech_s`` are dropped.
3. A segment is the utterance plus ``pre_roll_s`` before and ``hangover_s`` after, at least
   ``segment.min_s`` long (extended into the following audio), zero-padded at the end to
   ``segment.window_s`` (the model's input: the same end padding the training examples have).
4. **Latency bound**: an utterance longer than the window is cut while it is still going on, into
   windows of ``window_s`` every ``hop_s`` (overlap ``window_s - hop_s``); a window is emitted as
   soon as its audio is in, so no speech waits more than ``window_s`` (plus one 32 ms VAD window)
   after its onset for a segment. The last part is a tail window from the next window start to the
   utterance's end, emitted only when it adds at least :data:`MIN_TAIL_S` beyond the last window.
   A short utterance is emitted ``min_silence_s`` after its end (the pause that ends it).

Decisions are made on the VAD's window grid and segments are released in window order, so any
split of the same audio into blocks gives the same segments in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from models.errors import ParameterError
from models.features import SegmentParams, clip_segments, segment
from models.vad import SileroParams, VadStream

if TYPE_CHECKING:
    from models.bundle import Spec

#: A long utterance's tail window is cut only when it adds this much audio beyond the last window.
MIN_TAIL_S = 0.5


@dataclass(frozen=True)
class Utterance:
    """One segment to classify: samples ``[start, end)`` of ``channel`` (model rate), speech
    detected in ``[speech_start, speech_end)``; ``samples`` ``(window,)`` float32, zero-padded."""

    channel: int
    start: int
    end: int
    speech_start: int
    speech_end: int
    samples: np.ndarray


@dataclass
class _Channel:
    speaking: bool = False
    onset: int = 0  # first sample of the speech run
    last: int = 0  # one past the last sample of a window at or above off_threshold
    below: int = 0  # windows below off_threshold since then
    seg_start: int = 0  # start of the next window of this utterance
    emitted_end: int | None = None  # end of the last window cut from this utterance
    pending: list[tuple[int, int, int, int]] = field(default_factory=list)  # (start, end, s0, s1)


class UtteranceCutter:
    """Multi-channel live segmenter at the model rate ``sr``. Feed ``(channels, n)`` float32 blocks."""

    def __init__(self, *, channels: int, sr: int, segment: SegmentParams, params: SileroParams,
                 model: Any = None) -> None:
        self.sr, self.channels, self.params = sr, channels, params
        self.vad = VadStream(channels=channels, sr=sr, params=params, model=model)
        self.w = self.vad.window
        self.window, self.hop, self.min_len = segment.samples(sr)
        sec = lambda s: int(round(s * sr))  # noqa: E731
        self.pre, self.hang = sec(params.pre_roll_s), sec(params.hangover_s)
        self.min_speech, self.min_tail = sec(params.min_speech_s), sec(MIN_TAIL_S)
        self.silence_windows = max(1, -(-sec(params.min_silence_s) // self.w))  # (SegmentParams: min_s <= window_s)
        self._ch = [_Channel() for _ in range(channels)]
        self._buf = np.zeros((channels, 0), dtype=np.float32)
        self._buf_start = 0
        self._total = 0
        self._vad_pos = 0  # samples decided by the VAD (whole windows)

    @property
    def samples_seen(self) -> int:
        return self._total

    def _cut(self, c: int, start: int, end: int, s0: int, s1: int) -> Utterance:
        out = np.zeros(self.window, dtype=np.float32)
        a, b = max(start, self._buf_start), min(end, self._total)
        out[a - start : b - start] = self._buf[c, a - self._buf_start : b - self._buf_start]
        return Utterance(c, start, end, max(s0, start), min(s1, end), out)

    def _close(self, st: _Channel, end_speech: int) -> None:
        """The utterance of ``st`` ended at ``end_speech``: queue its last (or only) segment."""
        st.speaking = False
        if st.emitted_end is None and end_speech - st.onset < self.min_speech:
            return
        end = end_speech + self.hang
        if st.emitted_end is not None and end < st.emitted_end + self.min_tail:
            return
        end = min(max(end, st.seg_start + self.min_len), st.seg_start + self.window)
        st.pending.append((st.seg_start, end, st.onset, end_speech))

    def _step(self, c: int, i: int, p: float, out: list[Utterance]) -> None:
        st, prm = self._ch[c], self.params
        w0, w1 = i * self.w, (i + 1) * self.w
        if not st.speaking:
            if p >= prm.threshold:
                st.speaking, st.onset, st.last, st.below, st.emitted_end = True, w0, w1, 0, None
                st.seg_start = max(0, w0 - self.pre)
        elif p >= prm.off_threshold:
            st.last, st.below = w1, 0
        else:
            st.below += 1
            if st.below >= self.silence_windows:
                self._close(st, st.last)
        while st.speaking and st.seg_start + self.window <= w1:  # the latency bound: cut while speaking
            out.append(self._cut(c, st.seg_start, st.seg_start + self.window, st.onset, st.last))
            st.emitted_end = st.seg_start + self.window
            st.seg_start += self.hop

    def _release(self, upto: int, out: list[Utterance]) -> None:
        for c, st in enumerate(self._ch):
            while st.pending and st.pending[0][1] <= upto:
                out.append(self._cut(c, *st.pending.pop(0)))

    def _trim(self) -> None:
        keep = self._vad_pos - self.pre - self.w
        for st in self._ch:
            if st.speaking:
                keep = min(keep, st.seg_start)
            if st.pending:
                keep = min(keep, st.pending[0][0])
        drop = keep - self._buf_start
        if drop > 0:
            self._buf = self._buf[:, drop:]
            self._buf_start += drop

    def feed(self, block: np.ndarray) -> list[Utterance]:
        """Add a ``(channels, n)`` block at the model rate; return the segments it completes, in order."""
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ParameterError(f"block shape {block.shape} must be ({self.channels}, n)")
        self._buf = np.concatenate([self._buf, block], axis=1)
        self._total += block.shape[1]
        probs = self.vad.feed(block)
        out: list[Utterance] = []
        first = self._vad_pos // self.w
        rows, threshold, chans = probs.tolist(), self.params.threshold, self._ch
        for k in range(probs.shape[1]):
            for c, st in enumerate(chans):
                p = rows[c][k]
                if st.speaking or p >= threshold:  # (a quiet channel's step below the threshold is a no-op)
                    self._step(c, first + k, p, out)
            if any(st.pending for st in chans):
                self._release((first + k + 1) * self.w, out)
        self._vad_pos += probs.shape[1] * self.w
        self._trim()
        return out

    def finish(self) -> list[Utterance]:
        """Input is over: close open utterances at the last sample and release every segment."""
        out: list[Utterance] = []
        for st in self._ch:
            if st.speaking:
                self._close(st, st.last)
        for st in self._ch:
            st.pending = [(a, min(b, max(self._total, a + 1)), s0, s1) for a, b, s0, s1 in st.pending]
        self._release(self._total + self.window, out)
        return out


def utterance_segments(*, y: np.ndarray, sr: int, segment: SegmentParams, params: SileroParams,
                       model: Any = None) -> list[Utterance]:
    """The segments of mono ``y`` ``(n,)`` (a whole clip or call channel), as a live stream cuts them."""
    if np.asarray(y).ndim != 1:
        raise ParameterError(f"y must be 1-D, got shape {np.shape(y)}")
    cutter = UtteranceCutter(channels=1, sr=sr, segment=segment, params=params, model=model)
    return cutter.feed(np.asarray(y, dtype=np.float32)[None, :]) + cutter.finish()


def clip_windows(*, y: np.ndarray, spec: Spec, model: Any = None) -> np.ndarray:
    """The segments ``(k, window)`` a whole clip is classified by, as its spec says: with a Silero
    ``vad``, its utterance segments (all of its windows when the VAD hears no speech, so a quiet
    clip still gets a label); with the energy gate, its voiced fixed windows
    (:func:`models.features.clip_segments`). Training and ``predict_clip`` both cut clips here."""
    if isinstance(spec.vad, SileroParams):
        segs = utterance_segments(y=y, sr=spec.sample_rate, segment=spec.segment, params=spec.vad, model=model)
        if segs:
            return np.stack([u.samples for u in segs])
        return segment(y=np.asarray(y, dtype=np.float32), sr=spec.sample_rate, params=spec.segment)[1]
    return clip_segments(y=y, sr=spec.sample_rate, segment_params=spec.segment, vad_params=spec.vad)
