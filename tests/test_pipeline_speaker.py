"""A model with per-speaker statistics through the whole pipeline: the producer's running channel
statistics travel with each job, distributed output equals embedded output, and every record says
whether it is uncertain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import redis
from test_pipeline_redis import EXPECTED, embedded, producer_proc, records, worker_proc

from models.runtime import EmotionModel
from models.speaker import SpeakerTracker, decode_vectors
from producer.dispatch import Batch, EmbeddedBackend
from workers import job as worker_job
from workers.contract import check_payload, classify, pcm_encode
from workers.job import run_batch


def test_speaker_model_distributed_equals_embedded_with_uncertain_flags(
        redis_url: str, stereo_call: Path, speaker_bundle_dir: Path) -> None:
    args = [str(stereo_call), "--model", str(speaker_bundle_dir), "--format", "jsonl", "--stream-id", "spk1",
            "--batch", "2", "--timeout", "30"]
    code, emb_out, emb_err = embedded(args)
    assert code == 0, emb_err
    emb = records(emb_out)
    assert [(r["channel"], r["seq"]) for r in emb] == EXPECTED
    assert all(isinstance(r["uncertain"], bool) for r in emb)
    below = EmotionModel(speaker_bundle_dir).uncertain_below
    assert all(r["uncertain"] == (r["confidence"] < below) for r in emb)
    # the summary leaves uncertain segments out of the shares and says how many there were
    code, _, summary = embedded([*args, "--format", "jsonl", "--stream-id", "spk2"])
    assert code == 0
    lines = summary.splitlines()
    for ch in ("ch0", "ch1"):
        unsure = sum(r["uncertain"] for r in emb if r["channel"] == ch)
        line = next(lines[i + 1] for i in range(len(lines) - 1) if lines[i].startswith(f"{ch}:"))
        assert line.strip().startswith("emotions:") and (f"{unsure} uncertain" in line) == (unsure > 0), line
    assert any(r["uncertain"] for r in emb) and not all(r["uncertain"] for r in emb), "fixture: both kinds"
    prod = producer_proc(redis_url, *args)
    worker = worker_proc(redis_url, speaker_bundle_dir, "--processes", "1", "--burst")
    out, err = prod.communicate(timeout=60)
    worker.communicate(timeout=60)
    assert prod.returncode == 0, err
    assert records(out) == emb


def test_jobs_carry_causal_channel_statistics(redis_url: str, speaker_bundle_dir: Path) -> None:
    model = EmotionModel(speaker_bundle_dir)
    rng = np.random.default_rng(0)
    segs = (rng.standard_normal((3, 24000)) * np.array([[0.3], [0.05], [0.3]])).astype(np.float32)
    tracker = SpeakerTracker(model.spec)
    vecs = tracker.update("customer", segs)
    backend = EmbeddedBackend(spec=model.spec, stream_id="s", model=model)
    batch = Batch("customer", [(i, 3.0 * i, 3.0 * i + 3) for i in range(3)], list(segs), list(vecs))
    payload = check_payload(backend.payload(batch, "ser:pcm:x"))
    got = decode_vectors(payload["speaker"], k=3, size=payload["speaker_size"])
    assert np.array_equal(got, vecs)
    with_stats = classify(model, payload, pcm_encode(segs))
    payload.pop("speaker")
    payload.pop("speaker_size")
    without = classify(model, payload, pcm_encode(segs))  # an old producer: the prior is used
    assert [r["probs"] for r in with_stats] != [r["probs"] for r in without]
    # a malformed vector from someone who can write to the queue: failure records, the worker goes on
    client = redis.Redis.from_url(redis_url)
    client.set("ser:pcm:bad", pcm_encode(segs))
    bad = {**payload, "pcm_key": "ser:pcm:bad", "speaker": "AAAA", "speaker_size": 129}
    worker_job.set_model(model)
    try:
        out = run_batch(client, bad)
    finally:
        worker_job.set_model(None)
    assert {r["kind"] for r in out} == {"failure"} and "speaker vectors hold 3 bytes" in out[0]["error"]
