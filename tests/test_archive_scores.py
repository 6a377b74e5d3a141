"""archive.scores on constructed records: known scores, quarters with a segment straddling a boundary,
every trend class, uncertain segments, speakers without speech."""

from __future__ import annotations

from typing import Any

import pytest

from archive.scores import NEGATIVE_LABELS, POSITIVE_LABELS, SCALE, TRENDS, speaker_scores, trend_class

LABELS = ("angry", "calm", "disgust", "fearful", "happy", "neutral", "sad")


def rec(channel: str, start: float, end: float, probs: dict[str, float], *, seq: int = 0,
        uncertain: bool = False, kind: str = "result") -> dict[str, Any]:
    full = {lab: 0.0 for lab in LABELS} | probs
    label = max(full, key=lambda k: full[k])
    return {"kind": kind, "stream_id": "c", "channel": channel, "seq": seq, "start_s": start, "end_s": end,
            "label": label, "confidence": full[label], "uncertain": uncertain, "probs": full, "model": "m@1"}


def test_labels_are_the_documented_ones() -> None:
    assert POSITIVE_LABELS == ("happy", "calm") and set(NEGATIVE_LABELS) == {"angry", "disgust", "sad", "fearful"}
    assert SCALE == 5.0 and TRENDS[-1] == "NotCalculated"


def test_known_scores_duration_weighted() -> None:
    records = [
        rec("customer", 0.0, 3.0, {"happy": 1.0}),  # +1 over 3 s
        rec("customer", 3.0, 4.0, {"angry": 0.5, "sad": 0.5}, seq=1),  # -1 over 1 s
        rec("agent", 0.0, 2.0, {"neutral": 1.0}),  # 0
        rec("agent", 0.0, 2.0, {"angry": 1.0}, kind="failure"),  # other kinds are ignored
        {"kind": "turn", "channel": "agent", "seq": 0, "start_s": 0.0, "end_s": 2.0, "probs": {"angry": 1.0}},
    ]
    s = speaker_scores(records, duration_s=4.0, channels=["customer", "agent"])
    c = s["customer"]
    assert c.segments == 2 and c.speech_s == 4.0
    assert c.score == pytest.approx(5.0 * (3 - 1) / 4)  # 2.5
    assert c.negative_share == pytest.approx(0.25)
    assert c.label_shares["happy"] == pytest.approx(0.75) and c.label_shares["angry"] == pytest.approx(0.125)
    assert sum(c.label_shares.values()) == pytest.approx(1.0)
    a = s["agent"]
    assert a.segments == 1 and a.score == 0.0 and a.negative_share == 0.0
    assert a.quarters == (0.0, 0.0, None, None) and a.trend == "NoChange"  # speaks 0-2 s of 4 s


def test_quarters_split_a_straddling_segment() -> None:
    # 8 s call: quarters of 2 s. A +1 segment 1-3 s straddles Q1/Q2; a -1 segment 2.5-3.5 s sits in Q2.
    records = [rec("customer", 1.0, 3.0, {"calm": 1.0}), rec("customer", 2.5, 3.5, {"angry": 1.0}, seq=1),
               rec("customer", 7.0, 8.0, {"sad": 1.0}, seq=2)]
    s = speaker_scores(records, duration_s=8.0, channels=["customer"])["customer"]
    q1, q2, q3, q4 = s.quarters
    assert q1 == pytest.approx(5.0)  # 1 s of +1
    assert q2 == pytest.approx(5.0 * (1.0 - 1.0) / 2.0)  # 1 s of +1 and 1 s of -1 (2.5-3.5 all in Q2)
    assert q3 is None and q4 == pytest.approx(-5.0)
    assert s.trend == "Declining"  # -5 - 5 = -10
    # the whole-call score counts each segment once with its full duration
    assert s.score == pytest.approx(5.0 * (2 - 1 - 1) / 4)


