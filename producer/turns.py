"""Turns: a channel's consecutive segments without a long pause, folded into one ``turn`` record.

The producer's own (:mod:`producer.session` feeds it; the gateway gets it through the session): a
pure function of the *released*, ordered ``result`` records of one call (fields ``kind``,
``stream_id``, ``channel``, ``seq``, ``start_s``, ``end_s``, ``probs``, ``model``), whatever cut the
segments. Both modes release the same records in the same order, so they build the same turns.

Rules (each channel is one speaker):

* A ``result`` whose ``start_s`` is at most ``gap_s`` (:data:`DEFAULT_TURN_GAP_S`) after its
  channel's open turn's ``end_s`` (the latest ``end_s`` of its segments) extends the turn;
  overlapping segments (a long utterance cut into overlapping windows) have a negative gap and
  always extend it. A result further away closes the open turn (its record is returned) and opens
  the next one.
* **Hand-over**: a ``result`` of another channel that starts at or after an open turn's ``end_s``
  (the other side took the floor once this speaker stopped) closes that turn. Talk over the
  speaker (a back-channel "mm-hm" that starts before the open turn's last segment ends) does not.
* :meth:`TurnBuilder.finish` (the call is over) closes every open turn.
* ``failure`` (and ``end``, ``turn``) records neither extend nor close a turn: a failed segment says
  nothing about whether the speaker paused, so the turn is judged on the results around it.
* ``probs``: the mean of the segments' ``probs`` weighted by each segment's duration
  (``end_s - start_s``; overlapping windows each count in full); when every weight is 0, a plain
  mean. Segments flagged ``uncertain`` count like the others: their probabilities are the model's
  (calibrated) belief, and averaging is exactly how weak evidence adds up; the turn is judged
  ``uncertain`` afresh on its own ``confidence``.
* ``label``: the argmax (first label on ties, in the order of the first segment's ``probs``);
  ``confidence``: its probability; ``uncertain``: ``confidence < uncertain_below`` (the model's
  threshold, 0 for an uncalibrated model: never uncertain).

Record: ``{"kind": "turn", "stream_id", "channel", "seq" (turn number in the channel, from 0),
"start_s", "end_s", "segments" (how many results), "label", "confidence", "uncertain", "probs",
"model"}`` (``probs`` and ``confidence`` rounded to 6 decimals, times to 3, as result records).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Longest pause (seconds, between segment extents) inside one turn when the other side says nothing.
#: Segments already carry 0.2 s of pre-roll and 0.3 s of hangover, so 2 s between them is about
#: 2.5 s of silence: a speaker's pauses between sentences stay inside the turn (the example call's
#: clips are 1.1-1.2 s apart), while a hand-over to the other side closes the turn at once (above).
DEFAULT_TURN_GAP_S = 2.0


@dataclass
class _Open:
    stream_id: str
    channel: str
    start_s: float
    end_s: float
    model: Any
    segments: int = 0
    weight: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)  # label -> sum of duration * p
    plain: dict[str, float] = field(default_factory=dict)  # label -> sum of p (all weights 0)

    def add(self, record: Mapping[str, Any], probs: Mapping[str, Any]) -> None:
        start, end = float(record["start_s"]), float(record["end_s"])
        w = max(0.0, end - start)
        for lab, p in probs.items():
            self.sums[lab] = self.sums.get(lab, 0.0) + w * float(p)
            self.plain[lab] = self.plain.get(lab, 0.0) + float(p)
        self.weight += w
        self.segments += 1
        self.end_s = max(self.end_s, end)


class TurnBuilder:
    """Builds one call's turns from its released records, fed in release order."""

    def __init__(self, *, uncertain_below: float = 0.0, gap_s: float = DEFAULT_TURN_GAP_S) -> None:
        if not (isinstance(gap_s, (int, float)) and math.isfinite(gap_s) and gap_s >= 0):
            raise ValueError(f"turn gap_s={gap_s!r} must be a finite number >= 0")
        if not (isinstance(uncertain_below, (int, float)) and 0 <= uncertain_below <= 1):
            raise ValueError(f"uncertain_below={uncertain_below!r} must be in [0, 1]")
        self.gap_s, self.uncertain_below = float(gap_s), float(uncertain_below)
        self._open: dict[str, _Open] = {}
        self._next_seq: dict[str, int] = {}

    @property
    def open_turns(self) -> int:
        return len(self._open)

    def feed(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Take one released record; returns the turn it closed (``[]`` or one record)."""
        if record.get("kind", "result") != "result":
            return []
        channel = str(record["channel"])
        probs = record.get("probs")
        if not isinstance(probs, Mapping) or not probs:
            raise ValueError(f"result {channel} seq {record.get('seq')!r} has no probs: cannot build its turn")
        out = []
        start = float(record["start_s"])
        for other in [ch for ch, t in self._open.items() if ch != channel and start >= t.end_s]:
            out.append(self._close(other))  # hand-over: the other side spoke after this turn ended
        cur = self._open.get(channel)
        if cur is not None and float(record["start_s"]) - cur.end_s > self.gap_s:
            out.append(self._close(channel))
            cur = None
        if cur is None:
            cur = self._open[channel] = _Open(stream_id=str(record.get("stream_id", "")), channel=channel,
                                              start_s=float(record["start_s"]), end_s=float(record["end_s"]),
                                              model=record.get("model"))
        cur.add(record, probs)
        return out

    def interleave(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``records`` in order, each followed by the turn it closed (if any)."""
        out: list[dict[str, Any]] = []
        for rec in records:
            out.append(dict(rec))
            out.extend(self.feed(rec))
        return out

    def finish(self) -> list[dict[str, Any]]:
        """The call is over: close every open turn, by start time (then by channel first seen)."""
        order = sorted(self._open, key=lambda ch: self._open[ch].start_s)
        return [self._close(ch) for ch in order]

    def _close(self, channel: str) -> dict[str, Any]:
        t = self._open.pop(channel)
        seq = self._next_seq.get(channel, 0)
        self._next_seq[channel] = seq + 1
        if t.weight > 0:
            probs = {lab: round(s / t.weight, 6) for lab, s in t.sums.items()}
        else:
            probs = {lab: round(s / t.segments, 6) for lab, s in t.plain.items()}
        label = max(probs, key=lambda lab: probs[lab])  # the first on ties
        confidence = probs[label]
        return {"kind": "turn", "stream_id": t.stream_id, "channel": channel, "seq": seq,
                "start_s": round(t.start_s, 3), "end_s": round(t.end_s, 3), "segments": t.segments,
                "label": label, "confidence": confidence, "uncertain": bool(confidence < self.uncertain_below),
                "probs": probs, "model": t.model}
