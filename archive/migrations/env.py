"""Alembic environment of the archive: run programmatically by :func:`archive.db.upgrade`, which passes
its connection in ``config.attributes["connection"]`` (inside its transaction, holding the migration
lock on PostgreSQL). SQLite gets batch mode (it cannot ALTER most things in place)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from archive.schema import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # the alembic CLI (alembic -x url=... upgrade head): open one ourselves
        from archive.db import parse_url

        url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
        if not url:
            raise SystemExit("give the database URL: alembic -x url=URL ...")
        with create_engine(parse_url(url)).begin() as conn:
            _migrate(conn)
    else:
        _migrate(connection)


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


run()
