"""CPU per segment of one worker job (``workers.contract.classify``: PCM decode, features, inference)
with a bundle, one thread, for jobs of 16 segments and of 1: ``python -m bench.jobcost [BUNDLE]``.
For a model with an embedding history each job carries a full history (10 embeddings)."""

from __future__ import annotations

import sys
import time

import numpy as np

from models.runtime import EmotionModel
from workers.contract import classify, make_payload, pcm_encode

#: Timed rounds per job size (the minimum and the median are printed), and segments per round.
ROUNDS = 5
SEGMENTS_PER_ROUND = 96


def job_cost(model_dir: str, *, k: int, rounds: int = ROUNDS, segments: int = SEGMENTS_PER_ROUND) -> list[float]:
    """CPU milliseconds per segment of jobs of ``k`` segments, one value per round of ``segments``."""
    m = EmotionModel(model_dir, threads=1)
    m.warmup()
    rng = np.random.default_rng(0)
    window = m.spec.segment.samples(m.spec.sample_rate)[0]
    hist = m.spec.history
    past = rng.standard_normal((hist.max_segments, hist.size)).astype(np.float32) if hist is not None else None
    payload = make_payload(stream_id="s", channel="a", model_id=m.model_id, sample_rate=m.spec.sample_rate,
                           window=window, items=[(i, 3.0 * i, 3.0 * i + 3) for i in range(k)], pcm_key="ser:pcm:x",
                           history=past)
    pcm = pcm_encode((rng.standard_normal((k, window)) * 0.2).astype(np.float32))
    classify(m, payload, pcm)
    reps = max(1, segments // k)
    out = []
    for _ in range(rounds):
        c0 = time.process_time()
        for _ in range(reps):
            classify(m, payload, pcm)
        out.append((time.process_time() - c0) / (reps * k) * 1000)
    return out


if __name__ == "__main__":
    bundle = sys.argv[1] if len(sys.argv) > 1 else "models/default"
    for size in (16, 1):
        cpu = sorted(job_cost(bundle, k=size))
        print(f"job of {size}: CPU ms/segment min {cpu[0]:.2f} median {cpu[len(cpu) // 2]:.2f}")
