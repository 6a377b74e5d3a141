"""Stereo bleed: windows of a channel that are a scaled, delayed copy of another channel's audio.

On many stereo recordings each channel carries a faint copy of the other side (crosstalk, a −25 to
−35 dB bleed, or line echo, possibly delayed). Silero hears that copy as speech, and a segmenter
would give the other speaker's words to this channel's speaker. :class:`BleedDetector` marks, per
VAD window, the windows whose power is mostly explained by the other channel: for window ``x`` of
channel ``c`` and each other channel ``o``, over delays ``d`` in ``[0, max_delay]`` samples, the
squared normalised correlation

    rho²(d) = <x, o_d>² / (|x|² |o_d|²),   o_d = o's samples d earlier than x's,

is the share of ``x``'s power that the best scaled copy of ``o_d`` explains. A window is bleed
when that share reaches ``share`` for some delay at which ``o_d`` is at least :data:`LOUDER` times
louder than ``x`` (the copy is the much fainter side). Own speech over the other side's bleed
(overtalk) keeps the share low and is not marked.

Clear copies also teach the coupling (gain and delay, per pair of channels); after
:data:`MIN_HITS` of them a window whose power is at most :data:`BLEED_MARGIN` times what the
learned copy of the other channel brings is bleed as well (a copy near the line floor correlates
too weakly to be seen window by window). Correlations are taken on pre-emphasised signals
(:data:`PRE_EMPHASIS`: independent low-frequency line noise on the two channels would otherwise
correlate by chance), the coupling rule on plain energies. One FFT per window, batched over a
block's windows; decisions and learning go in window order and each window sees only its own
samples and the ``max_delay`` before it, so any split of the same audio into blocks gives the same
decisions.
"""

from __future__ import annotations

import numpy as np

from models.errors import ParameterError

#: Both channels are pre-emphasised (``x[n] - PRE_EMPHASIS * x[n - 1]``) before correlating.
PRE_EMPHASIS = 0.97
#: A copy counts only where the other channel is at least this many times louder (10 dB): bleed and
#: echo are 25-35 dB down, two people talking at once are not.
LOUDER = 10.0
#: The learned coupling is used after this many clear copies.
MIN_HITS = 5
#: Once a channel's coupling to another is learned, a window whose power is at most this many times
#: the power the copy would bring (6 dB) is bleed too, however noisy ...
BLEED_MARGIN = 4.0
#: ... with the coupling's gain a running mean (in dB) of the clear copies' gains at this rate.
GAIN_ALPHA = 0.1


