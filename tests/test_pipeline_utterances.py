"""Utterance-aligned segments through the whole pipeline (a Silero bundle): one record per
utterance with its speech times, overlapping windows in a long one, the same records from a file,
a WAV stream and raw PCM on stdin, and distributed output equal to embedded output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import soundfile as sf
from conftest import SPEECH_CALL
from test_pipeline_redis import embedded, producer_proc, records, worker_proc
from test_producer import produce, wav_stream_bytes

ARGS = ["--format", "jsonl", "--batch", "2", "--timeout", "30"]


def by_channel(recs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in recs:
        out.setdefault(r["channel"], []).append(r)
    return out


def test_records_follow_the_utterances(stereo_speech_call: Path, silero_bundle_dir: Path) -> None:
    code, out, err = embedded([str(stereo_speech_call), "--model", str(silero_bundle_dir), *ARGS])
    assert code == 0, err
    recs = [r for r in records(out) if r["kind"] == "result"]
    chans = by_channel(recs)
    for ch in (0, 1):
        truth = [(s, s + d) for c, s, d in SPEECH_CALL if c == ch]
        got = chans[f"ch{ch}"]
        for s, e in truth:  # every utterance has a record overlapping it, starting near its onset
            over = [r for r in got if r["start_s"] < e and r["end_s"] > s]
            assert over, (ch, s, e, got)
            assert over[0]["start_s"] > s - 0.35  # speech times, not the pre-roll
        for r in got:  # and no record is outside the speech
            assert any(r["start_s"] < e + 0.1 and r["end_s"] > s - 0.1 for s, e in truth), r
    long = [r for r in chans["ch1"] if r["start_s"] < 10.6 and r["end_s"] > 5.6]
    assert len(long) >= 2 and long[1]["start_s"] < long[0]["end_s"], long  # overlapping 3 s windows
    assert all(r["end_s"] - r["start_s"] <= 3.0 + 1e-6 for r in recs)
    assert [r["seq"] for r in recs] == sorted(r["seq"] for r in recs)
    assert "speech segment(s)" in err and "s of speech" in err
    for ch, got in chans.items():  # speech seconds count a long utterance's overlapping windows once
        spans, union = sorted((r["start_s"], r["end_s"]) for r in got), 0.0
        reach = -1.0
        for a, b in spans:
            union += max(0.0, b - max(a, reach))
            reach = max(reach, b)
        speech = float(re.search(rf"{ch}: \d+ speech segment\(s\), ([\d.]+) s of speech", err).group(1))
        assert 0 < speech <= union + 0.05, (ch, speech, union)


@pytest.mark.parametrize("bundle", ["silero_bundle_dir", "silero_speaker_bundle_dir"])
def test_file_wav_stream_and_raw_pcm_give_the_same_utterance_records(stereo_speech_call: Path, bundle: str,
                                                                      request: pytest.FixtureRequest) -> None:
    model = str(request.getfixturevalue(bundle))
    common = ["--model", model, "--format", "jsonl", "--stream-id", "same", "--batch", "3"]
    _, from_file, _ = produce([str(stereo_speech_call), *common])
    code, from_wav, err = produce(["-", *common], input=wav_stream_bytes(stereo_speech_call))
    assert code == 0, err
    pcm = sf.read(stereo_speech_call, dtype="int16")[0].astype("<i2").tobytes()
    code, from_raw, err = produce(["-", *common, "--rate", "16000", "--channels", "2", "--encoding", "pcm16"],
                                  input=pcm)
    assert code == 0, err
    a, b, c = ([json.loads(x) for x in t.splitlines()] for t in (from_file, from_wav, from_raw))
    assert a == b == c and len(a) >= 5


@pytest.mark.parametrize("bundle", ["silero_bundle_dir", "silero_speaker_bundle_dir"])
def test_distributed_equals_embedded_with_utterances(redis_url: str, stereo_speech_call: Path, bundle: str,
                                                     request: pytest.FixtureRequest) -> None:
    silero_bundle_dir = request.getfixturevalue(bundle)
    args = [str(stereo_speech_call), "--model", str(silero_bundle_dir), *ARGS, "--stream-id", f"utt-{bundle}"]
    code, emb_out, emb_err = embedded(args)
    assert code == 0, emb_err
    prod = producer_proc(redis_url, *args)
    worker = worker_proc(redis_url, silero_bundle_dir, "--processes", "1", "--burst")
    out, err = prod.communicate(timeout=90)
    worker.communicate(timeout=60)
    assert prod.returncode == 0, err
    assert records(out) == records(emb_out) and len(records(out)) >= 5
