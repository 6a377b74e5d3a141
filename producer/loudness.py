"""Loudness per speaker and "raised voice" against the speaker's own baseline; speaking rate.

**Speaking rate**: syllable nuclei per second of speech. The envelope of a stretch (10 ms frames'
level in dB of the stretch band-passed to :data:`NUCLEUS_BAND_HZ`, where vowels are loud and
fricatives and low hum are not; smoothed over 30 ms) has a peak per syllable nucleus: peaks at
least :data:`NUCLEUS_PROMINENCE_DB` above the dips on either side, :data:`NUCLEUS_MIN_GAP_S` apart
and within :data:`NUCLEUS_RANGE_DB` of the stretch's loudest frame (voiced, not breath or noise).
Tuned on CREMA-D's read sentences against their texts' syllables (``python -m bench.ratescore``).
**Relative rate** (:meth:`Loudness.rate_rel`): the rate of the speaker's latest speech (the newest
stretches holding at least :data:`RATE_RECENT_S` seconds) over the rate of all their speech before
it (their running baseline), once that holds :data:`RATE_WARMUP_S` seconds; 1.0 is their usual pace.

The level of a stretch of speech is its K-weighted mean square (ITU-R BS.1770: a +4 dB high shelf
above ~1.7 kHz, then a 38 Hz high-pass), as ``-0.691 + 10 log10(ms)`` (LKFS; the filters are
designed for the model's sample rate). Per channel the tracker keeps the energy sum and
seconds of all speech so far (the mean level) and of the speech that was not raised: the speaker's
**baseline** is the mean level of the latter before the stretch, once it holds ``baseline_s``
seconds. A stretch at least ``raise_db`` above the baseline is *raised* (and stays out of the
baseline); raised stretches in a row add up, and once they reach ``sustain_s`` the ``raised_voice``
alert opens (closed by the next stretch that is not raised, or at the call's end). A stretch is the
new speech of one segment: a short utterance, or up to ``hop_s`` of a long one.
"""

from __future__ import annotations

import functools
import math
from collections import deque

import numpy as np
import scipy.signal

from callevents.dynrules import RAISED_VOICE_RULE, closed_alert, opened_alert

#: Levels below this (LKFS) are not speech worth measuring (digital silence, a muted line).
FLOOR_LKFS = -70.0
#: Syllable nuclei: the band (Hz) whose level envelope is searched (vowel formants, telephone band),
#: its smoothing (10 ms frames), a peak's prominence (dB), the least gap between peaks (s), and how far
#: below the stretch's loudest frame a peak may be (dB). Tuned on CREMA-D (bench/ratescore.py).
NUCLEUS_BAND_HZ = (500.0, 2000.0)
NUCLEUS_SMOOTH_FRAMES = 3
NUCLEUS_PROMINENCE_DB = 2.0
NUCLEUS_MIN_GAP_S = 0.08
NUCLEUS_RANGE_DB = 25.0
#: Relative rate: seconds of the speaker's latest speech it measures, and of earlier speech (the
#: baseline) it needs first.
RATE_RECENT_S = 10.0
RATE_WARMUP_S = 10.0


