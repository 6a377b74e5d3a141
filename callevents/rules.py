"""Alert rules and the rolling per-speaker trend: a pure engine fed result records in time order.

A :class:`Rule` watches the mean, over the segments of the last ``window_s`` seconds of audio
on a channel, of each segment's summed probability of ``labels``. It **opens** when that mean
reaches ``open_at`` and **closes** when it falls to ``close_at`` or below (hysteresis: between the
two nothing changes). The window ends at the newest segment's ``end_s`` and holds the segments
with ``end_s > newest end_s - window_s``. Which channels a rule watches: ``channels`` when given,
else the channel named :data:`CUSTOMER_CHANNEL` when the call has one, else every channel.

:class:`Engine` also emits a ``trend`` event per channel every ``trend_every_s`` seconds of
audio (shares of each label and the mean negativity over the last ``trend_window_s``).
Events come back as dicts without ``call_id``/``ts`` (the writer adds them); schema:
:mod:`callevents.schema`. Rules are configured by a TOML file (:func:`load_settings`).
"""

from __future__ import annotations

import math
import tomllib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callevents.dynrules import DynamicsSettings
from callevents.schema import ALERT_CLOSED, ALERT_OPENED, TREND

#: Labels whose probabilities count as negative (the default rule and the trend's negativity).
NEGATIVE_LABELS = ("angry", "disgust", "sad", "fearful")
#: The default rule: a customer's negative mean over the last 20 s opens at >= 0.6, closes at <= 0.4.
DEFAULT_RULE_NAME = "customer_negative"
DEFAULT_WINDOW_S = 20.0
DEFAULT_OPEN_AT = 0.6
DEFAULT_CLOSE_AT = 0.4
#: A rule without ``channels`` watches this channel when the call has it, else every channel.
CUSTOMER_CHANNEL = "customer"
#: A trend event per channel every this many seconds of audio, over this window.
DEFAULT_TREND_EVERY_S = 5.0
DEFAULT_TREND_WINDOW_S = 20.0
#: Slack on window edges (segment times are rounded to milliseconds).
EPS_S = 1e-6


@dataclass(frozen=True)
class Rule:
    name: str = DEFAULT_RULE_NAME
    labels: tuple[str, ...] = NEGATIVE_LABELS
    window_s: float = DEFAULT_WINDOW_S
    open_at: float = DEFAULT_OPEN_AT
    close_at: float = DEFAULT_CLOSE_AT
    channels: tuple[str, ...] = ()  # (): CUSTOMER_CHANNEL if the call has it, else every channel

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a rule needs a name")
        if not self.labels:
            raise ValueError(f"rule {self.name}: labels is empty")
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise ValueError(f"rule {self.name}: window_s must be > 0, got {self.window_s!r}")
        if not (0.0 <= self.close_at <= self.open_at <= 1.0):
            raise ValueError(f"rule {self.name}: need 0 <= close_at <= open_at <= 1, got close_at="
                             f"{self.close_at!r}, open_at={self.open_at!r}")

    def watched(self, channels: Sequence[str]) -> list[str]:
        if self.channels:
            return [c for c in channels if c in self.channels]
        if CUSTOMER_CHANNEL in channels:
            return [CUSTOMER_CHANNEL]
        return list(channels)


@dataclass(frozen=True)
class EventSettings:
    rules: tuple[Rule, ...] = field(default_factory=lambda: (Rule(),))
    trend_every_s: float = DEFAULT_TREND_EVERY_S
    trend_window_s: float = DEFAULT_TREND_WINDOW_S
    dynamics: DynamicsSettings = field(default_factory=DynamicsSettings)

    def __post_init__(self) -> None:
        for name in ("trend_every_s", "trend_window_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value!r}")
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rule names must be distinct: {', '.join(names)}")


_RULE_KEYS = {"name", "labels", "window_s", "open_at", "close_at", "channels"}


