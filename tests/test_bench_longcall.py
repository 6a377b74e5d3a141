"""Smoke test of ``python -m bench.longcall`` (issue 33 item 4): a few seconds of the example call with
the tiny bundle print both runs, the VAD's cost and the producer's stages (figures not checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from redis_server import redis_binary

ROOT = Path(__file__).resolve().parents[1]


def test_longcall_tiny_prints_its_figures() -> None:
    redis_binary()  # skips clearly where redis-server is missing
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bench.longcall", "--tiny", "--minutes", "0.2"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "tiled to 0.2 min (2 channel(s))" in out
    for row in ("one worker (Redis)", "embedded", "result records", "VAD alone (no profiler)",
                "ms per channel-second", "under cProfile"):
        assert row in out, (row, out)
    stages = {line.strip().split("  ")[0] for line in out.splitlines() if line.startswith("  ")}
    assert {"VAD (Silero, gate)", "utterance cutter", "dynamics + loudness", "send jobs (Redis)"} <= stages, out
    vad = next(line for line in out.splitlines() if line.startswith("  VAD (Silero, gate)"))
    assert float(vad.split()[3]) > 0, vad  # the VAD ran and was profiled


def test_longcall_rejects_a_bad_length() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.longcall", "--minutes", "0"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "--minutes" in proc.stderr

