"""``ser-produce --archive``: a call archived by the producer itself, embedded (events computed without
Redis) and distributed (a real redis-server and worker), equal row for row on SQLite and PostgreSQL;
``--meta`` in ``call_started.params`` and the archive's columns; a database error costs that call only."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import synth_call

from archive import schema
from archive.db import open_engine
from callevents.rules import load_settings
from callevents.schema import EVENTS_KEY, events_key
from models.bundle import load_bundle
from producer.cli import EXIT_INCOMPLETE, main
from producer.pipeline import run
from producer.settings import ProducerSettings

ROOT = Path(__file__).resolve().parents[1]
#: Call columns an embedded and a distributed run of one call must agree on (not ids, not wall-clock times).
SAME = ("source", "status", "end_reason", "duration_s", "channels", "roles", "agent", "queue", "direction", "tenant",
        "params", "model", "model_version", "labels", "segments", "failed", "dynamics", "talk_s", "non_talk_share",
        "interruptions", "overtalk_count", "silence_count", "customer_score", "customer_trend",
        "customer_negative_share", "agent_score", "agent_trend", "agent_negative_share", "alerts_fired")


def produce(args: list[str], **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, env={"SER_REDIS_URL": "", "SER_ARCHIVE_URL": "", **env})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def rules(tmp_path: Path, tiny_bundle_dir: Path) -> Path:
    """An alert rule on every label (it opens on the first segment, closes at the call's end): alerts to compare."""
    labels = ", ".join(f'"{lab}"' for lab in load_bundle(tiny_bundle_dir).spec.labels)
    path = tmp_path / "rules.toml"
    path.write_text(f'[[rule]]\nname = "any_speech"\nlabels = [{labels}]\nwindow_s = 6.0\nopen_at = 0.5\n'
                    'close_at = 0.0\n')
    return path


@pytest.fixture
def worker(redis_url: str, tiny_bundle_dir: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if k != "SER_REDIS_URL"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "--redis-url", redis_url, "--model",
                             str(tiny_bundle_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=ROOT)
    try:
        yield redis_url
    finally:
        proc.terminate()
        proc.wait(20)


def rows(engine: sa.Engine, table: sa.Table, call_id: str, *, drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        got = [dict(r._mapping) for r in conn.execute(sa.select(table).where(table.c.call_id == call_id))]
    out = [{k: v for k, v in r.items() if k not in ("call_id", *drop)} for r in got]
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def call_row(engine: sa.Engine, call_id: str) -> dict[str, Any]:
    found = rows(engine, schema.calls, call_id)
    assert len(found) == 1, f"call {call_id} not archived"
    return found[0]


def test_embedded_and_distributed_archive_the_same_call(archive_url: str, worker: str, tmp_path: Path,
                                                        tiny_bundle_dir: Path, rules: Path) -> None:
    call = synth_call(tmp_path / "call.wav")
    args = [str(call), "--model", str(tiny_bundle_dir), "--format", "jsonl", "--channel-names", "agent,customer",
            "--meta", "agent=a-17", "--meta", "queue=billing", "--meta", "crm=42", "--alert-rules", str(rules),
            "--archive", archive_url]
    code, emb_out, err = produce([*args, "--stream-id", "emb"])
    assert code == 0, err
    code, dist_out, err = produce([*args, "--stream-id", "dist", "--redis-url", worker, "--timeout", "30"])
    assert code == 0, err
    # distributed: --meta is call_started's params on ser:events, as Twilio's <Parameter>s are
    client = redis.Redis.from_url(worker)
    started = [json.loads(f[b"event"]) for _, f in client.xrange(EVENTS_KEY) if f[b"kind"] == b"call_started"]
    assert [e["params"] for e in started if e["call_id"] == "dist"] == [{"agent": "a-17", "queue": "billing",
                                                                         "crm": "42"}]
    engine = open_engine(archive_url)
    try:
        emb, dist = call_row(engine, "emb"), call_row(engine, "dist")
        assert {k: emb[k] for k in SAME} == {k: dist[k] for k in SAME}
        assert (emb["agent"], emb["queue"], emb["params"]["crm"]) == ("a-17", "billing", "42")
        assert emb["status"] == "ended" and emb["end_reason"] == "completed" and emb["source"] == "file"
        assert emb["roles"] == {"agent": "agent", "customer": "customer"} and emb["alerts_fired"] >= 1
        assert emb["dynamics"] and emb["segments"] == 6 and emb["customer_score"] is not None
        segs = rows(engine, schema.segments, "emb")
        assert segs == rows(engine, schema.segments, "dist")  # record for record, turns included
        assert {r["kind"] for r in segs} == {"result", "turn"} and sum(r["kind"] == "result" for r in segs) == 6
        assert rows(engine, schema.alerts, "emb", drop=("opened_ts", "closed_ts")) == rows(
            engine, schema.alerts, "dist", drop=("opened_ts", "closed_ts"))

        def events(call_id: str) -> list[tuple[str, Any, str]]:
            own = ("ts", "call_id", "stream_id")  # the call's own id and wall clock
            return sorted((r["kind"], r["at_s"], json.dumps({k: v for k, v in r["event"].items() if k not in own},
                                                            sort_keys=True))
                          for r in rows(engine, schema.events, call_id))

        emb_events = events("emb")
        assert emb_events == events("dist")  # alerts, dynamics, silences/overtalks as a distributed run writes them
        assert {"alert_opened", "alert_closed", "dynamics"} <= {e[0] for e in emb_events}
        assert rows(engine, schema.speakers, "emb") == rows(engine, schema.speakers, "dist")
    finally:
        engine.dispose()
    # the printed records are those of a run without --archive
    code, plain, err = produce([*args[:-2], "--stream-id", "emb"])
    assert code == 0 and plain == emb_out, err


def test_embedded_collects_the_events_a_distributed_run_writes(worker: str, tmp_path: Path, tiny_bundle_dir: Path,
                                                              rules: Path) -> None:
    """CallEvents without Redis (``collect``): the same events as ``ser:events:<call>`` (each kind in the same
    order; across kinds the order is timing: in distributed mode results come back while audio is pushed)."""
    call = synth_call(tmp_path / "call.wav")
    settings = ProducerSettings(audio=str(call), stream_id="same", model_dir=str(tiny_bundle_dir), batch=4,
                                channel_names=("agent", "customer"), params=(("agent", "a-17"),),
                                events=load_settings(rules), output_format="jsonl")
    collected: list[dict[str, Any]] = []
    run(settings, stdin=None, out=io.StringIO(), collect=collected)
    client = redis.Redis.from_url(worker)
    try:
        run(settings, stdin=None, out=io.StringIO(), connection=client)
        written = [json.loads(f[b"event"]) for _, f in client.xrange(events_key("same"))]
    finally:
        client.close()

    def by_kind(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            out.setdefault(e["kind"], []).append({k: v for k, v in e.items() if k != "ts"})
        return out

    assert by_kind(collected) == by_kind(written)
    kinds = [e["kind"] for e in collected]
    assert kinds[0] == "call_started" and kinds[-1] == "call_ended" and "alert_opened" in kinds and "dynamics" in kinds
    assert collected[0]["params"] == {"agent": "a-17"} and collected[0]["channels"] == ["agent", "customer"]


def test_without_archive_embedded_computes_no_events(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    from callevents.writer import CallEvents

    calls = CallEvents(None, call_id="x", source="file", channels=["a"])
    calls.start()
    assert not calls.enabled and calls.info == {} and calls.add([{"kind": "result"}]) == []


def test_incomplete_call_is_archived_with_its_end_reason(redis_url: str, tmp_path: Path, tiny_bundle_dir: Path
                                                         ) -> None:
    db = f"sqlite:///{tmp_path / 'calls.db'}"
    call = synth_call(tmp_path / "call.wav", seconds=6.0)
    code, _, err = produce([str(call), "--model", str(tiny_bundle_dir), "--redis-url", redis_url, "--timeout", "1",
                            "--stream-id", "nobody", "--archive", db])  # no worker: it times out
    assert code == EXIT_INCOMPLETE and "timed out" in err, err
    engine = open_engine(db)
    try:
        row = call_row(engine, "nobody")
        assert (row["status"], row["end_reason"], row["segments"]) == ("ended", "incomplete", 0)
    finally:
        engine.dispose()


def test_a_database_error_costs_that_call_only(archive_url: str, tmp_path: Path, tiny_bundle_dir: Path) -> None:
    engine = open_engine(archive_url)  # the schema; then a trigger that refuses calls whose id starts with "b-"
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION "
                                 "'refused by the test'; END $$ LANGUAGE plpgsql"))
            conn.execute(sa.text("CREATE TRIGGER refuse_b BEFORE INSERT ON calls FOR EACH ROW "
                                 "WHEN (NEW.call_id LIKE 'b-%') EXECUTE FUNCTION refuse()"))
        else:
            conn.execute(sa.text("CREATE TRIGGER refuse_b BEFORE INSERT ON calls WHEN NEW.call_id LIKE 'b-%' "
                                 "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"))
    a, b = synth_call(tmp_path / "a.wav", seconds=6.0), synth_call(tmp_path / "b.wav", seed=1, seconds=6.0)
    base = ["--model", str(tiny_bundle_dir), "--format", "jsonl"]
    code, out, err = produce([str(b), *base], SER_ARCHIVE_URL=archive_url)  # one file: exit 1, one line
    lines = err.strip().splitlines()
    assert code == 1 and lines[-1].startswith("Error: cannot archive call b-") and "refused by the test" in lines[-1]
    assert '"kind":"result"' in out  # its records were printed all the same
    code, out, err = produce([str(b), str(a), *base, "--archive", archive_url])  # several: that call fails, a goes on
    assert code == EXIT_INCOMPLETE
    assert [line for line in err.splitlines() if line.startswith(f"{b}: ")] != []
    try:
        with engine.connect() as conn:
            ids = sorted(conn.execute(sa.select(schema.calls.c.call_id)).scalars())
        assert [i.split("-")[0] for i in ids] == ["a"]
    finally:
        engine.dispose()


def test_archive_url_file_and_an_unreachable_database(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    call = synth_call(tmp_path / "call.wav", seconds=6.0)
    secret = "s3cret-pw"
    url_file = tmp_path / "url"
    url_file.write_text(f"postgresql+psycopg://ser:{secret}@127.0.0.1:1/calls\n")
    t0 = time.monotonic()
    code, out, err = produce([str(call), "--model", str(tiny_bundle_dir), "--archive-url-file", str(url_file)])
    assert code == 1 and len(err.strip().splitlines()) == 1 and secret not in err and out == "", err
    assert time.monotonic() - t0 < 30
    url_file.write_text(f"sqlite:///{tmp_path / 'calls.db'}\n")
    code, _, err = produce([str(call), "--model", str(tiny_bundle_dir), "--archive-url-file", str(url_file),
                            "--stream-id", "from-file"])
    assert code == 0, err
    engine = open_engine(f"sqlite:///{tmp_path / 'calls.db'}")
    try:
        assert call_row(engine, "from-file")["source"] == "file"
    finally:
        engine.dispose()
