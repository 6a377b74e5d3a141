"""Per-channel summary of a call: share of each emotion, longest negative stretch, silence skipped.

:func:`summarise` is a pure function over the result records the workers publish (fields
``stream_id``, ``channel``, ``seq``, ``start_s``, ``end_s``, ``label``, ``confidence``, ``probs``,
``model``; an optional ``kind`` of ``result``/``failure``/``end`` as in :mod:`workers.contract`);
the printed summary (:func:`summary_lines`) and the HTML report both use it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

#: Labels counted as negative for the longest negative stretch.
NEGATIVE = ("angry", "sad", "fearful", "disgust")
#: Two segments belong to one stretch when consecutive in ``seq`` or when the second starts no
#: later than this many seconds after the first ends.
CONTIGUITY_TOLERANCE_S = 0.05


class Stretch(TypedDict):
    label: str  # the most frequent negative label in the stretch
    start_s: float
    end_s: float
    segments: int
    labels: dict[str, int]  # every negative label in the stretch -> its segments, most frequent first


class ChannelSummary(TypedDict):
    segments: int  # classified segments (result records)
    failed: int  # failure records
    shares: dict[str, float]  # every label -> fraction of classified segments (sums to 1, or all 0)
    longest_negative: Stretch | None


Summary = dict[str, ChannelSummary]


def is_result(record: Mapping[str, Any]) -> bool:
    """A classified segment: ``kind`` is ``result`` (or absent) and a label is present."""
    return record.get("kind", "result") == "result" and "label" in record


def _order(record: Mapping[str, Any]) -> tuple[float, int]:
    return float(record["start_s"]), int(record.get("seq", 0))


def _contiguous(prev: Mapping[str, Any], cur: Mapping[str, Any]) -> bool:
    if "seq" in prev and "seq" in cur and int(cur["seq"]) == int(prev["seq"]) + 1:
        return True
    return float(cur["start_s"]) <= float(prev["end_s"]) + CONTIGUITY_TOLERANCE_S


def longest_negative(
    results: Sequence[Mapping[str, Any]], labels: Sequence[str] = (), negative: Iterable[str] = NEGATIVE,
) -> Stretch | None:
    """Longest (in seconds) run of time-contiguous results whose label is negative; the earliest
    on ties. A non-negative segment or a gap (silence skipped, a failed segment) ends a run."""
    neg = set(negative)
    rank = {lab: i for i, lab in enumerate(labels)}
    best: list[Mapping[str, Any]] = []
    run: list[Mapping[str, Any]] = []

    def span(r: list[Mapping[str, Any]]) -> float:
        return float(r[-1]["end_s"]) - float(r[0]["start_s"]) if r else -1.0

    for rec in sorted(results, key=_order):
        if rec["label"] not in neg:
            run = []
            continue
        if run and not _contiguous(run[-1], rec):
            run = []
        run.append(rec)
        if span(run) > span(best):
            best = list(run)
    if not best:
        return None
    counts = Counter(str(r["label"]) for r in best)
    label = min(counts, key=lambda lab: (-counts[lab], rank.get(lab, len(rank)), lab))
    order = sorted(counts, key=lambda lab: (-counts[lab], rank.get(lab, len(rank)), lab))
    return Stretch(label=label, start_s=float(best[0]["start_s"]), end_s=float(best[-1]["end_s"]),
                   segments=len(best), labels={lab: counts[lab] for lab in order})


def stretch_labels(stretch: Stretch) -> str:
    """``angry`` for a stretch of one label, ``angry 2 + sad 1`` for a mixed one (the stretch is
    negative throughout, not one label throughout)."""
    labels = stretch.get("labels") or {stretch["label"]: stretch["segments"]}
    if len(labels) == 1:
        return next(iter(labels))
    return " + ".join(f"{lab} {n}" for lab, n in labels.items())


def summarise(
    records: Iterable[Mapping[str, Any]], labels: Sequence[str], negative: Iterable[str] = NEGATIVE,
) -> Summary:
    """``{channel: ChannelSummary}`` in order of first appearance.

    ``shares`` has every label of ``labels`` (in that order; a label outside it is added at the
    end) with its fraction of the channel's classified segments. ``failed`` counts failure
    records; ``end`` records are ignored.
    """
    negative = tuple(negative)
    by_channel: dict[str, list[Mapping[str, Any]]] = {}
    failed: Counter[str] = Counter()
    for rec in records:
        channel = str(rec["channel"])
        by_channel.setdefault(channel, [])
        if is_result(rec):
            by_channel[channel].append(rec)
        elif rec.get("kind") == "failure":
            failed[channel] += 1
    out: Summary = {}
    for channel, results in by_channel.items():
        counts = Counter(str(r["label"]) for r in results)
        names = list(labels) + sorted(set(counts) - set(labels))
        n = len(results)
        out[channel] = ChannelSummary(
            segments=n,
            failed=failed[channel],
            shares={lab: (counts[lab] / n if n else 0.0) for lab in names},
            longest_negative=longest_negative(results, labels, negative),
        )
    return out


@dataclass
class ChannelStats:
    """What the producer saw on one channel: segments cut, sent (voiced) and skipped (silent)."""

    name: str
    cut: int = 0
    sent: int = 0
    skipped: int = 0


def channel_lines(stats: ChannelStats, summary: ChannelSummary | None, *, hop_s: float) -> list[str]:
    failed = summary["failed"] if summary else 0
    lines = [f"{stats.name}: {stats.sent} voiced segment(s), {stats.skipped} of {stats.cut} skipped as silence "
             f"({stats.skipped * hop_s:.1f} s)" + (f", {failed} failed" if failed else "")]
    if summary and summary["segments"]:
        shares = sorted(((s, lab) for lab, s in summary["shares"].items() if s > 0), key=lambda t: -t[0])
        lines.append("  emotions: " + ", ".join(f"{lab} {s:.0%}" for s, lab in shares))
        stretch = summary["longest_negative"]
        if stretch is None:
            lines.append("  longest negative stretch: none")
        else:
            lines.append(f"  longest negative stretch: {stretch['start_s']:.2f}-{stretch['end_s']:.2f} s, "
                         f"{stretch['segments']} segment(s): {stretch_labels(stretch)}")
    return lines


def summary_lines(channels: list[ChannelStats], summary: Summary, *, hop_s: float) -> list[str]:
    total = sum(c.sent for c in channels)
    lines = [f"summary: {total} segment(s) classified over {len(channels)} channel(s)"
             + ("" if total else " (the call is silent: nothing passed the VAD gate)")]
    for stats in channels:
        lines.extend(channel_lines(stats, summary.get(stats.name), hop_s=hop_s))
    return lines
