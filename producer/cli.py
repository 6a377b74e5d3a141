"""``ser-produce``: classify a call's speech emotions segment by segment (options and env: docs/pipeline.md)."""

from __future__ import annotations

import os

#: Environment variables that cap BLAS/OpenMP threads, as ``ser-worker`` sets them
#: (``workers.settings.THREAD_ENV_VARS``; this module may not import it). Set to "1" before anything
#: imports numpy: the embedded mode runs the features in this process, and multi-threaded BLAS on
#: small log-mel matrices was 3-5x slower here (docs/benchmark.md, "embedded").
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS")
for _var in THREAD_ENV_VARS:
    os.environ.setdefault(_var, "1")

import hashlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from models.audio import RAW_ENCODINGS  # noqa: E402
from models.ids import key_id  # noqa: E402
from producer.settings import (  # noqa: E402
    DEFAULT_BATCH_FILE,
    DEFAULT_BATCH_LIVE,
    DEFAULT_FORMAT,
    DEFAULT_MAX_PENDING,
    DEFAULT_RAW_CHANNELS,
    DEFAULT_RAW_ENCODING,
    DEFAULT_RESEND_AFTER_S,
    DEFAULT_TIMEOUT_S,
    FORMATS,
    SOCKET_TIMEOUT_MAX_S,
    SOCKET_TIMEOUT_MIN_S,
    ProducerSettings,
    RawFormat,
    connection_options,
)
from producer.source import is_stream_path  # noqa: E402
from workers.contract import DEFAULT_QUEUE, MAX_BATCH, redact_url, sanitize  # noqa: E402

#: Exit status when the run did not complete (a timeout, or segments that failed), or, with several files,
#: when any of them failed (each one's reason is a line ``FILE: reason`` on stderr).
EXIT_INCOMPLETE = 3


class IncompleteRun(click.ClickException):
    exit_code = EXIT_INCOMPLETE


class OutputError(click.ClickException):
    """The output cannot be written: every later call would fail the same way (several files stop)."""


#: Output formats implied by the --output file's extension when --format is not given.
FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}


def format_for(output_name: str) -> str:
    """The format an output file's extension implies (``table`` for stdout and anything else)."""
    return FORMAT_BY_SUFFIX.get(Path(output_name).suffix.lower(), DEFAULT_FORMAT) if output_name != "-" \
        else DEFAULT_FORMAT


def connect(url: str, *, timeout_s: float) -> Any:
    """The producer's Redis client, with explicit socket and connect timeouts (``timeout_s`` clamped to
    :data:`SOCKET_TIMEOUT_MIN_S`-:data:`SOCKET_TIMEOUT_MAX_S`) so that ``--timeout`` bounds a hung Redis."""
    import redis

    sock = min(max(timeout_s, SOCKET_TIMEOUT_MIN_S), SOCKET_TIMEOUT_MAX_S)
    return redis.Redis.from_url(url, socket_timeout=sock, socket_connect_timeout=sock, socket_keepalive=True)


def output_failed(output: Any, exc: OSError) -> OutputError:
    """One error line for an output that cannot be written; closes it (quietly: its buffer cannot be
    flushed either) and sends any later write to stdout nowhere, so that no traceback follows at exit."""
    name = getattr(output, "name", "output")
    try:
        output.close()
    except OSError:
        pass
    if name in ("-", "<stdout>"):
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
            os.close(null)
        except (OSError, ValueError):
            pass
    return OutputError(f"cannot write the output to {name}: {exc.strerror or exc}")


def redis_reason(exc: BaseException) -> str:
    """A Redis error as one short line without payload bytes: redis-py prefixes a failed pipeline
    command with its arguments (``Command # 2 (SET ser:pcm:... <PCM>) of pipeline caused error: ...``)."""
    text = str(exc).rsplit(" of pipeline caused error: ", 1)[-1]
    text = "".join(c if c.isprintable() else "?" for c in " ".join(text.split()))
    return f"{type(exc).__name__}: {text[:200]}"


