"""archive.db on real SQLite and PostgreSQL: URLs and their errors, the Alembic migration (fresh database
to head, a no-op the second time, concurrent starts, and the revision agreeing with archive/schema.py),
and the idempotent upsert."""

from __future__ import annotations

import threading
from pathlib import Path

import pg_server
import pytest
import sysdeps
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from archive import db
from archive.schema import SCHEMA_REVISION, calls, dead_letters, metadata, segments
from models.errors import SERError


def _call(call_id: str, **over: object) -> dict[str, object]:
    row: dict[str, object] = {"call_id": call_id, "raw_id": call_id, "started_ts": 1.0e9, "channels": ["agent"],
                              "roles": {}, "params": {}, "labels": ["angry"], "archived_ts": 1.0, "updated_ts": 1.0}
    row.update(over)
    return row


def test_fresh_database_migrates_to_head_matching_schema(archive_url: str) -> None:
    engine = db.open_engine(archive_url)
    try:
        with engine.connect() as conn:
            assert db.current_revision(conn) == SCHEMA_REVISION
            # the migration creates exactly schema.py's tables, columns, types, keys and indexes
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
            assert diff == []
            names = set(inspect(conn).get_table_names())
        assert names == set(metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()


def test_second_start_is_a_no_op_and_keeps_the_data(archive_url: str) -> None:
    engine = db.open_engine(archive_url)
    with engine.begin() as conn:
        db.upsert(conn, calls, [_call("a")], keys=["call_id"])
    engine.dispose()
    engine = db.open_engine(archive_url)
    try:
        with engine.connect() as conn:
            assert db.current_revision(conn) == SCHEMA_REVISION
            assert conn.execute(select(calls.c.call_id)).scalars().all() == ["a"]
    finally:
        engine.dispose()


def test_concurrent_starts_migrate_once(archive_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            db.open_engine(archive_url).dispose()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = db.open_engine(archive_url, migrate=False)
    with engine.connect() as conn:
        assert db.current_revision(conn) == SCHEMA_REVISION
    engine.dispose()


@pytest.mark.parametrize("url, shown", [
    ("mysql://u:secret@h/db", "unsupported database URL scheme 'mysql'"),
    ("postgresql+psycopg://u:secret@/db", "needs a host and a database name"),
    ("postgresql+psycopg://u:secret@h", "needs a host and a database name"),
    ("not a url", "invalid database URL 'not a url'"),
    ("sqlite://h:1/x.db", "invalid SQLite URL"),
])
def test_bad_urls_are_one_line_errors_without_the_password(url: str, shown: str) -> None:
    with pytest.raises(SERError) as err:
        db.open_engine(url)
    msg = str(err.value)
    assert shown in msg and "secret" not in msg and "\n" not in msg


def test_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    port = pg_server.free_port()  # nothing listens there
    with pytest.raises(SERError, match=rf"cannot open the archive database .*127\.0\.0\.1:{port}") as err:
        db.open_engine(f"postgresql://ser:hunter2@127.0.0.1:{port}/x")
    assert "hunter2" not in str(err.value) and "***" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SERError, match="cannot open the archive database"):
        db.open_engine(f"sqlite:///{tmp_path}/no/such/dir/x.db")


def test_redact_and_url_file(tmp_path: Path) -> None:
    assert db.redact_url("postgresql+psycopg://u:pw@h:5432/d") == "postgresql+psycopg://u:***@h:5432/d"
    assert db.redact_url("sqlite:///calls.db") == "sqlite:///calls.db"
    f = tmp_path / "url"
    f.write_text("\n  postgresql://u:pw@h/d  \nignored\n")
    assert db.read_url_file(str(f)) == "postgresql://u:pw@h/d"
    f.write_text("\n\n")
    with pytest.raises(SERError, match="is empty"):
        db.read_url_file(str(f))
    with pytest.raises(SERError, match="cannot read --database-url-file"):
        db.read_url_file(str(tmp_path / "absent"))


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = db.open_engine(f"sqlite:///{tmp_path / 'a.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_TIMEOUT_MS
    engine.dispose()


def test_upsert_inserts_updates_dedups_and_chunks(archive_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = db.open_engine(archive_url)
    keys = ["call_id", "channel", "seq", "kind"]
    seg = {"call_id": "a", "channel": "agent", "kind": "result", "start_s": 0.0, "end_s": 1.0, "label": "calm"}
    with engine.begin() as conn:
        db.upsert(conn, calls, [_call("a")], keys=["call_id"])
        rows = [{**seg, "seq": i} for i in range(50)] + [{**seg, "seq": 3, "label": "angry"}]  # a duplicate key
        monkeypatch.setattr(db, "MAX_PARAMS", 70)  # 7 columns: 10 rows per statement
        assert db.upsert(conn, segments, rows, keys=keys) == 50
        assert conn.execute(select(func.count()).select_from(segments)).scalar() == 50
        assert conn.execute(select(segments.c.label).where(segments.c.seq == 3)).scalar() == "angry"  # last wins
        # update=(): existing rows untouched; a row leaving a column out does not touch it
        db.upsert(conn, segments, [{**seg, "seq": 3, "label": "sad"}], keys=keys, update=())
        db.upsert(conn, segments, [{k: v for k, v in seg.items() if k != "label"} | {"seq": 4, "end_s": 2.0}],
                  keys=keys)
        got = dict(conn.execute(select(segments.c.seq, segments.c.label).where(segments.c.seq.in_([3, 4]))).all())
        assert got == {3: "angry", 4: "calm"}
        assert conn.execute(select(segments.c.end_s).where(segments.c.seq == 4)).scalar() == 2.0
        assert db.upsert(conn, segments, [], keys=keys) == 0
        with pytest.raises(ValueError, match="unknown columns"):
            db.upsert(conn, segments, [{**seg, "seq": 1, "bogus": 1}], keys=keys)
    engine.dispose()


def test_upsert_of_a_batch_over_the_parameter_limit(archive_url: str) -> None:
    """SQLite allows 32766 bound parameters per statement: 40,000 rows x 7 columns must be chunked."""
    engine = db.open_engine(archive_url)
    seg = {"call_id": "a", "channel": "agent", "kind": "result", "start_s": 0.0, "end_s": 1.0, "label": "calm"}
    with engine.begin() as conn:
        db.upsert(conn, calls, [_call("a")], keys=["call_id"])
        db.upsert(conn, segments, ({**seg, "seq": i} for i in range(40_000)),
                  keys=["call_id", "channel", "seq", "kind"])
        assert conn.execute(select(func.count()).select_from(segments)).scalar() == 40_000
    engine.dispose()


def test_foreign_keys_cascade(archive_url: str) -> None:
    from sqlalchemy import delete

    engine = db.open_engine(archive_url)
    with engine.begin() as conn:
        db.upsert(conn, calls, [_call("a")], keys=["call_id"])
        db.upsert(conn, segments, [{"call_id": "a", "channel": "c", "seq": 0, "kind": "result", "start_s": 0.0,
                                    "end_s": 1.0}], keys=["call_id", "channel", "seq", "kind"])
        db.upsert(conn, dead_letters, [{"stream": "s", "entry_id": "1-0", "reason": "r", "payload": "{}", "ts": 1.0}],
                  keys=["stream", "entry_id"])
        conn.execute(delete(calls))
        assert conn.execute(select(func.count()).select_from(segments)).scalar() == 0
    engine.dispose()


def test_missing_postgres_fails_under_the_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pg_server, "PG_ROOT", tmp_path / "none")
    monkeypatch.setenv(sysdeps.FLAG, "1")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL server binaries"):
        pg_server.pg_bindir()
    monkeypatch.setenv(sysdeps.FLAG, "")
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        pg_server.pg_bindir()


def test_pg_private_server_stops_and_starts(pg_private: pg_server.PgServer) -> None:
    url = pg_private.create_database("arch")
    engine = db.open_engine(url)
    pg_private.stop()
    with pytest.raises(SERError, match="cannot open the archive database"):
        db.open_engine(url)
    pg_private.start()
    with engine.begin() as conn:  # the pool's stale connections are replaced (pre-ping)
        db.upsert(conn, calls, [_call("b")], keys=["call_id"])
    engine.dispose()


def test_alembic_commands_without_a_connection_open_the_url(tmp_path: Path) -> None:
    """The migrations' env.py also serves Alembic's own commands (a developer's ``command.upgrade``/
    ``revision --autogenerate`` with ``sqlalchemy.url`` set): it opens the URL itself."""
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head")
    engine = db.open_engine(url, migrate=False)
    with engine.connect() as conn:
        assert db.current_revision(conn) == SCHEMA_REVISION
    engine.dispose()
    command.downgrade(cfg, "base")
    engine = db.open_engine(url, migrate=False)
    with engine.connect() as conn:
        assert db.current_revision(conn) is None and set(inspect(conn).get_table_names()) == {"alembic_version"}
    engine.dispose()
