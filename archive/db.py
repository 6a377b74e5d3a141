"""Database access: the engine for an archive URL, its schema migrated to the newest revision, and
idempotent bulk upserts for PostgreSQL and SQLite.

URLs: ``sqlite:///calls.db`` (embedded, one machine; :data:`DEFAULT_URL`) or
``postgresql+psycopg://user@host:port/db`` (production; ``postgresql://`` and ``postgres://`` mean the
same, psycopg 3). A URL's password never appears in logs or errors (:func:`redact_url`).

Migrations are Alembic's (``archive/migrations``), run programmatically by :func:`open_engine`; on
PostgreSQL under a transaction-scoped advisory lock (:data:`MIGRATION_LOCK`), so archivers starting
side by side migrate once and the others find the schema at head. SQLite connections get foreign keys
on, WAL journaling with ``synchronous=NORMAL`` (a crash of the process loses nothing committed; a
power cut may lose the last transactions) and a busy timeout (:data:`SQLITE_BUSY_TIMEOUT_MS`).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Connection, Engine, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError

from models.errors import SERError
from workers.contract import read_url_file as _read_url_file

#: The embedded default: a SQLite file in the working directory.
DEFAULT_URL = "sqlite:///calls.db"
#: Milliseconds a SQLite writer waits for another's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Seconds to wait for a PostgreSQL connection.
CONNECT_TIMEOUT_S = 10
#: The advisory lock key held while migrating a PostgreSQL archive ("ser-arch" in ASCII).
MIGRATION_LOCK = 0x7365722D61726368
#: Most bound parameters in one statement: SQLite allows 32766, PostgreSQL 65535.
MAX_PARAMS = 32_000
#: Rows of one upsert from which PostgreSQL gets them through ``COPY`` (below: a prepared statement).
COPY_MIN_ROWS = 100
#: Schemes accepted, and the SQLAlchemy driver each one means.
SCHEMES = {"sqlite": "sqlite", "sqlite+pysqlite": "sqlite", "postgresql": "postgresql+psycopg",
           "postgres": "postgresql+psycopg", "postgresql+psycopg": "postgresql+psycopg"}
_temp_names = itertools.count()
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def redact_url(url: str) -> str:
    """``url`` fit for logs: any password replaced by ``***``."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # show it without anything between "://" and the last "@"
        if "@" not in url:
            return url
        head, _, rest = url.partition("://")
        return f"{head}://***@{rest.rsplit('@', 1)[1]}" if rest else "***"
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


def read_url_file(path: str) -> str:
    """The database URL stored in a file (first non-empty line): ``--database-url-file``."""
    try:
        return _read_url_file(path, option="--database-url-file")
    except ValueError as exc:
        raise SERError(str(exc)) from None


def parse_url(url: str) -> URL:
    """The SQLAlchemy URL for an archive URL; SERError naming the (redacted) value when it is not one."""
    shown = redact_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise SERError(f"invalid database URL {shown!r}: expected sqlite:///FILE or "
                       "postgresql+psycopg://USER@HOST:PORT/DB") from None
    driver = SCHEMES.get(parsed.drivername)
    if driver is None:
        raise SERError(f"unsupported database URL scheme {parsed.drivername!r} in {shown!r}: use sqlite:///FILE or "
                       "postgresql+psycopg://USER@HOST:PORT/DB")
    parsed = parsed.set(drivername=driver)
    if driver == "sqlite":
        if parsed.host or parsed.port or parsed.username:
            raise SERError(f"invalid SQLite URL {shown!r}: sqlite:///relative/path.db or sqlite:////absolute/path.db")
    elif not parsed.host or not parsed.database:
        raise SERError(f"invalid PostgreSQL URL {shown!r}: it needs a host and a database name "
                       "(postgresql+psycopg://USER@HOST:PORT/DB)")
    return parsed


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _one_line(exc: BaseException, url: str) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    msg = lines[0] if lines else type(orig).__name__
    password = make_url(url).password if "@" in url else None
    return msg.replace(str(password), "***") if password else msg


def open_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine for ``url`` with its schema created or migrated to the newest Alembic revision
    (``migrate``); SQLite gets foreign keys on, WAL and a busy timeout. Raises :class:`models.errors.SERError`
    (one line, password redacted) when the URL is malformed or the database cannot be reached."""
    parsed = parse_url(url)
    if parsed.drivername == "sqlite":
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        if migrate:
            _upgrade_retrying(engine)
        else:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        raise SERError(f"cannot open the archive database {redact_url(url)}: {_one_line(exc, url)}") from None
    return engine


def _alembic_config(conn: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


@contextmanager
def begin_write(engine: Engine) -> Iterator[Connection]:
    """A write transaction (``engine.begin()``); on SQLite ``BEGIN IMMEDIATE``, so that the write lock is
    taken at once and a second writer waits its busy timeout instead of failing on a lock upgrade."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (nothing to do at it already). One process at a time: the
    others wait on PostgreSQL's advisory lock (SQLite's write lock), then find nothing to do."""
    from alembic import command

    with begin_write(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        command.upgrade(_alembic_config(conn), revision)


#: SQLite: how often a start that found the file locked tries again (several processes starting at once on a
#: new file: switching it to WAL and the first migration need the file to themselves, and SQLite answers a
#: lock upgrade it cannot wait for without deadlocking with "database is locked" at once, busy timeout or not).
SQLITE_START_TRIES = 8


def _upgrade_retrying(engine: Engine) -> None:
    """:func:`upgrade`, tried again on SQLite's immediate "database is locked" (PostgreSQL waits on its lock)."""
    for attempt in range(SQLITE_START_TRIES):
        try:
            upgrade(engine)
            return
        except OperationalError as exc:
            if engine.dialect.name != "sqlite" or "locked" not in str(exc) or attempt == SQLITE_START_TRIES - 1:
                raise
            engine.dispose()
            time.sleep(0.05 * 2 ** attempt)


