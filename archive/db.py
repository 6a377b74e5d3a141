"""Database access: the engine for an archive URL, its schema migrated to the newest revision, and
idempotent bulk upserts for PostgreSQL and SQLite.

URLs: ``sqlite:///calls.db`` (embedded, one machine; :data:`DEFAULT_URL`) or
``postgresql+psycopg://user@host:port/db`` (production). A URL's password never appears in logs or
errors (:func:`redact_url`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table

#: The embedded default: a SQLite file in the working directory.
DEFAULT_URL = "sqlite:///calls.db"


def open_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine for ``url`` with its schema created or migrated to the newest Alembic revision
    (``migrate``); SQLite gets foreign keys on, WAL and a busy timeout. Raises :class:`models.errors.SERError`
    (one line, password redacted) when the URL is malformed or the database cannot be reached."""
    raise NotImplementedError


def redact_url(url: str) -> str:
    """``url`` fit for logs: any password replaced by ``***``."""
    raise NotImplementedError


def read_url_file(path: str) -> str:
    """The database URL stored in a file (first non-empty line): ``--database-url-file``."""
    raise NotImplementedError


def upsert(conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]], *, keys: Sequence[str],
           update: Sequence[str] | None = None) -> int:
    """Insert ``rows`` into ``table``; a row whose ``keys`` exist updates the ``update`` columns (default:
    every non-key column given; ``()``: do nothing). Rows sharing a key are de-duplicated first (the last
    wins), since PostgreSQL refuses one ``INSERT ... ON CONFLICT`` touching a row twice. Returns the rows sent."""
    raise NotImplementedError
