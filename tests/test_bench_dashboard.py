"""Smoke test of ``python -m bench.dashboard``: a tiny run delivers updates to every session kind
and prints the table (the figures themselves are not checked: no timed unit tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from redis_server import redis_binary

ROOT = Path(__file__).resolve().parents[1]


def test_bench_dashboard_small_run() -> None:
    redis_binary()  # skips, saying why, where there is none (fails under SER_REQUIRE_SYSTEM_DEPS=1)
    proc = subprocess.run([sys.executable, "-m", "bench.dashboard", "--calls", "3", "--sessions", "2",
                           "--seconds", "4"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.splitlines()[0])
    assert row["calls"] == 3 and row["sessions"] == 2
    assert row["records"] > 0 and row["events"] > 0  # call pages got records, overviews got events
    assert "| live calls | sessions | updates/s delivered |" in proc.stdout
    assert "largest tried with p95 <= 1 s:" in proc.stdout