def default_stream_id(audio: str) -> str:
    """``{file stem}-{8 hex of its sha256}`` for a file (a re-send reuses it); time and pid for stdin, a
    FIFO or ``<(...)``."""
    if audio == "-" or is_stream_path(audio):  # a stream can be read once: no hash of its content
        stem = "stdin" if audio == "-" else sanitize(Path(audio).name, max_len=32)
        return f"{stem}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
    digest = hashlib.sha256()
    try:
        with open(audio, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return sanitize(Path(audio).stem)  # the source reports the real problem
    return f"{sanitize(Path(audio).stem, max_len=48)}-{digest.hexdigest()[:8]}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("audio", nargs=-1, required=True)
@click.option("--model", "model_dir", envvar="SER_MODEL", type=click.Path(file_okay=False), default=None,
              help="Model bundle directory [env SER_MODEL; default: the shipped bundle models/default].")
@click.option("--redis-url", envvar="SER_REDIS_URL", default=None,
              help="Redis of the worker pool [env SER_REDIS_URL]; unset: classify in this process.")
@click.option("--redis-url-file", envvar="SER_REDIS_URL_FILE", type=click.Path(dir_okay=False), default=None,
              help="Read the Redis URL from this file (keeps a password out of argv) [env SER_REDIS_URL_FILE].")
@click.option("--queue", envvar="SER_QUEUE", default=DEFAULT_QUEUE, show_default=True,
              help="RQ queue [env SER_QUEUE].")
@click.option("--stream-id", default=None,
              help="Call id in job ids and the results stream key [default: file stem + content hash].")
@click.option("--channel-names", default=None, help="Comma-separated channel names, e.g. agent,customer.")
@click.option("--realtime", is_flag=True, help="Pace a file at real time, as a live call arrives.")
@click.option("--rate", type=int, default=None, help="Raw PCM on stdin: sample rate in Hz.")
@click.option("--channels", type=int, default=None,
              help=f"Raw PCM on stdin: interleaved channels [default {DEFAULT_RAW_CHANNELS}].")
@click.option("--encoding", type=click.Choice(list(RAW_ENCODINGS)), default=None,
              help=f"Raw PCM on stdin: sample encoding [default {DEFAULT_RAW_ENCODING}].")
@click.option("--batch", type=click.IntRange(1, MAX_BATCH), default=None,
              help=f"Segments per job [default {DEFAULT_BATCH_FILE} for files, {DEFAULT_BATCH_LIVE} for stdin "
                   "or --realtime].")
@click.option("--max-pending", type=click.IntRange(1), envvar="SER_MAX_PENDING", default=DEFAULT_MAX_PENDING,
              show_default=True, help="Stop reading while the queue holds this many jobs [env SER_MAX_PENDING].")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1), envvar="SER_TIMEOUT",
              default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Give up after this many seconds without progress [env SER_TIMEOUT].")
@click.option("--resend-after", "resend_after_s", type=click.FloatRange(0), envvar="SER_RESEND_AFTER",
              default=DEFAULT_RESEND_AFTER_S, show_default=True,
              help="Send a batch again when it has no result this many seconds after it was sent and its job "
                   "is no longer queued (a worker died with it); 0: never [env SER_RESEND_AFTER].")
@click.option("--format", "output_format", type=click.Choice(FORMATS), default=None,
              help=f"Output format [default: from the --output file's extension (.jsonl/.ndjson/.json: jsonl, "
                   f".csv: csv), else {DEFAULT_FORMAT}].")
@click.option("--output", "-o", type=click.File("w", encoding="utf-8", lazy=True), default="-",
              help="Write records here [default: stdout].")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write a self-contained HTML report of the call here (and a PNG of its timeline beside it); "
                   "{stem} in the name is the audio file's stem (required with several files).")
@click.option("--meta", "meta", multiple=True, metavar="KEY=VALUE",
              help="A custom parameter of the call (call_started params; agent, queue, direction, tenant fill the "
                   "archive's columns); repeatable. KEY: 1-64 of [A-Za-z0-9_.-], VALUE: at most 256 characters.")
@click.option("--archive", "archive_url", envvar="SER_ARCHIVE_URL", default=None, metavar="URL",
              help="Archive each finished call in this database, e.g. sqlite:///calls.db or "
                   "postgresql+psycopg://user@host/db [env SER_ARCHIVE_URL; default: not archived].")
@click.option("--archive-url-file", envvar="SER_ARCHIVE_URL_FILE", type=click.Path(dir_okay=False), default=None,
              help="Read the --archive URL from this file (keeps a password out of argv) [env SER_ARCHIVE_URL_FILE].")