@functools.lru_cache(maxsize=8)
def _nucleus_band(sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(b, a) of the 4th-order Butterworth band-pass :data:`NUCLEUS_BAND_HZ` at ``sr`` Hz (as one
    filter: cheaper than second-order sections and well conditioned for a band this wide)."""
    lo, hi = NUCLEUS_BAND_HZ
    b, a = scipy.signal.butter(2, [lo, min(hi, 0.45 * sr)], btype="bandpass", fs=sr)
    return b, a


def syllable_nuclei(samples: np.ndarray, *, sr: int) -> int:
    """How many syllable nuclei ``samples`` (speech) hold (see the module docstring)."""
    hop = sr // 100
    n = samples.size // hop
    if n < 3:
        return 0
    frames = scipy.signal.lfilter(*_nucleus_band(sr), samples[: n * hop].astype(np.float64)).reshape(n, hop)
    env = 10 * np.log10(np.einsum("ij,ij->i", frames, frames) / hop + 1e-12)
    env = np.convolve(env, np.ones(NUCLEUS_SMOOTH_FRAMES) / NUCLEUS_SMOOTH_FRAMES, mode="same")
    peaks, _ = scipy.signal.find_peaks(env, prominence=NUCLEUS_PROMINENCE_DB, distance=round(NUCLEUS_MIN_GAP_S * 100),
                                       height=float(env.max()) - NUCLEUS_RANGE_DB)
    return int(peaks.size)


def k_weighting(*, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """One (b, a) of the two BS.1770 K-weighting biquads in series at ``sr`` Hz."""
    g, q, fc = 3.99984385397, 0.7071752369554193, 1681.974450955533
    a_, w0 = 10 ** (g / 40), 2 * math.pi * fc / sr
    alpha, cw, sa = math.sin(w0) / (2 * q), math.cos(w0), math.sqrt(10 ** (g / 40))
    b1 = [a_ * ((a_ + 1) + (a_ - 1) * cw + 2 * sa * alpha), -2 * a_ * ((a_ - 1) + (a_ + 1) * cw),
          a_ * ((a_ + 1) + (a_ - 1) * cw - 2 * sa * alpha)]
    a1 = [(a_ + 1) - (a_ - 1) * cw + 2 * sa * alpha, 2 * ((a_ - 1) - (a_ + 1) * cw),
          (a_ + 1) - (a_ - 1) * cw - 2 * sa * alpha]
    q2, fc2 = 0.5003270373238773, 38.13547087602444
    w2 = 2 * math.pi * fc2 / sr
    al2, c2 = math.sin(w2) / (2 * q2), math.cos(w2)
    b2, a2 = [(1 + c2) / 2, -(1 + c2), (1 + c2) / 2], [1 + al2, -2 * c2, 1 - al2]
    return np.convolve(b1, b2), np.convolve(a1, a2)


def lkfs(mean_square: float) -> float:
    return -0.691 + 10 * math.log10(max(mean_square, 1e-12))


class Loudness:
    def __init__(self, *, channels: list[str], sr: int, raise_db: float, sustain_s: float,
                 open_alerts: dict[tuple[str, str], dict], baseline_s: float = 5.0) -> None:
        self.names, self.sr = channels, sr
        self.raise_db, self.sustain_s, self.baseline_s = raise_db, sustain_s, baseline_s
        self.b, self.a = k_weighting(sr=sr)
        n = len(channels)
        self.energy, self.seconds = [0.0] * n, [0.0] * n  # all speech (the mean level)
        self.base_energy, self.base_seconds = [0.0] * n, [0.0] * n  # speech that was not raised (the baseline)
        self.raised_s = [0.0] * n  # speech seconds raised above the baseline
        self.nuclei = [0] * n  # syllable nuclei counted
        self._recent: list[deque[tuple[int, float]]] = [deque() for _ in range(n)]  # latest stretches' (nuclei, s)
        self._recent_n, self._recent_s = [0] * n, [0.0] * n  # their sums
        self._run = [0.0] * n  # raised seconds in a row
        self.open = open_alerts  # shared with callevents.dynrules.DynamicsAlerts (closed at the call's end there)

    def add(self, channel: int, samples: np.ndarray, *, start_s: float) -> list[dict]:
        """Speech of ``channel`` (model rate) starting at ``start_s``; the alert events it causes."""
        if samples.size < self.sr // 100:
            return []
        y = scipy.signal.lfilter(self.b, self.a, samples.astype(np.float64))
        ms, secs = float(np.mean(y * y)), samples.size / self.sr
        level = lkfs(ms)
        if level < FLOOR_LKFS:
            return []
        events: list[dict] = []
        raised = False
        if self.base_seconds[channel] >= self.baseline_s:
            base = lkfs(self.base_energy[channel] / self.base_seconds[channel])
            key, name = (RAISED_VOICE_RULE, self.names[channel]), self.names[channel]
            if level >= base + self.raise_db:
                raised = True
                self.raised_s[channel] += secs
                self._run[channel] += secs
                if self.sustain_s and key not in self.open and self._run[channel] >= self.sustain_s:
                    self.open[key] = opened_alert(RAISED_VOICE_RULE, name, at_s=start_s + secs,
                                                  window_s=self.sustain_s, score=level - base,
                                                  threshold=self.raise_db)
                    events.append(self.open[key])
            else:
                self._run[channel] = 0.0
                if key in self.open:
                    events.append(closed_alert(self.open.pop(key), at_s=start_s, score=level - base,
                                               threshold=self.raise_db, reason="score"))
        self.energy[channel] += ms * secs
        self.seconds[channel] += secs
        self._count(channel, syllable_nuclei(samples, sr=self.sr), secs)
        if not raised:
            self.base_energy[channel] += ms * secs
            self.base_seconds[channel] += secs
        return events

    def _count(self, channel: int, nuclei: int, secs: float) -> None:
        self.nuclei[channel] += nuclei
        recent = self._recent[channel]
        recent.append((nuclei, secs))
        self._recent_n[channel] += nuclei
        self._recent_s[channel] += secs
        while len(recent) > 1 and self._recent_s[channel] - recent[0][1] >= RATE_RECENT_S:
            k, s = recent.popleft()
            self._recent_n[channel] -= k
            self._recent_s[channel] -= s

    def rate_rel(self, channel: int) -> float | None:
        """The rate of the channel's latest :data:`RATE_RECENT_S` s of speech over the rate of its
        speech before them (None: less than :data:`RATE_WARMUP_S` s of that, or no nuclei in it)."""
        base_s = self.seconds[channel] - self._recent_s[channel]
        base_n = self.nuclei[channel] - self._recent_n[channel]
        if base_s < RATE_WARMUP_S or base_n <= 0 or self._recent_s[channel] < RATE_RECENT_S:
            return None
        return round(self._recent_n[channel] / self._recent_s[channel] / (base_n / base_s), 2)

    def rate(self, channel: int) -> float | None:
        """Syllable nuclei per second of the channel's measured speech (None: none measured)."""
        return round(self.nuclei[channel] / self.seconds[channel], 2) if self.seconds[channel] else None

    def level_db(self, channel: int) -> float | None:
        """The mean K-weighted level (LKFS) of the channel's speech so far (None: none measured)."""
        return round(lkfs(self.energy[channel] / self.seconds[channel]), 1) if self.seconds[channel] else None
