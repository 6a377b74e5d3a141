"""The in-process limit: what one process does with features + inference only (no Redis, no RQ),
with the same batches, the same int16 round trip and one intra-op thread, as the worker."""

from __future__ import annotations

import time

import numpy as np

from bench.load import segment_pool
from workers.contract import pcm_decode, pcm_encode


def inprocess_rate(model_dir: str, *, batch: int, seconds: float) -> tuple[float, float]:
    """``(segments per wall second, segments per CPU second)`` of ``model.features`` +
    ``model.predict_features`` on batches of ``batch``."""
    from models.runtime import EmotionModel

    model = EmotionModel(model_dir, threads=1)
    model.warmup()
    window = model.spec.segment.samples(model.spec.sample_rate)[0]
    pool = segment_pool(window)
    batches = [pcm_decode(pcm_encode(np.stack([pool[(i * batch + j) % len(pool)] for j in range(batch)])),
                          k=batch, window=window) for i in range(8)]
    for b in batches[:2]:
        model.predict_features(model.features(b))
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        for b in batches:
            model.predict_features(model.features(b))
            done += batch
    return done / (time.perf_counter() - t0), done / (time.process_time() - c0)