def load_settings(path: str | Path) -> EventSettings:
    """Read a TOML file: optional top-level ``trend_every_s``/``trend_window_s`` and ``[[rule]]``
    tables (``name``, ``labels``, ``window_s``, ``open_at``, ``close_at``, ``channels``; missing
    keys take the defaults). No ``[[rule]]`` keeps the default rule; ``rule = []`` disables alerts.
    ValueError (naming the file and the bad value) on anything else."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read alert rules {path}: {exc}") from None
    unknown = set(doc) - {"rule", "trend_every_s", "trend_window_s", "dynamics"}
    if unknown:
        raise ValueError(f"alert rules {path}: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        rules: list[Rule] = []
        for table in doc.get("rule", [Rule()]):
            if isinstance(table, Rule):
                rules.append(table)
                continue
            if not isinstance(table, dict) or set(table) - _RULE_KEYS:
                raise ValueError(f"bad [[rule]] entry {table!r} (keys: {', '.join(sorted(_RULE_KEYS))})")
            kw: dict[str, Any] = dict(table)
            for key in ("labels", "channels"):
                if key in kw:
                    if not isinstance(kw[key], list) or not all(isinstance(v, str) for v in kw[key]):
                        raise ValueError(f"{key} must be a list of strings, got {kw[key]!r}")
                    kw[key] = tuple(kw[key])
            for key in ("window_s", "open_at", "close_at"):
                if key in kw and (isinstance(kw[key], bool) or not isinstance(kw[key], int | float)):
                    raise ValueError(f"{key} must be a number, got {kw[key]!r}")
            rules.append(Rule(**kw))
        extra: dict[str, Any] = {k: float(doc[k]) for k in ("trend_every_s", "trend_window_s") if k in doc}
        if "dynamics" in doc:
            if not isinstance(doc["dynamics"], dict):
                raise ValueError(f"[dynamics] must be a table, got {doc['dynamics']!r}")
            extra["dynamics"] = DynamicsSettings(**doc["dynamics"])
        return EventSettings(rules=tuple(rules), **extra)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"alert rules {path}: {exc}") from None


@dataclass
class _Seg:
    seq: int
    start_s: float
    end_s: float
    label: str
    confidence: float
    probs: Mapping[str, float]
    uncertain: bool | None


def _mass(seg: _Seg, labels: Iterable[str]) -> float:
    if seg.probs:
        return float(sum(float(seg.probs.get(lab, 0.0)) for lab in labels))
    return 1.0 if seg.label in set(labels) else 0.0


class Engine:
    """Feed it a call's result records (:meth:`feed`) in time order per channel; it returns the
    events each record causes. :meth:`finish` closes the alerts still open at the call's end."""

    def __init__(self, settings: EventSettings | None = None, *, channels: Sequence[str],
                 labels: Sequence[str] = ()) -> None:
        self.settings = settings or EventSettings()
        self.channels = list(channels)
        self.labels = list(labels)
        self._segs: dict[str, deque[_Seg]] = {c: deque() for c in self.channels}
        self._newest: dict[str, float] = {}
        self._next_trend: dict[str, float] = {c: self.settings.trend_every_s for c in self.channels}
        self._watch = {r.name: set(r.watched(self.channels)) for r in self.settings.rules}
        self.open: dict[tuple[str, str], dict[str, Any]] = {}  # (rule, channel) -> its alert_opened event
        self._keep_s = max([self.settings.trend_window_s, *(r.window_s for r in self.settings.rules)])

    def window(self, channel: str, window_s: float) -> list[_Seg]:
        newest = self._newest.get(channel)
        if newest is None:
            return []
        return [s for s in self._segs.get(channel, ()) if s.end_s > newest - window_s + EPS_S]

    def score(self, rule: Rule, channel: str) -> float | None:
        segs = self.window(channel, rule.window_s)
        return sum(_mass(s, rule.labels) for s in segs) / len(segs) if segs else None

    def feed(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        if record.get("kind", "result") != "result" or "label" not in record:
            return []
        channel = str(record["channel"])
        if channel not in self._segs:
            self.channels.append(channel)
            self._segs[channel] = deque()
            self._next_trend[channel] = self.settings.trend_every_s
            self._watch = {r.name: set(r.watched(self.channels)) for r in self.settings.rules}
        probs = record.get("probs") or {}
        seg = _Seg(seq=int(record.get("seq", 0)), start_s=float(record["start_s"]), end_s=float(record["end_s"]),
                   label=str(record["label"]), confidence=float(record.get("confidence", 0.0)),
                   probs={str(k): float(v) for k, v in probs.items()},
                   uncertain=bool(record["uncertain"]) if "uncertain" in record else None)
        segs = self._segs[channel]
        segs.append(seg)
        newest = max(self._newest.get(channel, seg.end_s), seg.end_s)
        self._newest[channel] = newest
        while segs and segs[0].end_s <= newest - self._keep_s:
            segs.popleft()
        events: list[dict[str, Any]] = []
        for rule in self.settings.rules:
            if channel in self._watch[rule.name]:
                events.extend(self._apply(rule, channel, newest))
        if newest + EPS_S >= self._next_trend[channel]:
            events.append(self.trend(channel, seg))
            every = self.settings.trend_every_s
            self._next_trend[channel] = (math.floor(newest / every + EPS_S) + 1) * every
        return events

    def _apply(self, rule: Rule, channel: str, at_s: float) -> list[dict[str, Any]]:
        score = self.score(rule, channel)
        if score is None:
            return []
        key = (rule.name, channel)
        opened = self.open.get(key)
        if opened is None and score >= rule.open_at:
            event = {"kind": ALERT_OPENED, "rule": rule.name, "channel": channel, "since_s": round(at_s, 3),
                     "window_s": rule.window_s, "score": round(score, 4), "threshold": rule.open_at,
                     "labels": list(rule.labels)}
            self.open[key] = event
            return [event]
        if opened is not None and score <= rule.close_at:
            del self.open[key]
            return [self._closed(opened, until_s=at_s, score=score, threshold=rule.close_at, reason="score")]
        return []

    @staticmethod
    def _closed(opened: Mapping[str, Any], *, until_s: float, score: float | None, threshold: float,
                reason: str) -> dict[str, Any]:
        return {**opened, "kind": ALERT_CLOSED, "until_s": round(until_s, 3),
                "score": None if score is None else round(score, 4), "threshold": threshold, "reason": reason}

    def trend(self, channel: str, last: _Seg) -> dict[str, Any]:
        segs = self.window(channel, self.settings.trend_window_s)
        names = self.labels + sorted({s.label for s in segs} - set(self.labels))
        n = len(segs)
        shares = {lab: round(sum(s.label == lab for s in segs) / n, 4) if n else 0.0 for lab in names}
        negativity = sum(_mass(s, NEGATIVE_LABELS) for s in segs) / n if n else 0.0
        last_info: dict[str, Any] = {"seq": last.seq, "start_s": last.start_s, "end_s": last.end_s,
                                     "label": last.label, "confidence": last.confidence}
        if last.uncertain is not None:
            last_info["uncertain"] = last.uncertain
        return {"kind": TREND, "channel": channel, "at_s": round(self._newest[channel], 3),
                "window_s": self.settings.trend_window_s, "segments": n, "shares": shares,
                "negativity": round(negativity, 4), "last": last_info}

    def finish(self, *, at_s: float) -> list[dict[str, Any]]:
        """``alert_closed`` (reason ``call_ended``) for every alert still open."""
        rules = {r.name: r for r in self.settings.rules}
        out = [self._closed(ev, until_s=at_s, score=self.score(rules[name], channel),
                            threshold=rules[name].close_at, reason="call_ended")
               for (name, channel), ev in self.open.items()]
        self.open.clear()
        return out
