"""ser-produce without Redis (embedded mode): cutting, VAD gating, ordering, formats, inputs, errors."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import sysdeps
from click.testing import CliRunner
from conftest import synth_call
from tinybundle import tiny_spec

from models.audio import resample
from models.errors import AudioError
from models.features import SegmentParams, segment
from producer.cli import EXIT_INCOMPLETE, main
from producer.segmenter import Segmenter
from producer.summary_lines import longest_negative
from producer.wavstream import read_header

EXPECTED = [("ch0", 0), ("ch0", 1), ("ch1", 2), ("ch1", 3), ("ch0", 4), ("ch1", 4)]


def produce(args: list[str], *, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, input=input, env={"SER_REDIS_URL": ""})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def jsonl(text: str) -> list[dict]:
    """The segment records (as a consumer that reads ``kind`` result/failure sees them; turns: test_turns.py)."""
    return [r for r in map(json.loads, filter(str.strip, text.splitlines())) if r["kind"] != "turn"]


def keys(records: list[dict]) -> list[tuple[str, int]]:
    return [(r["channel"], r["seq"]) for r in records]


@pytest.mark.parametrize("window_s,hop_s,min_s", [(3.0, 3.0, 0.5), (3.0, 1.0, 0.5), (1.0, 0.5, 1.0)])
@pytest.mark.parametrize("in_rate", [8000, 16000, 44100])
def test_segmenter_matches_whole_signal_cut(window_s: float, hop_s: float, min_s: float, in_rate: int) -> None:
    rng = np.random.default_rng(7)
    spec = replace(tiny_spec(), segment=SegmentParams(window_s=window_s, hop_s=hop_s, min_s=min_s))
    for n in (100, int(2.9 * in_rate), int(10.37 * in_rate), 9 * in_rate):
        y = rng.standard_normal((2, n)).astype(np.float32) * 0.1
        whole = resample(y=y, orig_sr=in_rate, target_sr=spec.sample_rate)
        starts, segs = segment(y=whole[1], sr=spec.sample_rate, params=spec.segment)
        seg = Segmenter(spec=spec, in_rate=in_rate, channels=2)
        cuts = []
        for i in range(0, n, 1234):
            cuts += seg.feed(y[:, i : i + 1234])
        cuts += seg.finish()
        assert [c.start for c in cuts] == list(starts)
        if cuts:
            np.testing.assert_allclose(np.stack([c.samples[1] for c in cuts]), segs, atol=1e-6)


def wav_stream_bytes(path: Path, *, unknown_size: int | None = 0xFFFFFFFF) -> bytes:
    """The file's bytes as a live writer sends them: RIFF and data sizes unknown."""
    data = bytearray(path.read_bytes())
    if unknown_size is not None:
        data[4:8] = struct.pack("<I", unknown_size)
        pos = data.index(b"data")
        data[pos + 4 : pos + 8] = struct.pack("<I", unknown_size)
    return bytes(data)


def test_wav_header_of_a_stream(stereo_call: Path) -> None:
    head = read_header(io.BytesIO(wav_stream_bytes(stereo_call)))
    assert (head.rate, head.channels, head.encoding, head.data_bytes) == (16000, 2, "pcm16", None)
    with pytest.raises(AudioError, match="not a WAV stream"):
        read_header(io.BytesIO(b"OggS" + bytes(100)))


def test_stereo_call_in_order_with_timestamps(stereo_call: Path, tiny_bundle_dir: Path) -> None:
    code, out, err = produce([str(stereo_call), "--model", str(tiny_bundle_dir), "--format", "jsonl"])
    assert code == 0, err
    records = jsonl(out)
    assert keys(records) == EXPECTED
    for r in records:
        assert r["kind"] == "result" and r["model"] == "tiny-test@0.0.1"
        assert (r["start_s"], r["end_s"]) == (3.0 * r["seq"], 3.0 * r["seq"] + 3.0)
        assert set(r["probs"]) == set(tiny_spec().labels)
        assert r["label"] == max(r["probs"], key=r["probs"].get)
        assert abs(sum(r["probs"].values()) - 1) < 1e-4
    assert "ch0: 3 voiced segment(s), 3 of 6 skipped as silence (9.0 s)" in err


def test_channel_names_table_and_csv(stereo_call: Path, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    base = [str(stereo_call), "--model", str(tiny_bundle_dir), "--channel-names", "agent,customer"]
    code, out, _ = produce(base)
    assert code == 0
    assert "agent" in out and "customer" in out and "longest negative stretch" in out
    target = tmp_path / "out.csv"
    code, _, err = produce([*base, "--format", "csv", "--output", str(target)])
    assert code == 0, err
    with target.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] != "turn"]
    assert [(r["channel"], int(r["seq"])) for r in rows] == [
        ({"ch0": "agent", "ch1": "customer"}[c], s) for c, s in EXPECTED]
    assert all(abs(sum(float(r[f"p_{lab}"]) for lab in tiny_spec().labels) - 1) < 1e-4 for r in rows)


