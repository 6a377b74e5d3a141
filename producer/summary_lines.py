"""What ``ser-produce`` prints after a call: silence skipped per channel and the per-channel summary.

The summary itself (:func:`summarise`, shares, longest negative stretch) is pure and lives in
:mod:`reports.summary`, shared with ``ser-dashboard``; it is re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reports.summary import (  # noqa: F401  (re-exported)
    CONTIGUITY_TOLERANCE_S,
    NEGATIVE,
    ChannelSummary,
    Stretch,
    Summary,
    is_result,
    is_turn,
    longest_negative,
    stretch_labels,
    summarise,
)


@dataclass
class ChannelStats:
    """What the producer saw on one channel: segments cut, sent (voiced) and skipped (silent)."""

    name: str
    cut: int = 0
    sent: int = 0
    skipped: int = 0
    speech_s: float = 0.0  # utterance segments: seconds of detected speech sent (overlaps counted once)
    speech_until: int = 0  # end (samples) of the speech counted so far: a long utterance's windows overlap


def channel_lines(stats: ChannelStats, summary: ChannelSummary | None, *, hop_s: float) -> list[str]:
    failed = summary["failed"] if summary else 0
    head = (f"{stats.name}: {stats.sent} voiced segment(s), {stats.skipped} of {stats.cut} skipped as silence "
            f"({stats.skipped * hop_s:.1f} s)" if stats.skipped or not stats.speech_s else
            f"{stats.name}: {stats.sent} speech segment(s), {stats.speech_s:.1f} s of speech")
    lines = [head + (f", {failed} failed" if failed else "")]
    if summary and summary["segments"]:
        shares = sorted(((s, lab) for lab, s in summary["shares"].items() if s > 0), key=lambda t: -t[0])
        unsure = summary.get("uncertain", 0)
        lines.append("  emotions: " + (", ".join(f"{lab} {s:.0%}" for s, lab in shares) or "none confident")
                     + (f" (of {summary['segments'] - unsure} confident; {unsure} uncertain)" if unsure else ""))
        turns, unsure_turns = summary.get("turns", 0), summary.get("turns_uncertain", 0)
        if turns:
            tshares = sorted(((s, lab) for lab, s in summary.get("turn_shares", {}).items() if s > 0),
                             key=lambda t: -t[0])
            unsure_note = f" (of {turns - unsure_turns} confident; {unsure_turns} uncertain)" if unsure_turns else ""
            lines.append(f"  turns: {turns}: " + (", ".join(f"{lab} {s:.0%}" for s, lab in tshares)
                                                  or "none confident") + unsure_note)
        stretch = summary["longest_negative"]
        if stretch is None:
            lines.append("  longest negative stretch: none")
        else:
            lines.append(f"  longest negative stretch: {stretch['start_s']:.2f}-{stretch['end_s']:.2f} s, "
                         f"{stretch['segments']} segment(s): {stretch_labels(stretch)}")
    return lines


def talk_line(ch: dict[str, Any]) -> str:
    """A channel's dynamics (``producer.dynamics``): talk time and share, interruptions."""
    line = f"  talk: {ch['talk_s']:.1f} s ({ch['talk_share']:.0%} of the call)"
    if "interruptions" in ch:
        line += f", interrupted the other {ch['interruptions']} time(s) ({ch['yielded']} yielded)"
    if ch.get("level_db") is not None:
        line += f"; level {ch['level_db']:.1f} LKFS, raised voice {ch['raised_s']:.1f} s"
    if ch.get("rate_sps") is not None:
        line += f"; {ch['rate_sps']:.1f} syllables/s"
        if ch.get("rate_rel") is not None:
            line += f" (latest {ch['rate_rel']:.2f}x their own earlier pace)"
    return line


def dynamics_line(dyn: dict[str, Any]) -> str:
    """The call's dynamics: non-talk time, silences, overtalk (not on mono calls)."""
    sil = dyn["silence"]
    line = (f"dynamics: non-talk {dyn['non_talk_s']:.1f} s of {dyn['duration_s']:.1f} s; {sil['count']} silence(s) "
            f">= {sil['min_s']:g} s ({sil['total_s']:.1f} s, longest {sil['longest_s']:.1f} s)")
    if "overtalk" in dyn:
        line += f"; {dyn['overtalk']['count']} overtalk(s) ({dyn['overtalk']['total_s']:.1f} s)"
    return line


def summary_lines(channels: list[ChannelStats], summary: Summary, *, hop_s: float,
                  dynamics: dict[str, Any] | None = None) -> list[str]:
    total = sum(c.sent for c in channels)
    lines = [f"summary: {total} segment(s) classified over {len(channels)} channel(s)"
             + ("" if total else " (the call is silent: nothing passed the VAD gate)")]
    for stats in channels:
        lines.extend(channel_lines(stats, summary.get(stats.name), hop_s=hop_s))
        if dynamics and stats.name in dynamics["channels"]:
            lines.append(talk_line(dynamics["channels"][stats.name]))
    if dynamics:
        lines.append(dynamics_line(dynamics))
    return lines
