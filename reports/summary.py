"""Per-channel summary of a call: share of each emotion, longest negative stretch, silence skipped.

:func:`summarise` is a pure function over the result records the workers publish (fields
``stream_id``, ``channel``, ``seq``, ``start_s``, ``end_s``, ``label``, ``confidence``, ``probs``,
``model``; an optional ``kind`` of ``result``/``failure``/``end``/``turn`` as in :mod:`workers.contract`);
``ser-produce``'s printed summary (``producer.summary_lines.summary_lines``), the HTML report and
``ser-dashboard`` use it (the ``call_ended`` event carries it too).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
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
    uncertain: int  # classified segments flagged ``uncertain`` (not counted in shares or stretches)
    shares: dict[str, float]  # every label -> fraction of the confident segments (sums to 1, or all 0)
    longest_negative: Stretch | None
    turns: int  # turn records (producer.turns; 0 for records written before turns existed)
    turns_uncertain: int  # turns flagged ``uncertain`` (not counted in turn_shares)
    turn_shares: dict[str, float]  # every label -> fraction of the confident turns (sums to 1, or all 0)


Summary = dict[str, ChannelSummary]


def is_result(record: Mapping[str, Any]) -> bool:
    """A classified segment: ``kind`` is ``result`` (or absent) and a label is present."""
    return record.get("kind", "result") == "result" and "label" in record


def is_turn(record: Mapping[str, Any]) -> bool:
    """A turn: a channel's consecutive results folded into one record (``kind`` is ``turn``)."""
    return record.get("kind") == "turn" and "label" in record


def _shares(records: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> dict[str, float]:
    counts = Counter(str(r["label"]) for r in records)
    names = list(labels) + sorted(set(counts) - set(labels))
    return {lab: (counts[lab] / len(records) if records else 0.0) for lab in names}


def is_uncertain(record: Mapping[str, Any]) -> bool:
    """A result whose calibrated confidence is below the model's threshold (field ``uncertain``;
    records of models without calibration never carry it as true)."""
    return bool(record.get("uncertain", False))


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
    end) with its fraction of the channel's confident classified segments: segments flagged
    ``uncertain`` are counted in ``uncertain`` and left out of the shares and of the longest
    negative stretch (they end a stretch). ``failed`` counts failure records; ``end`` records are ignored.
    ``turns``/``turns_uncertain``/``turn_shares``: the same for ``turn`` records (the first per
    ``seq`` of a channel: a re-published turn counts once).
    """
    negative = tuple(negative)
    by_channel: dict[str, list[Mapping[str, Any]]] = {}
    failed: Counter[str] = Counter()
    turns: dict[str, dict[int, Mapping[str, Any]]] = {}
    for rec in records:
        channel = str(rec["channel"])
        by_channel.setdefault(channel, [])
        if is_result(rec):
            by_channel[channel].append(rec)
        elif rec.get("kind") == "failure":
            failed[channel] += 1
        elif is_turn(rec):
            turns.setdefault(channel, {}).setdefault(int(rec.get("seq", -1)), rec)
    out: Summary = {}
    for channel, results in by_channel.items():
        sure = [r for r in results if not is_uncertain(r)]
        chan_turns = list(turns.get(channel, {}).values())
        sure_turns = [t for t in chan_turns if not is_uncertain(t)]
        out[channel] = ChannelSummary(
            segments=len(results),
            failed=failed[channel],
            uncertain=len(results) - len(sure),
            shares=_shares(sure, labels),
            longest_negative=longest_negative(
                [{**r, "label": "uncertain"} if is_uncertain(r) else r for r in results], labels, negative),
            turns=len(chan_turns),
            turns_uncertain=len(chan_turns) - len(sure_turns),
            turn_shares=_shares(sure_turns, labels),
        )
    return out
