"""Smoke test of ``python -m bench``: its --quick mode with the tiny bundle prints every row of the
table (the figures themselves are not checked: no timed unit tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from redis_server import redis_binary

ROOT = Path(__file__).resolve().parents[1]
ROWS = (
    "end to end, 1 worker process, `--batch 16`",
    "embedded (no Redis), `ser-produce FILE`, `--batch 16`",
    "end to end, 1 worker process, `--batch 1`",
    "enqueue cost, `--batch 1`",
    "enqueue cost, `--batch 16`",
    "latency at 50% load, `--batch 1`",
    "latency at 90% load, `--batch 1`",
    "latency at 50% load, `--batch 16`",
    "latency at 90% load, `--batch 16`",
    "first job after 6 s idle, `--batch 1`",
    "worker RSS",
    "Redis memory per active call",
    "in-process limit, batch 16",
    "in-process limit, batch 1",
    "end to end / in-process, batch 16",
    "seed-style baseline",
    "end to end `--batch 16` / seed-style baseline",
)


def test_bench_quick_prints_the_table(tmp_path: Path) -> None:
    redis_binary()  # skips, saying why, where there is none (fails under SER_REQUIRE_SYSTEM_DEPS=1)
    out = tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, "-m", "bench", "--tiny", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text in proc.stdout
    for head in ("- date:", "- machine: `nproc` =", "- Python ", "- command: `python -m bench --tiny --quick"):
        assert head in text
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| measure | value | target | note |")
    for row in ROWS:
        assert any(ln.startswith(f"| {row}") for ln in lines), f"missing row {row!r}"
    assert "skipped" in text  # --quick skips the seed-style baseline and says so


def test_jobcost_prints_the_cpu_of_jobs_with_a_history(tmp_path: Path) -> None:
    from tinybundle import make_tiny_bundle

    from bench.jobcost import job_cost

    make_tiny_bundle(tmp_path / "h", history=True)
    cost = job_cost(str(tmp_path / "h"), k=2, rounds=2, segments=2)
    assert len(cost) == 2 and all(c > 0 for c in cost)
