"""Conversation dynamics (producer/dynamics.py) on generated conversations whose truth is known:
talk time, silences, overtalk and interruptions against a brute-force count on a 10 ms grid, live
(spans arriving late, the clock advancing in blocks) equal to offline, alerts, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from callevents.dynrules import DynamicsSettings
from callevents.rules import load_settings
from producer.dynamics import MAX_EPISODES, Dynamics

GRID = 0.01


def conversation(seed: int, *, seconds: float = 240.0) -> list[tuple[int, float, float]]:
    """Seeded two-party turns with gaps (some over 3 s) and overlaps; spans on a 10 ms grid."""
    rng = np.random.default_rng(seed)
    spans, t, ch = [], 0.5, 0
    while t < seconds - 5:
        length = round(float(rng.uniform(0.5, 6.0)), 2)
        spans.append((ch, t, round(t + length, 2)))
        r = rng.uniform()
        gap = -rng.uniform(0.6, 2.5) if r < 0.25 else rng.uniform(3.2, 7.0) if r < 0.4 else rng.uniform(0.3, 2.0)
        t = round(max(t + 0.3, t + length + float(gap)), 2)
        ch = 1 - ch
    return spans


def brute(spans: list[tuple[int, float, float]], *, channels: int, duration: float, min_s: float = 3.0,
          over_min_s: float = 0.5) -> dict[str, object]:
    """The truth on a 10 ms grid, independently of the tracker."""
    n = int(round(duration / GRID))
    act = np.zeros((channels, n), dtype=bool)
    for c, a, b in spans:
        act[c, int(round(a / GRID)) : int(round(b / GRID))] = True
    talk = act.sum(axis=1) * GRID
    quiet, both = ~act.any(axis=0), act.sum(axis=0) >= 2

    def runs(mask: np.ndarray) -> list[float]:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
        return [(e - s) * GRID for s, e in zip(edges[::2], edges[1::2], strict=True)]

    sil = [r for r in runs(quiet) if r >= min_s - 1e-9]
    over = [r for r in runs(both) if r >= over_min_s - 1e-9]
    return {"talk": talk, "non_talk": quiet.sum() * GRID, "silences": len(sil), "silence_s": sum(sil),
            "overtalks": len(over), "overtalk_s": sum(over)}


def live(spans: list[tuple[int, float, float]], *, channels: int, duration: float, lag_s: float = 3.5,
         settings: DynamicsSettings | None = None, block_s: float = 0.1) -> tuple[Dynamics, list[dict]]:
    """Feed the spans as the session's VAD does: an utterance is known 0.4 s after its end, or, while
    it goes on, from 3 s after its onset up to the clock (a long one's windows); the clock advances
    by ``block_s``."""
    names = ["agent", "customer", "third"][:channels]
    d = Dynamics(channels=names, lag_s=lag_s, settings=settings)
    events, t = [], 0.0
    while t < duration:
        t = min(duration, t + block_s)
        for c, a, b in spans:
            known = b if t >= b + 0.4 else t if t - a >= 3.0 and t < b else None
            if known is not None and known > a:
                d.speech(c, start_s=a, end_s=known)
        events.extend(d.advance(clock_s=t))
    for c, a, b in spans:
        d.speech(c, start_s=a, end_s=b)
    events.extend(d.finish(duration_s=duration))
    return d, events


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_totals_match_the_truth_live_and_offline(seed: int) -> None:
    spans = conversation(seed)
    duration = max(b for _, _, b in spans) + 4.0
    truth = brute(spans, channels=2, duration=duration)
    assert truth["overtalks"] and truth["silences"]  # the generator makes both
    d, events = live(spans, channels=2, duration=duration)
    s = d.summary()
    for c, name in enumerate(("agent", "customer")):
        assert s["channels"][name]["talk_s"] == pytest.approx(truth["talk"][c], abs=0.02)  # type: ignore[index]
        assert s["channels"][name]["talk_share"] == pytest.approx(truth["talk"][c] / duration, abs=1e-3)  # type: ignore[index]
    assert s["non_talk_s"] == pytest.approx(truth["non_talk"], abs=0.02)
    assert s["silence"]["count"] == truth["silences"]
    assert s["silence"]["total_s"] == pytest.approx(truth["silence_s"], abs=0.05)
    assert s["overtalk"]["count"] == truth["overtalks"]
    assert s["overtalk"]["total_s"] == pytest.approx(truth["overtalk_s"], abs=0.05)
    assert sum(e["kind"] == "silence" for e in events) == truth["silences"]
    assert sum(e["kind"] == "overtalk" for e in events) == truth["overtalks"]
    # offline (every span first, one settle) gives the same totals
    off = Dynamics(channels=["agent", "customer"], lag_s=0.0)
    for c, a, b in spans:
        off.speech(c, start_s=a, end_s=b)
    off.finish(duration_s=duration)
    assert off.summary() == s


def test_periodic_events_and_settling() -> None:
    spans = conversation(5, seconds=60)
    d, events = live(spans, channels=2, duration=60.0, settings=DynamicsSettings(every_s=5))
    dyn = [e for e in events if e["kind"] == "dynamics"]
    ats = [e["at_s"] for e in dyn]
    assert ats == sorted(ats) and len(dyn) >= 11 and ats[-1] == 60.0
    assert all(b - a <= 5.0 + 1e-6 for a, b in zip(ats, ats[1:], strict=False))
    assert dyn[-1]["channels"] == d.summary()["channels"]
    # nothing is published about time that is not settled: events come in time order
    times = [e.get("end_s", e.get("at_s")) for e in events if e["kind"] in ("silence", "overtalk", "dynamics")]
    assert times == sorted(times)


def test_interruptions_who_and_whether_the_other_yielded() -> None:
    d = Dynamics(channels=["agent", "customer"], lag_s=0.0)
    d.speech(0, start_s=0.0, end_s=5.0)
    d.speech(1, start_s=4.2, end_s=9.0)  # customer cuts in; the agent stops 0.8 s later: yielded
    d.speech(0, start_s=8.0, end_s=12.0)  # agent cuts in; the customer stops 1.0 s later: yielded
    d.speech(1, start_s=11.0, end_s=11.8)  # customer cuts in and gives up (the agent goes on)
    d.speech(0, start_s=20.0, end_s=22.0)
    d.speech(1, start_s=20.0, end_s=23.0)  # both start together: overtalk, no interruption
    d.speech(1, start_s=25.0, end_s=25.3)  # a short overlap-free backchannel
    d.speech(0, start_s=25.1, end_s=27.0)  # agent starts 0.1 s into it: overlap 0.2 s < 0.5: nothing
    d.speech(1, start_s=28.0, end_s=32.0)  # agent cuts in; the customer stops only 1.5 s later: not yielded
    d.speech(0, start_s=30.0, end_s=34.0)
    events = d.finish(duration_s=40.0)
    over = [e for e in events if e["kind"] == "overtalk"]
    assert [(e["start_s"], e["end_s"], e["interruption"], e.get("by"), e.get("yielded")) for e in over] == [
        (4.2, 5.0, True, "customer", True), (8.0, 9.0, True, "agent", True), (11.0, 11.8, True, "customer", False),
        (20.0, 22.0, False, None, None), (30.0, 32.0, True, "agent", False)]
    ch = d.summary()["channels"]
    assert (ch["customer"]["interruptions"], ch["customer"]["yielded"]) == (2, 1)
    assert (ch["agent"]["interruptions"], ch["agent"]["yielded"]) == (2, 1)


def test_a_turn_split_by_the_vad_keeps_its_onset() -> None:
    """The customer's turn split at a 0.4 s dip; the agent cuts in just before the second part: the
    agent interrupted the customer, not the other way round."""
    d = Dynamics(channels=["agent", "customer"], lag_s=0.0)
    d.speech(1, start_s=10.0, end_s=10.6)
    d.speech(1, start_s=11.0, end_s=13.0)
    d.speech(0, start_s=10.9, end_s=14.0)
    over = [e for e in d.finish(duration_s=15.0) if e["kind"] == "overtalk"]
    assert [(e["start_s"], e["end_s"], e["by"], e["over"]) for e in over] == [(11.0, 13.0, "agent", ["customer"])]
    assert d.summary()["channels"]["customer"]["talk_s"] == pytest.approx(2.6)


def test_dead_air_alert_opens_at_20_s_and_closes_when_someone_speaks() -> None:
    spans = [(0, 1.0, 4.0), (1, 30.0, 33.0), (0, 34.0, 35.0)]
    d, events = live(spans, channels=2, duration=36.0)
    alerts = [e for e in events if e["kind"].startswith("alert")]
    assert [(e["kind"], e["rule"], e["channel"], e["since_s"]) for e in alerts] == [
        ("alert_opened", "dead_air", "call", 24.0), ("alert_closed", "dead_air", "call", 24.0)]
    assert alerts[1]["until_s"] == 30.0 and alerts[1]["reason"] == "speech" and alerts[1]["score"] == 26.0
    opened_at = [i for i, e in enumerate(events) if e["kind"] == "alert_opened"][0]
    assert not any(e["kind"] == "silence" for e in events[:opened_at])  # live: opened while it lasts
    assert [e for e in events if e["kind"] == "silence"][0] == {
        "kind": "silence", "start_s": 4.0, "end_s": 30.0, "duration_s": 26.0}


def test_repeated_interruptions_alert() -> None:
    spans = []
    for k in range(4):  # the customer cuts the agent off four times in 40 s
        t = 10.0 * k
        spans += [(0, t, t + 5.0), (1, t + 4.0, t + 7.0)]
    _, events = live(spans, channels=2, duration=150.0)
    alerts = [e for e in events if e["kind"].startswith("alert") and e["rule"] == "interruptions"]
    assert [(e["kind"], e["channel"], e["since_s"]) for e in alerts] == [
        ("alert_opened", "customer", 24.0), ("alert_closed", "customer", 24.0)]
    # closes once at most one is left in the last 60 s: when the third (at 24 s) leaves the window
    assert alerts[0]["score"] == 3 and 84.0 <= alerts[1]["until_s"] <= 84.1 + 1e-6


def test_mono_has_talk_and_silence_only() -> None:
    d, events = live([(0, 1.0, 3.0), (0, 8.0, 9.5)], channels=1, duration=12.0)
    s = d.summary()
    assert "overtalk" not in s and "interruptions" not in s["channels"]["agent"]
    assert s["channels"]["agent"]["talk_s"] == pytest.approx(3.5)
    assert s["silence"]["count"] == 1 and s["silence"]["total_s"] == pytest.approx(5.0)
    assert not any(e["kind"] == "overtalk" for e in events)


def test_a_call_that_never_speaks_and_a_silent_channel() -> None:
    d, events = live([], channels=2, duration=45.0)
    s = d.episodes_summary()
    assert s["non_talk_s"] == 45.0 and s["silence"]["count"] == 1 and s["silences"] == [[0.0, 45.0]]
    assert all(c["talk_s"] == 0 and c["talk_share"] == 0 for c in s["channels"].values())
    closed = [e for e in events if e["kind"] == "alert_closed"]
    assert closed and closed[0]["rule"] == "dead_air" and closed[0]["reason"] == "call_ended"
    d, _ = live([(0, 0.0, 10.0), (0, 11.0, 20.0)], channels=2, duration=20.0)  # the customer never speaks
    s = d.summary()
    assert s["channels"]["customer"]["talk_s"] == 0 and s["overtalk"]["count"] == 0
    assert s["channels"]["agent"]["talk_share"] == pytest.approx(0.95)
    empty = Dynamics(channels=["a", "b"], lag_s=3.5)  # a call with no audio at all
    assert empty.finish(duration_s=0.0)[-1]["duration_s"] == 0.0 and empty.summary()["silence"]["count"] == 0


def test_a_three_hour_call_keeps_aggregates_only() -> None:
    d = Dynamics(channels=["agent", "customer"], lag_s=3.5)
    t, biggest = 0.0, 0
    while t < 3 * 3600:  # agent 1 s, the customer cuts in after 0.4 s (0.6 s of overtalk), 3.5 s of silence
        d.speech(0, start_s=t, end_s=t + 1.0)
        d.speech(1, start_s=t + 0.4, end_s=t + 1.5)
        d.advance(clock_s=t + 5.0)
        biggest = max(biggest, sum(len(r) for r in d._runs))
        t += 5.0
    d.finish(duration_s=t)
    s = d.episodes_summary()
    n = int(3 * 3600 / 5.0)
    assert n > MAX_EPISODES and biggest <= 4
    assert len(s["silences"]) == MAX_EPISODES and len(s["overtalks"]) == MAX_EPISODES
    assert s["silence"]["count"] == n and s["overtalk"]["count"] == n
    assert s["channels"]["customer"]["interruptions"] == n
    assert s["channels"]["agent"]["talk_s"] == pytest.approx(1.0 * n, rel=1e-6)
    assert s["overtalk"]["total_s"] == pytest.approx(0.6 * n, rel=1e-6)


def test_settings_from_the_alert_rules_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "rules.toml"
    path.write_text("[dynamics]\nsilence_min_s = 5\ndead_air_s = 30\ninterruptions_open = 0\n")
    dyn = load_settings(path).dynamics
    assert (dyn.silence_min_s, dyn.dead_air_s, dyn.interruptions_open, dyn.overtalk_min_s) == (5, 30, 0, 0.5)
    path.write_text("[dynamics]\nsilence_min_s = -1\n")
    with pytest.raises(ValueError, match="silence_min_s must be a number >= 0"):
        load_settings(path)
    path.write_text("[dynamics]\nsilences = 3\n")
    with pytest.raises(ValueError, match="silences"):
        load_settings(path)


def test_loudness_and_a_sustained_raised_voice() -> None:
    """20 s of speech at -30 dBFS (the baseline), then 12 s at -20 dBFS, then -30 again: the level is
    K-weighted (BS.1770), the raised stretch is counted and the raised_voice alert opens after 10 s."""
    from bench.speechlike import vowels

    d = Dynamics(channels=["agent", "customer"], lag_s=0.0, sr=8000)
    events, t = [], 0.0
    for k, level in enumerate([-30.0] * 10 + [-20.0] * 6 + [-30.0] * 2):
        events += d.level(1, vowels(2.0, seed=k, level_dbfs=level), start_s=t)
        t += 2.0
    events += d.finish(duration_s=t)
    raised = [e for e in events if e["kind"].startswith("alert") and e["rule"] == "raised_voice"]
    assert [(e["kind"], e["channel"], e["since_s"]) for e in raised] == [
        ("alert_opened", "customer", 30.0), ("alert_closed", "customer", 30.0)]
    assert 9.0 < raised[0]["score"] < 11.0  # dB above the baseline
    assert raised[1]["until_s"] == 32.0 and raised[1]["reason"] == "score"
    ch = d.summary()["channels"]
    assert ch["customer"]["raised_s"] == pytest.approx(12.0) and ch["agent"]["level_db"] is None
    # a 1 kHz tone at -20 dBFS RMS: K-weighting adds ~0 dB there (BS.1770: 1 kHz reads -0.691 + ~0)
    from bench.speechlike import tone

    tone_d = Dynamics(channels=["a"], lag_s=0.0, sr=8000)
    tone_d.level(0, tone(2.0, freq=1000.0, level_dbfs=-20.0), start_s=0.0)
    assert tone_d.summary()["channels"]["a"]["level_db"] == pytest.approx(-20.0, abs=0.8)
    high = Dynamics(channels=["a"], lag_s=0.0, sr=8000)  # the +4 dB shelf above ~1.7 kHz weighs 3 kHz more
    high.level(0, tone(2.0, freq=3000.0, level_dbfs=-20.0), start_s=0.0)
    shelf = high.summary()["channels"]["a"]["level_db"] - tone_d.summary()["channels"]["a"]["level_db"]
    assert 2.5 < shelf < 4.5, shelf


def syllables(rate: float, seconds: float, *, seed: int, sr: int = 8000) -> np.ndarray:
    """A voiced carrier (140 Hz harmonics) with one loudness bump per syllable at ``rate`` per second
    (slightly uneven), over a -60 dBFS floor."""
    from bench.speechlike import noise

    t = np.arange(int(seconds * sr)) / sr
    carrier = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    rng = np.random.default_rng(seed)
    bumps = np.abs(np.sin(np.pi * rate * t + 0.3 * np.sin(2 * np.pi * 0.5 * t))) ** 1.5  # uneven syllables
    y = (0.05 * carrier * bumps * (0.7 + 0.3 * rng.uniform(size=1))).astype(np.float32)
    return y + noise(seconds, seed=seed + 1, level_dbfs=-60.0, sr=sr)


@pytest.mark.parametrize("rate", [3.0, 4.5, 6.0])
def test_speaking_rate_counts_syllable_nuclei(rate: float) -> None:
    """Synthetic syllables at a known rate: the measured syllables per second is within 15 %."""
    sr, seconds = 8000, 8.0
    y = syllables(rate, seconds, seed=int(rate * 10))
    d = Dynamics(channels=["a"], lag_s=0.0, sr=sr)
    for k in range(4):  # four 2 s stretches
        d.level(0, y[k * 2 * sr : (k + 1) * 2 * sr], start_s=2.0 * k)
    assert d.summary()["channels"]["a"]["rate_sps"] == pytest.approx(rate, rel=0.15)


def test_speaking_rate_relative_to_the_speakers_own_baseline() -> None:
    """The agent speaks at 3 syllables/s for 30 s, then at 4.5/s for 14 s (2 s stretches, as the
    cutter gives them); the customer at 4.5/s all along. ``rate_rel`` is null until 20 s of speech
    (10 s of baseline before the latest 10 s), about 1 at a steady pace, and about 1.5 once the
    agent's latest 10 s are all at the faster pace; the ``dynamics`` events and the summary carry it."""
    from producer.loudness import RATE_RECENT_S, RATE_WARMUP_S

    sr = 8000
    agent = np.concatenate([syllables(3.0, 30.0, seed=3), syllables(4.5, 14.0, seed=4)])
    customer = syllables(4.5, 44.0, seed=5)
    d = Dynamics(channels=["agent", "customer"], lag_s=0.0, sr=sr)
    rel: dict[float, tuple[float | None, float | None]] = {}
    for k in range(22):  # both speak together: no turns needed for the rate
        for c, y in enumerate((agent, customer)):
            d.speech(c, start_s=2.0 * k, end_s=2.0 * k + 2.0)
            d.level(c, y[2 * k * sr : 2 * (k + 1) * sr], start_s=2.0 * k)
        events = [e for e in d.advance(clock_s=2.0 * k + 2.0) if e["kind"] == "dynamics"]
        for e in events:
            rel[e["at_s"]] = (e["channels"]["agent"]["rate_rel"], e["channels"]["customer"]["rate_rel"])
    assert RATE_RECENT_S + RATE_WARMUP_S == 20.0
    assert rel[6.0] == rel[16.0] == (None, None)  # warming up (events when the settled time passes 5 s steps)
    for at in (20.0, 26.0, 30.0):  # a steady pace
        assert rel[at][0] == pytest.approx(1.0, abs=0.12) and rel[at][1] == pytest.approx(1.0, abs=0.12)
    assert rel[36.0][0] is not None and 1.0 < rel[36.0][0] < 1.5  # the latest 10 s half fast
    assert rel[40.0][0] == pytest.approx(1.5, rel=0.15)  # all fast (over the 3/s before)
    assert rel[40.0][1] == pytest.approx(1.0, abs=0.12)
    d.finish(duration_s=44.0)
    ch = d.summary()["channels"]
    assert ch["agent"]["rate_rel"] == pytest.approx(1.5, rel=0.15)
    assert ch["agent"]["rate_sps"] == pytest.approx((3.0 * 30 + 4.5 * 14) / 44, rel=0.15)
    from producer.summary_lines import talk_line

    assert f"(latest {ch['agent']['rate_rel']:.2f}x their own earlier pace)" in talk_line(ch["agent"])
