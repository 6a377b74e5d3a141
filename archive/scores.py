"""Scores a supervisor can sort by (docs/archive.md, "Scores"), from a call's result records.

Per speaker (channel), over its ``result`` records with segment duration ``d = end_s - start_s`` and
calibrated probabilities ``p``:

* **emotion score** = ``SCALE * sum(d * (p[positive] - p[negative])) / sum(d)``, in -5..+5
  (:data:`POSITIVE_LABELS`, :data:`NEGATIVE_LABELS`; other labels count 0). Uncertain segments count with
  their probabilities like every other: never as a confident label.
* **quarters**: the same score over each quarter of the call's duration; a segment counts in a quarter
  with the part of its duration that falls in it; None where the speaker said nothing in that quarter.
* **trend**: last quarter's score minus the first's (first and last quarters *with speech*), mapped to
  :data:`TRENDS` by :data:`TREND_STEPS`; ``NotCalculated`` with fewer than two quarters with speech.
* **negative share** = ``sum(d * p[negative]) / sum(d)``.
* **label shares** = ``sum(d * p[label]) / sum(d)`` per label.

The quarters split ``0 .. max(duration_s, the last record's end_s)`` in four equal parts (the call's
duration, unless a record runs past it). A channel without speech (no result records, or only
zero-length ones) has no score, no quarters, trend ``NotCalculated`` and no negative share. Figures are
rounded to :data:`DIGITS` decimals and computed in a fixed record order, so the same records always
give the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from callevents.rules import NEGATIVE_LABELS

#: Labels whose probability mass counts as positive.
POSITIVE_LABELS = ("happy", "calm")
__all__ = ["NEGATIVE_LABELS", "POSITIVE_LABELS", "SCALE", "TRENDS", "TREND_STEPS", "SpeakerScore", "speaker_scores",
           "trend_class"]
#: The score's range is -SCALE..+SCALE.
SCALE = 5.0
#: Trend classes, from worst to best, and NotCalculated.
TRENDS = ("Declining", "SlightlyDeclining", "NoChange", "SlightlyImproving", "Improving", "NotCalculated")
#: |last - first| below the first step is NoChange, below the second Slightly..., else Improving/Declining.
TREND_STEPS = (0.5, 2.0)
#: Decimals kept in every figure.
DIGITS = 6
NOT_CALCULATED = "NotCalculated"


@dataclass(frozen=True)
class SpeakerScore:
    channel: str
    segments: int
    speech_s: float
    score: float | None
    quarters: tuple[float | None, float | None, float | None, float | None]
    trend: str
    negative_share: float | None
    label_shares: dict[str, float]


def speaker_scores(records: Iterable[Mapping[str, Any]], *, duration_s: float,
                   channels: Iterable[str]) -> dict[str, SpeakerScore]:
    """Every channel's scores from the call's ``result`` records (other kinds are ignored). ``channels``:
    the call's channels (each gets an entry, with or without speech); channels only records name are
    scored too."""
    by_channel: dict[str, list[tuple[float, float, Mapping[str, Any]]]] = {str(ch): [] for ch in channels}
    last_end = 0.0
    ordered = sorted((r for r in records if r.get("kind", "result") == "result"),
                     key=lambda r: (str(r["channel"]), float(r["start_s"]), int(r.get("seq", 0))))
    for rec in ordered:
        start, end = float(rec["start_s"]), float(rec["end_s"])
        probs = rec.get("probs") or {}
        by_channel.setdefault(str(rec["channel"]), []).append((start, end, probs))
        last_end = max(last_end, end)
    span = max(float(duration_s or 0.0), last_end)
    return {ch: _speaker(ch, segs, span) for ch, segs in by_channel.items()}


def _valence(probs: Mapping[str, Any]) -> tuple[float, float]:
    """(positive - negative mass, negative mass) of one segment's probabilities."""
    pos = sum(float(probs.get(lab, 0.0)) for lab in POSITIVE_LABELS)
    neg = sum(float(probs.get(lab, 0.0)) for lab in NEGATIVE_LABELS)
    return pos - neg, neg


def _speaker(channel: str, segs: list[tuple[float, float, Mapping[str, Any]]], span: float) -> SpeakerScore:
    weight = net = neg = 0.0
    shares: dict[str, float] = {}
    qw = [0.0] * 4
    qnet = [0.0] * 4
    bounds = [(span * k / 4, span * (k + 1) / 4) for k in range(4)]
    for start, end, probs in segs:
        d = max(0.0, end - start)
        v, n = _valence(probs)
        weight += d
        net += d * v
        neg += d * n
        for lab, p in probs.items():
            shares[lab] = shares.get(lab, 0.0) + d * float(p)
        for k, (qs, qe) in enumerate(bounds):
            part = min(end, qe) - max(start, qs)
            if part > 0:
                qw[k] += part
                qnet[k] += part * v
    if weight <= 0:
        return SpeakerScore(channel=channel, segments=len(segs), speech_s=0.0, score=None,
                            quarters=(None, None, None, None), trend=NOT_CALCULATED, negative_share=None,
                            label_shares={})
    q = tuple(round(SCALE * qnet[k] / qw[k], DIGITS) if qw[k] > 0 else None for k in range(4))
    return SpeakerScore(channel=channel, segments=len(segs), speech_s=round(weight, DIGITS),
                        score=round(SCALE * net / weight, DIGITS), quarters=q,  # type: ignore[arg-type]
                        trend=trend_class(q), negative_share=round(neg / weight, DIGITS),
                        label_shares={lab: round(v / weight, DIGITS) for lab, v in sorted(shares.items())})


def trend_class(quarters: Iterable[float | None]) -> str:
    """The trend of a speaker's quarter scores: the last quarter with speech minus the first, by
    :data:`TREND_STEPS`; ``NotCalculated`` with fewer than two quarters with speech."""
    spoken = [q for q in quarters if q is not None]
    if len(spoken) < 2:
        return NOT_CALCULATED
    delta = spoken[-1] - spoken[0]
    small, large = TREND_STEPS
    if abs(delta) < small:
        return "NoChange"
    if abs(delta) < large:
        return "SlightlyImproving" if delta > 0 else "SlightlyDeclining"
    return "Improving" if delta > 0 else "Declining"
