"""``ser-archive``: follow the call events and results streams in Redis with a consumer group and write
every call to the archive database (docs/archive.md, "ser-archive")."""

from __future__ import annotations

import click

from archive.db import DEFAULT_URL
from archive.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BLOCK_MS,
    DEFAULT_CLAIM_IDLE_S,
    DEFAULT_LOG_LEVEL,
    DEFAULT_LOST_AFTER_S,
    DEFAULT_METRICS_HOST,
    DEFAULT_REDIS_URL,
    DEFAULT_RETENTION_DAYS,
    MAX_BATCH_SIZE,
    ArchiverSettings,
)


def _read_urls(redis_url: str, redis_url_file: str | None, database: str, database_url_file: str | None
               ) -> tuple[str, str]:
    from archive.db import read_url_file as read_db_url
    from workers.contract import read_url_file as read_redis_url

    try:
        if redis_url_file:
            redis_url = read_redis_url(redis_url_file)
        if database_url_file:
            database = read_db_url(database_url_file)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    return redis_url, database


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--redis-url", envvar="SER_REDIS_URL", default=DEFAULT_REDIS_URL, show_default=True,
              help="Redis holding the call events and results streams [env SER_REDIS_URL].")
@click.option("--redis-url-file", envvar="SER_REDIS_URL_FILE", type=click.Path(dir_okay=False), default=None,
              help="Read the Redis URL from this file (keeps a password out of argv) [env SER_REDIS_URL_FILE].")
@click.option("--database", envvar="SER_ARCHIVE_URL", default=DEFAULT_URL, show_default=True,
              help="Archive database URL: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB [env SER_ARCHIVE_URL].")
@click.option("--database-url-file", envvar="SER_ARCHIVE_URL_FILE", type=click.Path(dir_okay=False), default=None,
              help="Read the database URL from this file (keeps a password out of argv) [env SER_ARCHIVE_URL_FILE].")
@click.option("--consumer", envvar="SER_ARCHIVE_CONSUMER", default=None,
              help="This archiver's name in the consumer group (unique per process) [env SER_ARCHIVE_CONSUMER; "
                   "default: <host>-<pid>].")
@click.option("--batch-size", envvar="SER_ARCHIVE_BATCH_SIZE", type=click.IntRange(1, MAX_BATCH_SIZE),
              default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Most entries read from one stream at a time; one read is one transaction.")
@click.option("--block-ms", type=click.IntRange(1, 60_000), default=DEFAULT_BLOCK_MS, show_default=True,
              help="Milliseconds one read waits for new entries.")
@click.option("--claim-idle-s", envvar="SER_ARCHIVE_CLAIM_IDLE_S", type=click.FloatRange(0.1, 86_400),
              default=DEFAULT_CLAIM_IDLE_S, show_default=True,
              help="Claim entries another archiver left pending this long (it is taken for dead).")
@click.option("--retention-days", envvar="SER_ARCHIVE_RETENTION_DAYS", type=click.FloatRange(0, 36_500),
              default=float(DEFAULT_RETENTION_DAYS), show_default=True,
              help="Delete archived calls that started longer ago, hourly (0: keep every call) "
                   "[env SER_ARCHIVE_RETENTION_DAYS].")
@click.option("--lost-after-s", envvar="SER_ARCHIVE_LOST_AFTER_S", type=click.FloatRange(0, 86_400),
              default=DEFAULT_LOST_AFTER_S, show_default=True,
              help="End a live archived call nothing has written for this long, reason lost (its producer died; "
                   "0: never) [env SER_ARCHIVE_LOST_AFTER_S].")
@click.option("--drain", is_flag=True, help="Exit once nothing is left unread or pending (a catch-up run).")
@click.option("--metrics-port", envvar="SER_METRICS_PORT", type=click.IntRange(0, 65535), default=None,
              help="Serve /metrics, /healthz, /readyz on this port (0: any free port) [env SER_METRICS_PORT; "
                   "default: no server].")
@click.option("--metrics-host", envvar="SER_METRICS_HOST", default=DEFAULT_METRICS_HOST, show_default=True,
              help="Address the metrics server binds (0.0.0.0: every interface) [env SER_METRICS_HOST].")
@click.option("--log-level", envvar="SER_LOG_LEVEL", default=DEFAULT_LOG_LEVEL, show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Log level [env SER_LOG_LEVEL].")
def main(redis_url: str, redis_url_file: str | None, database: str, database_url_file: str | None, consumer: str | None,
         batch_size: int, block_ms: int, claim_idle_s: float, retention_days: float, lost_after_s: float, drain: bool,
         metrics_port: int | None, metrics_host: str, log_level: str) -> None:
    """Archive every call: read the call events and each call's results from Redis (consumer group
    ser-archive) and write them to the archive database; entries are acknowledged after the commit."""
    import logging
    import signal

    import redis

    from archive.archiver import Archiver
    from archive.db import open_engine, redact_url
    from archive.metrics import ArchiveMetrics, MetricsServer
    from models.errors import SERError
    from workers.contract import redact_url as redact_redis_url

    redis_url, database = _read_urls(redis_url, redis_url_file, database, database_url_file)
    try:
        settings = ArchiverSettings(redis_url=redis_url, database_url=database, consumer=consumer or "",
                                    batch_size=batch_size, block_ms=block_ms, claim_idle_s=claim_idle_s,
                                    retention_days=retention_days, lost_after_s=lost_after_s, drain=drain,
                                    metrics_port=metrics_port, metrics_host=metrics_host,
                                    log_level=log_level.upper())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        connection = redis.Redis.from_url(redis_url)
        connection.ping()
    except (redis.RedisError, ValueError) as exc:
        raise click.ClickException(f"cannot reach Redis at {redact_redis_url(redis_url)}: {exc}") from None
    try:
        engine = open_engine(database)
    except SERError as exc:
        raise click.ClickException(str(exc)) from None
    metrics = ArchiveMetrics()
    archiver = Archiver(connection, engine, settings, metrics=metrics)
    server = None
    if metrics_port is not None:
        try:
            server = MetricsServer(metrics, metrics_port, host=metrics_host, ready=archiver.ready)
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}") from None
    for sig in (signal.SIGTERM, signal.SIGINT):  # finish the batch in hand (commit, ack), then exit 0
        signal.signal(sig, lambda *_: archiver.stop())
    logging.getLogger("archive").info(
        "archiving Redis %s into %s as consumer %s of group %s%s", redact_redis_url(redis_url), redact_url(database),
        settings.consumer_name, "ser-archive", f"; metrics on {metrics_host}:{server.port}" if server else "")
    try:
        archiver.run()
        logging.getLogger("archive").info("stopped: archived %d entries, %d dead letters",
                                          archiver.totals["archived"], archiver.totals["dead_letter"])
    finally:
        if server is not None:
            server.close()
        engine.dispose()
        connection.close()


if __name__ == "__main__":
    main()
