"""A model with an embedding history (models.history) through the whole pipeline: workers return each
segment's embedding, the ingestion side folds it into the channel's history and sends it with later
jobs; every record names the history it used; nothing later in the call changes an earlier record."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import redis
import soundfile as sf
from test_pipeline_redis import embedded, producer_proc, records, worker_proc

from models.history import (
    CallHistory,
    HistoryParams,
    as_sent,
    decode_embedding,
    encode_embedding,
    encode_embeddings,
    shrunk_mean,
    wire_vector,
)
from models.runtime import EmotionModel
from producer.dispatch import Batch, EmbeddedBackend
from workers.contract import (
    MAX_HISTORY_SEGMENTS,
    check_payload,
    classify,
    decode_entry,
    make_payload,
    pcm_decode,
    pcm_encode,
    results_key,
)


@pytest.fixture(scope="module")
def history_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tinybundle import make_tiny_bundle

    path = tmp_path_factory.mktemp("history-bundle")
    make_tiny_bundle(path, history=True)  # history of the 64 pooled bands, prior 0, n0 = 1, last 4 segments
    return path


def test_shrunk_mean_and_wire_vector_follow_the_documented_formula() -> None:
    p = HistoryParams(prior=(1.0, -1.0), prior_segments=2.0, max_segments=3)
    e = np.array([[9.0, 9.0], [3.0, 0.0], [0.0, 3.0], [6.0, 6.0]])
    # only the last 3 count: (3+0+6 + 2*1) / 5, (0+3+6 - 2) / 5
    np.testing.assert_allclose(shrunk_mean(e, p), [11 / 5, 7 / 5], rtol=1e-6)
    np.testing.assert_allclose(wire_vector(e, p), [11 / 5, 7 / 5, 3.0], rtol=1e-6)
    np.testing.assert_allclose(wire_vector(np.zeros((0, 2)), p), [1.0, -1.0, 0.0])  # no history: the prior
    with pytest.raises(ValueError, match="max_segments"):
        HistoryParams(prior=(1.0,), max_segments=0)


def test_call_history_keeps_the_latest_segments_whatever_the_arrival_order() -> None:
    p = HistoryParams(prior=(0.0,), prior_segments=1.0, max_segments=2)
    h = CallHistory(p)
    assert h.wire("a").tolist() == [0.0, 0.0]
    for seq in (5, 1, 7, 3):  # out of order: seqs 5 and 7 are the latest
        h.add("a", seq, np.array([float(seq)]))
    np.testing.assert_allclose(h.wire("a"), [(5 + 7) / 3, 2.0])
    assert h.wire("b")[-1] == 0  # channels are separate
    for seq in range(100):  # a long call: memory stays bounded
        h.add("a", 100 + seq, np.array([1.0]))
    assert len(h._seen["a"]) <= 4 * p.max_segments
    e = np.linspace(-3, 3, 64).astype(np.float32)
    np.testing.assert_allclose(decode_embedding(encode_embedding(e), size=64), e, atol=2e-3)  # float16 on the wire
    for bad, why in (("AAAA", "holds 3 bytes"), (5, "not base64"), ("!!", "not valid base64"),
                     (base64.b64encode(np.full(2, np.inf, "<f2").tobytes()).decode(), "non-finite")):
        with pytest.raises(ValueError, match=why):
            decode_embedding(bad, size=2 if why == "non-finite" else 64)


def test_a_job_classifies_its_segments_one_by_one_each_after_the_ones_before(history_bundle_dir: Path) -> None:
    model = EmotionModel(history_bundle_dir)
    hist = model.spec.history
    assert model.uses_history and hist is not None and hist.size == 64 and hist.max_segments == 4
    rng = np.random.default_rng(0)
    segs = (rng.standard_normal((5, 24000)) * rng.uniform(0.05, 0.3, (5, 1))).astype(np.float32)
    earlier = as_sent(rng.standard_normal((3, 64)).astype(np.float32))
    backend = EmbeddedBackend(spec=model.spec, stream_id="s", model=model)
    items = [(i, 3.0 * i, 3.0 * i + 3) for i in range(5)]
    payload = check_payload(backend.payload(Batch("agent", items, list(segs), history=earlier), "ser:pcm:x"))
    assert payload["v"] == 2 and payload["history_count"] == 3 and payload["history_size"] == 64
    out = classify(model, payload, pcm_encode(segs))
    assert [r["history"] for r in out] == [3, 4, 4, 4, 4]  # the last max_segments: 3 carried, then the job's own
    emb = np.stack([decode_embedding(r["embedding"], size=64) for r in out])
    x = model.features(pcm_decode(pcm_encode(segs), k=5, window=24000))  # what the worker hears
    _, want = model.predict_history(x)
    np.testing.assert_allclose(emb, want, atol=2e-3 * np.abs(want).max())  # the embedding ignores the history
    for i in range(5):  # segment i: its probabilities are those of the history of everything before it
        before = np.concatenate([earlier, emb[:i]])[-4:]
        probs = model.predict_history(x[i : i + 1], wire_vector(before, hist)[None, :])[0][0]
        assert [out[i]["probs"][lab] for lab in model.labels] == [round(float(v), 6) for v in probs]
    # the same segments in two jobs, the second carrying what the first returned: the same records
    first = classify(model, check_payload(backend.payload(Batch("agent", items[:2], list(segs[:2]), history=earlier),
                                                          "ser:pcm:x")), pcm_encode(segs[:2]))
    carried = np.concatenate([earlier, [decode_embedding(r["embedding"], size=64) for r in first]])[-4:]
    second = classify(model, check_payload(backend.payload(Batch("agent", items[2:], list(segs[2:]), history=carried),
                                                           "ser:pcm:x")), pcm_encode(segs[2:]))
    assert first + second == out
    for name in ("history", "history_count", "history_size"):
        payload.pop(name)
    plain = classify(model, payload, pcm_encode(segs))  # no history carried: the call's first job
    assert [r["history"] for r in plain] == [0, 1, 2, 3, 4]
    assert plain[0]["probs"] != out[0]["probs"]  # the history matters


def test_malformed_histories_and_old_payloads_are_refused(history_bundle_dir: Path, tiny_bundle_dir: Path) -> None:
    model = EmotionModel(history_bundle_dir)
    segs = np.zeros((1, 24000), np.float32)
    good = make_payload(stream_id="s", channel="a", model_id=model.model_id, sample_rate=8000, window=24000,
                        items=[(0, 0.0, 3.0)], pcm_key="ser:pcm:x", history=np.ones((2, 64), np.float32))
    assert check_payload(dict(good)) == good
    for change, why in (({"history_count": 3}, "not 3 x 64"), ({"history": 5}, "base64 text"),
                        ({"history_count": MAX_HISTORY_SEGMENTS + 1}, "history_count 0-"),
                        ({"history_size": 0}, "history_size 1-"), ({"history_count": True}, "history_count")):
        with pytest.raises(ValueError, match=why):
            check_payload({**good, **change})
    with pytest.raises(ValueError, match="history embeddings have shape"):
        make_payload(stream_id="s", channel="a", model_id="m", sample_rate=8000, window=24000, items=[(0, 0.0, 3.0)],
                     pcm_key="ser:pcm:x", history=np.ones((MAX_HISTORY_SEGMENTS + 1, 64), np.float32))
    wrong = dict(good, history_size=32, history=encode_embeddings(np.ones((2, 32))), history_count=2)
    rec = classify(model, check_payload(wrong), pcm_encode(segs))[0]  # not this model's size: the worker says so
    assert rec["kind"] == "failure" and "of size 32 do not fit" in rec["error"]
    old = {k: v for k, v in good.items() if not k.startswith("history")} | {"v": 1}  # an older producer's job
    rec = classify(model, check_payload(old), pcm_encode(segs))[0]
    assert rec["kind"] == "failure" and "payload version 1 carries no embedding history" in rec["error"]
    plain = EmotionModel(tiny_bundle_dir)  # without a history, version 1 jobs run as before
    old = make_payload(stream_id="s", channel="a", model_id=plain.model_id, sample_rate=8000, window=24000,
                       items=[(0, 0.0, 3.0)], pcm_key="ser:pcm:x") | {"v": 1}
    assert classify(plain, old, pcm_encode(segs))[0]["kind"] == "result"
    assert classify(plain, old | {"v": 3}, pcm_encode(segs))[0]["error"].startswith("payload version 3 is not")


def test_embedded_history_is_causal_and_output_carries_no_embedding(tmp_path: Path, stereo_call: Path,
                                                                     history_bundle_dir: Path) -> None:
    args = ["--model", str(history_bundle_dir), "--format", "jsonl", "--batch", "1", "--timeout", "30"]
    code, out, err = embedded([str(stereo_call), *args, "--stream-id", "h1"])
    assert code == 0, err
    recs = records(out)
    assert recs and all("embedding" not in r for r in recs)
    for ch in ("ch0", "ch1"):
        mine = [r for r in recs if r["channel"] == ch and r["kind"] == "result"]
        assert [r["history"] for r in mine] == list(range(len(mine)))  # every earlier segment of the channel
    # nothing after a segment changes its record: the call cut after its first 6 s gives the same records
    y, sr = sf.read(stereo_call, dtype="float32")
    sf.write(tmp_path / "short.wav", y[: 6 * sr], sr)
    code, out2, err = embedded([str(tmp_path / "short.wav"), *args, "--stream-id", "h2"])
    assert code == 0, err
    short = {(r["channel"], r["seq"]): r for r in records(out2)}
    full = {(r["channel"], r["seq"]): r for r in recs}
    common = [k for k in short if short[k]["end_s"] <= 6.0]
    assert common and all(short[k]["probs"] == full[k]["probs"] for k in common)


def test_distributed_records_name_the_history_they_had(redis_url: str, stereo_call: Path,
                                                       history_bundle_dir: Path) -> None:
    args = [str(stereo_call), "--model", str(history_bundle_dir), "--format", "jsonl", "--batch", "1",
            "--timeout", "30"]
    code, out, err = embedded([*args, "--stream-id", "hd0"])
    assert code == 0, err
    emb = {(r["channel"], r["seq"]): r for r in records(out)}
    # not --burst: with a history the queue is empty while a channel's next job waits for the last one's results
    worker = worker_proc(redis_url, history_bundle_dir, "--processes", "1")
    try:
        prod = producer_proc(redis_url, *args, "--stream-id", "hd1")
        dout, derr = prod.communicate(timeout=60)
    finally:
        worker.terminate()
        worker.communicate(timeout=60)
    assert prod.returncode == 0, derr
    dist = {(r["channel"], r["seq"]): r for r in records(dout)}
    assert dist.keys() == emb.keys()
    for key, r in dist.items():  # the same history, the same probabilities: the embeddings came back in time
        assert "embedding" not in r and r["history"] == emb[key]["history"] and r["probs"] == emb[key]["probs"]
    assert max(r["history"] for r in dist.values()) == 2  # fails where distributed mode never folds an embedding
    # the results stream keeps each result's embedding in a field of its own, beside the record: readers
    # of records (the dashboard, reports) never see it; the ingestion side asks for it
    conn = redis.Redis.from_url(redis_url)
    entries = [f for _, f in conn.xrange(results_key("hd1"))]
    results = [decode_entry(f) for f in entries if decode_entry(f)["kind"] == "result"]
    assert len(results) == len(dist) and not any("embedding" in r for r in results)
    full = [decode_entry(f, embedding=True) for f in entries if decode_entry(f)["kind"] == "result"]
    assert all(decode_embedding(r["embedding"], size=64).shape == (64,) for r in full)
