"""Incremental resampling and segmenting of multi-channel blocks, exactly as the model spec cuts.

Two cuts, chosen by the bundle's ``vad``:

- Silero (``vad.kind == "silero"``, bundles 2.0 and later): :class:`UtteranceSegmenter`, per-channel
  utterance-aligned segments from :class:`models.utterances.UtteranceCutter` (the function training
  cuts its clips with); each :class:`Cut` is one channel's segment, already judged speech.
- The energy gate (older bundles): :class:`Segmenter`, windows of ``spec.segment.window_s`` every
  ``hop_s`` across all channels, equal to :func:`models.features.segment` on the whole (resampled)
  signal; after the last full window, one zero-padded tail window when at least ``min_s`` remains.
  The session gates each channel's window with :func:`models.features.voiced`.

Resampling uses one multi-channel ``soxr.ResampleStream`` (HQ), which keeps the channels aligned
sample for sample. :func:`make_segmenter` picks the cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from models.bundle import Spec
from models.utterances import Utterance, UtteranceCutter
from models.vad import SileroParams


@dataclass(frozen=True)
class Cut:
    """One window position across all channels (``channel`` None: ``samples`` is ``(channels,
    window)`` float32, still to be gated), or one channel's speech segment (``samples`` ``(1,
    window)``; ``speech_start``/``speech_end``: where the VAD heard speech in it)."""

    seq: int
    start: int  # sample offset at the model rate
    end: int  # one past the last real (non-padding) sample
    samples: np.ndarray
    channel: int | None = None
    speech_start: int = 0
    speech_end: int = 0


class _Resampling:
    def __init__(self, *, spec: Spec, in_rate: int, channels: int) -> None:
        self.rate = spec.sample_rate
        self.channels = channels
        self._resampler = (None if in_rate == self.rate else
                           soxr.ResampleStream(in_rate, self.rate, channels, dtype="float32", quality="HQ"))

    def _resample(self, block: np.ndarray, *, last: bool) -> np.ndarray:
        if self._resampler is None:
            return np.ascontiguousarray(block, dtype=np.float32)
        out = self._resampler.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32), last=last)
        return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, self.channels).T)

    def _flush(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros((self.channels, 0), dtype=np.float32)
        return self._resample(np.zeros((self.channels, 0), dtype=np.float32), last=True)


class UtteranceSegmenter(_Resampling):
    """Per-channel utterance segments (:mod:`models.utterances`), numbered in the order they are cut."""

    def __init__(self, *, spec: Spec, in_rate: int, channels: int) -> None:
        super().__init__(spec=spec, in_rate=in_rate, channels=channels)
        assert isinstance(spec.vad, SileroParams)
        self.cutter = UtteranceCutter(channels=channels, sr=self.rate, segment=spec.segment, params=spec.vad)
        self._seq = 0

    @property
    def samples_seen(self) -> int:
        return self.cutter.samples_seen

    def _cuts(self, found: list[Utterance]) -> list[Cut]:
        out = []
        for u in found:
            out.append(Cut(self._seq, u.start, u.end, u.samples[None, :], u.channel, u.speech_start, u.speech_end))
            self._seq += 1
        return out

    def feed(self, block: np.ndarray) -> list[Cut]:
        """Add a ``(channels, n)`` block at the input rate; return the segments it completes."""
        y = self._resample(block, last=False)
        return self._cuts(self.cutter.feed(y)) if y.shape[1] else []

    def finish(self) -> list[Cut]:
        y = self._flush()
        found = self.cutter.feed(y) if y.shape[1] else []
        return self._cuts(found + self.cutter.finish())


def make_segmenter(*, spec: Spec, in_rate: int, channels: int) -> Segmenter | UtteranceSegmenter:
    """The cut the bundle's spec asks for (see the module docstring)."""
    if isinstance(spec.vad, SileroParams):
        return UtteranceSegmenter(spec=spec, in_rate=in_rate, channels=channels)
    return Segmenter(spec=spec, in_rate=in_rate, channels=channels)


class Segmenter(_Resampling):
    def __init__(self, *, spec: Spec, in_rate: int, channels: int) -> None:
        super().__init__(spec=spec, in_rate=in_rate, channels=channels)
        self.window, self.hop, self.min_len = spec.segment.samples(self.rate)
        self._buf = np.zeros((channels, 0), dtype=np.float32)
        self._buf_start = 0  # sample offset of _buf[:, 0]
        self._total = 0  # samples received so far (model rate)
        self._pos = 0  # next window start
        self._seq = 0
        self._last_end: int | None = None  # end of the last full window emitted

    @property
    def samples_seen(self) -> int:
        return self._total

    def _append(self, y: np.ndarray) -> None:
        if y.shape[1]:
            self._buf = np.concatenate([self._buf, y], axis=1) if self._buf.shape[1] else y
            self._total += y.shape[1]

    def _take(self, start: int, length: int) -> np.ndarray:
        out = np.zeros((self.channels, self.window), dtype=np.float32)
        out[:, :length] = self._buf[:, start - self._buf_start : start - self._buf_start + length]
        return out

    def _full_windows(self) -> list[Cut]:
        cuts = []
        while self._pos + self.window <= self._total:
            cuts.append(Cut(self._seq, self._pos, self._pos + self.window, self._take(self._pos, self.window)))
            self._last_end = self._pos + self.window
            self._seq += 1
            self._pos += self.hop
        drop = min(self._pos, self._total) - self._buf_start
        if drop > 0:
            self._buf = self._buf[:, drop:]
            self._buf_start += drop
        return cuts

    def feed(self, block: np.ndarray) -> list[Cut]:
        """Add a ``(channels, n)`` block at the input rate; return the windows it completes."""
        self._append(self._resample(block, last=False))
        return self._full_windows()

    def finish(self) -> list[Cut]:
        """Flush the resampler and cut the final (padded) window, if any."""
        self._append(self._flush())
        cuts = self._full_windows()
        if self._last_end == self._total:
            return cuts
        remaining = self._total - self._pos
        if remaining >= self.min_len and remaining > 0:
            cuts.append(Cut(self._seq, self._pos, self._total, self._take(self._pos, remaining)))
            self._seq += 1
        return cuts
