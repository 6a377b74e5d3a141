"""``ser-dashboard``: a live supervisor view of every call, in the browser (README, "ser-dashboard")."""

from __future__ import annotations

import ipaddress
import os

import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from dashboard.settings import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_REDIS_URL, LOOPBACK_HOSTS, DashboardSettings
from models.errors import SERError
from workers.contract import DEFAULT_QUEUE, read_url_file, redact_url

#: Environment variable holding the login token (never an option: it would show in argv).
TOKEN_ENV = "SER_DASHBOARD_TOKEN"
#: Shortest token accepted.
MIN_TOKEN_LEN = 16


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_archive(url: str | None, url_file: str | None) -> Engine | None:
    """The archive's engine (read-only use: never migrated here), or None without one; says in one line at
    start when its schema is missing or at another revision (the pages then answer 503 until it is fixed)."""
    from archive import db
    from dashboard.archived import schema_problem

    if url_file:
        try:
            url = read_url_file(url_file, option="--archive-url-file")
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    if not url:
        return None
    try:
        engine = db.open_engine(url, migrate=False)
        problem = schema_problem(engine)
    except SERError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot read the archive at {db.redact_url(url)}: {type(exc).__name__}") from None
    if problem:
        click.echo(f"ser-dashboard: archive {db.redact_url(url)}: {problem}", err=True)
    else:
        click.echo(f"ser-dashboard: archive {db.redact_url(url)}: History at /history, Trends at /trends", err=True)
    return engine


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--redis-url", envvar="SER_REDIS_URL", default=DEFAULT_REDIS_URL, show_default=True,
              help="Redis of the pipeline [env SER_REDIS_URL].")
@click.option("--redis-url-file", envvar="SER_REDIS_URL_FILE", type=click.Path(dir_okay=False), default=None,
              help="Read the Redis URL from this file (keeps a password out of argv) [env SER_REDIS_URL_FILE].")
@click.option("--queue", envvar="SER_QUEUE", default=DEFAULT_QUEUE, show_default=True,
              help="RQ queue whose pool health is shown [env SER_QUEUE].")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on; anything but loopback needs SER_DASHBOARD_TOKEN.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True, help="TCP port.")
@click.option("--archive", "archive_url", envvar="SER_ARCHIVE_URL", default=None,
              help="Call archive database to read (History and Trends pages, ended calls' pages); none: Redis "
                   "only [env SER_ARCHIVE_URL].")
@click.option("--archive-url-file", envvar="SER_ARCHIVE_URL_FILE", type=click.Path(dir_okay=False), default=None,
              help="Read the archive URL from this file (keeps a password out of argv) [env SER_ARCHIVE_URL_FILE].")
@click.option("--log-level", envvar="SER_LOG_LEVEL", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False),
              help="uvicorn's log level [env SER_LOG_LEVEL].")
def main(redis_url: str, redis_url_file: str | None, queue: str, host: str, port: int, archive_url: str | None,
         archive_url_file: str | None, log_level: str) -> None:
    """Serve the dashboard: live calls, their emotion timelines and alerts, the worker pool.

    Login: set SER_DASHBOARD_TOKEN (at least 16 characters) and enter it once in the browser.
    Without it there is no login and only a loopback --host is accepted. With --archive, the History and
    Trends pages search and compare the archived calls, and a call gone from Redis is shown from the archive."""
    import redis
    import uvicorn

    from dashboard.app import create_app

    if redis_url_file:
        try:
            redis_url = read_url_file(redis_url_file)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    token = os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < MIN_TOKEN_LEN:
        raise click.ClickException(f"{TOKEN_ENV} is too short: use at least {MIN_TOKEN_LEN} characters")
    if token is None and not is_loopback(host):
        raise click.ClickException(f"refusing to listen on {host} without a login: set {TOKEN_ENV}, or use a "
                                   f"loopback --host ({DEFAULT_HOST})")
    try:
        probe = redis.Redis.from_url(redis_url)
        probe.ping()
        probe.close()
    except (redis.RedisError, ValueError) as exc:
        raise click.ClickException(f"cannot reach Redis at {redact_url(redis_url)}: {exc}") from None
    engine = open_archive(archive_url, archive_url_file)
    settings = DashboardSettings(redis_url=redis_url, queue=queue, host=host, port=port, token=token,
                                 archive_url=archive_url)
    shown = f"[{host}]" if ":" in host else host
    if token is None:
        click.echo(f"ser-dashboard: http://{shown}:{port}/ -- no {TOKEN_ENV} set: no login, listening on loopback "
                   "only", err=True)
    else:
        click.echo(f"ser-dashboard: http://{shown}:{port}/ -- login with the token in {TOKEN_ENV}", err=True)
    uvicorn.run(create_app(settings, archive=engine), host=host, port=port, log_level=log_level.lower(),
                timeout_graceful_shutdown=1, access_log=False)


if __name__ == "__main__":
    main()
