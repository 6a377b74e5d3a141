"""``python -m bench.gateway [--calls N[,N...]] [--seconds S] [--workers W] [--model DIR | --tiny]``

How many live stereo calls one ``ser-gateway`` process holds at real time, and the delay users see:
from a segment's end in the audio to its record in Redis. Starts its own redis-server, ``ser-worker
-n W`` and ``ser-gateway`` (Twilio route, signed), then, for each N, N simulated Twilio Media Streams
clients in **a separate process** (:mod:`bench.gateway_clients`: speech-like two-speaker calls that
the Silero VAD accepts, both tracks in 20 ms frames at real time, started over a few seconds).

Per level: calls that ended ``completed``, result records, delay p50/p95/max (the record's Redis
entry id time - (the wall time the call's audio started + the record's ``end_s``)), how far the
clients fell behind real time (if that grows, the client process is the limit), the gateway's CPU
(% of one core, and per call), the workers' CPU. The largest N whose p95 is at most
:data:`TARGET_P95_S` is reported. The stop time of the gateway and the worker pool after SIGTERM is
printed at the end. Exit 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import click
import numpy as np

from bench.server import free_port, redis_server

TOKEN = "bench-twilio-token"
#: The delay target (segment end -> record, p95, seconds).
TARGET_P95_S = 1.5


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and of its live children (a worker pool's processes)."""
    total = 0.0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                parts = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    return total


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def stop(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM, wait (kill after 90 s); the seconds it took."""
    t0 = time.monotonic()
    proc.terminate()
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.monotonic() - t0


def measure(url: str, host: str, gpid: int, wpid: int, calls: int, seconds: float, k: int) -> dict[str, Any]:
    import redis

    from callevents.schema import events_key
    from workers.contract import decode_entry, results_key

    ramp = min(5.0, seconds / 4)
    g0, w0, t_start = cpu_seconds(gpid), cpu_seconds(wpid), time.monotonic()
    out = subprocess.run([sys.executable, "-m", "bench.gateway_clients", "--host", host, "--token", TOKEN,
                          "--calls", str(calls), "--seconds", str(seconds), "--ramp", str(ramp),
                          "--prefix", f"L{k}x"], capture_output=True, text=True, timeout=seconds + 600)
    if out.returncode != 0:
        raise click.ClickException(f"the client process failed: {out.stderr.strip()[-500:]}")
    got = json.loads(out.stdout)
    started: dict[str, float] = got["started"]
    client = redis.Redis.from_url(url)
    ended: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 120
    while len(ended) < calls and time.monotonic() < deadline:
        for sid in started:
            if sid not in ended:
                for _, f in client.xrange(events_key(sid)):
                    ev = json.loads(f[b"event"])
                    if ev["kind"] == "call_ended":
                        ended[sid] = ev
        time.sleep(0.2)
    wall = time.monotonic() - t_start
    gcpu, wcpu = cpu_seconds(gpid) - g0, cpu_seconds(wpid) - w0
    delays: list[float] = []
    for sid, t0 in started.items():
        for entry_id, fields in client.xrange(results_key(sid)):
            rec = decode_entry(fields)
            if rec.get("kind") == "result":
                delays.append(int(entry_id.split(b"-")[0]) / 1000 - (t0 + float(rec["end_s"])))
    client.close()
    return {"calls": calls, "completed": sum(e.get("reason") == "completed" for e in ended.values()),
            "records": len(delays), "p50": pct(delays, 50), "p95": pct(delays, 95),
            "max": max(delays, default=float("nan")), "lag": max(got["lags"], default=0.0),
            "gateway_core": gcpu / wall, "gateway_per_call": gcpu / (calls * seconds),
            "workers_core": wcpu / wall, "closes": got["closes"]}


@click.command()
@click.option("--calls", default="20", show_default=True, help="Concurrent live calls; a list (20,40,60) runs "
              "each level in turn on the same gateway and workers.")
@click.option("--seconds", type=click.FloatRange(5), default=30.0, show_default=True, help="Length of each call.")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True, help="ser-worker processes.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None, help="Model bundle.")
@click.option("--tiny", is_flag=True, help="Use a tiny generated bundle (tests/tinybundle.py) instead.")
def main(calls: str, seconds: float, workers: int, model_dir: str | None, tiny: bool) -> None:
    try:
        levels = [int(c) for c in calls.split(",")]
    except ValueError:
        raise click.ClickException(f"--calls {calls!r}: integers separated by commas") from None
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "SER_TWILIO_AUTH_TOKEN": TOKEN}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ser-bench-gw-") as tmp, redis_server() as (url, _version):
        if tiny:
            sys.path.insert(0, str(root / "tests"))
            from tinybundle import make_tiny_bundle

            make_tiny_bundle(Path(tmp))
            model_dir = tmp
        margs = ["--model", model_dir] if model_dir else []
        port = free_port()
        host = f"127.0.0.1:{port}"
        wproc = subprocess.Popen([sys.executable, "-m", "workers.cli", "--redis-url", url, "-n", str(workers), *margs],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        gproc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--redis-url", url, "--port", str(port),
                                  "--log-level", "warning", "--max-connections-per-address", "0", *margs], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stops: dict[str, float] = {}
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://{host}/readyz", timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or gproc.poll() is not None:
                        raise click.ClickException("ser-gateway did not start") from None
                    time.sleep(0.2)
            for k, n in enumerate(levels):
                rows.append(measure(url, host, gproc.pid, wproc.pid, n, seconds, k))
                r = rows[-1]
                print(f"  {n} calls: p95 {r['p95']:.2f} s, gateway {100 * r['gateway_core']:.0f} % of a core",
                      file=sys.stderr)
        finally:
            stops = {"ser-gateway": stop(gproc), f"ser-worker -n {workers}": stop(wproc)}
    model = "tiny" if tiny else model_dir or "default"
    print(f"ser-gateway benchmark: stereo Twilio calls x {seconds:g} s of speech-like turns at real time, "
          f"clients in their own process, {workers} worker process(es), model {model}")
    print("| calls | completed | records | segment end → record p50 / p95 / max (s) | clients behind (worst) "
          "| gateway CPU | gateway CPU per call | workers CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['calls']} | {r['completed']}/{r['calls']} | {r['records']} | {r['p50']:.2f} / {r['p95']:.2f} / "
              f"{r['max']:.2f} | {1000 * r['lag']:.0f} ms | {100 * r['gateway_core']:.0f} % of a core | "
              f"{100 * r['gateway_per_call']:.2f} % | {100 * r['workers_core']:.0f} % |")
    ok = [r["calls"] for r in rows if r["p95"] <= TARGET_P95_S and r["completed"] == r["calls"]]
    print(f"largest level with p95 <= {TARGET_P95_S:g} s and every call completed: {max(ok) if ok else 'none'}")
    print("stop after SIGTERM: " + ", ".join(f"{name} {s:.1f} s" for name, s in stops.items()))


if __name__ == "__main__":
    main()
