"""Per-channel summary of a call: share of each emotion, longest negative stretch, silence skipped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Labels counted as negative for the "longest negative stretch" (those the model has).
NEGATIVE_LABELS = frozenset({"angry", "anger", "sad", "sadness", "fearful", "fear", "disgust", "disgusted",
                             "frustrated", "contempt"})


@dataclass
class ChannelStats:
    """What the producer saw on one channel: segments cut, sent (voiced) and skipped (silent)."""

    name: str
    cut: int = 0
    sent: int = 0
    skipped: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Stretch:
    start_s: float
    end_s: float
    segments: int
    labels: tuple[str, ...]  # the negative labels in it, most frequent first


def longest_negative(records: list[dict[str, Any]], *, hop_seqs: int = 1) -> Stretch | None:
    """Longest run of time-adjacent results (consecutive ``seq``) with a negative label."""
    best: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []
    for rec in records:
        if rec.get("kind") != "result" or rec["label"] not in NEGATIVE_LABELS:
            run = []
            continue
        if run and rec["seq"] - run[-1]["seq"] != hop_seqs:
            run = []
        run.append(rec)
        if len(run) > len(best):
            best = list(run)
    if not best:
        return None
    labels = tuple(lab for lab, _ in Counter(r["label"] for r in best).most_common())
    return Stretch(best[0]["start_s"], best[-1]["end_s"], len(best), labels)


def channel_lines(stats: ChannelStats, *, hop_s: float) -> list[str]:
    results = [r for r in stats.records if r.get("kind") == "result"]
    failed = sum(r.get("kind") == "failure" for r in stats.records)
    lines = [f"{stats.name}: {stats.sent} voiced segment(s), {stats.skipped} of {stats.cut} skipped as silence "
             f"({stats.skipped * hop_s:.1f} s)" + (f", {failed} failed" if failed else "")]
    if results:
        counts = Counter(r["label"] for r in results)
        shares = ", ".join(f"{lab} {n / len(results):.0%}" for lab, n in counts.most_common())
        lines.append(f"  emotions: {shares}")
        stretch = longest_negative(results)
        if stretch is None:
            lines.append("  longest negative stretch: none")
        else:
            lines.append(f"  longest negative stretch: {'/'.join(stretch.labels)} {stretch.start_s:.2f}-"
                         f"{stretch.end_s:.2f} s ({stretch.segments} segment(s))")
    return lines


def summary_lines(channels: list[ChannelStats], *, hop_s: float) -> list[str]:
    total = sum(c.sent for c in channels)
    lines = [f"summary: {total} segment(s) classified over {len(channels)} channel(s)"
             + ("" if total else " (the call is silent: nothing passed the VAD gate)")]
    for stats in channels:
        lines.extend(channel_lines(stats, hop_s=hop_s))
    return lines
