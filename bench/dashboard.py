"""How many concurrent live calls one ``ser-dashboard`` process serves to S open browser sessions
with an update delay p95 <= 1 s.

Starts its own redis-server and one ``ser-dashboard`` (token login) on loopback. A simulator
thread plays N live stereo calls at real-time pacing: one result record per channel every 3 s
(``ser:results:<id>``, as workers write them) and the call events that ``ser-produce`` writes for
them (:class:`callevents.writer.CallEvents`: trend every 5 s of audio, alerts). Each of the S
sessions holds what a browser holding the overview and one call page holds: ``/sse/overview``
(every event of every call) and ``/sse/call`` of one call (its records and events), read by raw
HTTP clients in this process. Delay of an update = the moment a session reads it minus its Redis
stream entry id (Redis' millisecond clock, same host). For each N the run lasts ``--seconds``
after a warm-up; the largest N whose p95 <= ``--target-s`` is reported.

    python -m bench.dashboard --calls 25,50,100,200 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.server import free_port, redis_server

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789abcdef"
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
HOP_S = 3.0
WARMUP_S = 4.0


def simulate(url: str, calls: int, stop: threading.Event, *, seed: int = 0) -> None:
    """Play ``calls`` stereo calls at real time until ``stop``; calls start staggered over one hop."""
    import redis

    from callevents.writer import CallEvents
    from workers.contract import encode_entry, results_key

    client = redis.Redis.from_url(url)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    state = []
    for i in range(calls):
        cid = f"bench-{i:04d}"
        ev = CallEvents(client, call_id=cid, source="bench", channels=["agent", "customer"], model="bench@0",
                        labels=LABELS)
        ev.start()
        state.append({"id": cid, "events": ev, "start": t0 + HOP_S * i / max(1, calls), "seq": 0})
    while not stop.is_set():
        now = time.time()
        pipe = client.pipeline(transaction=False)
        batch = []
        for c in state:
            while now >= c["start"] + HOP_S * (c["seq"] + 1):
                seq = c["seq"]
                for channel in ("agent", "customer"):
                    p = rng.dirichlet(np.ones(len(LABELS)) * 0.6)
                    k = int(np.argmax(p))
                    rec = {"kind": "result", "stream_id": c["id"], "channel": channel, "seq": seq,
                           "start_s": HOP_S * seq, "end_s": HOP_S * (seq + 1), "label": LABELS[k],
                           "confidence": round(float(p[k]), 6),
                           "probs": {lab: round(float(v), 6) for lab, v in zip(LABELS, p, strict=True)},
                           "model": "bench@0"}
                    pipe.xadd(results_key(c["id"]), encode_entry(rec), maxlen=100_000, approximate=True)
                    batch.append((c, rec))
                c["seq"] += 1
        if batch:
            pipe.execute()
            for c, rec in batch:
                c["events"].add([rec])
        stop.wait(0.05)
    for c in state:
        c["events"].end(reason="completed", duration_s=HOP_S * c["seq"], summary={})
    client.close()


async def session(port: int, path: str, delays: list[float], counts: dict[str, int], measure_from: list[float],
                  stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"{path}: {status!r}")
    while (await reader.readline()).strip():
        pass
    event, entry_id = "", ""
    try:
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(reader.readline(), 0.5)
            except TimeoutError:
                continue
            if not line:
                break
            line = line.rstrip(b"\n").rstrip(b"\r")
            if line.startswith(b"id: "):
                entry_id = line[4:].decode()
            elif line.startswith(b"event: "):
                event = line[7:].decode()
            elif not line and event:
                now = time.time()
                if event in ("ev", "record") and entry_id and now >= measure_from[0]:
                    ids = entry_id.split(" ")
                    ms = ids[0] if len(ids) == 1 else (ids[0] if event == "record" else ids[1])
                    delays.append(now - int(ms.split("-")[0]) / 1000.0)
                    counts[event] = counts.get(event, 0) + 1
                event = ""
    finally:
        writer.close()


async def measure(port: int, calls: int, sessions: int, seconds: float) -> dict[str, Any]:
    delays: list[float] = []
    counts: dict[str, int] = {}
    measure_from = [time.time() + WARMUP_S]
    stop = asyncio.Event()
    tasks = []
    for i in range(sessions):
        tasks.append(asyncio.create_task(session(port, "/sse/overview", delays, counts, measure_from, stop)))
        cid = f"bench-{i % calls:04d}"
        tasks.append(asyncio.create_task(session(port, f"/sse/call?id={cid}", delays, counts, measure_from, stop)))
    await asyncio.sleep(WARMUP_S + seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    d = np.array(delays) if delays else np.array([np.nan])
    return {"calls": calls, "sessions": sessions, "updates": len(delays), "per_s": round(len(delays) / seconds, 1),
            "records": counts.get("record", 0), "events": counts.get("ev", 0),
            "p50_s": round(float(np.percentile(d, 50)), 3), "p95_s": round(float(np.percentile(d, 95)), 3),
            "max_s": round(float(np.max(d)), 3)}


def run_one(url: str, calls: int, sessions: int, seconds: float) -> dict[str, Any]:
    import redis

    redis.Redis.from_url(url).flushdb()
    port = free_port()
    env = {**os.environ, "SER_DASHBOARD_TOKEN": TOKEN, "PYTHONPATH": str(ROOT) + os.pathsep
           + os.environ.get("PYTHONPATH", "")}
    dash = subprocess.Popen([sys.executable, "-m", "dashboard.cli", "--redis-url", url, "--port", str(port)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    sim = threading.Thread(target=simulate, args=(url, calls, stop), daemon=True)
    try:
        import urllib.request

        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or dash.poll() is not None:
                    raise RuntimeError("ser-dashboard did not start") from None
                time.sleep(0.2)
        sim.start()
        time.sleep(0.5)
        rss0, cpu0, t0 = _rss_mb(dash.pid), _cpu_s(dash.pid), time.monotonic()
        result = asyncio.run(measure(port, calls, sessions, seconds))
        result["dashboard_cpu_pct"] = round(100 * (_cpu_s(dash.pid) - cpu0) / (time.monotonic() - t0), 1)
        result["dashboard_rss_mb"] = max(rss0, _rss_mb(dash.pid))
        return result
    finally:
        stop.set()
        sim.join(30)
        dash.terminate()
        try:
            dash.wait(10)
        except subprocess.TimeoutExpired:
            dash.kill()
            dash.wait()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", default="25,50,100,200", help="comma-separated numbers of live calls to try")
    ap.add_argument("--sessions", type=int, default=10, help="open browser sessions (overview + one call page)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per step (after a warm-up)")
    ap.add_argument("--target-s", type=float, default=1.0, help="p95 update delay target")
    args = ap.parse_args(argv)
    steps = [int(x) for x in args.calls.split(",") if x.strip()]
    rows = []
    with redis_server() as (url, version):
        for n in steps:
            row = run_one(url, n, args.sessions, args.seconds)
            rows.append(row)
            print(json.dumps(row), flush=True)
    ok = [r["calls"] for r in rows if r["p95_s"] <= args.target_s]
    print(f"\nnproc={os.cpu_count()}  load average at the end: {os.getloadavg()[0]:.2f}  redis {version}")
    print("| live calls | sessions | updates/s delivered | delay p50 / p95 / max (s) | dashboard CPU | dashboard RSS |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['calls']} | {r['sessions']} | {r['per_s']} | {r['p50_s']} / {r['p95_s']} / {r['max_s']} | "
              f"{r['dashboard_cpu_pct']} % | {r['dashboard_rss_mb']} MB |")
    print(f"\nlargest tried with p95 <= {args.target_s:g} s: {max(ok) if ok else 'none'} live calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