def current_revision(conn: Connection) -> str | None:
    """The database's Alembic revision (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _copy_upsert(conn: Connection, table: Table, cols: Sequence[str], rows: Sequence[Mapping[str, Any]], *,
                 keys: Sequence[str], targets: Sequence[str]) -> None:
    """PostgreSQL's fast path: ``COPY`` the rows into a temporary table of the same column types, then one
    ``INSERT ... SELECT ... ON CONFLICT`` (one round trip for the data instead of one per row)."""
    tmp = f"_ser_upsert_{next(_temp_names)}"
    q = conn.dialect.identifier_preparer.quote
    collist = ", ".join(q(c) for c in cols)
    conn.exec_driver_sql(f"CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {collist} FROM {q(table.name)} "
                         "WITH NO DATA")
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur, cur.copy(f"COPY {tmp} ({collist}) FROM STDIN") as copy:
        for values in _plain_rows(table, cols, rows):
            copy.write_row(values)
    conflict = f"ON CONFLICT ({', '.join(q(k) for k in keys)}) DO " + (
        "UPDATE SET " + ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in targets) if targets else "NOTHING")
    conn.exec_driver_sql(f"INSERT INTO {q(table.name)} ({collist}) SELECT {collist} FROM {tmp} {conflict}")
    conn.exec_driver_sql(f"DROP TABLE {tmp}")


def _plain_rows(table: Table, cols: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Iterator[list[Any]]:
    """Rows as value lists in ``cols`` order, JSON columns serialised (what SQLAlchemy's JSON type sends)."""
    json_cols = [i for i, c in enumerate(cols) if isinstance(table.c[c].type, JSON)]
    for row in rows:
        values = [row[c] for c in cols]
        for i in json_cols:
            v = values[i]
            if v is not None:
                values[i] = ("{}" if isinstance(v, dict) else "[]") if not v and isinstance(v, (dict, list)) \
                    else json.dumps(v)
        yield values


def _sqlite_many(conn: Connection, stmt: Any, table: Table, cols: Sequence[str],
                 rows: Sequence[Mapping[str, Any]]) -> None:
    """SQLite's fast path: the statement compiled once, the rows handed to the driver's ``executemany``
    as plain tuples (SQLAlchemy's per-row parameter processing is most of the cost of a large batch)."""
    compiled = stmt.compile(dialect=conn.dialect, column_keys=list(cols))
    order = [cols.index(name) for name in compiled.positiontup]
    conn.exec_driver_sql(compiled.string, [tuple(v[i] for i in order) for v in _plain_rows(table, cols, rows)])


_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def _dedup(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> list[Mapping[str, Any]]:
    last: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for row in rows:
        try:
            k = tuple(row[c] for c in keys)
        except KeyError as exc:
            raise ValueError(f"upsert row lacks key column {exc.args[0]!r}") from None
        last[k] = row
    # in key order: concurrent writers (several archivers on PostgreSQL) then lock rows in the same order
    return [last[k] for k in sorted(last)]


def upsert(conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]], *, keys: Sequence[str],
           update: Sequence[str] | None = None) -> int:
    """Insert ``rows`` into ``table``; a row whose ``keys`` exist updates the ``update`` columns (default:
    every non-key column given; ``()``: do nothing). Rows sharing a key are de-duplicated first (the last
    wins), since PostgreSQL refuses one ``INSERT ... ON CONFLICT`` touching a row twice, and sent in key
    order (writers running side by side lock rows in one order). Returns the rows sent.

    Rows are grouped by the set of columns they give (a column a row leaves out is not touched); each group
    is sent as one prepared statement executed for many rows (``executemany``; SQLAlchemy batches it into
    multi-row ``VALUES`` within the driver's parameter limit), at most :data:`MAX_PARAMS` parameters'
    worth of rows per call."""
    unique = _dedup(rows, keys)
    if not unique:
        return 0
    name = conn.dialect.name
    if name not in _INSERTS:  # pragma: no cover - parse_url admits only these two
        raise SERError(f"upsert: unsupported database {name!r}")
    dialect_insert = _INSERTS[name]
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in unique:
        groups.setdefault(tuple(row), []).append(row)
    for cols, group in groups.items():
        unknown = [c for c in cols if c not in table.c]
        if unknown:
            raise ValueError(f"upsert into {table.name}: unknown columns {unknown}")
        targets = [c for c in cols if c not in keys] if update is None else list(update)
        stmt = dialect_insert(table)
        if targets:
            stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in targets})
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        if len(group) >= COPY_MIN_ROWS:
            if name == "postgresql":
                _copy_upsert(conn, table, cols, group, keys=keys, targets=targets)
            else:
                _sqlite_many(conn, stmt, table, cols, group)
            continue
        chunk = max(1, MAX_PARAMS // len(cols))
        for i in range(0, len(group), chunk):
            conn.execute(stmt, list(group[i:i + chunk]))  # executemany: one prepared statement
    return len(unique)
