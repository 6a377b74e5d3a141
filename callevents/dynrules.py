"""Conversation-dynamics settings and their alert rules (pure; schema: :mod:`callevents.schema`).

:class:`DynamicsSettings` says what the dynamics tracker (``producer.dynamics``) counts and
publishes: silences (no channel speaking) of at least ``silence_min_s``, overtalk (two or more
channels speaking) of at least ``overtalk_min_s``, interruptions (a channel that starts while
another is mid-utterance, the overlap lasting ``overtalk_min_s``; the other *yielded* when it
stopped within ``yield_s`` of the onset), and a ``dynamics`` event every ``every_s`` seconds.

Three alert rules, in the ``alert_opened``/``alert_closed`` shape of the label rules:

* ``dead_air`` (channel :data:`CALL_CHANNEL`): opens when a silence reaches ``dead_air_s``
  (score: the silence's seconds so far), closes when someone speaks again. ``dead_air_s = 0``: off.
* ``raised_voice`` (the speaker's channel; ``producer.loudness``): opens when the speaker's speech
  has been at least ``raise_db`` above their own baseline level for ``raised_voice_s`` seconds of
  speech in a row (score: dB above the baseline), closes at their next speech that is not.
  ``raised_voice_s = 0``: off.
* ``interruptions`` (the interrupting channel): opens when a channel made at least
  ``interruptions_open`` interruptions within the last ``interruptions_window_s`` seconds, closes
  when at most ``interruptions_close`` remain in that window. ``interruptions_open = 0``: off.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from callevents.schema import ALERT_CLOSED, ALERT_OPENED

#: The ``channel`` of call-wide alerts (dead air: no channel is speaking).
CALL_CHANNEL = "call"
DEAD_AIR_RULE = "dead_air"
INTERRUPTIONS_RULE = "interruptions"
RAISED_VOICE_RULE = "raised_voice"


@dataclass(frozen=True)
class DynamicsSettings:
    silence_min_s: float = 3.0
    overtalk_min_s: float = 0.5
    yield_s: float = 1.0
    every_s: float = 5.0
    dead_air_s: float = 20.0
    interruptions_open: int = 3
    interruptions_close: int = 1
    interruptions_window_s: float = 60.0
    raise_db: float = 6.0
    raised_voice_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("silence_min_s", "overtalk_min_s", "yield_s", "every_s", "dead_air_s", "interruptions_window_s",
                     "raise_db", "raised_voice_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"dynamics {name} must be a number >= 0, got {value!r}")
        if self.every_s <= 0 or self.interruptions_window_s <= 0:
            raise ValueError("dynamics every_s and interruptions_window_s must be > 0")
        for name in ("interruptions_open", "interruptions_close"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"dynamics {name} must be an integer >= 0, got {value!r}")
        if self.interruptions_open and self.interruptions_close >= self.interruptions_open:
            raise ValueError(f"dynamics needs interruptions_close < interruptions_open, got "
                             f"{self.interruptions_close} and {self.interruptions_open}")


def opened_alert(rule: str, channel: str, *, at_s: float, window_s: float, score: float,
                 threshold: float) -> dict[str, Any]:
    return {"kind": ALERT_OPENED, "rule": rule, "channel": channel, "since_s": round(at_s, 3),
            "window_s": window_s, "score": round(score, 3), "threshold": threshold, "labels": []}


def closed_alert(opened: dict[str, Any], *, at_s: float, score: float, threshold: float, reason: str) -> dict[str, Any]:
    return {**opened, "kind": ALERT_CLOSED, "until_s": round(at_s, 3), "score": round(score, 3),
            "threshold": threshold, "reason": reason}


class DynamicsAlerts:
    """The two rules above, driven by the tracker as it settles the call's time line."""

    def __init__(self, settings: DynamicsSettings) -> None:
        self.settings = settings
        self.open: dict[tuple[str, str], dict[str, Any]] = {}
        self._onsets: dict[str, deque[float]] = {}

    def silence(self, *, start_s: float, at_s: float, ended: bool, reason: str = "speech") -> list[dict[str, Any]]:
        """A silence from ``start_s`` lasts until ``at_s`` (``ended``: someone speaks at ``at_s``)."""
        s, key = self.settings, (DEAD_AIR_RULE, CALL_CHANNEL)
        if not s.dead_air_s:
            return []
        length = at_s - start_s
        if key not in self.open and length >= s.dead_air_s:
            self.open[key] = opened_alert(DEAD_AIR_RULE, CALL_CHANNEL, at_s=start_s + s.dead_air_s,
                                          window_s=s.dead_air_s, score=s.dead_air_s, threshold=s.dead_air_s)
            if not ended:
                return [self.open[key]]
            return [self.open[key], closed_alert(self.open.pop(key), at_s=at_s, score=length, threshold=s.dead_air_s,
                                            reason=reason)]
        if key in self.open and ended:
            return [closed_alert(self.open.pop(key), at_s=at_s, score=length, threshold=s.dead_air_s, reason=reason)]
        return []

    def interruption(self, channel: str, *, at_s: float) -> list[dict[str, Any]]:
        """``channel`` interrupted at ``at_s`` (calls in time order)."""
        s = self.settings
        if not s.interruptions_open:
            return []
        onsets = self._onsets.setdefault(channel, deque())
        onsets.append(at_s)
        return self._interruptions(channel, at_s)

    def _interruptions(self, channel: str, at_s: float) -> list[dict[str, Any]]:
        s, key = self.settings, (INTERRUPTIONS_RULE, channel)
        onsets = self._onsets.get(channel, deque())
        while onsets and onsets[0] <= at_s - s.interruptions_window_s:
            onsets.popleft()
        n = len(onsets)
        if key not in self.open and n >= s.interruptions_open:
            self.open[key] = opened_alert(INTERRUPTIONS_RULE, channel, at_s=at_s, window_s=s.interruptions_window_s,
                                    score=n, threshold=s.interruptions_open)
            return [self.open[key]]
        if key in self.open and n <= s.interruptions_close:
            return [closed_alert(self.open.pop(key), at_s=at_s, score=n, threshold=s.interruptions_close,
                                 reason="score")]
        return []

    def tick(self, *, at_s: float) -> list[dict[str, Any]]:
        """Time passed: interruption alerts whose window emptied close."""
        out: list[dict[str, Any]] = []
        for rule, channel in list(self.open):
            if rule == INTERRUPTIONS_RULE:
                out.extend(self._interruptions(channel, at_s))
        return out

    def finish(self, *, at_s: float) -> list[dict[str, Any]]:
        out = [closed_alert(ev, at_s=at_s, score=float(ev["score"]), threshold=float(ev["threshold"]),
                            reason="call_ended") for ev in self.open.values()]
        self.open.clear()
        return out
