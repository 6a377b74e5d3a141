"""Embedded throughput: ``ser-produce FILE`` with no Redis, run as a user runs it (a subprocess whose
environment does not cap BLAS threads: the CLI must do that itself; docs/benchmark.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

#: Variables a user's shell normally lacks; removed from the child's environment.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS")
_DONE = re.compile(r"(\d+) of (\d+) segment\(s\) in ([0-9.]+) s \(embedded")


def embedded_rate(model_dir: str, wav: Path, *, batch: int) -> float:
    """Segments/s of one embedded ``ser-produce`` run, from its own closing line (its ``run()`` time:
    bundle load, decoding, VAD, features, inference and output; not the interpreter's start)."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV_VARS and k != "SER_REDIS_URL"}
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "producer.cli", str(wav), "--model", model_dir, "--batch",
                           str(batch), "--format", "jsonl", "-o", os.devnull], capture_output=True, text=True,
                          env=env, cwd=root, timeout=600)
    found = _DONE.search(proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"embedded run failed ({proc.returncode}): {proc.stderr[-500:]}")
    return int(found.group(1)) / float(found.group(3))
