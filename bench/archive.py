"""The archive's numbers (issue 32, "Numbers"): search and trends latency at scale, database size per
archived call-hour, the query plans, and ingest throughput.

    python -m bench.archive                       # 100,000 calls (~5 M segment records), PostgreSQL and SQLite
    python -m bench.archive --calls 20000 --backend sqlite
    python -m bench.archive --database postgresql+psycopg://user@host/db   # an existing server
    python -m bench.archive --ingest              # records/s through archive.ingest.write (bench.archive_ingest)
    python -m bench.archive --tiny                # seconds: the CI smoke test

Generation (:mod:`bench.archive_data`) writes seeded calls straight into the tables (COPY / executemany),
then ``ANALYZE``. Queries: ``--repeats`` randomised filtered ``search`` pages (the filters a QA analyst uses:
time range, agent, queue, tenant, score range, trend, label share, alert rule, interruptions, non-talk,
duration; random sort and page) and ``trends`` queries (by agent/queue/tenant, day/week, over 1-13 weeks),
each timed end to end through :mod:`archive.queries` on one warm connection; p50/p95/max printed.
PostgreSQL is a private server this run starts (like the tests), unless ``--database`` names one.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text

from archive import queries, rollup
from archive.db import begin_write, open_engine
from archive.filters import CallFilter, parse
from archive.schema import calls, segments
from bench.archive_data import QUEUES, TENANTS, Generator, bulk_insert

#: Targets (issue 32): a filtered search page and a trends query within this p95 at 100,000 calls.
TARGET_P95_MS = 200.0
DEFAULT_CALLS = 100_000
DEFAULT_REPEATS = 200
TINY_CALLS = 300
TINY_REPEATS = 10


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in samples_s)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return {"p50_ms": statistics.median(ms), "p95_ms": p95, "max_ms": ms[-1], "n": len(ms)}


class Workload:
    """Randomised filters over the generated data (seeded)."""

    def __init__(self, gen: Generator, *, seed: int) -> None:
        self.gen, self.rng = gen, random.Random(seed)

    def _since(self, days: float) -> str:
        return repr(self.gen.now - days * 86400)

    def search_filter(self) -> tuple[str, dict[str, str]]:
        """(what the filter is, its parameters)."""
        r, agents = self.rng, self.gen.agents
        choices: list[tuple[str, Callable[[], dict[str, str]]]] = [
            ("last 7 days", lambda: {"since": self._since(7)}),
            ("agent, 30 days", lambda: {"agent": r.choice(agents), "since": self._since(30)}),
            ("queue, score <= -2", lambda: {"queue": r.choice(QUEUES), "customer_score_max": "-2"}),
            ("trend, 30 days", lambda: {"trend": "Declining", "since": self._since(30)}),
            ("label share, 30 days", lambda: {"label": "angry", "label_share_min": "0.3", "label_role": "customer",
                                              "since": self._since(30)}),
            ("alert rule, queue", lambda: {"alert_rule": "customer_negative", "queue": r.choice(QUEUES)}),
            ("interruptions, tenant", lambda: {"interruptions_min": "8", "tenant": r.choice(TENANTS)}),
            ("non-talk, duration", lambda: {"non_talk_share_min": "0.4", "duration_min": "600"}),
            ("score <= -3", lambda: {"customer_score_max": "-3"}),
            ("tenant, a week", lambda: {"tenant": r.choice(TENANTS), "since": self._since(14),
                                        "until": self._since(7)}),
            ("direction, agent score, 60 days", lambda: {"direction": "outbound", "agent_score_max": "0",
                                                         "since": self._since(60)}),
            ("no filter", lambda: {}),
        ]
        name, make = r.choice(choices)
        return name, make()

    def search_args(self) -> dict[str, Any]:
        r = self.rng
        sort = r.choice(["started", "started", "customer_score", "duration", "interruptions", "non_talk_share"])
        return {"sort": sort, "descending": r.random() < 0.6, "limit": queries.DEFAULT_PAGE_SIZE,
                "offset": queries.DEFAULT_PAGE_SIZE * r.choice([0, 0, 0, 1, 2, 5])}

    def trends_args(self) -> tuple[str, dict[str, str], str, str]:
        r = self.rng
        period = r.choice(["day", "week"])
        weeks = r.choice([1, 2, 4]) if period == "day" else r.choice([4, 8, 13])
        today = self.gen.now // 86400 * 86400  # whole UTC days, as a dashboard's date picker gives
        flt = {"since": repr(today - 7 * weeks * 86400)}
        by = r.choice(["agent", "queue", "tenant"])
        if by == "agent" and r.random() < 0.5:
            flt["tenant"] = r.choice(TENANTS)
        elif by != "queue" and r.random() < 0.3:
            flt["queue"] = r.choice(QUEUES)
        return f"by {by}, {weeks} weeks", flt, by, period


def timed(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def measure(engine: Engine, gen: Generator, *, repeats: int, seed: int) -> dict[str, Any]:
    load = Workload(gen, seed=seed)
    search_s: dict[str, list[float]] = {}
    trends_s: dict[str, list[float]] = {}
    percall_s: list[float] = []  # the same trends without the rollup (archive.rollup), for comparison
    totals = []
    with engine.connect() as conn:
        for _ in range(3):  # warm the connection and the caches
            queries.search(conn, CallFilter())
        for _ in range(repeats):
            name, params = load.search_filter()
            seconds, page = timed(queries.search, conn, parse(params), **load.search_args())
            search_s.setdefault(name, []).append(seconds)
            totals.append(page.total)
            conn.rollback()
        for _ in range(repeats):
            name, tf, by, period = load.trends_args()
            trends_s.setdefault(f"{name} per {period}", []).append(
                timed(queries.trends, conn, parse(tf), by=by, period=period)[0])
            conn.rollback()
            percall_s.append(timed(queries.trends, conn, parse(tf), by=by, period=period, rollup=False)[0])
            conn.rollback()
    return {"search": percentiles([x for v in search_s.values() for x in v]),
            "trends": percentiles([x for v in trends_s.values() for x in v]),
            "trends_per_call": percentiles(percall_s),
            "search_by_kind": {k: percentiles(v) for k, v in sorted(search_s.items())},
            "trends_by_kind": {k: percentiles(v) for k, v in sorted(trends_s.items())},
            "search_matches_median": statistics.median(totals)}


def size_bytes(engine: Engine, url: str) -> int:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    path = Path(engine.url.database or "")
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def explain(conn: Connection, stmt: Any) -> str:
    if conn.dialect.name == "postgresql":
        sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        return "\n".join(conn.execute(text("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql)).scalars())
    compiled = stmt.compile(dialect=conn.dialect)  # SQLite renders LIMIT -1 as a parameter: bind them
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    return "\n".join(str(r[3]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params))


def plans(engine: Engine, gen: Generator) -> str:
    """EXPLAIN of representative search and trends queries (ANALYZE on PostgreSQL)."""
    since = repr(gen.now - 30 * 86400)
    day = gen.now // 86400 * 86400
    cases: list[tuple[str, Any]] = [
        ("search: agent, last 30 days, newest first",
         queries.search_statement(parse({"agent": gen.agents[0], "since": since}))),
        ("search: customer score <= -3, worst first",
         queries.search_statement(parse({"customer_score_max": "-3"}), sort="customer_score", descending=False)),
        ("search: customer's angry share >= 0.3, last 30 days",
         queries.search_statement(parse({"label": "angry", "label_share_min": "0.3", "label_role": "customer",
                                         "since": since}))),
        ("search: alert rule customer_negative in a queue",
         queries.search_statement(parse({"alert_rule": "customer_negative", "queue": QUEUES[0]}))),
        ("search total: calls with score <= -3",
         select(func.count()).select_from(calls).where(calls.c.customer_score <= -3)),
        ("trends: by agent per week, last 13 weeks",
         queries.trends_statement(parse({"since": repr(gen.now - 91 * 86400)}), by="agent", period="week")),
        ("trends: by queue per day, last 30 days, one tenant",
         queries.trends_statement(parse({"since": since, "tenant": TENANTS[0]}), by="queue", period="day")),
        ("trends from the rollup: by agent per week, last 13 weeks",
         queries.rollup_trends_statement(parse({"since": repr(day - 91 * 86400)}), by="agent", period="week")),
        ("trends from the rollup: by queue per day, last 30 days, one tenant",
         queries.rollup_trends_statement(parse({"since": repr(day - 30 * 86400), "tenant": TENANTS[0]}), by="queue",
                                         period="day")),
    ]
    out = []
    with engine.connect() as conn:
        for title, stmt in cases:
            out.append(f"-- {title}\n{explain(conn, stmt)}\n")
    return "\n".join(out)


@contextmanager
def backend_url(backend: str, database: str | None, workdir: Path) -> Iterator[str]:
    if database:
        yield database
    elif backend == "sqlite":
        yield f"sqlite:///{workdir / 'bench-archive.db'}"
    else:
        from bench.pg import pg_server

        with pg_server() as url:
            yield url


def analyze(engine: Engine) -> None:
    """Statistics and (PostgreSQL) the visibility map, as autovacuum would have them after a bulk load."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))