@click.option("--alert-rules", "alert_rules", envvar="SER_ALERT_RULES", type=click.Path(dir_okay=False),
              default=None, help="TOML file of alert rules and trend settings for the call events (docs/pipeline.md, "
                                 "'Call events') [env SER_ALERT_RULES; default: customer_negative].")
def main(audio: tuple[str, ...], model_dir: str | None, redis_url: str | None, redis_url_file: str | None,
         queue: str, stream_id: str | None, channel_names: str | None, realtime: bool, rate: int | None,
         channels: int | None, encoding: str | None, batch: int | None, max_pending: int, timeout_s: float,
         resend_after_s: float, output_format: str | None, output: Any, report_path: str | None,
         meta: tuple[str, ...], archive_url: str | None, archive_url_file: str | None, alert_rules: str | None) -> None:
    """Cut AUDIO (files, globs such as 'calls/*.wav', or - for a WAV or raw PCM stream on stdin) into
    segments, classify every voiced segment's emotion, print the results in order and a per-channel
    summary, call after call. Exit 0: all fine; 1: the input or setup is bad (one file: it failed);
    2: usage; 3: a call is incomplete, or with several files, any failed (a line FILE: reason each)."""
    from models.errors import SERError
    from producer import files as inputs

    if rate is None and (channels is not None or encoding is not None):
        raise click.UsageError("--channels/--encoding describe raw PCM: give --rate too")
    try:
        files = inputs.expand(audio)
        params = inputs.parse_meta(meta)
        if report_path and len(files) > 1:
            inputs.report_path(report_path, files[0], several=True)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if stream_id and len(files) > 1:
        raise click.UsageError(f"--stream-id names one call: {len(files)} files were given")
    raw = None if rate is None else RawFormat(
        rate=rate, channels=DEFAULT_RAW_CHANNELS if channels is None else channels,
        encoding=encoding or DEFAULT_RAW_ENCODING)
    try:
        redis_url, events = connection_options(redis_url, redis_url_file, alert_rules)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    live = files == ["-"] or realtime
    output_format = output_format or format_for(getattr(output, "name", "-"))
    settings = ProducerSettings(
        audio=files[0], stream_id=key_id(stream_id) if stream_id else "", params=params,
        model_dir=model_dir, redis_url=redis_url or None, queue=queue, raw=raw, realtime=realtime,
        channel_names=tuple(n.strip() for n in channel_names.split(",")) if channel_names else (),
        batch=batch or (DEFAULT_BATCH_LIVE if live else DEFAULT_BATCH_FILE), max_pending=max_pending,
        timeout_s=timeout_s, resend_after_s=resend_after_s, output_format=output_format, events=events,
    )
    connection = None
    if settings.redis_url:
        import redis

        try:
            connection = connect(settings.redis_url, timeout_s=settings.timeout_s)
            connection.ping()
        except (redis.RedisError, ValueError) as exc:
            raise click.ClickException(f"cannot reach Redis at {redact_url(settings.redis_url)}: {exc}") from None
    job = Job(settings=settings, connection=connection, output=output, report=report_path, several=len(files) > 1)
    try:
        job.open(archive_url, archive_url_file)
        if len(files) == 1:  # one call: its error is the command's (exit 1, or 3 when incomplete)
            job.one(files[0])
        else:
            job.many(files)
    except SERError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        job.close()


