"""Silero VAD (models.vad) and utterance-aligned segments (models.utterances) on generated signals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sysdeps

from bench import speechlike as sl
from models.bundle import SPEC_FORMAT, BundleError, Spec, load_bundle, parse_vad, write_bundle
from models.errors import ParameterError
from models.features import SegmentParams
from models.utterances import MIN_TAIL_S, UtteranceCutter, clip_windows, utterance_segments
from models.vad import (
    SILERO_NUMPY_PATH,
    SILERO_PATH,
    SileroModel,
    SileroNumpy,
    SileroParams,
    VadStream,
    load_vad,
    speech_probabilities,
)

SR = sl.SR
SEG = SegmentParams(window_s=3.0, hop_s=1.5, min_s=0.8)
PRM = SileroParams()
#: For long generated utterances: the synthetic voice has syllable dips the network sometimes hears
#: as short pauses; a longer min_silence keeps one utterance whole (what is tested is the windowing).
LONG = SileroParams(min_silence_s=1.0)


def test_vad_hears_speechlike_bursts_not_noise_tones_or_dtmf() -> None:
    assert (speech_probabilities(sl.vowels(2.0), sr=SR, params=PRM) >= PRM.threshold).mean() > 0.5
    for y in (sl.noise(3.0, level_dbfs=-20), sl.noise(3.0, level_dbfs=-45), sl.tone(3.0), sl.dtmf(3.0, level_dbfs=-15)):
        assert (speech_probabilities(y, sr=SR, params=PRM) >= PRM.threshold).mean() == 0.0


def test_vad_probabilities_do_not_depend_on_block_size() -> None:
    y = np.concatenate([sl.vowels(1.5, seed=1), np.zeros(3000, np.float32), sl.vowels(1.0, seed=2)])
    whole = speech_probabilities(y, sr=SR, params=PRM)
    s = VadStream(channels=1, sr=SR, params=PRM)
    parts = [s.feed(y[None, i : i + 333]) for i in range(0, len(y), 333)]
    np.testing.assert_allclose(np.concatenate(parts, axis=1)[0], whole, atol=1e-5)  # float32 rounding
    assert len(whole) == len(y) // 256


def test_vad_skips_the_network_below_the_floor() -> None:
    s = VadStream(channels=2, sr=SR, params=PRM)
    y = np.stack([np.zeros(SR * 2, np.float32), sl.noise(2.0, level_dbfs=-80)])
    p = s.feed(y)
    assert s.network_runs == 0 and not p.any() and s.windows == p.shape[1] == 2 * SR // 256


def test_vad_rejects_bad_input() -> None:
    with pytest.raises(ParameterError, match="sr 8000 or 16000"):
        VadStream(channels=1, sr=11025, params=PRM)
    with pytest.raises(ParameterError, match="vad.threshold"):
        SileroParams(threshold=1.5)
    with pytest.raises(ParameterError, match="off_threshold"):
        SileroParams(threshold=0.4, off_threshold=0.6)
    with pytest.raises(BundleError, match="does not match"):
        SileroModel(SILERO_PATH, sha256="0" * 64)


def test_one_utterance_gets_one_segment_with_pads() -> None:
    y, spans = sl.call([("silence", 1.0), ("speech", 1.6), ("silence", 1.5)])
    segs = utterance_segments(y=y, sr=SR, segment=SEG, params=PRM)
    assert len(segs) == 1
    u = segs[0]
    (s, e), = spans
    assert abs(u.speech_start / SR - s) < 0.3 and abs(u.speech_end / SR - e) < 0.3  # Silero's onset lag
    assert u.start / SR <= s + 0.05 and u.end / SR >= e - 0.05  # the pads cover the speech
    assert u.start == u.speech_start - round(PRM.pre_roll_s * SR)
    assert u.end == u.speech_end + round(PRM.hangover_s * SR)
    assert u.samples.shape == (round(SEG.window_s * SR),)
    np.testing.assert_array_equal(u.samples[: u.end - u.start], y[u.start : u.end])
    assert not u.samples[u.end - u.start :].any()  # zero-padded at the end, as training pads


def test_short_burst_is_dropped_and_short_speech_is_extended_to_min_length() -> None:
    y, _ = sl.call([("silence", 1.0), ("speech", 0.1), ("silence", 1.5)])
    assert utterance_segments(y=y, sr=SR, segment=SEG, params=PRM) == []
    y, _ = sl.call([("silence", 1.0), ("speech", 0.6), ("silence", 1.5)], seed=5)
    bare = SileroParams(pre_roll_s=0.0, hangover_s=0.0)
    (u,) = utterance_segments(y=y, sr=SR, segment=SEG, params=bare)
    assert u.speech_end - u.speech_start < round(SEG.min_s * SR)
    assert (u.start, u.end) == (u.speech_start, u.speech_start + round(SEG.min_s * SR))  # extended into the pause


def test_pauses_split_utterances_and_short_pauses_do_not() -> None:
    y, spans = sl.call([("silence", 0.5), ("speech", 1.0), ("silence", 0.15), ("speech", 1.0),
                        ("silence", 1.2), ("speech", 1.0), ("silence", 1.0)])
    segs = utterance_segments(y=y, sr=SR, segment=SEG, params=PRM)
    assert len(segs) == 2
    assert segs[0].start / SR <= spans[0][0] + 0.05 and segs[0].end / SR >= spans[1][1] - 0.05
    assert abs(segs[1].speech_start / SR - spans[2][0]) < 0.3


def test_long_utterance_is_cut_into_overlapping_windows_within_the_latency_bound() -> None:
    y, spans = sl.call([("silence", 1.0), ("speech", 7.0), ("silence", 1.5)])
    cutter = UtteranceCutter(channels=1, sr=SR, segment=SEG, params=LONG)
    emitted_at: list[tuple[int, int]] = []  # (samples fed when the segment came out, segment start)
    fed = 0
    block = 160
    for i in range(0, len(y), block):
        out = cutter.feed(y[None, i : i + block])
        fed += len(y[i : i + block])
        emitted_at += [(fed, u.start) for u in out]
    emitted_at += [(fed, u.start) for u in cutter.finish()]
    starts = [s for _, s in emitted_at]
    window, hop = round(SEG.window_s * SR), round(SEG.hop_s * SR)
    assert len(starts) >= 4 and all(b - a == hop for a, b in zip(starts[:-1], starts[1:], strict=True))
    onset = round(spans[0][0] * SR)
    for when, start in emitted_at[:-1]:  # every full window comes out once its audio is in
        assert when - start <= window + 256 + block
    assert emitted_at[0][0] - onset <= window  # first segment no later than the window after onset


def test_tail_window_only_when_it_adds_enough() -> None:
    window, hop = round(SEG.window_s * SR), round(SEG.hop_s * SR)
    for extra in (0.1, 1.0):
        y, _ = sl.call([("silence", 1.0), ("speech", 3.0 + extra), ("silence", 1.5)])
        segs = utterance_segments(y=y, sr=SR, segment=SEG, params=LONG)
        assert len(segs) >= (1 if extra < MIN_TAIL_S else 2)
        last_full = max(u.end for u in segs if u.end - u.start == window)
        tails = [u for u in segs if u.end > last_full]
        assert all(u.end - last_full >= round(MIN_TAIL_S * SR) for u in tails)
        assert all(b.start - a.start == hop for a, b in zip(segs[:-1], segs[1:], strict=True))


def test_streaming_equals_offline_for_any_blocks_and_channels_are_independent() -> None:
    a, _ = sl.call([("silence", 0.7), ("speech", 1.2), ("silence", 1.0), ("speech", 3.6), ("silence", 0.8)], seed=1)
    b, _ = sl.call([("silence", 2.2), ("speech", 2.0), ("silence", 2.5), ("speech", 0.9)], seed=2)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    offline = [utterance_segments(y=x, sr=SR, segment=SEG, params=PRM) for x in (a, b)]
    for block in (80, 1000, 7919):
        cutter = UtteranceCutter(channels=2, sr=SR, segment=SEG, params=PRM)
        got = []
        for i in range(0, n, block):
            got += cutter.feed(np.stack([a[i : i + block], b[i : i + block]]))
        got += cutter.finish()
        for ch in (0, 1):
            mine = [u for u in got if u.channel == ch]
            assert [(u.start, u.end) for u in mine] == [(u.start, u.end) for u in offline[ch]]
            for u, v in zip(mine, offline[ch], strict=True):
                np.testing.assert_array_equal(u.samples, v.samples)
        order = [(u.channel, u.start) for u in got]
        if block == 80:
            first_order = order
        assert order == first_order  # the same order for any block size


def test_silence_noise_and_tones_give_no_segments() -> None:
    for y in (np.zeros(SR * 3, np.float32), sl.noise(4.0, level_dbfs=-30), sl.tone(3.0), sl.dtmf(4.0)):
        assert utterance_segments(y=y, sr=SR, segment=SEG, params=PRM) == []


def test_clip_windows_falls_back_to_all_windows_when_no_speech(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tinybundle import tiny_spec

    spec = tiny_spec(vad="silero")
    assert clip_windows(y=sl.tone(4.0), spec=spec).shape == (2, 3 * SR)
    y, _ = sl.call([("silence", 0.5), ("speech", 1.0), ("silence", 0.5)])
    assert clip_windows(y=y, spec=spec).shape == (1, 3 * SR)


def test_spec_round_trips_silero_and_reads_old_energy_specs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tinybundle import tiny_onnx, tiny_spec

    spec = tiny_spec(vad="silero")
    b = write_bundle(tmp_path / "b", onnx_bytes=tiny_onnx(spec), spec=spec)
    data = json.loads((tmp_path / "b" / "spec.json").read_text())
    assert data["format"] == 4 < SPEC_FORMAT and data["vad"]["kind"] == "silero"  # 5 only with a history
    assert b.spec.vad == SileroParams(min_silence_s=0.8)
    assert data["segment"]["pad"] == "end"  # the variable-length rule, recorded in the spec
    del data["segment"]["pad"]
    assert Spec.from_dict(data).segment.pad == "end"  # older specs padded the same way
    with pytest.raises(BundleError, match="segment.pad='centre'"):
        Spec.from_dict({**data, "segment": {**data["segment"], "pad": "centre"}})
    old = tiny_spec()
    assert isinstance(Spec.from_dict({**old.to_dict(), "format": 2}).vad, type(old.vad))
    with pytest.raises(BundleError, match="vad.kind 'webrtc'"):
        parse_vad({"kind": "webrtc"})
    data["vad"]["threshold"] = 2.0
    (tmp_path / "b" / "spec.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="vad.threshold"):
        load_bundle(tmp_path / "b")


def test_noise_floor_gate_saves_network_runs_and_still_hears_speech() -> None:
    floor = sl.noise(6.0, seed=3, level_dbfs=-55)  # a loud line, above the absolute floor (-60 dBFS)
    y = floor.copy()
    y[int(3.0 * SR) : int(4.5 * SR)] += sl.vowels(1.5, seed=4, level_dbfs=-30)
    gated = VadStream(channels=1, sr=SR, params=PRM)
    p = gated.feed(y[None, :])[0]
    ungated = VadStream(channels=1, sr=SR, params=SileroParams(gate_db=0.0))
    ungated.feed(y[None, :])
    assert PRM.gate_db == 10.0 and ungated.network_runs == ungated.windows
    assert gated.network_runs < 0.5 * gated.windows  # the noise alone never reaches the network
    assert (p[int(3.2 * SR) // 256 : int(4.4 * SR) // 256] >= PRM.threshold).mean() > 0.5
    assert not p[: int(2.8 * SR) // 256].any()


def test_numpy_silero_matches_onnxruntime_window_by_window_and_in_segments() -> None:
    # speech on both channels, overlapping and apart, silence, a noisy line and a loud burst: the
    # gate, the resets after quiet and partial channel sets all go through both implementations
    a = np.concatenate([sl.vowels(2.0, seed=1), np.zeros(SR, np.float32), sl.vowels(1.5, seed=2, level_dbfs=-12)])
    b = np.concatenate([sl.noise(1.5, seed=3, level_dbfs=-50), sl.vowels(2.5, seed=4, level_dbfs=-35),
                        np.zeros(SR // 2, np.float32)])
    y = np.stack([a, b[: len(a)]])
    assert isinstance(load_vad(SR), SileroNumpy) and isinstance(load_vad(16000), SileroModel)
    with pytest.raises(BundleError, match="does not match"):  # a spec naming another graph: no silent swap
        load_vad(SR, "0" * 64)
    ref = VadStream(channels=2, sr=SR, params=PRM, model=SileroModel())
    fast = VadStream(channels=2, sr=SR, params=PRM)
    want = np.concatenate([ref.feed(y[:, i : i + 800]) for i in range(0, y.shape[1], 800)], axis=1)
    got = np.concatenate([fast.feed(y[:, i : i + 800]) for i in range(0, y.shape[1], 800)], axis=1)
    assert isinstance(fast.model, SileroNumpy) and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert fast.network_runs == ref.network_runs < fast.windows  # the same windows ran
    assert (want >= PRM.threshold).any(axis=1).all()  # both channels had speech to compare
    segs = [utterance_segments(y=y[0], sr=SR, segment=SEG, params=PRM, model=m) for m in (SileroModel(), None)]
    assert [(u.start, u.end) for u in segs[0]] == [(u.start, u.end) for u in segs[1]] != []


def test_numpy_silero_weights_are_the_onnx_models_and_are_checked(tmp_path) -> None:
    sysdeps.module("onnx", "pip install .[dev]")
    from training.vad_weights import extract, matches

    assert matches(extract())  # the vendored .npz holds exactly the 8 kHz branch's constants
    bad = tmp_path / "w.npz"
    data = bytearray(SILERO_NUMPY_PATH.read_bytes())
    data[len(data) // 2] ^= 1  # one bit of one weight
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match"):
        SileroNumpy(bad)
    with pytest.raises(ParameterError, match=r"must be \(b, 288\)"):
        SileroNumpy().encode(np.zeros((2, 256), np.float32))


# --- issue 27: level-adaptive gating and stereo bleed ----------------------------------------------

#: The opt-in settings measured in docs/vad.md ("Quiet speakers and bleed").
ADAPTIVE = SileroParams(level_gain_db=20.0, gate_share=0.3, speech_hold_s=0.3, bleed_share=0.5)
QUIET_SPANS = [(1.0, 2.5), (4.0, 5.5), (7.0, 8.0), (9.5, 11.0)]


def _covered(segs: list, spans: list[tuple[float, float]], channel: int = 0) -> int:  # type: ignore[type-arg]
    return sum(any(u.channel == channel and min(b * SR, u.speech_end) - max(a * SR, u.speech_start) > 0.5 * (b - a) * SR
                   for u in segs) for a, b in spans)


def _bleed_pair() -> np.ndarray:
    """Channel 0 talks at -18 dBFS; channel 1 carries it 25 dB down, 20 ms late, and talks itself
    (-35 dBFS) only at 10.0-11.5 s; both over their own line floor."""
    a, b = sl.noise(12.0, seed=1, level_dbfs=-62), sl.noise(12.0, seed=2, level_dbfs=-62)
    for k, (s, e) in enumerate([(1.0, 3.0), (4.0, 6.0), (7.5, 9.5)]):
        a[int(s * SR) : int(e * SR)] += sl.vowels(e - s, seed=20 + k, level_dbfs=-18)
    lag = int(0.02 * SR)
    b[lag:] += a[:-lag] * np.float32(10 ** (-25 / 20))
    b[int(10.0 * SR) : int(11.5 * SR)] += sl.vowels(1.5, seed=30, level_dbfs=-35)
    return np.stack([a, b])


def test_level_adaptive_gate_hears_a_quiet_speaker_that_the_fixed_gate_misses() -> None:
    y = sl.noise(12.0, seed=5, level_dbfs=-58)  # a line floor 13 dB under the speech
    for k, (a, b) in enumerate(QUIET_SPANS):
        y[int(a * SR) : int(b * SR)] += sl.vowels(b - a, seed=10 + k, level_dbfs=-45)
    old = utterance_segments(y=y, sr=SR, segment=SEG, params=PRM)
    new = utterance_segments(y=y, sr=SR, segment=SEG, params=ADAPTIVE)
    assert _covered(old, QUIET_SPANS) == 0  # the shipped settings: Silero at -45 dBFS, behind a 10 dB gate
    assert _covered(new, QUIET_SPANS) >= 3  # the level is learned on the first utterance
    assert utterance_segments(y=sl.noise(12.0, seed=5, level_dbfs=-58), sr=SR, segment=SEG, params=ADAPTIVE) == []


def test_adaptive_settings_stay_silent_on_line_noise_tones_and_dtmf() -> None:
    for y in (sl.noise(6.0, level_dbfs=-36), sl.noise(6.0, level_dbfs=-58), sl.tone(4.0), sl.dtmf(6.0)):
        assert utterance_segments(y=y, sr=SR, segment=SEG, params=ADAPTIVE) == []


def test_bleed_of_the_other_channel_is_not_its_speech_but_own_speech_is() -> None:
    y = _bleed_pair()
    for prm, bleed_heard in ((PRM, True), (SileroParams(bleed_share=0.5), False), (ADAPTIVE, False)):
        cutter = UtteranceCutter(channels=2, sr=SR, segment=SEG, params=prm)
        segs = cutter.feed(y) + cutter.finish()
        assert _covered(segs, [(1.0, 3.0), (4.0, 6.0), (7.5, 9.5)], channel=0) == 3
        assert any(u.channel == 1 and u.speech_end > 10.0 * SR and u.speech_start < 11.5 * SR for u in segs)
        early = [u for u in segs if u.channel == 1 and u.speech_start < 9.8 * SR]
        assert bool(early) is bleed_heard, (prm, early)
        assert (cutter.vad.bleed_windows > 0) is not bleed_heard


def test_streaming_equals_offline_with_the_adaptive_gate_and_bleed_rejection() -> None:
    y = _bleed_pair()
    y[1] *= np.float32(0.3)  # and a quiet channel, so that the gain and the adaptive gate act
    whole = UtteranceCutter(channels=2, sr=SR, segment=SEG, params=ADAPTIVE)
    ref = [(u.channel, u.start, u.end) for u in whole.feed(y) + whole.finish()]
    assert ref and whole.vad.bleed_windows > 0
    for block in (80, 1000, 7919):
        cutter = UtteranceCutter(channels=2, sr=SR, segment=SEG, params=ADAPTIVE)
        got = []
        for i in range(0, y.shape[1], block):
            got += cutter.feed(y[:, i : i + block])
        got += cutter.finish()
        assert [(u.channel, u.start, u.end) for u in got] == ref


def test_new_vad_parameters_default_to_off_and_are_validated() -> None:
    assert (PRM.speech_hold_s, PRM.gate_share, PRM.level_gain_db, PRM.bleed_share) == (0.0, 0.0, 0.0, 0.0)
    assert VadStream(channels=2, sr=SR, params=PRM).bleed is None
    assert set(PRM.to_dict()) == {"threshold", "off_threshold", "min_silence_s", "min_speech_s", "pre_roll_s",
                                  "hangover_s", "floor_dbfs", "reset_after_s", "gate_db", "model_sha256", "kind"}
    assert parse_vad(ADAPTIVE.to_dict()) == ADAPTIVE and ADAPTIVE.to_dict()["bleed_share"] == 0.5
    for bad, msg in (({"gate_share": 1.5}, "vad.gate_share=1.5"), ({"bleed_share": -0.1}, "vad.bleed_share=-0.1"),
                     ({"level_gain_db": 50.0}, "vad.level_gain_db=50.0"),
                     ({"speech_hold_s": 9.0}, "vad.speech_hold_s=9.0"),
                     ({"bleed_max_delay_s": 1.0}, "vad.bleed_max_delay_s=1.0"),
                     ({"level_gain_db": 20.0, "gate_db": 0.0}, "vad.level_gain_db=20.0 .* need gate_db > 0")):
        with pytest.raises(ParameterError, match=msg):
            SileroParams(**bad)  # type: ignore[arg-type]
    from models.bleed import BleedDetector

    with pytest.raises(ParameterError, match="share=0"):
        BleedDetector(channels=2, window=256, max_delay=10, share=0.0)
