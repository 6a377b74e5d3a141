"""Bad input to ser-produce: one line on stderr and a non-zero exit, never a traceback or a hang;
odd but valid input (clipping, DC offset, silence) completes."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from producer.cli import EXIT_INCOMPLETE, main

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def produce(args: list[str], *, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, input=input, env={"SER_REDIS_URL": ""})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback would reach the user: fail loudly
    return result.exit_code, result.stdout, result.stderr


def wav(*, rate: int = 8000, channels: int = 1, bits: int = 16, tag: int = 1, data: bytes = b"\0\0" * 8000) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)


NAN = np.full(8000, np.nan, "<f4").tobytes()
INF = np.r_[np.zeros(100), np.inf].astype("<f4").tobytes()
RAW = ["-", "--rate", "8000"]
#: A WAV stream whose LIST chunk claims 4 GB (followed by 2 MiB): refused before it is read.
HUGE_LIST = wav()[:12] + b"LIST" + struct.pack("<I", 0xFFFFFFF0) + bytes(2 << 20)
#: Seeded random bytes that libsndfile hands to libmpg123, which prints notes on fd 2 about them.
MPEG_LIKE = np.random.default_rng(1).bytes(65536)


@pytest.mark.parametrize("args,stdin,message", [
    (["-"], b"", "stdin is empty"),
    (["-"], bytes(range(256)) * 4, "not a WAV stream"),
    (["-"], wav()[:30], "ends inside"),
    (["-"], wav(data=b""), "holds no audio"),
    ([*RAW, "--encoding", "float32"], NAN, "NaN or infinite"),
    ([*RAW, "--encoding", "float32"], INF, "NaN or infinite"),
    (["-"], wav(tag=3, bits=32, data=NAN), "NaN or infinite"),
    (["-", "--rate", "1"], b"\0" * 100, "1 Hz is outside"),
    (["-", "--rate", "10000000"], b"\0" * 100, "10000000 Hz is outside"),
    (["-"], wav(rate=1), "1 Hz is outside"),
    (["-"], wav(rate=10_000_000), "10000000 Hz is outside"),
    ([*RAW, "--channels", "9"], b"\0" * 1800, "9 channels"),
    (["-"], wav(channels=9, data=b"\0" * 18 * 800), "9 channels"),
    (["-"], wav(channels=0), "0 channels"),
    (["-"], wav(bits=0), "not supported"),
    (["{empty}"], None, "is empty"),
    (["{garbage}"], None, "cannot decode"),
    (["{truncated}"], None, "cannot decode"),
    (["{nan}"], None, "NaN or infinite"),
    (["{ch9}"], None, "9 channels"),
    (["{rate1}"], None, "1 Hz is outside"),
    ([*RAW, "--channels", "0"], b"\0" * 1600, "0 channels"),
    (["-"], HUGE_LIST, "no data chunk in its first MiB"),
    (["{dir}"], None, "is a directory"),
    (["{mpeg}"], None, "cannot decode"),
])
def test_bad_input_is_one_line_and_non_zero(args: list[str], stdin: bytes | None, message: str, tmp_path: Path,
                                            tiny_bundle_dir: Path) -> None:
    files = {"empty": b"", "garbage": os.urandom(4096), "truncated": wav()[:40],
             "nan": wav(tag=3, bits=32, data=NAN), "ch9": wav(channels=9, data=b"\0" * 18 * 800),
             "rate1": wav(rate=1), "mpeg": MPEG_LIKE}
    paths = {"dir": tmp_path}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.wav"
        paths[name].write_bytes(data)
    argv = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args] + ["--model", str(tiny_bundle_dir)]
    code, out, err = produce(argv, input=stdin)
    assert code not in (0, EXIT_INCOMPLETE), err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], err
    assert "Traceback" not in err and len(out.strip().splitlines()) <= 1  # at most the table header


def test_clipping_and_dc_offset_still_complete(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    sr, rng = 8000, np.random.default_rng(5)
    n = 9 * sr
    clipped = np.clip(3.0 * rng.standard_normal(n), -1.0, 1.0)  # hard-clipped at full scale
    dc = 0.6 + 0.1 * rng.standard_normal(n)  # a large DC offset under speech-like noise
    over = 4.0 * rng.standard_normal(n)  # float WAV far outside [-1, 1]
    for name, y, subtype in (("clip", clipped, "PCM_16"), ("dc", dc, "PCM_16"), ("over", over, "FLOAT")):
        path = tmp_path / f"{name}.wav"
        sf.write(path, y.astype(np.float32), sr, subtype=subtype)
        code, out, err = produce([str(path), "--model", str(tiny_bundle_dir), "--format", "jsonl"])
        assert code == 0, err
        recs = [r for r in map(json.loads, out.splitlines()) if r["kind"] != "turn"]
        assert [r["seq"] for r in recs] == [0, 1, 2] and all(r["kind"] == "result" for r in recs), name
        assert all(np.isfinite(list(r["probs"].values())).all() for r in recs)


def test_all_silent_stdin_completes_with_zero_segments_and_says_so(tiny_bundle_dir: Path) -> None:
    code, out, err = produce([*RAW, "--model", str(tiny_bundle_dir), "--format", "jsonl"], input=b"\0\0" * 8000 * 12)
    assert code == 0, err
    assert out == "" and "silent" in err


# --- paths that are not regular files, closed stdin, an unwritable output, absurd float samples ------------
def cli(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "producer.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**env(), "SER_REDIS_URL": ""}, **kw)


def test_random_bytes_are_one_line_with_the_right_reason_and_no_library_noise(tmp_path: Path,
                                                                              tiny_bundle_dir: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(MPEG_LIKE)
    proc = cli(str(path), "--model", str(tiny_bundle_dir))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert err.splitlines() == [f"Error: cannot decode {path}: not a recognised audio format"], err


def test_a_fifo_is_read_as_a_stream_and_its_wait_is_announced(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    from conftest import synth_call

    fifo = tmp_path / "call.fifo"
    os.mkfifo(fifo)
    proc = cli(str(fifo), "--model", str(tiny_bundle_dir), "--format", "jsonl")
    try:
        assert proc.stderr is not None
        import select

        ready, _, _ = select.select([proc.stderr], [], [], 60)  # never hang the suite (the old code did)
        assert ready, "nothing said while waiting for the FIFO's writer"
        first = proc.stderr.readline()  # printed before open() blocks for want of a writer
        assert first.startswith(f"ser-produce: reading {fifo} (a FIFO; waiting for its writer)"), first
        with fifo.open("wb") as writer:
            writer.write(synth_call(tmp_path / "call.wav").read_bytes())
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert [r["kind"] for r in map(json.loads, out.splitlines())].count("result") == 6
    assert "stream call_fifo-" in err  # a stream id of its own: the FIFO was not read twice to hash it


def test_closed_stdin_file_argument_works_and_dash_is_one_line(tmp_path: Path, tiny_bundle_dir: Path,
                                                               stereo_call: Path) -> None:
    def close_stdin() -> None:
        os.close(0)

    ok = cli(str(stereo_call), "--model", str(tiny_bundle_dir), "--format", "jsonl", stdin=None,
             preexec_fn=close_stdin)
    out, err = ok.communicate(timeout=120)
    assert ok.returncode == 0 and "Traceback" not in err, err
    assert [r["kind"] for r in map(json.loads, out.splitlines())].count("result") == 6
    dash = cli("-", "--model", str(tiny_bundle_dir), stdin=None, preexec_fn=close_stdin)
    _, err = dash.communicate(timeout=120)
    assert dash.returncode == 1 and err.splitlines() == ["Error: stdin is closed: nothing to read for AUDIO '-'"], err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_an_unwritable_output_is_one_line(tiny_bundle_dir: Path, stereo_call: Path) -> None:
    code, _, err = produce([str(stereo_call), "--model", str(tiny_bundle_dir), "-o", "/dev/full"])
    assert code == 1, err
    assert err.splitlines() == ["Error: cannot write the output to /dev/full: No space left on device"], err
    proc = cli(str(stereo_call), "--model", str(tiny_bundle_dir), "-o", "/dev/full")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_float_samples_far_beyond_full_scale_are_clipped_without_warnings(tiny_bundle_dir: Path) -> None:
    rng = np.random.default_rng(5)
    y = (3e38 * np.sign(rng.standard_normal(8000 * 7))).astype("<f4")  # 7 s of +-3e38 (warnings are errors here)
    code, out, err = produce([*RAW, "--encoding", "float32", "--model", str(tiny_bundle_dir), "--format", "jsonl"],
                             input=y.tobytes())
    assert code == 0, err
    kinds = [r["kind"] for r in map(json.loads, out.splitlines())]
    assert kinds.count("result") >= 2 and set(kinds) == {"result", "turn"}