@pytest.mark.parametrize("first, last, expected", [
    ({"sad": 1.0}, {"happy": 1.0}, "Improving"),  # -5 -> +5
    ({"neutral": 1.0}, {"happy": 0.2, "neutral": 0.8}, "SlightlyImproving"),  # 0 -> +1
    ({"neutral": 1.0}, {"happy": 0.05, "neutral": 0.95}, "NoChange"),  # 0 -> +0.25
    ({"neutral": 1.0}, {"sad": 0.2, "neutral": 0.8}, "SlightlyDeclining"),  # 0 -> -1
    ({"happy": 1.0}, {"angry": 1.0}, "Declining"),
])
def test_trend_classes(first: dict[str, float], last: dict[str, float], expected: str) -> None:
    records = [rec("customer", 0.0, 1.0, first), rec("customer", 3.0, 4.0, last, seq=1)]
    assert speaker_scores(records, duration_s=4.0, channels=["customer"])["customer"].trend == expected


def test_trend_steps_and_not_calculated() -> None:
    assert trend_class([None, None, None, None]) == "NotCalculated"
    assert trend_class([1.0, None, None, None]) == "NotCalculated"
    assert trend_class([0.0, None, 0.5, None]) == "SlightlyImproving"  # the step itself is Slightly...
    assert trend_class([0.0, 0.4999, None, None]) == "NoChange"
    assert trend_class([None, 1.0, -1.0, None]) == "Declining"  # -2.0: the second step
    assert trend_class([1.0, 9.0, 9.0, 2.9]) == "SlightlyImproving"  # first and last with speech only
    s = speaker_scores([rec("customer", 0.0, 1.0, {"happy": 1.0})], duration_s=60.0, channels=["customer"])
    assert s["customer"].trend == "NotCalculated"  # speech in one quarter only


def test_uncertain_segments_count_with_their_probabilities() -> None:
    # an uncertain segment labelled happy with 0.4 confidence is not +1: its mass counts
    probs = {"happy": 0.4, "angry": 0.35, "neutral": 0.25}
    r = rec("customer", 0.0, 2.0, probs, uncertain=True)
    assert r["label"] == "happy"
    s = speaker_scores([r], duration_s=2.0, channels=["customer"])["customer"]
    assert s.score == pytest.approx(5.0 * (0.4 - 0.35))
    assert s.negative_share == pytest.approx(0.35)
    same = speaker_scores([{**r, "uncertain": False}], duration_s=2.0, channels=["customer"])["customer"]
    assert same == s


def test_speakers_without_speech() -> None:
    s = speaker_scores([rec("agent", 1.0, 1.0, {"happy": 1.0})], duration_s=10.0, channels=["customer", "agent"])
    for ch, n in (("customer", 0), ("agent", 1)):  # zero-length segments carry no speech
        assert s[ch].segments == n and s[ch].speech_s == 0.0
        assert s[ch].score is None and s[ch].negative_share is None
        assert s[ch].quarters == (None, None, None, None) and s[ch].trend == "NotCalculated"
        assert s[ch].label_shares == {}
    assert speaker_scores([], duration_s=0.0, channels=[]) == {}


def test_unlisted_channel_and_records_past_the_duration() -> None:
    # a record on a channel the call did not list is scored; one past the duration stretches the quarters
    s = speaker_scores([rec("x", 0.0, 1.0, {"happy": 1.0}), rec("x", 7.0, 8.0, {"angry": 1.0}, seq=1)],
                       duration_s=4.0, channels=[])
    assert s["x"].quarters == (5.0, None, None, -5.0)


def test_order_does_not_change_the_figures() -> None:
    import random

    rng = random.Random(3)
    records = [rec("customer", i * 0.7, i * 0.7 + rng.uniform(0.2, 3.0),
                   {"happy": rng.random(), "sad": rng.random(), "neutral": rng.random()}, seq=i) for i in range(200)]
    a = speaker_scores(records, duration_s=150.0, channels=["customer"])
    rng.shuffle(records)
    assert speaker_scores(records, duration_s=150.0, channels=["customer"]) == a
    assert -SCALE <= (a["customer"].score or 0.0) <= SCALE
