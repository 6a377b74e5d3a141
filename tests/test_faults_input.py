"""Bad input to ser-produce: one line on stderr and a non-zero exit, never a traceback or a hang;
odd but valid input (clipping, DC offset, silence) completes."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from producer.cli import EXIT_INCOMPLETE, main


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
])
def test_bad_input_is_one_line_and_non_zero(args: list[str], stdin: bytes | None, message: str, tmp_path: Path,
                                            tiny_bundle_dir: Path) -> None:
    files = {"empty": b"", "garbage": os.urandom(4096), "truncated": wav()[:40],
             "nan": wav(tag=3, bits=32, data=NAN), "ch9": wav(channels=9, data=b"\0" * 18 * 800),
             "rate1": wav(rate=1)}
    paths = {}
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
        recs = [json.loads(line) for line in out.splitlines()]
        assert [r["seq"] for r in recs] == [0, 1, 2] and all(r["kind"] == "result" for r in recs), name
        assert all(np.isfinite(list(r["probs"].values())).all() for r in recs)


def test_all_silent_stdin_completes_with_zero_segments_and_says_so(tiny_bundle_dir: Path) -> None:
    code, out, err = produce([*RAW, "--model", str(tiny_bundle_dir), "--format", "jsonl"], input=b"\0\0" * 8000 * 12)
    assert code == 0, err
    assert out == "" and "silent" in err
