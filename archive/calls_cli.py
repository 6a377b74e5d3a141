"""``ser-calls``: search, show, compare (trends), export and delete archived calls (docs/archive.md).

Exit codes: 0 done; 1 an error the command could not get past (no archive at the URL, the database
unreachable, a call id not archived: one line on stderr); 2 a bad option or value (click's usage error,
one line naming it).
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.exc import SQLAlchemyError

from archive import db, queries
from archive.filters import PARAMS, SORTS, CallFilter, parse
from models.errors import SERError

FORMATS = ("table", "jsonl", "csv")
_FILTER_HELP = {
    "since": "Started at or after: ISO 8601 date/time (UTC unless a zone is given) or unix seconds.",
    "until": "Started before (a date alone includes that day).",
    "agent": "Agent id.", "queue": "Queue.", "direction": "Direction (inbound, outbound, ...).", "tenant": "Tenant.",
    "customer_score_min": "Customer's emotion score at least (-5..5).", "customer_score_max": "... at most.",
    "agent_score_min": "Agent's emotion score at least (-5..5).", "agent_score_max": "... at most.",
    "trend": "Customer's trend (Declining, SlightlyDeclining, NoChange, SlightlyImproving, Improving, "
             "NotCalculated).",
    "label": "With --label-share-min: a speaker's share of this label ...", "label_share_min": "... at least (0..1).",
    "label_role": "Whose label share: agent or customer (default: any speaker).",
    "alert_rule": "An alert of this rule fired.", "interruptions_min": "Interruptions at least.",
    "non_talk_share_min": "Non-talk share at least (0..1).", "non_talk_share_max": "... at most.",
    "duration_min": "Duration at least (seconds).", "duration_max": "... at most.",
    "model_version": "Model version (3.1.0) or name@version.", "status": "live or ended.",
}


class Fail(click.ClickException):
    """A one-line error, exit code 1."""

    exit_code = 1


class CallsGroup(click.Group):
    """Every error as one line ``ser-calls: ...`` on stderr (usage errors too), with its exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"ser-calls: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("ser-calls: aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for name in reversed(PARAMS):
        fn = click.option(f"--{name.replace('_', '-')}", name, default=None, metavar="V",
                          help=_FILTER_HELP[name])(fn)
    return fn


#: A filter parameter's name in parse()'s messages, to be shown as its option.
_OPTION_NAMES = re.compile(r"(?<![-'\w])(" + "|".join(sorted(PARAMS, key=len, reverse=True)) + r")\b(?!')")


def _filter(values: dict[str, Any]) -> CallFilter:
    try:
        return parse({k: values.pop(k) for k in PARAMS})
    except ValueError as exc:
        raise click.UsageError(_OPTION_NAMES.sub(lambda m: "--" + m.group(1).replace("_", "-"), str(exc))) from None


def _open(url: str) -> Engine:
    """The existing archive at ``url``; never creates one (no migration: ``ser-archive`` owns the schema)."""
    shown = db.redact_url(url)
    try:
        parsed = db.parse_url(url)
        if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
            raise Fail(f"no archive at {shown}")
        engine = db.open_engine(url, migrate=False)
        with engine.connect() as conn:
            if not inspect(conn).has_table("calls"):
                engine.dispose()
                raise Fail(f"no archive at {shown} (no calls table: ser-archive creates it)")
    except SERError as exc:
        raise Fail(str(exc)) from None
    except SQLAlchemyError as exc:
        raise Fail(f"cannot open the archive at {shown}: {_one_line(exc)}") from None
    return engine


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def _conn(ctx: click.Context, *, write: bool = False) -> Iterator[Connection]:
    engine = _open(ctx.obj["url"])
    try:
        with (engine.begin() if write else engine.connect()) as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise Fail(f"database error at {db.redact_url(ctx.obj['url'])}: {_one_line(exc)}") from None
    finally:
        engine.dispose()


def when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: Any, fmt: str = "{:+.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(map(str, r)) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def emit(rows: list[dict[str, Any]], fmt: str, headers: Sequence[str], cells: Callable[[dict[str, Any]], list[str]],
         ) -> None:
    if fmt == "jsonl":
        for r in rows:
            click.echo(json.dumps(r, default=str))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
        if rows:
            writer.writeheader()
            writer.writerows(rows)
    else:
        click.echo(table(headers, [cells(r) for r in rows]))


@click.group(cls=CallsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database", "url", envvar="SER_ARCHIVE_URL", default=db.DEFAULT_URL, show_default=True,
              help="The archive's database URL [env SER_ARCHIVE_URL].")
@click.option("--database-url-file", envvar="SER_ARCHIVE_URL_FILE", type=click.Path(dir_okay=False), default=None,
              help="Read the database URL from this file (keeps a password out of argv) [env SER_ARCHIVE_URL_FILE].")
@click.pass_context
def main(ctx: click.Context, url: str, database_url_file: str | None) -> None:
    """Search, compare, export and delete archived calls (docs/archive.md, "ser-calls")."""
    if database_url_file:
        try:
            url = db.read_url_file(database_url_file)
        except (ValueError, SERError) as exc:
            raise Fail(str(exc)) from None
    ctx.obj = {"url": url}


SEARCH_HEADERS = ("started (UTC)", "call", "agent", "queue", "duration", "customer", "trend", "negative", "agent sc",
                  "interr.", "non-talk", "alerts")


def _search_cells(r: dict[str, Any]) -> list[str]:
    return [when(r["started_ts"]), r["raw_id"], r["agent"] or "-", r["queue"] or "-", _dur(r["duration_s"]),
            _num(r["customer_score"]), r["customer_trend"] or "-", _num(r["customer_negative_share"], "{:.0%}"),
            _num(r["agent_score"]), _num(r["interruptions"], "{}"), _num(r["non_talk_share"], "{:.0%}"),
            str(r["alerts_fired"])]


