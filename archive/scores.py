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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from callevents.rules import NEGATIVE_LABELS

#: Labels whose probability mass counts as positive.
POSITIVE_LABELS = ("happy", "calm")
__all__ = ["NEGATIVE_LABELS", "POSITIVE_LABELS", "SCALE", "TRENDS", "SpeakerScore", "speaker_scores"]
#: The score's range is -SCALE..+SCALE.
SCALE = 5.0
#: Trend classes, from worst to best, and NotCalculated.
TRENDS = ("Declining", "SlightlyDeclining", "NoChange", "SlightlyImproving", "Improving", "NotCalculated")
#: |last - first| below the first step is NoChange, below the second Slightly..., else Improving/Declining.
TREND_STEPS = (0.5, 2.0)


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
    """Every channel's scores from the call's ``result`` records (other kinds are ignored)."""
    raise NotImplementedError
