"""Encoding once: every clip version's serving segments through Whisper's front end and frozen encoder.

Encoding is the cost of the v3 recipe; the head trains on the cache. For each clip and *version*
(``clean``, ``aug<k>`` — a :func:`training.lines.line_augment` draw seeded by clip and k — or an
evaluation condition of :mod:`training.lines`), the clip passes through the version's channel at the
model rate, is cut by the serving segmenter (:func:`models.utterances.clip_windows`: Silero VAD,
utterance windows, end padding), each window goes through :func:`models.whisper.log_mel` and the
encoder graph (ONNX, the same graph the bundle embeds), and the encoder frames are averaged over
``POOL`` frames (what the head's first layer does) and stored as float16.

Output: ``<cache>/<version>.npz`` with ``x`` ``(windows, frames / POOL, 384)`` float16, ``clip``
``(windows,)`` (index into the run's items) and ``n_clips`` per version. Work is split over
processes by clip; each process holds one onnxruntime session (one thread).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.whisper import log_mel
from training.lines import condition, line_augment

#: Encoder frames (20 ms each) averaged into one head frame.
POOL = 3
_STATE: dict[str, Any] = {}


def pool_frames(h: np.ndarray, pool: int = POOL) -> np.ndarray:
    """``(k, t, d)`` -> ``(k, t // pool, d)``: mean over non-overlapping groups of ``pool`` frames."""
    k, t, d = h.shape
    return h[:, : t - t % pool].reshape(k, t // pool, pool, d).mean(axis=2)


def _init(store: Any, spec: Any, onnx_bytes: bytes, babble_idx: list[int], seed: int) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    _STATE.update(store=store, spec=spec, seed=seed,
                  session=ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"]),
                  babble=[store.get(i) for i in babble_idx])


def version_audio(y: np.ndarray, *, version: str, clip: int, sr: int, seed: int,
                  babble: list[np.ndarray] | None = None) -> np.ndarray:
    """The clip as ``version`` delivers it (deterministic in ``clip``, ``version`` and ``seed``)."""
    if version.startswith("aug"):
        rng = np.random.default_rng([seed, clip, int(version[3:])])
        return line_augment(y, sr=sr, rng=rng, babble=babble)[0]
    return condition(y, name=version, sr=sr, seed=seed * 1_000_003 + clip)


def encode_windows(session: Any, windows: np.ndarray, *, sr: int, batch: int = 8) -> np.ndarray:
    """Segments ``(k, window)`` -> pooled encoder frames ``(k, frames / POOL, 384)`` float32."""
    out = []
    for i in range(0, len(windows), batch):
        mel = log_mel(y=windows[i : i + batch], sr=sr)
        (h,) = session.run(None, {"features": mel})
        out.append(pool_frames(np.asarray(h)))
    return np.concatenate(out) if out else np.zeros((0, 0, 0), np.float32)


def _work(job: tuple[int, str]) -> tuple[int, str, np.ndarray]:
    from models.utterances import clip_windows

    clip, version = job
    spec = _STATE["spec"]
    y = version_audio(_STATE["store"].get(clip), version=version, clip=clip, sr=spec.sample_rate,
                      seed=_STATE["seed"], babble=_STATE["babble"])
    windows = clip_windows(y=y, spec=spec)
    return clip, version, encode_windows(_STATE["session"], windows, sr=spec.sample_rate).astype(np.float16)


def build_cache(store: Any, spec: Any, *, jobs: dict[str, list[int]], onnx_bytes: bytes, cache: Path,
                babble_idx: list[int], seed: int, processes: int = 2, log: Any = print) -> None:
    """Encode ``jobs`` (version -> clip indices) into ``cache/<version>.npz``; versions already cached
    with the same clips are skipped."""
    cache.mkdir(parents=True, exist_ok=True)
    todo = []
    for version, clips in jobs.items():
        path = cache / f"{version}.npz"
        if path.is_file():
            with np.load(path) as z:
                if np.array_equal(z["clips"], np.asarray(sorted(clips))):
                    continue
        todo.extend((c, version) for c in sorted(clips))
    if not todo:
        return
    results: dict[str, dict[int, np.ndarray]] = {v: {} for v in jobs}
    t0 = time.time()
    timing = cache / "timing.json"
    # not fork: a forked child of a process with threads (TensorFlow, onnxruntime, a test runner) can
    # deadlock on a lock one of them held (seen in the test suite: a pool worker stuck for minutes)
    ctx = mp.get_context("forkserver")
    with ctx.Pool(processes, initializer=_init, initargs=(store, spec, onnx_bytes, babble_idx, seed)) as pool:
        for n, (clip, version, x) in enumerate(pool.imap_unordered(_work, todo, chunksize=8), 1):
            results[version][clip] = x
            if n % 1000 == 0 or n == len(todo):
                rate = n / (time.time() - t0)
                log(f"encoded {n}/{len(todo)} clip versions ({rate:.1f}/s, {(len(todo) - n) / rate / 60:.1f} min left)")
    for version, per in results.items():
        if not per:
            continue
        clips = sorted(per)
        x = np.concatenate([per[c] for c in clips])
        owner = np.concatenate([np.full(len(per[c]), c, dtype=np.int32) for c in clips])
        np.savez(cache / f"{version}.npz", x=x, clip=owner, clips=np.asarray(clips))
    spent = json.loads(timing.read_text()) if timing.is_file() else {"encode_min": 0.0}
    spent["encode_min"] = round(spent["encode_min"] + (time.time() - t0) / 60, 1)
    timing.write_text(json.dumps(spent) + "\n")


def load_version(cache: Path, version: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x (windows, t, 384) float16, clip (windows,))`` of a cached version."""
    with np.load(cache / f"{version}.npz") as z:
        return z["x"], z["clip"]
