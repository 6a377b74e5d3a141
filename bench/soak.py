"""Soak test on loopback: N concurrent simulated calls through a real worker pool, for M minutes.

Starts its own ``redis-server`` on a free port (or uses ``--redis-url``, a loopback server), a
``ser-worker --processes P`` pool, and N ``ser-produce -`` processes fed generated stereo raw PCM
(paced at real time unless ``--fast``). Stops by itself. Reports, per run:

* lost segments: sent (the call's ``end`` record) minus distinct results printed by the producer (must be 0);
* duplicated segments: records printed twice for one ``(channel, seq)`` (must be 0); re-sends that
  reached the stream twice are counted apart (at-least-once, de-duplicated);
* end-to-end latency p50/p95/p99: from the moment a segment's last sample was written to the
  producer (call start + ``end_s``, real-time pacing) to the stream entry of its result (entry ids
  are Redis' millisecond clock; same host);
* Redis memory high-water mark: ``INFO memory`` ``used_memory_peak`` and the highest sampled ``used_memory``.

    python -m bench.soak --calls 4 --minutes 2 --processes 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATE = 8000
BLOCK_S = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call_audio(seconds: float, seed: int) -> bytes:
    """Stereo int16: each channel talks (:func:`bench.speechlike.vowels`, which the Silero VAD hears as
    speech) in turns of 3-9 s with pauses, like two people."""
    from bench.speechlike import vowels

    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    y = np.zeros((n, 2), dtype=np.float32)
    for ch in range(2):
        t = int(rng.uniform(0, 4) * RATE) + ch * 3 * RATE
        while t < n:
            length = min(int(rng.uniform(3, 9) * RATE), n - t)
            voice = vowels(length / RATE, seed=int(rng.integers(1 << 30)), f0=(140.0, 210.0)[ch], sr=RATE)
            y[t : t + length, ch] = voice
            t += length + int(rng.uniform(2, 8) * RATE)
    return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


def feed(proc: subprocess.Popen[bytes], data: bytes, realtime: bool, started: list[float]) -> None:
    step = int(BLOCK_S * RATE) * 4
    assert proc.stdin is not None
    t0 = time.time()
    started.append(t0)
    try:
        for i, off in enumerate(range(0, len(data), step)):
            if realtime:
                delay = t0 + (i + 1) * BLOCK_S - time.time()  # a block exists once it has been spoken
                if delay > 0:
                    time.sleep(delay)
            proc.stdin.write(data[off : off + step])
            proc.stdin.flush()
    except BrokenPipeError:
        pass
    finally:
        proc.stdin.close()


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    out.pop("SER_REDIS_URL", None)
    return out


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"redis://127.0.0.1:{port}/0"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def soak(*, calls: int, minutes: float, processes: int, model: str | None, realtime: bool = True,
         redis_url: str | None = None) -> dict[str, Any]:
    import redis

    tmp = tempfile.mkdtemp(prefix="ser-soak-")
    server = None
    if redis_url is None:
        server, redis_url = start_redis(tmp)
    conn = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 10
    while True:
        try:
            conn.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    model_args = ["--model", model] if model else []
    workers = subprocess.Popen([sys.executable, "-m", "workers.cli", "--redis-url", redis_url, "--processes",
                                str(processes), *model_args], env=env(), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_sampled = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_sampled
        while not stop.is_set():
            try:
                peak_sampled = max(peak_sampled, int(conn.info("memory")["used_memory"]))
            except Exception:
                pass
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        deadline = time.monotonic() + 120
        while int(conn.scard("rq:workers")) < processes:  # warm pool before the calls start
            if workers.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker pool did not start: " + workers.stderr.read().decode()[-500:])
            time.sleep(0.1)
        sampler.start()
        procs, feeders, starts, files = [], [], [], []
        t_run = time.monotonic()
        for i in range(calls):
            sid = f"soak-{os.getpid()}-{i}"
            clients = int(conn.info("clients")["connected_clients"])
            out_f, err_f = (open(Path(tmp) / f"{sid}.{ext}", "w+b") for ext in ("out", "err"))  # noqa: SIM115
            p = subprocess.Popen([sys.executable, "-m", "producer.cli", "-", "--rate", str(RATE), "--channels", "2",
                                  "--redis-url", redis_url, "--stream-id", sid, "--format", "jsonl", "--timeout",
                                  "60", *model_args], env=env(), cwd=ROOT, stdin=subprocess.PIPE,
                                 stdout=out_f, stderr=err_f)
            # the call starts when the producer is up (connected to Redis), not while Python imports
            deadline = time.monotonic() + 60
            while int(conn.info("clients")["connected_clients"]) <= clients and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # bundle and source
            started: list[float] = []
            th = threading.Thread(target=feed, args=(p, call_audio(minutes * 60, seed=i), realtime, started),
                                  daemon=True)
            th.start()
            procs.append((sid, p))
            feeders.append(th)
            starts.append(started)
            files.append((out_f, err_f))
        outputs = []
        for (sid, p), (out_f, err_f) in zip(procs, files, strict=True):
            p.wait(timeout=minutes * 60 * 3 + 300)
            out_f.seek(0)
            err_f.seek(0)
            outputs.append((sid, out_f.read(), err_f.read(), p.returncode))
            out_f.close()
            err_f.close()
        run_s = time.monotonic() - t_run
        sent = lost = dup_out = dup_stream = failures = 0
        latencies: list[float] = []
        codes = []
        for (sid, out, _err, code), started in zip(outputs, starts, strict=True):
            codes.append(code)
            recs = [r for r in map(json.loads, filter(str.strip, out.decode().splitlines()))
                    if r["kind"] != "turn"]  # turns (one per channel and pause) are not segments
            keys = [(r["channel"], r["seq"]) for r in recs]
            dup_out += len(keys) - len(set(keys))
            failures += sum(r["kind"] == "failure" for r in recs)
            entries = conn.xrange(f"ser:results:{sid}")
            first: dict[tuple[str, int], int] = {}
            expected = None
            for entry_id, fields in entries:
                rec = json.loads(fields[b"record"])
                if rec["kind"] == "end":
                    expected = int(rec["segments"])
                    continue
                if rec["kind"] == "turn":
                    continue
                key = (rec["channel"], rec["seq"])
                if key in first:
                    dup_stream += 1
                    continue
                first[key] = int(entry_id.split(b"-")[0])
                if realtime and started:
                    latencies.append(first[key] / 1000 - (started[0] + float(rec["end_s"])))
            sent += expected or 0
            lost += (expected or 0) - len({k for k, r in zip(keys, recs, strict=True) if r["kind"] == "result"})
        stop.set()
        memory = conn.info("memory")
        return {
            "calls": calls, "minutes": minutes, "processes": processes, "realtime": realtime,
            "run_s": round(run_s, 1), "exit_codes": codes, "segments_sent": sent, "lost": lost,
            "duplicated_in_output": dup_out, "duplicates_in_stream": dup_stream, "failures": failures,
            "latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95),
            "latency_p99_s": percentile(latencies, 99), "latency_max_s": max(latencies, default=float("nan")),
            "redis_used_memory_peak_mb": round(int(memory["used_memory_peak"]) / 2**20, 2),
            "redis_sampled_peak_mb": round(peak_sampled / 2**20, 2),
        }
    finally:
        stop.set()
        if workers.poll() is None:
            workers.send_signal(signal.SIGTERM)
            try:
                workers.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                workers.kill()
                workers.communicate()
        conn.close()
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def table(result: dict[str, Any]) -> str:
    rows = [
        ("calls x minutes (workers)", f"{result['calls']} x {result['minutes']:g} min "
                                      f"({result['processes']} processes, "
                                      f"{'real time' if result['realtime'] else 'fast'})"),
        ("run time", f"{result['run_s']} s"),
        ("producer exit codes", " ".join(map(str, result["exit_codes"]))),
        ("segments sent", result["segments_sent"]),
        ("lost segments", result["lost"]),
        ("duplicated segments (output)", result["duplicated_in_output"]),
        ("re-deliveries in the stream (deduplicated)", result["duplicates_in_stream"]),
        ("failure records", result["failures"]),
        ("latency p50 / p95 / p99 / max", " / ".join(f"{result[k]:.3f} s" for k in
                                                      ("latency_p50_s", "latency_p95_s", "latency_p99_s",
                                                       "latency_max_s"))),
        ("Redis used_memory_peak", f"{result['redis_used_memory_peak_mb']} MB"),
        ("Redis used_memory, highest sample", f"{result['redis_sampled_peak_mb']} MB"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--model", default=None, help="bundle directory [default: the shipped bundle]")
    ap.add_argument("--redis-url", default=None, help="a loopback Redis to use instead of starting one")
    ap.add_argument("--fast", action="store_true", help="feed as fast as possible (no latency figures)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.redis_url and not any(h in args.redis_url for h in ("127.0.0.1", "localhost", "[::1]")):
        ap.error("--redis-url must be a loopback server")
    result = soak(calls=args.calls, minutes=args.minutes, processes=args.processes, model=args.model,
                  realtime=not args.fast, redis_url=args.redis_url)
    print(json.dumps(result) if args.json else table(result))
    return 0 if result["lost"] == 0 and result["duplicated_in_output"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