@pytest.mark.parametrize("bundle", ["tiny_bundle_dir", "speaker_bundle_dir"])
def test_file_wav_stream_and_raw_pcm_give_the_same_records(stereo_call: Path, bundle: str,
                                                          request: pytest.FixtureRequest) -> None:
    """Also with a model that takes per-speaker statistics: a live stream (stdin) carries the same
    running channel statistics as the file, so the records are identical."""
    model_dir = request.getfixturevalue(bundle)
    common = ["--model", str(model_dir), "--format", "jsonl", "--stream-id", "same", "--batch", "4"]
    _, from_file, _ = produce([str(stereo_call), *common])
    code, from_wav, err = produce(["-", *common], input=wav_stream_bytes(stereo_call))
    assert code == 0, err
    pcm = sf.read(stereo_call, dtype="int16")[0].astype("<i2").tobytes()
    code, from_raw, err = produce(["-", *common, "--rate", "16000", "--channels", "2", "--encoding", "pcm16"],
                                  input=pcm)
    assert code == 0, err
    assert jsonl(from_file) == jsonl(from_wav) == jsonl(from_raw)
    assert len(jsonl(from_file)) == len(EXPECTED)


def test_resampled_8k_input(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    call = synth_call(tmp_path / "call44.wav", sr=44100)
    code, out, err = produce([str(call), "--model", str(tiny_bundle_dir), "--format", "jsonl"])
    assert code == 0, err
    assert keys(jsonl(out)) == EXPECTED


def test_all_silent_call_completes_with_zero_segments(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    call = synth_call(tmp_path / "quiet.wav", silent=True)
    code, out, err = produce([str(call), "--model", str(tiny_bundle_dir), "--format", "jsonl"])
    assert code == 0, err
    assert out == ""
    assert "0 segment(s) classified" in err and "silent" in err


@pytest.mark.parametrize("args,stdin,message", [
    (["{missing}"], None, "no such audio file"),
    (["{text}"], None, "cannot decode"),
    (["-"], b"definitely not audio at all", "not a WAV stream"),
    (["-"], b"", "stdin is empty"),
    (["-", "--rate", "8000", "--channels", "2"], b"\x00\x01\x02", "holds no audio"),
    (["{call}", "--channel-names", "a,b,c"], None, "3 name(s) for 2 channel(s)"),
    (["{call}", "--channel-names", "a:b,a_b"], None, "distinct"),
    (["{call}", "--model", "{tmp}"], None, "spec.json"),
])
def test_bad_input_is_one_line_and_non_zero(args: list[str], stdin: bytes | None, message: str, tmp_path: Path,
                                            stereo_call: Path, tiny_bundle_dir: Path) -> None:
    (tmp_path / "notes.wav").write_text("hello")
    subs = {"missing": str(tmp_path / "nope.wav"), "text": str(tmp_path / "notes.wav"), "call": str(stereo_call),
            "tmp": str(tmp_path)}
    argv = [a.format(**subs) for a in args]
    if "--model" not in argv:
        argv += ["--model", str(tiny_bundle_dir)]
    code, out, err = produce(argv, input=stdin)
    assert code != 0 and code != EXIT_INCOMPLETE
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], err
    assert "Traceback" not in err


def test_realtime_paces_the_file(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    import time

    call = synth_call(tmp_path / "short.wav", seconds=1.5)
    t0 = time.monotonic()
    code, _, err = produce([str(call), "--model", str(tiny_bundle_dir), "--realtime", "--format", "jsonl"])
    assert code == 0, err
    assert time.monotonic() - t0 >= 1.45


def test_longest_negative_stretch() -> None:
    def rec(seq: int, label: str) -> dict:
        return {"kind": "result", "seq": seq, "start_s": 3.0 * seq, "end_s": 3.0 * seq + 3, "label": label}

    records = [rec(0, "angry"), rec(1, "neutral"), rec(2, "angry"), rec(3, "sad"), rec(4, "angry"), rec(6, "angry")]
    stretch = longest_negative(records)
    assert stretch is not None
    assert stretch == {"label": "angry", "start_s": 6.0, "end_s": 15.0, "segments": 3,
                       "labels": {"angry": 2, "sad": 1}}
    assert longest_negative([rec(0, "happy")]) is None


def test_a_mixed_negative_stretch_is_not_reported_as_one_label() -> None:
    from producer.summary_lines import ChannelStats, channel_lines

    recs = [{"kind": "result", "seq": s, "start_s": 3.0 * s, "end_s": 3.0 * s + 3, "label": lab}
            for s, lab in enumerate(["angry", "sad", "angry", "neutral", "sad"])]
    stretch = longest_negative(recs)
    assert stretch is not None
    summary = {"segments": 5, "failed": 0, "shares": {"angry": 0.4, "sad": 0.4, "neutral": 0.2},
               "longest_negative": stretch}
    lines = channel_lines(ChannelStats("ch0", cut=5, sent=5), summary, hop_s=3.0)  # type: ignore[arg-type]
    assert lines[-1] == "  longest negative stretch: 0.00-9.00 s, 3 segment(s): angry 2 + sad 1"
    one = longest_negative(recs[4:])
    assert one is not None
    assert channel_lines(ChannelStats("ch0", cut=1, sent=1), {**summary, "longest_negative": one},  # type: ignore[arg-type]
                         hop_s=3.0)[-1] == "  longest negative stretch: 12.00-15.00 s, 1 segment(s): sad"


def test_report_option_writes_html_and_png(tmp_path: Path, tiny_bundle_dir: Path, stereo_call: Path) -> None:
    report = tmp_path / "out" / "call.html"
    report.parent.mkdir()
    code, out, err = produce([str(stereo_call), "--model", str(tiny_bundle_dir), "--format", "jsonl",
                              "--channel-names", "agent,customer", "--report", str(report)])
    assert code == 0, err
    html = report.read_text(encoding="utf-8")
    assert "tiny-test@0.0.1" in html and "agent" in html and "customer" in html
    stream_id = err.split("stream ", 1)[1].split(":", 1)[0]
    assert f"<title>Emotion report: {stereo_call.name} (stream {stream_id})</title>" in html  # not "call"
    assert f'<code id="audio">{stereo_call}</code>' in html
    assert report.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    embedded = json.loads(html.split('type="application/json"', 1)[1].split(">", 1)[1].split("</script>", 1)[0]
                          .replace("<\\/", "</"))
    assert len(embedded["segments"]) == len(jsonl(out)) == 6
    assert f"report: {report}" in err


def test_report_without_matplotlib_writes_the_html_and_says_so_in_one_line(
        tmp_path: Path, tiny_bundle_dir: Path, stereo_call: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as in a serving install: import fails
    report = tmp_path / "call.html"
    code, out, err = produce([str(stereo_call), "--model", str(tiny_bundle_dir), "--format", "jsonl",
                              "--report", str(report)])
    assert code == 0, err
    assert len(jsonl(out)) == 6 and "Traceback" not in err
    html = report.read_text(encoding="utf-8")
    assert 'id="ser-data"' in html and "matplotlib was not installed" in html
    assert not report.with_suffix(".png").exists()
    lines = [line for line in err.splitlines() if line.startswith("report:")]
    assert lines == [f"report: {report} (no PNG timeline: matplotlib is not installed; pip install matplotlib "
                     "for one)"], err


def test_output_format_follows_the_output_files_extension(tmp_path: Path, tiny_bundle_dir: Path,
                                                          stereo_call: Path) -> None:
    for name, check in (("call.jsonl", lambda t: len(jsonl(t)) == 6),
                        ("call.csv", lambda t: t.startswith("stream_id,channel,seq,")),
                        ("call.txt", lambda t: t.split()[:2] == ["start", "end"])):
        code, _, err = produce([str(stereo_call), "--model", str(tiny_bundle_dir), "-o", str(tmp_path / name)])
        assert code == 0, err
        assert check((tmp_path / name).read_text()), (name, (tmp_path / name).read_text()[:200])
    code, _, err = produce([str(stereo_call), "--model", str(tiny_bundle_dir), "-o", str(tmp_path / "t.jsonl"),
                            "--format", "table"])  # an explicit --format wins
    assert code == 0 and (tmp_path / "t.jsonl").read_text().startswith("    start")


def test_cli_caps_blas_threads_before_numpy_is_loaded() -> None:
    """The embedded mode runs the features in the producer: BLAS must run one thread, as in a worker."""
    import subprocess
    import sys

    from producer.cli import THREAD_ENV_VARS
    from workers.settings import THREAD_ENV_VARS as WORKER_VARS

    sysdeps.module("threadpoolctl", "pip install .[dev]")
    assert THREAD_ENV_VARS == WORKER_VARS
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV_VARS}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import json, producer.cli, threadpoolctl; "
            "print(json.dumps([i['num_threads'] for i in threadpoolctl.threadpool_info()]))")
    threads = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                        cwd=root, check=True).stdout)
    assert threads and set(threads) == {1}, threads


def test_realtime_records_carry_when_they_came_out(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    call = synth_call(tmp_path / "short.wav", seconds=4.0)
    code, out, err = produce([str(call), "--model", str(tiny_bundle_dir), "--format", "jsonl", "--realtime"])
    assert code == 0, err
    recs = [r for r in jsonl(out) if r["kind"] == "result"]
    assert recs
    for r in recs:  # a record cannot come out before its audio has been spoken
        assert r["wall_s"] >= r["end_s"] - 0.05 and r["latency_s"] == pytest.approx(r["wall_s"] - r["end_s"], abs=2e-3)
        assert r["latency_s"] < 3.0
    code, out, _ = produce([str(call), "--model", str(tiny_bundle_dir), "--format", "jsonl"])
    assert code == 0 and all("wall_s" not in r for r in jsonl(out))  # files: no clock, outputs stay comparable
