"""Bounded memory on an endless stream: pipe N minutes of generated raw PCM into ``ser-produce -``
(embedded mode, as fast as it reads: no real-time pacing) and sample the producer's RSS over time.

    python -m bench.memory_stream --minutes 120 [--model DIR] [--rate 16000]

Prints a table: audio fed so far, wall time, producer RSS (VmRSS) and its high-water mark (VmHWM).
A flat RSS after warm-up means nothing grows with the length of the call except the per-record
summary the collector keeps (docs/pipeline.md, "Memory").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def pattern(rate: int, seconds: int = 60) -> bytes:
    """One minute of stereo int16: each channel talks (:func:`bench.speechlike.vowels`, which the Silero
    VAD hears as speech) 4 s in every 10, in turns, with pauses."""
    from bench.speechlike import vowels

    n = rate * seconds
    y = np.zeros((n, 2), dtype=np.float32)
    for ch in range(2):
        for start in range(ch * 5, seconds, 10):
            a, b = start * rate, min(n, (start + 4) * rate)
            y[a:b, ch] = vowels((b - a) / rate, seed=100 * ch + start, f0=(140.0, 210.0)[ch], sr=rate)
    return (y * 32767).astype("<i2").tobytes()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=120.0)
    ap.add_argument("--rate", type=int, default=16000, help="input rate (resampled to the model's)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--every", type=float, default=10.0, help="print a row every this many minutes of audio")
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("SER_REDIS_URL", None)
    model = ["--model", args.model] if args.model else []
    proc = subprocess.Popen([sys.executable, "-m", "producer.cli", "-", "--rate", str(args.rate), "--channels", "2",
                             "--format", "jsonl", "--output", os.devnull, "--batch", "16", *model],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    minute = pattern(args.rate)
    fed = [0.0]

    def feed() -> None:
        assert proc.stdin is not None
        try:
            while fed[0] < args.minutes:
                proc.stdin.write(minute)
                fed[0] += 1
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()

    t0 = time.monotonic()
    threading.Thread(target=feed, daemon=True).start()
    print(f"{'audio (min)':>11} {'wall (s)':>9} {'RSS (MB)':>9} {'HWM (MB)':>9}")
    next_row = 0.0
    rows = []
    while proc.poll() is None:
        try:
            rss, hwm = status_kb(proc.pid, "VmRSS") / 1024, status_kb(proc.pid, "VmHWM") / 1024
        except OSError:
            break
        rows.append((fed[0], rss))
        if fed[0] >= next_row:
            print(f"{fed[0]:>11.0f} {time.monotonic() - t0:>9.1f} {rss:>9.1f} {hwm:>9.1f}", flush=True)
            next_row += args.every
        time.sleep(0.2)
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.wait()
    print(f"exit {proc.returncode}; {err.strip().splitlines()[-1] if err.strip() else ''}")
    # after warm-up and while audio is still being fed (not the samples of a process that is exiting)
    late = [r for m, r in rows if min(10, args.minutes / 2) <= m < args.minutes and r > 0]
    if late:
        span = args.minutes - min(10, args.minutes / 2)
        print(f"RSS after warm-up: min {min(late):.1f} MB, max {max(late):.1f} MB "
              f"(growth {max(late) - min(late):.1f} MB over {span:.0f} min of audio)")
    return proc.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