class Job:
    """One ``ser-produce`` command: the model (and archive) loaded once, then each call in turn."""

    def __init__(self, *, settings: ProducerSettings, connection: Any, output: Any, report: str | None,
                 several: bool) -> None:
        self.settings, self.connection, self.output, self.report, self.several = (
            settings, connection, output, report, several)
        self.loaded: Any = None
        self.archive: Any = None
        self.say = lambda line: click.echo(line, err=True)  # a line on stderr (above the files' bar)
        self.first = True

    def open(self, archive_url: str | None, archive_url_file: str | None) -> None:
        from producer.pipeline import load

        if archive_url or archive_url_file:
            from producer.archiving import Archive

            self.archive = Archive.from_options(archive_url, archive_url_file)
        self.loaded = load(self.settings.model_dir, embedded=self.connection is None)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        if self.archive is not None:
            self.archive.close()

    def many(self, files: list[str]) -> None:
        """Every file, one after another; a failed one is a line ``FILE: reason`` and the rest go on."""
        from producer.progress import FilesProgress

        bar = FilesProgress(sys.stderr, files=files)
        self.say = bar.write
        failed = 0
        try:
            for path in files:
                try:
                    self.one(path, bar=bar.view())
                except OutputError:
                    raise
                except click.ClickException as exc:
                    failed += 1
                    bar.write(f"{path}: {exc.format_message()}")
                finally:
                    bar.file_done()
        finally:
            bar.close()
        click.echo(f"{len(files) - failed} of {len(files)} file(s) done" + (f", {failed} failed" if failed else ""),
                   err=True)
        if failed:
            raise IncompleteRun(f"{failed} of {len(files)} file(s) failed")

    def one(self, path: str, *, bar: Any = None) -> None:
        """One call: run it, print its summary, write its report, archive it. Raises ClickException."""
        from dataclasses import replace

        from models.errors import SERError
        from producer.pipeline import run

        settings = replace(self.settings, audio=path, stream_id=self.settings.stream_id or default_stream_id(path))
        output = self.output
        archived = self.archive is not None  # then the call's events and whole records are kept for it
        events: list[dict[str, Any]] | None = [] if archived else None
        records: list[dict[str, Any]] | None = [] if archived else None
        stdin = sys.stdin.buffer if sys.stdin is not None else None  # None: started with stdin closed
        try:
            if self.several and settings.output_format == "table":
                output.write(("" if self.first else "\n") + f"== {path} (stream {settings.stream_id})\n")
            outcome = run(settings, stdin=stdin, out=output, connection=self.connection, progress=sys.stderr,
                          loaded=self.loaded, bar=bar, collect=events, keep=records,
                          header=self.first or settings.output_format != "csv")
        except SERError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # the output cannot be written (a full disk, /dev/full, a closed pipe)
            raise output_failed(output, exc) from None
        except Exception as exc:
            import redis

            if isinstance(exc, redis.RedisError):
                raise click.ClickException(f"Redis at {redact_url(settings.redis_url or '')} failed: "
                                           f"{redis_reason(exc)}") from None
            raise
        finally:
            self.first = False
        self.summary(settings, outcome)
        if self.archive is not None and events is not None and records is not None:
            try:
                self.archive.add(outcome, events=events, records=records, call_id=settings.stream_id)
            except SERError as exc:
                raise click.ClickException(str(exc)) from None
        if outcome.error:
            raise IncompleteRun(outcome.error)

    def summary(self, settings: ProducerSettings, outcome: Any) -> None:
        output = self.output
        summary_out = output if settings.output_format == "table" else None  # jsonl/csv stay machine-readable
        try:
            if summary_out is not None:
                output.write("\n")
            for line in outcome.summary:
                if summary_out is not None:
                    click.echo(line, file=summary_out)
                else:
                    self.say(line)
            output.flush()
        except OSError as exc:
            raise output_failed(output, exc) from None
        mode = f"queue {settings.queue!r}" if self.connection is not None else "embedded"
        self.say(f"stream {settings.stream_id}: {outcome.results} of {outcome.expected} segment(s) in "
                 f"{outcome.seconds:.2f} s ({mode}, {outcome.jobs} job(s)"
                 + (f", {outcome.resent} segment(s) already sent" if outcome.resent else "")
                 + (f", {outcome.retried} re-sent" if outcome.retried else "")
                 + (f", {outcome.reconnects} reconnect(s)" if outcome.reconnects else "") + ")")
        if self.report:
            from producer.files import report_path
            from producer.report_writer import write_report

            html_path, png_path = write_report(
                report_path(self.report, settings.audio, several=self.several), outcome.records + outcome.turns,
                outcome.per_channel or {}, model_id=outcome.model_id, channels=outcome.channels,
                labels=outcome.labels, duration_s=outcome.duration_s, audio=settings.audio,
                stream_id=settings.stream_id, dynamics=outcome.dynamics,
            )
            self.say(f"report: {html_path} " + (f"(timeline {png_path})" if png_path is not None else
                     "(no PNG timeline: matplotlib is not installed; pip install matplotlib for one)"))


if __name__ == "__main__":
    main()
