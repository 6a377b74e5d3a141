"""``ser-gateway``: live call audio from Twilio Media Streams, Genesys AudioHook and a generic
WebSocket stream, through the shared ingestion core (docs/gateway.md)."""

from __future__ import annotations

import base64
import binascii
import logging
import os

#: Cap BLAS/OpenMP threads before anything imports numpy, as ``ser-produce`` does (producer.cli): the
#: sessions run features in threads of this process in embedded mode.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS")
for _var in THREAD_ENV_VARS:
    os.environ.setdefault(_var, "1")

import click  # noqa: E402

from gateway.settings import (  # noqa: E402
    AUDIOHOOK_KEY_ENV,
    AUDIOHOOK_SECRET_ENV,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PER_ADDRESS,
    DEFAULT_PORT,
    DEFAULT_THREADS,
    DEFAULT_TIMEOUT_S,
    STREAM_TOKEN_ENV,
    TWILIO_TOKEN_ENV,
    Credentials,
    GatewaySettings,
)
from producer.settings import connection_options  # noqa: E402
from workers.contract import DEFAULT_QUEUE, redact_url  # noqa: E402


def credentials(insecure: bool) -> Credentials:
    secret = os.environ.get(AUDIOHOOK_SECRET_ENV) or None
    decoded = None
    if secret is not None:
        try:
            decoded = base64.b64decode(secret, validate=True)
        except (binascii.Error, ValueError):
            raise click.ClickException(f"{AUDIOHOOK_SECRET_ENV} is not base64") from None
    return Credentials(twilio_auth_token=os.environ.get(TWILIO_TOKEN_ENV) or None,
                       audiohook_api_key=os.environ.get(AUDIOHOOK_KEY_ENV) or None, audiohook_secret=decoded,
                       stream_token=os.environ.get(STREAM_TOKEN_ENV) or None, insecure_no_auth=insecure)


#: File descriptors kept free of connections (Redis clients, the model, logs, the listening socket).
SPARE_FDS = 64


