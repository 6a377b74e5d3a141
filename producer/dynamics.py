"""Conversation dynamics of one call from its per-channel speech activity, live and bounded.

:class:`Dynamics` is fed, per channel, the speech the session's VAD already found (:meth:`speech`:
``[start_s, end_s)`` on the call's clock; overlapping or touching spans of a channel merge into
one utterance) and the call's clock (:meth:`advance`). Speech is known only some time after it is
spoken (a long utterance's first segment is cut ``window_s`` after its onset), so the tracker
*settles* the time line up to ``clock - lag_s``: whatever happened before that is final. It
sweeps the settled time line once, keeping only running totals, the open utterances and at most
:data:`MAX_EPISODES` silences and overtalks for the report (a 3 h call holds no more than that).

Per channel: talk seconds and share of the call. Per call: non-talk seconds (nobody speaks),
silences of at least ``silence_min_s`` (count, seconds, longest), and with two or more channels
overtalk (two or more speak: episodes of at least ``overtalk_min_s``, count and seconds) and
interruptions (a channel starts while another had already started: the overtalk episode that
follows, counted for the one who came in; the other *yielded* when it stopped within ``yield_s``).
Per channel also the speech's K-weighted level and the seconds spoken raised above the speaker's
own baseline, and the speaking rate, overall and of the latest speech relative to the speaker's own
earlier pace (:mod:`producer.loudness`, fed the new speech of each segment: :meth:`level`).
Mono calls have talk, silence and loudness only. Events (schema: :mod:`callevents.schema`): ``silence`` and
``overtalk`` when one ends, ``dynamics`` every ``every_s`` seconds, and the alerts of
:class:`callevents.dynrules.DynamicsAlerts`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from callevents.dynrules import DynamicsAlerts, DynamicsSettings
from callevents.schema import DYNAMICS, OVERTALK, SILENCE
from producer.loudness import Loudness

#: Silences and overtalks kept for the summary's time line (the counts go on beyond it).
MAX_EPISODES = 2000
#: Spans of one channel closer than this (seconds) are one utterance (the VAD's windows touch).
MERGE_S = 0.05
#: A channel that speaks again within this many seconds of its last utterance's end goes on with its
#: turn: for who-came-in-first (interruptions) its onset is the earlier one (the VAD may split an
#: utterance at a short dip; talk time still counts the pause as silence).
TURN_GAP_S = 0.5

Events = list[dict[str, Any]]


def _r(x: float) -> float:
    return round(float(x), 3)


class Dynamics:
    def __init__(self, *, channels: Sequence[str], lag_s: float, settings: DynamicsSettings | None = None,
                 sr: int = 8000) -> None:
        self.names = list(channels)
        self.settings = settings or DynamicsSettings()
        self.lag_s = lag_s
        self.alerts = DynamicsAlerts(self.settings)
        self.loudness = Loudness(channels=self.names, sr=sr, raise_db=self.settings.raise_db,
                                 sustain_s=self.settings.raised_voice_s, open_alerts=self.alerts.open)
        n = len(self.names)
        self._runs: list[deque[list[float]]] = [deque() for _ in range(n)]  # merged spans not yet settled
        self.talk_s = [0.0] * n
        self.pos = 0.0  # settled up to here
        self._active: list[float | None] = [None] * n  # onset of each channel's turn going on at pos
        self._last: list[tuple[float, float] | None] = [None] * n  # (onset, end) of its last utterance
        self._silence_from: float | None = 0.0
        self.silences = self.silence_s = 0.0
        self.silence_count = 0
        self.longest_silence = 0.0
        self.overtalk_count, self.overtalk_s = 0, 0.0
        self._overlap: dict[str, Any] | None = None
        self.interruptions = [0] * n
        self.yielded = [0] * n  # interruptions by this channel where the other stopped within yield_s
        self.episodes: dict[str, list[dict[str, Any]]] = {SILENCE: [], OVERTALK: []}
        self._next_every = self.settings.every_s
        self.finished = False

    # --- input ------------------------------------------------------------------------------------
    def speech(self, channel: int, *, start_s: float, end_s: float) -> None:
        """Channel ``channel`` spoke in ``[start_s, end_s)``; spans of a channel come in onset order."""
        start_s = max(start_s, self.pos)  # a late span: the settled part is final
        if end_s <= start_s:
            return
        runs = self._runs[channel]
        if runs and start_s <= runs[-1][1] + MERGE_S:
            runs[-1][1] = max(runs[-1][1], end_s)
        else:
            runs.append([start_s, end_s])

    def level(self, channel: int, samples: Any, *, start_s: float) -> Events:
        """Speech samples of ``channel`` (at ``sr``) from ``start_s``: its loudness (producer.loudness)."""
        return [] if self.finished else self.loudness.add(channel, samples, start_s=start_s)

    def advance(self, *, clock_s: float) -> Events:
        """The call's audio reached ``clock_s``: settle what is final; the events it causes."""
        return self._settle(clock_s - self.lag_s)

    def finish(self, *, duration_s: float) -> Events:
        """Input is over: settle the whole call, end the silence or overtalk going on, close alerts."""
        if self.finished:
            return []
        end = max(duration_s, self.pos)
        events = [e for e in self._settle(end) if not (e["kind"] == DYNAMICS and e["at_s"] == _r(end))]
        if self._silence_from is not None:
            events.extend(self._end_silence(end, at_end=True))
        if self._overlap is not None:
            events.extend(self._end_overlap(end, [c for c, a in enumerate(self._active) if a is not None]))
        events.append(self.snapshot(at_s=end))
        events.extend(self.alerts.finish(at_s=end))
        self.finished = True
        return events

    # --- the sweep --------------------------------------------------------------------------------
    def _settle(self, horizon: float) -> Events:
        events: Events = []
        if self.finished or horizon <= self.pos:
            return events
        while True:
            t = self._next_change(horizon)
            self._account(t)
            events.extend(self._every(t))
            if t >= horizon:
                break
            self._apply_changes(t)
            events.extend(self._transition(t))
        if self._silence_from is not None:
            events.extend(self.alerts.silence(start_s=self._silence_from, at_s=horizon, ended=False))
        events.extend(self.alerts.tick(at_s=horizon))
        return events

    def _next_change(self, horizon: float) -> float:
        t = horizon
        for c, runs in enumerate(self._runs):
            if not runs:
                continue
            edge = runs[0][1] if self._active[c] is not None else runs[0][0]
            t = min(t, max(edge, self.pos))
        return t

    def _account(self, t: float) -> None:
        dt = t - self.pos
        if dt > 0:
            for c, onset in enumerate(self._active):
                if onset is not None:
                    self.talk_s[c] += dt
            if self._silence_from is not None:
                self.silence_s += dt
        self.pos = max(self.pos, t)

    def _apply_changes(self, t: float) -> None:
        for c, runs in enumerate(self._runs):
            if not runs:
                continue
            onset = self._active[c]
            if onset is not None and runs[0][1] <= t:
                self._last[c] = (onset, runs.popleft()[1])
                self._active[c] = None
            if self._active[c] is None and runs and runs[0][0] <= t:
                last = self._last[c]
                self._active[c] = last[0] if last is not None and runs[0][0] - last[1] < TURN_GAP_S else runs[0][0]

    def _transition(self, t: float) -> Events:
        """Book-keeping after the speakers changed at ``t``."""
        events: Events = []
        speaking = [c for c, a in enumerate(self._active) if a is not None]
        if speaking and self._silence_from is not None:
            events.extend(self._end_silence(t))
        elif not speaking and self._silence_from is None:
            self._silence_from = t
        if len(speaking) >= 2 and self._overlap is None:
            onsets = {c: self._active[c] for c in speaking}
            first = min(onsets.values())  # type: ignore[type-var]
            late = [c for c in speaking if onsets[c] != first]
            self._overlap = {"start": t, "by": late[-1] if late else None,
                             "over": [c for c in speaking if onsets[c] == first]}
        elif len(speaking) < 2 and self._overlap is not None:
            events.extend(self._end_overlap(t, speaking))
        return events

    def _end_silence(self, t: float, *, at_end: bool = False) -> Events:
        start, self._silence_from = self._silence_from, None
        assert start is not None
        length = t - start
        events = self.alerts.silence(start_s=start, at_s=t, ended=True, reason="call_ended" if at_end else "speech")
        if length >= self.settings.silence_min_s and length > 0:
            self.silence_count += 1
            self.silences += length
            self.longest_silence = max(self.longest_silence, length)
            ev = {"kind": SILENCE, "start_s": _r(start), "end_s": _r(t), "duration_s": _r(length)}
            self._keep(SILENCE, ev)
            events.append(ev)
        return events

    def _end_overlap(self, t: float, speaking: list[int]) -> Events:
        ov, self._overlap = self._overlap, None
        assert ov is not None
        length = t - ov["start"]
        if length < self.settings.overtalk_min_s or length <= 0:
            return []
        self.overtalk_count += 1
        self.overtalk_s += length
        by = ov["by"]
        ev: dict[str, Any] = {"kind": OVERTALK, "start_s": _r(ov["start"]), "end_s": _r(t), "duration_s": _r(length),
                              "interruption": by is not None}
        events: Events = [ev]
        if by is not None:
            # the one interrupted yielded: it stopped (the interrupter goes on) within yield_s of the onset
            stopped = by in speaking and not any(c in speaking for c in ov["over"])
            yielded = stopped and length <= self.settings.yield_s
            self.interruptions[by] += 1
            self.yielded[by] += int(yielded)
            ev.update(by=self.names[by], over=[self.names[c] for c in ov["over"]], yielded=yielded)
            events.extend(self.alerts.interruption(self.names[by], at_s=ov["start"]))
        self._keep(OVERTALK, ev)
        return events

    def _keep(self, kind: str, ev: dict[str, Any]) -> None:
        if len(self.episodes[kind]) < MAX_EPISODES:
            self.episodes[kind].append({k: v for k, v in ev.items() if k != "kind"})

    def _every(self, t: float) -> Events:
        if t + 1e-9 < self._next_every:
            return []
        every = self.settings.every_s
        self._next_every = (int(t / every + 1e-9) + 1) * every
        return [self.snapshot(at_s=t)]

    # --- output -----------------------------------------------------------------------------------
    def snapshot(self, *, at_s: float) -> dict[str, Any]:
        """The ``dynamics`` event: totals over the settled call so far (``at_s``)."""
        return {"kind": DYNAMICS, "at_s": _r(at_s), **self.summary()}

    def summary(self) -> dict[str, Any]:
        """Totals over the settled time line (the call's, after :meth:`finish`)."""
        span = self.pos
        channels: dict[str, Any] = {}
        for c, name in enumerate(self.names):
            share = round(self.talk_s[c] / span, 4) if span else 0.0
            ch: dict[str, Any] = {"talk_s": _r(self.talk_s[c]), "talk_share": share,
                                  "level_db": self.loudness.level_db(c), "raised_s": _r(self.loudness.raised_s[c]),
                                  "rate_sps": self.loudness.rate(c), "rate_rel": self.loudness.rate_rel(c)}
            if len(self.names) > 1:
                ch.update(interruptions=self.interruptions[c], yielded=self.yielded[c])
            channels[name] = ch
        out: dict[str, Any] = {
            "duration_s": _r(span), "channels": channels, "non_talk_s": _r(self.silence_s),
            "silence": {"min_s": self.settings.silence_min_s, "count": self.silence_count,
                        "total_s": _r(self.silences), "longest_s": _r(self.longest_silence)},
        }
        if len(self.names) > 1:
            out["overtalk"] = {"min_s": self.settings.overtalk_min_s, "count": self.overtalk_count,
                               "total_s": _r(self.overtalk_s)}
        return out

    def episodes_summary(self) -> dict[str, Any]:
        """:meth:`summary` plus the kept silences and overtalks (``[start_s, end_s]`` each)."""
        out = self.summary()
        out["silences"] = [[e["start_s"], e["end_s"]] for e in self.episodes[SILENCE]]
        if len(self.names) > 1:
            out["overtalks"] = [[e["start_s"], e["end_s"]] for e in self.episodes[OVERTALK]]
        return out
