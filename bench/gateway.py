"""``python -m bench.gateway [--calls N] [--seconds S] [--workers W] [--model DIR | --tiny]``

How many live stereo calls one ``ser-gateway`` process holds at real-time pacing with workers keeping
up, and the delay from a segment's end in the audio to its record in Redis. Starts its own
redis-server, ``ser-worker -n W`` and ``ser-gateway`` (Twilio route, signed), then N simulated Twilio
Media Streams clients in one asyncio process, each sending both tracks in 20 ms frames at real time
(a two-speaker call: the customer speaks, then the agent, in turns). Delay per record = the Redis
entry id's time (the worker's XADD) - (the wall time the call's audio started + the segment's
``end_s``). Reports: calls that ended ``completed``, records, delay p50/p95/max, how far the
clients fell behind real time (their own pacing: if it grows, the client, not the gateway, is the
limit), the gateway's CPU share. Prints one table; exit 0.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import click
import numpy as np

from bench.platforms import FRAME, RATE, twilio_signature, ulaw_encode
from bench.server import free_port, redis_server

TOKEN = "bench-twilio-token"


def turn_call(seconds: float, seed: int) -> np.ndarray:
    """``(2, n)``: 4 s turns, customer first, 1 s of silence between; noise-like speech at -12 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    y = np.zeros((2, n), dtype=np.float32)
    t, who = 0.0, 0
    while t < seconds:
        a, b = int(t * RATE), int(min(t + 4.0, seconds) * RATE)
        y[who, a:b] = 0.25 * rng.standard_normal(b - a)
        t += 5.0
        who = 1 - who
    return np.clip(y, -1, 1)


async def one_call(host: str, y: np.ndarray, call_sid: str, lags: list[float]) -> float:
    """Stream one call at real time; returns the wall time its audio started (frame i leaves at
    ``t0 + (i + 1) * 20 ms``, when its last sample has been spoken)."""
    import websockets

    inbound, outbound = ulaw_encode(y[0]), ulaw_encode(y[1])
    sig = twilio_signature(TOKEN, f"wss://{host}/twilio")
    async with websockets.connect(f"ws://{host}/twilio", additional_headers={"X-Twilio-Signature": sig},
                                  open_timeout=30) as ws:
        sid = "MZ" + uuid.uuid4().hex
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "start": {
            "streamSid": sid, "callSid": call_sid, "tracks": ["inbound", "outbound"], "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        t0 = time.time()  # the call's audio starts now: frame i exists once its last sample is spoken
        worst = 0.0
        for i in range(len(inbound) // FRAME):
            due = t0 + (i + 1) * FRAME / RATE
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                worst = max(worst, -delay)
            for track, data in (("inbound", inbound), ("outbound", outbound)):
                await ws.send(json.dumps({"event": "media", "streamSid": sid, "media": {
                    "track": track, "chunk": str(i + 1), "timestamp": str(i * 20),
                    "payload": base64.b64encode(data[i * FRAME : (i + 1) * FRAME]).decode()}}))
        await ws.send(json.dumps({"event": "stop", "streamSid": sid, "stop": {"callSid": call_sid}}))
        await ws.wait_closed()
    lags.append(worst)
    return t0


async def run_calls(host: str, calls: int, seconds: float, ramp_s: float) -> tuple[dict[str, float], list[float]]:
    lags: list[float] = []

    async def delayed(k: int) -> tuple[str, float]:
        await asyncio.sleep(ramp_s * k / max(1, calls))
        sid = f"CAbench{k:04d}{uuid.uuid4().hex[:8]}"
        return sid, await one_call(host, turn_call(seconds, k), sid, lags)

    done = await asyncio.gather(*(delayed(k) for k in range(calls)))
    return dict(done), lags


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


@click.command()
@click.option("--calls", type=click.IntRange(1), default=20, show_default=True, help="Concurrent live calls.")
@click.option("--seconds", type=click.FloatRange(5), default=30.0, show_default=True, help="Length of each call.")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True, help="ser-worker processes.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None, help="Model bundle.")
@click.option("--tiny", is_flag=True, help="Use a tiny generated bundle (tests/tinybundle.py) instead.")
def main(calls: int, seconds: float, workers: int, model_dir: str | None, tiny: bool) -> None:
    import redis

    from callevents.schema import events_key
    from workers.contract import decode_entry, results_key

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "SER_TWILIO_AUTH_TOKEN": TOKEN}
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
                                  "--log-level", "warning", *margs], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            import urllib.request

            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://{host}/readyz", timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or gproc.poll() is not None:
                        raise click.ClickException("ser-gateway did not start") from None
                    time.sleep(0.2)
            cpu0, t_start = cpu_seconds(gproc.pid), time.monotonic()
            started, lags = asyncio.run(run_calls(host, calls, seconds, ramp_s=min(5.0, seconds / 4)))
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
            cpu = cpu_seconds(gproc.pid) - cpu0
            delays: list[float] = []
            records = 0
            for sid, t0 in started.items():
                for entry_id, fields in client.xrange(results_key(sid)):
                    rec = decode_entry(fields)
                    if rec.get("kind") != "result":
                        continue
                    records += 1
                    ms = int(entry_id.split(b"-")[0])
                    delays.append(ms / 1000 - (t0 + float(rec["end_s"])))
        finally:
            for p in (gproc, wproc):
                p.terminate()
                p.wait(30)
    completed = sum(1 for e in ended.values() if e.get("reason") == "completed")
    print(f"ser-gateway benchmark: {calls} concurrent stereo Twilio calls x {seconds:g} s at real time, "
          f"{workers} worker process(es), model {'tiny' if tiny else model_dir or 'default'}")
    print(f"  calls completed            {completed}/{calls}")
    print(f"  result records             {records}")
    print(f"  segment end -> record (s)  p50 {pct(delays, 50):.3f}  p95 {pct(delays, 95):.3f}  "
          f"max {max(delays, default=float('nan')):.3f}")
    print(f"  clients behind real time   worst {max(lags, default=0.0) * 1000:.0f} ms "
          f"(median per call {statistics.median(lags) * 1000 if lags else 0:.0f} ms)")
    print(f"  gateway CPU                {cpu:.1f} s over {wall:.1f} s ({100 * cpu / wall:.0f} % of one core)")


if __name__ == "__main__":
    main()
