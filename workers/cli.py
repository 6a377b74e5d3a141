"""``ser-worker``: run a pool of RQ workers that classify segments (options and env: docs/pipeline.md)."""

from __future__ import annotations

import os

from workers.settings import THREAD_ENV_VARS

# Cap BLAS/OpenMP threads before anything imports numpy (children inherit the environment).
for _var in THREAD_ENV_VARS:
    os.environ.setdefault(_var, "1")

import click  # noqa: E402

from workers.contract import DEFAULT_QUEUE, read_url_file, redact_url  # noqa: E402
from workers.settings import (  # noqa: E402
    DEFAULT_LOG_LEVEL,
    DEFAULT_METRICS_HOST,
    DEFAULT_PROCESSES,
    DEFAULT_REDIS_URL,
    MAX_PROCESSES,
    WorkerSettings,
)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--redis-url", envvar="SER_REDIS_URL", default=DEFAULT_REDIS_URL, show_default=True,
              help="Redis holding the queue and the results streams [env SER_REDIS_URL].")
@click.option("--redis-url-file", envvar="SER_REDIS_URL_FILE", type=click.Path(dir_okay=False), default=None,
              help="Read the Redis URL from this file (keeps a password out of argv) [env SER_REDIS_URL_FILE].")
@click.option("--queue", envvar="SER_QUEUE", default=DEFAULT_QUEUE, show_default=True,
              help="RQ queue to work [env SER_QUEUE].")
@click.option("--processes", "-n", envvar="SER_WORKER_PROCESSES", type=click.IntRange(1, MAX_PROCESSES),
              default=DEFAULT_PROCESSES, show_default=True,
              help="Worker processes (each loads the model once, one thread) [env SER_WORKER_PROCESSES].")
@click.option("--model", "model_dir", envvar="SER_MODEL", type=click.Path(file_okay=False), default=None,
              help="Model bundle directory [env SER_MODEL; default: the shipped bundle models/default].")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--log-level", envvar="SER_LOG_LEVEL", default=DEFAULT_LOG_LEVEL, show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="RQ log level [env SER_LOG_LEVEL].")
@click.option("--metrics-port", envvar="SER_METRICS_PORT", type=click.IntRange(0, 65535), default=None,
              help="Serve /metrics, /healthz, /readyz on this port (0: any free port) [env SER_METRICS_PORT; "
                   "default: no server].")
@click.option("--metrics-host", envvar="SER_METRICS_HOST", default=DEFAULT_METRICS_HOST, show_default=True,
              help="Address the metrics server binds (0.0.0.0: every interface, e.g. in a container scraped "
                   "from outside) [env SER_METRICS_HOST].")
def main(redis_url: str, redis_url_file: str | None, queue: str, processes: int, model_dir: str | None,
         burst: bool, log_level: str, metrics_port: int | None, metrics_host: str) -> None:
    """Classify queued speech segments and publish the results to Redis Streams."""
    import signal

    # Until the pool takes over the signals, a stop request means: start nothing, exit 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    import redis

    from models.bundle import load_bundle
    from models.errors import SERError
    from workers.pool import run_pool

    if redis_url_file:
        try:
            redis_url = read_url_file(redis_url_file)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    settings = WorkerSettings(redis_url=redis_url, queue=queue, processes=processes, model_dir=model_dir,
                              burst=burst, log_level=log_level.upper(), metrics_port=metrics_port,
                              metrics_host=metrics_host)
    try:  # fail fast, with one line, before spawning anything
        load_bundle(model_dir)
        redis.Redis.from_url(redis_url).ping()
    except SERError as exc:
        raise click.ClickException(str(exc)) from None
    except (redis.RedisError, ValueError) as exc:
        raise click.ClickException(f"cannot reach Redis at {redact_url(redis_url)}: {exc}") from None
    try:
        code = run_pool(settings)
    except OSError as exc:  # e.g. the metrics port is taken
        raise click.ClickException(f"cannot start the worker pool: {exc}") from None
    if code:
        raise click.ClickException(f"a worker process exited with code {code}")


if __name__ == "__main__":
    main()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--redis-url", envvar="SER_REDIS_URL", default=DEFAULT_REDIS_URL, show_default=True,
              help="Redis of the pool [env SER_REDIS_URL].")
@click.option("--redis-url-file", envvar="SER_REDIS_URL_FILE", type=click.Path(dir_okay=False), default=None,
              help="Read the Redis URL from this file (keeps a password out of argv) [env SER_REDIS_URL_FILE].")
@click.option("--queue", envvar="SER_QUEUE", default=DEFAULT_QUEUE, show_default=True, help="RQ queue [env SER_QUEUE].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of lines.")
def status(redis_url: str, redis_url_file: str | None, queue: str, as_json: bool) -> None:
    """Show the pool: queue depth and oldest job age, workers and their model versions, failed jobs."""
    import json

    import redis

    from workers.status import pool_status, status_lines

    if redis_url_file:
        try:
            redis_url = read_url_file(redis_url_file)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    try:
        connection = redis.Redis.from_url(redis_url)
    except ValueError as exc:
        raise click.ClickException(f"bad Redis URL: {exc}") from None
    try:
        snapshot = pool_status(connection, queue)
    except redis.RedisError as exc:
        raise click.ClickException(f"cannot read the pool from Redis at {redact_url(redis_url)}: {exc}") from None
    finally:
        connection.close()
    if as_json:
        click.echo(json.dumps(snapshot))
    else:
        for line in status_lines(snapshot):
            click.echo(line)
