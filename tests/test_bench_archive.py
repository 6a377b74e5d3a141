"""bench.archive --tiny: the archive benchmark runs end to end on SQLite and PostgreSQL (smoke test; the
figures themselves go to docs/benchmark.md, not asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import archive as bench_archive
from bench.archive_data import RECORDS_PER_CALL, Generator


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_tiny_run(backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest,
                  ) -> None:
    args = ["--tiny", "--backend", backend, "--json", str(tmp_path / "out.json"), "--plans", str(tmp_path / "plans")]
    if backend == "postgresql":
        args += ["--database", request.getfixturevalue("pg_url")]
    assert bench_archive.main(args) == 0
    (result,) = json.loads((tmp_path / "out.json").read_text())
    assert result["backend"] == backend and result["calls"] == bench_archive.TINY_CALLS
    assert 0.8 * RECORDS_PER_CALL < result["segments"] / result["calls"] < 1.2 * RECORDS_PER_CALL
    assert result["search"]["n"] == result["trends"]["n"] == bench_archive.TINY_REPEATS
    assert 0 < result["search"]["p50_ms"] <= result["search"]["p95_ms"] <= result["search"]["max_ms"]
    assert result["bytes_per_call_hour"] > 0 and result["call_hours"] > 0
    plans = (tmp_path / "plans").read_text()
    assert plans.count("-- search:") == 4 and plans.count("-- trends:") == 2
    assert ("Execution Time" if backend == "postgresql" else "USING INDEX") in plans
    out = capsys.readouterr().out
    assert "search p95" in out and "| backend |" in out


def test_generator_is_seeded_and_plausible() -> None:
    gen = Generator(500, seed=3, now=1796083200.0)
    a, b = gen.chunk(0, 500), Generator(500, seed=3, now=1796083200.0).chunk(0, 500)
    assert a == b
    rows = next(iter(a.values()))  # calls
    starts = [r[5] for r in rows]
    assert max(starts) < 1796083200.0 and min(starts) >= 1796083200.0 - 91 * 86400
    durations = sorted(r[7] for r in rows)
    assert 150 < durations[len(durations) // 2] < 600  # median around 5 minutes
    assert len({r[10] for r in rows}) > 3 and len({r[11] for r in rows}) > 6  # agents, queues
    assert all(-5 <= r[26] <= 5 for r in rows)


def test_tiny_ingest_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.archive_ingest import TARGET_RECORDS_S

    assert bench_archive.main(["--ingest", "--tiny", "--backend", "sqlite", "--json", str(tmp_path / "i.json")]) == 0
    (result,) = json.loads((tmp_path / "i.json").read_text())
    assert result["results"] == 2400 and result["records"] > result["results"] and result["records_s"] > 0
    assert f"{TARGET_RECORDS_S:,.0f} records/s" in capsys.readouterr().out