class BleedDetector:
    """Per-window bleed decisions for ``channels`` aligned streams cut into windows of ``window``."""

    def __init__(self, *, channels: int, window: int, max_delay: int, share: float) -> None:
        if channels < 1 or window < 1:
            raise ParameterError(f"channels={channels} and window={window} must be >= 1")
        if max_delay < 0:
            raise ParameterError(f"max_delay={max_delay} samples must be >= 0")
        if not 0 < share <= 1:
            raise ParameterError(f"share={share!r} must be in (0, 1]")
        self.channels, self.window, self.max_delay, self.share = channels, window, max_delay, share
        self.nfft = 1 << int(np.ceil(np.log2(window + max_delay)))
        self._past = np.zeros((channels, max_delay + 1), dtype=np.float32)  # the samples before the next window
        # the coupling learned from clear copies: gain (dB, running mean) and lag offset, per (channel, other)
        self._gain_db: list[list[float | None]] = [[None] * channels for _ in range(channels)]
        self._lag = [[0] * channels for _ in range(channels)]
        self._hits = [[0] * channels for _ in range(channels)]

    def _energies(self, span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``span`` ``(channels, k, d + w)`` -> ``|x|²`` ``(channels, k)`` of each window (the last ``w``
        samples) and ``|o_m|²`` ``(channels, k, d + 1)`` of the ``w`` samples from offset ``m``."""
        d, w = self.max_delay, self.window
        c_n, k = span.shape[:2]
        cs = np.concatenate([np.zeros((c_n, k, 1)), np.cumsum(span * span, axis=2)], axis=2)
        return cs[:, :, d + w] - cs[:, :, d], cs[:, :, w : w + d + 1] - cs[:, :, : d + 1]

    def windows(self, body: np.ndarray) -> np.ndarray:
        """``body`` ``(channels, k, window)``: the next ``k`` windows -> ``(channels, k)`` bool (bleed)."""
        c_n, k, w = body.shape
        if c_n != self.channels or w != self.window:
            raise ParameterError(f"body shape {body.shape} must be ({self.channels}, k, {self.window})")
        out = np.zeros((c_n, k), dtype=bool)
        d = self.max_delay
        seq = np.concatenate([self._past, body.reshape(c_n, k * w)], axis=1).astype(np.float64)
        self._past = seq[:, seq.shape[1] - d - 1 :].astype(np.float32)
        if k == 0 or c_n < 2:
            return out
        # pre-emphasis whitens the line floor (independent pink noise on two channels correlates
        # by chance over a short window) and weighs the speech band
        raw, seq = seq[:, 1:], seq[:, 1:] - PRE_EMPHASIS * seq[:, :-1]
        # window i of each channel with the d samples before it: (channels, k, d + w)
        span = np.lib.stride_tricks.sliding_window_view(seq, d + w, axis=1)[:, ::w][:, :k]
        # the coupling rule compares plain energies (pre-emphasis lifts the line floor against speech)
        ex_raw, ey_raw = self._energies(np.lib.stride_tricks.sliding_window_view(raw, d + w, axis=1)[:, ::w][:, :k])
        x = span[:, :, d:]
        fx = np.fft.rfft(x, self.nfft, axis=2)
        fy = np.fft.rfft(span, self.nfft, axis=2)
        ex, ey = self._energies(span)
        rho2, gain2, best = {}, {}, {}
        for c in range(c_n):
            for o in range(c_n):
                if o != c:
                    # sum_n x_c[n] * span_o[n + m], m = 0..d: the other channel delay d - m before x_c
                    xc = np.fft.irfft(np.conj(fx[c]) * fy[o], self.nfft, axis=1)[:, : d + 1]
                    r2 = np.square(xc) / np.maximum(ex[c][:, None] * ey[o], 1e-30)
                    r2[ey[o] < LOUDER * ex[c][:, None]] = 0.0  # the copy is the much fainter side
                    m = np.argmax(r2, axis=1)
                    rows = np.arange(k)
                    rho2[c, o], best[c, o] = r2[rows, m].tolist(), m.tolist()
                    gain2[c, o] = (np.square(xc[rows, m]) / np.maximum(np.square(ey[o][rows, m]), 1e-30)).tolist()
        exl, eyl = ex_raw.tolist(), ey_raw.tolist()
        for i in range(k):  # in window order: the learned coupling only uses earlier windows
            for (c, o), r2l in rho2.items():
                if exl[c][i] <= 0:
                    continue
                if r2l[i] >= self.share:  # a clear copy: bleed, and it teaches the coupling
                    out[c, i] = True
                    g = 10 * np.log10(max(gain2[c, o][i], 1e-30))
                    old = self._gain_db[c][o]
                    self._gain_db[c][o] = g if old is None else old + GAIN_ALPHA * (g - old)
                    self._lag[c][o] = best[c, o][i]
                    self._hits[c][o] += 1
                elif self._hits[c][o] >= MIN_HITS:  # the copy, at the learned gain and delay, is most of it
                    copy = eyl[o][i][self._lag[c][o]] * 10 ** (self._gain_db[c][o] / 10)  # type: ignore[operator]
                    out[c, i] |= exl[c][i] <= BLEED_MARGIN * copy
        return out