def connection_budget(wanted: int) -> int:
    """``wanted``, within the open-files limit (the soft limit is raised to the hard one first): a
    process out of descriptors can accept nothing, /healthz and signed calls included."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and wanted > soft - SPARE_FDS:
        click.echo(f"ser-gateway: --max-connections {wanted} lowered to {max(1, soft - SPARE_FDS)} (open-files "
                   f"limit {soft})", err=True)
        return max(1, soft - SPARE_FDS)
    return wanted


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True, help="TCP port.")
@click.option("--redis-url", envvar="SER_REDIS_URL", default=None,
              help="Redis of the worker pool [env SER_REDIS_URL]; unset: classify in this process (embedded).")
@click.option("--redis-url-file", envvar="SER_REDIS_URL_FILE", type=click.Path(dir_okay=False), default=None,
              help="Read the Redis URL from this file [env SER_REDIS_URL_FILE].")
@click.option("--queue", envvar="SER_QUEUE", default=DEFAULT_QUEUE, show_default=True, help="RQ queue [env SER_QUEUE].")
@click.option("--model", "model_dir", envvar="SER_MODEL", type=click.Path(file_okay=False), default=None,
              help="Model bundle directory [env SER_MODEL; default: the shipped bundle].")
@click.option("--public-url", envvar="SER_PUBLIC_URL", default=None,
              help="The URL platforms call (e.g. https://ser.example.com): its host is what signatures cover "
                   "[env SER_PUBLIC_URL; default: the request's Host header].")
@click.option("--idle-timeout", "idle_timeout_s", type=click.FloatRange(0.1), default=DEFAULT_IDLE_TIMEOUT_S,
              show_default=True, help="End a call after this many seconds without a message (reason disconnected).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1), envvar="SER_TIMEOUT", default=DEFAULT_TIMEOUT_S,
              show_default=True, help="Give up a call after this many seconds without progress [env SER_TIMEOUT].")
@click.option("--threads", type=click.IntRange(1, 256), default=DEFAULT_THREADS, show_default=True,
              help="Threads running the sessions' blocking work.")
@click.option("--max-connections", type=click.IntRange(1), default=DEFAULT_MAX_CONNECTIONS, show_default=True,
              help="Concurrent TCP connections this process holds; more get 503 (capped by the open-files limit).")
@click.option("--max-connections-per-address", "max_per_address", type=click.IntRange(0),
              default=DEFAULT_MAX_PER_ADDRESS, show_default=True,
              help="Concurrent connections from one source address (0: no limit; behind a proxy every client "
                   "has the proxy's address).")
@click.option("--header-timeout", "header_timeout_s", type=click.FloatRange(0.1), default=DEFAULT_HEADER_TIMEOUT_S,
              show_default=True, help="Seconds a new connection has to send its request head (else 408, closed).")
@click.option("--alert-rules", envvar="SER_ALERT_RULES", type=click.Path(dir_okay=False), default=None,
              help="TOML file of alert rules (docs/pipeline.md, 'Call events') [env SER_ALERT_RULES].")
@click.option("--insecure-no-auth", is_flag=True,
              help="Accept every connection on every route, unauthenticated. Local experiments only.")
@click.option("--log-level", envvar="SER_LOG_LEVEL", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False),
              help="Log level [env SER_LOG_LEVEL].")
def main(host: str, port: int, redis_url: str | None, redis_url_file: str | None, queue: str, model_dir: str | None,
         public_url: str | None, idle_timeout_s: float, timeout_s: float, threads: int, max_connections: int,
         max_per_address: int, header_timeout_s: float, alert_rules: str | None, insecure_no_auth: bool,
         log_level: str) -> None:
    """Serve WS /twilio, /audiohook and /stream (and GET /healthz, /readyz, /metrics).

    Credentials come from the environment only: SER_TWILIO_AUTH_TOKEN, SER_AUDIOHOOK_API_KEY and
    SER_AUDIOHOOK_CLIENT_SECRET (base64), SER_GATEWAY_TOKEN; a route without them refuses everyone."""
    import redis
    import uvicorn

    from gateway.app import create_app, route_credentials, server_config
    from models.bundle import load_bundle
    from models.errors import SERError

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        redis_url, events = connection_options(redis_url, redis_url_file, alert_rules)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        load_bundle(model_dir)
    except SERError as exc:
        raise click.ClickException(str(exc)) from None
    if redis_url:
        try:
            probe = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
            probe.ping()
            probe.close()
        except (redis.RedisError, ValueError) as exc:
            raise click.ClickException(f"cannot reach Redis at {redact_url(redis_url)}: {exc}") from None
    settings = GatewaySettings(credentials=credentials(insecure_no_auth), model_dir=model_dir,
                               redis_url=redis_url or None, queue=queue, public_url=public_url,
                               idle_timeout_s=idle_timeout_s, timeout_s=timeout_s, threads=threads, events=events,
                               max_connections=connection_budget(max_connections), max_per_address=max_per_address,
                               header_timeout_s=header_timeout_s)
    shown = f"[{host}]" if ":" in host else host
    mode = f"queue {queue!r} on {redact_url(redis_url)}" if redis_url else "embedded (classifying in-process)"
    click.echo(f"ser-gateway: ws://{shown}:{port}/{{twilio,audiohook,stream}} -- {mode}", err=True)
    if insecure_no_auth:
        click.echo("ser-gateway: WARNING --insecure-no-auth: EVERY route accepts ANY connection without "
                   "authentication. Never use this where anyone else can connect.", err=True)
    else:
        envs = {"twilio": TWILIO_TOKEN_ENV, "audiohook": f"{AUDIOHOOK_KEY_ENV} and {AUDIOHOOK_SECRET_ENV}",
                "stream": STREAM_TOKEN_ENV}
        for route, ok in route_credentials(settings).items():
            if not ok:
                click.echo(f"ser-gateway: /{route} refuses every connection: {envs[route]} not set", err=True)
    uvicorn.Server(server_config(create_app(settings), host=host, port=port, log_level=log_level.lower())).run()


if __name__ == "__main__":
    main()
