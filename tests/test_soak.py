"""A short soak (bench/soak.py): two simulated calls at real time through a worker pool, 20 s."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import soak, table


@pytest.mark.slow
def test_short_soak_loses_and_duplicates_nothing(redis_server: str, tiny_bundle_dir: Path) -> None:
    result = soak(calls=2, minutes=20 / 60, processes=1, model=str(tiny_bundle_dir), realtime=True)
    print(table(result))
    assert result["exit_codes"] == [0, 0]
    assert result["segments_sent"] > 10
    assert result["lost"] == 0 and result["duplicated_in_output"] == 0 and result["failures"] == 0
    assert result["latency_p50_s"] < 2.0
