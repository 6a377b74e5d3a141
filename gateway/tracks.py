"""Aligning the platforms' tracks of one call: per-track sample positions (G.711 decoding is models.audio's).

:class:`Aligner` keeps the tracks of one call on one time line: each chunk lands at its position
(a timestamp or a sample count); a gap is silence, a late or duplicated chunk is dropped (it never
shifts time), and a track that falls more than ``max_lag`` samples behind the other is filled with
silence so the call goes on.
"""

from __future__ import annotations

import numpy as np


class GapError(ValueError):
    """A chunk too far ahead of the time line."""


class Aligner:
    def __init__(self, channels: int, *, max_lag: int, max_gap: int) -> None:
        self.channels, self.max_lag, self.max_gap = channels, max_lag, max_gap
        self._parts: list[list[np.ndarray]] = [[] for _ in range(channels)]
        self._written = [0] * channels  # next sample position per track
        self._emitted = 0  # samples handed out (every track)
        self.dropped = 0  # samples of late or duplicated chunks
        self.filled = 0  # samples of silence inserted

    def add(self, channel: int, position: int, samples: np.ndarray) -> None:
        """Put ``samples`` of track ``channel`` at sample ``position``."""
        written = self._written[channel]
        end = position + len(samples)
        if end <= written:
            self.dropped += len(samples)
            return
        if position < written:
            self.dropped += written - position
            samples, position = samples[written - position :], written
        gap = position - written
        if gap > self.max_gap:
            raise GapError(f"a chunk at sample {position} is {gap} samples past track {channel}'s end")
        if gap:
            self._parts[channel].append(np.zeros(gap, dtype=np.float32))
            self.filled += gap
        self._parts[channel].append(samples.astype(np.float32, copy=False))
        self._written[channel] = position + len(samples)

    def _pad(self, channel: int, upto: int) -> None:
        gap = upto - self._written[channel]
        if gap > 0:
            self._parts[channel].append(np.zeros(gap, dtype=np.float32))
            self._written[channel] = upto
            self.filled += gap

    def pending(self) -> int:
        return min(self._written) - self._emitted

    def take(self, *, final: bool = False) -> np.ndarray | None:
        """The ``(channels, n)`` block every track has reached (all of it when ``final``), or None."""
        lead = max(self._written)
        for ch in range(self.channels):
            if final or lead - self._written[ch] > self.max_lag:
                self._pad(ch, lead if final else lead - self.max_lag)
        n = min(self._written) - self._emitted
        if n <= 0:
            return None
        out = np.empty((self.channels, n), dtype=np.float32)
        for ch in range(self.channels):
            joined = np.concatenate(self._parts[ch]) if len(self._parts[ch]) > 1 else self._parts[ch][0]
            out[ch] = joined[:n]
            self._parts[ch] = [joined[n:]] if len(joined) > n else []
        self._emitted += n
        return out