def populate(engine: Engine, gen: Generator) -> dict[str, Any]:
    with engine.connect() as conn:
        have = int(conn.execute(select(func.count()).select_from(calls)).scalar_one())
    if have:
        print(f"  the archive holds {have} calls already: measuring those", file=sys.stderr)
        analyze(engine)
        return {"generate_s": None}
    t0 = time.perf_counter()
    step = max(gen.n_calls // 10, 1)

    def progress(done: int, total: int) -> None:
        if done % step < 2000 or done == total:
            print(f"  generated {done}/{total} calls ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    bulk_insert(engine, gen, progress=progress)
    with begin_write(engine) as conn:  # the trends rollup, as archive.ingest would have kept it
        rollup.rebuild(conn)
    analyze(engine)
    return {"generate_s": time.perf_counter() - t0}


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    gen = Generator(args.calls, seed=args.seed, now=args.now)
    with backend_url(backend, args.database, workdir) as url:
        engine = open_engine(url)
        try:
            result: dict[str, Any] = {"backend": engine.dialect.name, **populate(engine, gen)}
            with engine.connect() as conn:
                result["calls"] = int(conn.execute(select(func.count()).select_from(calls)).scalar_one())
                result["segments"] = int(conn.execute(select(func.count()).select_from(segments)).scalar_one())
                hours = conn.execute(select(func.sum(calls.c.duration_s))).scalar_one() or 0.0
            result["call_hours"] = float(hours) / 3600.0
            result["size_bytes"] = size_bytes(engine, url)
            result["bytes_per_call_hour"] = result["size_bytes"] / max(result["call_hours"], 1e-9)
            result.update(measure(engine, gen, repeats=args.repeats, seed=args.seed))
            result["plans"] = plans(engine, gen)
        finally:
            engine.dispose()
    return result


def report(results: list[dict[str, Any]]) -> str:
    lines = ["| backend | calls | segment records | generate | size | per call-hour | search p50 / p95 / max | "
             "trends p50 / p95 / max |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        gen = "-" if r.get("generate_s") is None else f"{r['generate_s']:.0f} s"
        s, t = r["search"], r["trends"]
        lines.append(f"| {r['backend']} | {r['calls']:,} | {r['segments']:,} | {gen} "
                     f"| {r['size_bytes'] / 2**20:,.0f} MiB "
                     f"| {r['bytes_per_call_hour'] / 2**20:.2f} MiB | {s['p50_ms']:.1f} / {s['p95_ms']:.1f} / "
                     f"{s['max_ms']:.1f} ms | {t['p50_ms']:.1f} / {t['p95_ms']:.1f} / {t['max_ms']:.1f} ms |")
    for r in results:
        lines += ["", f"{r['backend']}: p50 / p95 ms per kind of query (n)"]
        for part in ("search_by_kind", "trends_by_kind"):
            for kind, p in r[part].items():
                lines.append(f"  {part.split('_')[0]:<7} {kind:<34} {p['p50_ms']:7.1f} / {p['p95_ms']:7.1f}  "
                             f"({p['n']})")
    verdicts = [f"{r['backend']}: search p95 {r['search']['p95_ms']:.0f} ms, trends p95 {r['trends']['p95_ms']:.0f} ms"
                f" -> {'met' if max(r['search']['p95_ms'], r['trends']['p95_ms']) <= TARGET_P95_MS else 'NOT met'}"
                f" (target <= {TARGET_P95_MS:.0f} ms p95; trends without the rollup: "
                f"{r['trends_per_call']['p50_ms']:.0f} / {r['trends_per_call']['p95_ms']:.0f} ms p50 / p95)"
                for r in results]
    return "\n".join(lines + [""] + verdicts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.archive", description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=DEFAULT_CALLS, help="calls to generate (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="queries of each kind timed")
    ap.add_argument("--backend", choices=("postgresql", "sqlite", "both"), default="both")
    ap.add_argument("--database", help="measure this archive URL instead of a private server/file "
                                       "(generates into it when it holds no calls)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--now", type=float, default=None, help="generate calls up to this unix time (default: now)")
    ap.add_argument("--plans", type=Path, help="also write the EXPLAIN plans to this file")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    ap.add_argument("--ingest", action="store_true", help="measure ingest throughput (archive.ingest.write) instead")
    ap.add_argument("--ingest-records", type=int, default=100_000, help="--ingest: result records to write")
    ap.add_argument("--concurrent", type=int, default=200, help="--ingest: calls live at a time")
    ap.add_argument("--batch", type=int, default=1000, help="--ingest: stream entries per transaction")
    ap.add_argument("--tiny", action="store_true", help=f"{TINY_CALLS} calls, {TINY_REPEATS} repeats: a smoke test")
    args = ap.parse_args(argv)
    if args.tiny:
        args.calls, args.repeats = TINY_CALLS, TINY_REPEATS
    if args.calls < 1 or args.repeats < 1:
        ap.error(f"--calls and --repeats must be >= 1, got {args.calls} and {args.repeats}")
    if args.ingest:
        from bench.archive_ingest import main as ingest_main

        return ingest_main(args)
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    if args.database:
        backends = [backends[0]]
    results = []
    with tempfile.TemporaryDirectory(prefix="ser-bench-archive-") as tmp:
        for backend in backends:
            print(f"{backend}: {args.calls} calls", file=sys.stderr)
            results.append(run_backend(backend, args, Path(tmp)))
    for r in results:
        print(f"\n== query plans, {r['backend']} ==\n{r['plans']}")
    print(report(results))
    if args.plans:
        args.plans.write_text("".join(f"== {r['backend']}, {r['calls']:,} calls ==\n\n{r['plans']}\n" for r in results))
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "plans"} for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
