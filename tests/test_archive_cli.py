"""ser-calls through click's CliRunner on SQLite and a real PostgreSQL: output formats, errors, exit codes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from archive_rows import MONDAY, add_call, open_archive
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from archive.calls_cli import main
from archive.schema import calls, metadata


@pytest.fixture
def archive(archive_url: str) -> Iterator[str]:
    engine = open_archive(archive_url)
    with engine.begin() as conn:
        add_call(conn, "k-ann", raw_id="CA-ann", agent="ann", queue="sales", customer_score=-3.5,
                 customer_trend="Declining", shares={"customer": {"angry": 0.6}}, alert_rules=["customer_negative"],
                 interruptions=5, params={"crm": "42"})
        add_call(conn, "k-bob", raw_id="CA-bob", agent="bob", queue="support", started_ts=MONDAY + 8 * 86400,
                 customer_score=2.0)
        add_call(conn, "k-old", raw_id="CA-old", agent="bob", started_ts=MONDAY - 400 * 86400)
    engine.dispose()
    yield archive_url


def ser_calls(url: str | None, *args: str, env: dict[str, str] | None = None) -> Result:
    argv = (["--database", url] if url else []) + list(args)
    return CliRunner().invoke(main, argv, env=env, catch_exceptions=False)


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ser-calls: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_search_formats_paging_and_filters(archive: str) -> None:
    table = ser_calls(archive, "search")
    assert table.exit_code == 0, table.output
    assert table.stdout.index("CA-bob") < table.stdout.index("CA-ann") < table.stdout.index("CA-old")
    assert "calls 1-3 of 3" in table.stdout
    rows = [json.loads(line) for line in ser_calls(archive, "search", "--format", "jsonl", "--sort",
                                                   "customer_score", "--asc").stdout.splitlines()]
    assert [r["raw_id"] for r in rows] == ["CA-ann", "CA-old", "CA-bob"]
    page2 = ser_calls(archive, "search", "--format", "csv", "--limit", "1", "--page", "2").stdout
    assert [r["call_id"] for r in csv.DictReader(io.StringIO(page2))] == ["k-ann"]
    offset = ser_calls(archive, "search", "--format", "jsonl", "--limit", "2", "--offset", "2").stdout
    assert [json.loads(x)["call_id"] for x in offset.splitlines()] == ["k-old"]
    narrowed = ser_calls(archive, "search", "--format", "jsonl", "--label", "angry", "--label-share-min", "0.5",
                         "--label-role", "customer", "--alert-rule", "customer_negative", "--interruptions-min", "5",
                         "--since", "2026-11-30", "--until", "2026-11-30", "--trend", "declining",
                         "--customer-score-max", "-3").stdout
    assert [json.loads(x)["call_id"] for x in narrowed.splitlines()] == ["k-ann"]
    assert ser_calls(archive, "search", "--agent", "nobody").stdout.strip().endswith("no calls of 0")


def test_show_text_and_json(archive: str) -> None:
    text = ser_calls(archive, "show", "CA-ann")
    assert text.exit_code == 0, text.output
    for needle in ("CA-ann", "agent ann", "score -3.50", "Declining", "customer_negative", "timeline", "(silence)",
                   "crm=42", "Q1"):
        assert needle in text.stdout, needle
    data = json.loads(ser_calls(archive, "show", "k-ann", "--format", "json").stdout)
    assert data["call"]["raw_id"] == "CA-ann" and [a["rule"] for a in data["alerts"]] == ["customer_negative"]
    assert [s["quarters"] for s in data["speakers"]][0] == [0.0, 0.5, None, 1.0]
    assert_one_line_error(ser_calls(archive, "show", "CA-none"), 1, "CA-none")


def test_trends_formats(archive: str) -> None:
    rows = list(csv.DictReader(io.StringIO(ser_calls(archive, "trends", "--by", "agent", "--period", "week",
                                                     "--since", "2026-11-01", "--format", "csv").stdout)))
    assert [(r["agent"], r["period"], r["calls"]) for r in rows] == [("ann", "2026-11-30", "1"),
                                                                     ("bob", "2026-12-07", "1")]
    table = ser_calls(archive, "trends", "--by", "queue", "--period", "day")
    assert table.exit_code == 0 and "sales" in table.stdout and "2026-11-30" in table.stdout
    assert_one_line_error(ser_calls(archive, "trends", "--by", "colour"), 2, "--by")


def test_export_parquet_and_csv(archive: str, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "calls.parquet"
    result = ser_calls(archive, "export", "--format", "parquet", "-o", str(out), "--agent", "bob")
    assert result.exit_code == 0, result.output
    assert "exported 2 calls" in result.stderr
    assert sorted(pq.read_table(out).column("call_id").to_pylist()) == ["k-bob", "k-old"]
    segs = ser_calls(archive, "export", "--format", "csv", "-o", "-", "--what", "segments", "--agent", "ann")
    rows = list(csv.DictReader(io.StringIO(segs.stdout)))
    assert len(rows) == 10 and {r["call_id"] for r in rows} == {"k-ann"}
    assert_one_line_error(ser_calls(archive, "export", "--format", "parquet", "-o", "-"), 2, "stdout")
    assert_one_line_error(ser_calls(archive, "export", "-o", str(tmp_path / "nodir" / "x.parquet")), 1,
                          "cannot write")


def test_delete_and_prune(archive: str) -> None:
    gone = ser_calls(archive, "delete", "CA-ann", "k-bob")
    assert gone.exit_code == 0 and gone.stdout.strip() == "deleted 2 calls"
    unknown = ser_calls(archive, "delete", "CA-ann", "CA-old")
    assert unknown.stdout.strip() == "deleted 1 call"
    assert_one_line_error(unknown, 1, "not archived: CA-ann")
    engine = open_archive(archive)
    with engine.begin() as conn:
        add_call(conn, "k-new", started_ts=MONDAY + 7 * 86400)
        add_call(conn, "k-ancient", started_ts=1_000_000.0)
    dry = ser_calls(archive, "prune", "--dry-run")
    assert dry.exit_code == 0 and dry.stdout.startswith("would delete 1 call started before")
    assert ser_calls(archive, "prune", "--older-than", "10000").stdout.startswith("deleted 1 call")
    with engine.connect() as conn:
        assert [r for (r,) in conn.execute(select(calls.c.call_id))] == ["k-new"]
        assert sum(conn.execute(select(func.count()).select_from(t)).scalar_one() for t in metadata.sorted_tables
                   if t is not calls and "call_id" in t.c) > 0  # k-new's own rows stay
    engine.dispose()
    assert_one_line_error(ser_calls(archive, "prune", "--older-than", "-1"), 2, "--older-than")


def test_errors_and_database_options(archive: str, tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    assert_one_line_error(ser_calls(f"sqlite:///{missing}", "search"), 1, f"no archive at sqlite:///{missing}")
    assert not missing.exists()  # never creates an empty archive
    assert_one_line_error(ser_calls("mysql://x/y", "search"), 1, "mysql")
    assert_one_line_error(ser_calls(archive, "search", "--customer-score-min", "7"), 2, "--customer-score-min", "'7'")
    assert_one_line_error(ser_calls(archive, "search", "--since", "soon"), 2, "--since", "'soon'")
    assert_one_line_error(ser_calls(archive, "search", "--label", "angry"), 2, "--label-share-min")
    assert_one_line_error(ser_calls(archive, "search", "--page", "2", "--offset", "3"), 2, "--offset")
    assert_one_line_error(ser_calls(archive, "search", "--limit", "0"), 2, "--limit")
    url_file = tmp_path / "url"
    url_file.write_text(f"\n{archive}\n")
    by_file = ser_calls(None, "--database-url-file", str(url_file), "search", "--format", "jsonl")
    assert by_file.exit_code == 0 and len(by_file.stdout.splitlines()) == 3
    by_env = ser_calls(None, "search", "--format", "jsonl", env={"SER_ARCHIVE_URL": archive})
    assert by_env.exit_code == 0 and len(by_env.stdout.splitlines()) == 3
    by_env_file = ser_calls(None, "search", "--format", "jsonl", env={"SER_ARCHIVE_URL_FILE": str(url_file)})
    assert by_env_file.exit_code == 0 and len(by_env_file.stdout.splitlines()) == 3
    assert_one_line_error(ser_calls(None, "--database-url-file", str(tmp_path / "nofile"), "search"), 1, "nofile")


def test_unreachable_postgresql_and_password_redacted() -> None:
    from bench.server import free_port

    url = f"postgresql+psycopg://ser:s3cret@127.0.0.1:{free_port()}/calls"
    result = ser_calls(url, "search")
    assert_one_line_error(result, 1, "***")
    assert "s3cret" not in result.output
