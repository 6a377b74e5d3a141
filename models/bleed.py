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
import scipy.fft

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
        self._pairs = [(c, o) for c in range(channels) for o in range(channels) if o != c]
        self._own = np.array([c for c, _ in self._pairs], dtype=np.intp)  # each pair's channel ...
        self._other = np.array([o for _, o in self._pairs], dtype=np.intp)  # ... and the other one
        self._base = np.arange(64) * window  # window starts of a block (blocks of up to 64 windows)

    def windows(self, body: np.ndarray) -> np.ndarray:
        """``body`` ``(channels, k, window)``: the next ``k`` windows -> ``(channels, k)`` bool (bleed)."""
        c_n, k, w = body.shape
        if c_n != self.channels or w != self.window:
            raise ParameterError(f"body shape {body.shape} must be ({self.channels}, k, {self.window})")
        out = np.zeros((c_n, k), dtype=bool)
        d = self.max_delay
        seq = np.concatenate([self._past, body.reshape(c_n, k * w)], axis=1, dtype=np.float64)
        self._past = seq[:, seq.shape[1] - d - 1 :].astype(np.float32)
        if k == 0 or c_n < 2:
            return out
        # pre-emphasis whitens the line floor (independent pink noise on two channels correlates
        # by chance over a short window) and weighs the speech band
        pre = seq[:, 1:] - PRE_EMPHASIS * seq[:, :-1]
        # running sums of squares: window i of a channel is sig[i*w + d :][:w], the other channel's
        # candidate copy at offset m (m = 0..d, delay d - m) is sig[i*w + m :][:w]
        cs_pre = _cumulative_power(pre)
        base = self._base[:k] if k <= len(self._base) else np.arange(k) * w
        ex = cs_pre[:, base + d + w] - cs_pre[:, base + d]  # (channels, k)
        whole = cs_pre[:, base + d + w] - cs_pre[:, base]  # the span's energy: at least any offset's
        pairs = self._pairs
        found = self._copies(pre, cs_pre, ex, whole, pairs)
        if not found and not any(self._hits[c][o] >= MIN_HITS for c, o in pairs):
            return out  # no clear copy and no coupling learned yet: nothing is bleed, nothing is learned
        cs_raw = _cumulative_power(seq[:, 1:])
        exl = (cs_raw[:, base + d + w] - cs_raw[:, base + d]).tolist()  # (channels, k)
        for i in range(k):  # in window order: the learned coupling only uses earlier windows
            for c, o in pairs:
                if exl[c][i] <= 0:
                    continue
                r2, m, gain2 = found.get((c, o, i), (0.0, 0, 0.0))
                if r2 >= self.share:  # a clear copy: bleed, and it teaches the coupling
                    out[c, i] = True
                    g = 10 * np.log10(max(gain2, 1e-30))
                    old = self._gain_db[c][o]
                    self._gain_db[c][o] = g if old is None else old + GAIN_ALPHA * (g - old)
                    self._lag[c][o] = m
                    self._hits[c][o] += 1
                elif self._hits[c][o] >= MIN_HITS:  # the copy, at the learned gain and delay, is most of it
                    at = i * w + self._lag[c][o]
                    copy = float(cs_raw[o, at + w] - cs_raw[o, at]) * 10 ** (self._gain_db[c][o] / 10)  # type: ignore[operator]
                    out[c, i] |= exl[c][i] <= BLEED_MARGIN * copy
        return out

    def _copies(self, pre: np.ndarray, cs_pre: np.ndarray, ex: np.ndarray, whole: np.ndarray,
                pairs: list[tuple[int, int]]) -> dict[tuple[int, int, int], tuple[float, int, float]]:
        """(c, o, window) -> (best share rho², its offset m, the copy's power gain there) for the windows of
        channel ``c`` where channel ``o`` is at least :data:`LOUDER` times louder at some offset (elsewhere the
        share is 0 by definition; ``whole``, the energy of ``o``'s whole span, rules most windows out at once).
        One FFT correlation per such window, every pair's in one batch."""
        d, w = self.max_delay, self.window
        own, other = self._own[: len(pairs)], self._other[: len(pairs)]
        candidate = (whole[other] >= LOUDER * ex[own]) & (ex[own] > 0)  # (pairs, k), every pair at once
        if not candidate.any():
            return {}
        picked = []
        for (c, o), cand in zip(pairs, candidate, strict=True):
            rows = np.nonzero(cand)[0]
            if rows.size:
                starts = (rows * w)[:, None] + np.arange(d + 1)
                ey = cs_pre[o, starts + w] - cs_pre[o, starts]  # (r, d + 1): o's w samples at each offset
                louder = ey >= LOUDER * ex[c][rows, None]
                keep = louder.any(axis=1)
                if keep.any():
                    picked.append((c, o, rows[keep], ey[keep], louder[keep]))
        if not picked:
            return {}
        rows_all = np.concatenate([p[2] for p in picked])
        x = np.concatenate([pre[c, (rows * w + d)[:, None] + np.arange(w)] for c, _, rows, _, _ in picked])
        span = np.concatenate([pre[o, (rows * w)[:, None] + np.arange(d + w)] for _, o, rows, _, _ in picked])
        ey, louder = np.concatenate([p[3] for p in picked]), np.concatenate([p[4] for p in picked])
        ex_x = np.concatenate([ex[c][rows] for c, _, rows, _, _ in picked])
        # sum_n x_c[n] * span_o[n + m], m = 0..d: the other channel delay d - m before x_c
        xc = scipy.fft.irfft(np.conj(scipy.fft.rfft(x, self.nfft, axis=1)) * scipy.fft.rfft(span, self.nfft, axis=1),
                             self.nfft, axis=1)[:, : d + 1]
        r2 = np.square(xc) / np.maximum(ex_x[:, None] * ey, 1e-30)
        r2[~louder] = 0.0  # the copy is the much fainter side
        m = np.argmax(r2, axis=1)
        at = np.arange(rows_all.size)
        best, gain2 = r2[at, m].tolist(), (np.square(xc[at, m]) / np.maximum(np.square(ey[at, m]), 1e-30)).tolist()
        owners = [(c, o) for c, o, rows, _, _ in picked for _ in range(rows.size)]
        return {(c, o, i): (best[j], mj, gain2[j])
                for j, ((c, o), i, mj) in enumerate(zip(owners, rows_all.tolist(), m.tolist(), strict=True))}


def _cumulative_power(sig: np.ndarray) -> np.ndarray:
    """``(channels, n)`` -> ``(channels, n + 1)`` running sums of squares from 0."""
    cs = np.zeros((sig.shape[0], sig.shape[1] + 1))
    np.cumsum(sig * sig, axis=1, out=cs[:, 1:])
    return cs