@main.command()
@filter_options
@click.option("--sort", type=click.Choice(SORTS), default="started", show_default=True, help="Sort key.")
@click.option("--asc/--desc", "ascending", default=False, help="Ascending or descending (default).")
@click.option("--limit", type=click.IntRange(1, queries.MAX_PAGE_SIZE), default=queries.DEFAULT_PAGE_SIZE,
              show_default=True, help="Calls per page.")
@click.option("--offset", type=click.IntRange(0), default=None, help="Skip this many calls.")
@click.option("--page", type=click.IntRange(1), default=None, help="Page number (1-based; --limit calls each).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def search(ctx: click.Context, sort: str, ascending: bool, limit: int, offset: int | None, page: int | None,
           fmt: str, **values: Any) -> None:
    """A page of calls matching the filters."""
    flt = _filter(values)
    if offset is not None and page is not None:
        raise click.UsageError("give --offset or --page, not both")
    start = offset if offset is not None else ((page or 1) - 1) * limit
    with _conn(ctx) as conn:
        result = queries.search(conn, flt, sort=sort, descending=not ascending, limit=limit, offset=start)
    emit(result.rows, fmt, SEARCH_HEADERS, _search_cells)
    if fmt == "table":
        last = result.offset + len(result.rows)
        shown = f"calls {result.offset + 1}-{last} of {result.total}" if result.rows else f"no calls of {result.total}"
        click.echo(shown)


@main.command()
@click.argument("call")
@click.option("--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True)
@click.pass_context
def show(ctx: click.Context, call: str, fmt: str) -> None:
    """Everything archived about one CALL (its id as given, or its key id)."""
    from archive.calls_show import render

    with _conn(ctx) as conn:
        found = queries.show(conn, call)
    if found is None:
        raise Fail(f"no archived call {call!r}")
    if fmt == "json":
        click.echo(json.dumps(found, default=str, indent=1))
    else:
        click.echo(render(found))


TREND_HEADERS = ("{by}", "period", "calls", "customer", "negative", "interr./call", "non-talk")


@main.command()
@filter_options
@click.option("--by", type=click.Choice(queries.TREND_BY), default="agent", show_default=True)
@click.option("--period", type=click.Choice(queries.TREND_PERIODS), default="week", show_default=True,
              help="UTC days, or weeks starting Monday.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.pass_context
def trends(ctx: click.Context, by: str, period: str, fmt: str, **values: Any) -> None:
    """Per agent, queue or tenant and day or week: calls, mean customer score, the customer's negative share,
    interruptions per call, non-talk share."""
    flt = _filter(values)
    with _conn(ctx) as conn:
        rows = queries.trends(conn, flt, by=by, period=period)
    for r in rows:
        r["period"] = datetime.fromtimestamp(r["period_ts"], UTC).strftime("%Y-%m-%d")
    headers = [h.format(by=by) for h in TREND_HEADERS]
    emit(rows, fmt, headers, lambda r: [
        r[by] if r[by] is not None else "-", r["period"], str(r["calls"]), _num(r["customer_score"]),
        _num(r["customer_negative_share"], "{:.0%}"), _num(r["interruptions_per_call"], "{:.1f}"),
        _num(r["non_talk_share"], "{:.0%}")])


@main.command()
@filter_options
@click.option("--format", "fmt", type=click.Choice(("parquet", "csv")), default="parquet", show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="File to write (- : CSV to stdout).")
@click.option("--what", type=click.Choice(("calls", "segments")), default="calls", show_default=True,
              help="One row per call, or one per segment record (with the call's id, start and speaker role).")
@click.pass_context
def export(ctx: click.Context, fmt: str, output: str, what: str, **values: Any) -> None:
    """Export the calls matching the filters (or their segment records) to Parquet or CSV."""
    from archive.export import export as run_export

    flt = _filter(values)
    if output == "-" and fmt != "csv":
        raise click.BadParameter("only --format csv can go to stdout", param_hint="-o")
    started = time.monotonic()
    with _conn(ctx) as conn:
        try:
            n = run_export(conn, flt, output, fmt=fmt, what=what)
        except OSError as exc:
            raise Fail(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"ser-calls: exported {n} {what if n != 1 else what[:-1]} to {output} "
               f"in {time.monotonic() - started:.1f} s", err=True)


@main.command()
@click.argument("call", nargs=-1, required=True)
@click.pass_context
def delete(ctx: click.Context, call: tuple[str, ...]) -> None:
    """Delete CALLs (ids as given, or key ids) and everything archived of them (an erasure request)."""
    with _conn(ctx, write=True) as conn:
        found = queries.resolve(conn, call)
        n = queries.delete(conn, list(found.values()))
    click.echo(f"deleted {n} call{'s' if n != 1 else ''}")
    unknown = [c for c in call if c not in found]
    if unknown:
        raise Fail(f"not archived: {', '.join(unknown)}")


@main.command()
@click.option("--older-than", "days", type=click.FloatRange(0), default=queries.DEFAULT_RETENTION_DAYS,
              show_default=True, help="Delete calls that started more than this many days ago.")
@click.option("--dry-run", is_flag=True, help="Only say how many calls would be deleted.")
@click.pass_context
def prune(ctx: click.Context, days: float, dry_run: bool) -> None:
    """Retention: delete every call older than --older-than days."""
    now = time.time()
    with _conn(ctx, write=not dry_run) as conn:
        n = queries.prune(conn, older_than_s=days * 86400.0, now=now, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {n} call{'s' if n != 1 else ''} started before {when(now - days * 86400.0)} UTC")


if __name__ == "__main__":
    main(prog_name="ser-calls")
