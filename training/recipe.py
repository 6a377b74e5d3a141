"""The recipe's data side and its constants: corpora -> speaker split -> encoded cache.

One run directory holds everything: ``items.json`` (the clips, in order), ``split.json``,
``waves.npz`` (decoded 8 kHz clips), ``encoder.onnx`` (the frozen Whisper prefix) and ``cache/``
(:mod:`training.encode`). Training speakers get the clean version and ``AUG_VERSIONS`` line-augmented
ones; validation speakers the clean one and one augmented (to pick epochs under realistic lines); test
speakers the clean one and every evaluation condition; a corpus left out (:data:`HOLD_OUT`, nEMO) is
all test speakers, clean and the noise conditions.

The segmenter and VAD that cut every training window are this module's own constants
(:data:`SEGMENT`, :data:`TRAINING_VAD`), never read from whatever ``models/default`` holds: 3.1.0's
head was trained on windows cut with the level-adaptive gate and bleed rejection *off*; the bundle a
run writes carries :data:`SERVING_VAD` (the same VAD with those options on, as 3.1.0 ships them after
measuring that they cost nothing on clean clips: ``evaluation.vad_opt_in`` in its ``spec.json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import Spec
from models.features import FeatureParams, SegmentParams
from models.vad import SileroParams
from training import MODEL_NAME
from training.corpora import Item, load_corpora, parse_data_args
from training.split import assign, speaker_split

AUG_VERSIONS = 3
TEST_VERSIONS = ("clean", "white20", "white10", "pink20", "pink10", "hum", "gsm", "opus8")
LOCO_VERSIONS = ("clean", "white20", "pink10")
BLOCKS = 2
N_FRAMES = 300  # 3 s segments: 48,000 samples at 16 kHz, 160 per frame
SPLIT_SEED = 1234
#: Corpora never trained on: every speaker is a test speaker (leave-one-corpus-out).
HOLD_OUT = ("nemo",)
SAMPLE_RATE = 8000
#: Utterance-aligned 3 s windows every 1.5 s, at least 0.8 s, zero-padded at the end (as 2.0.0 and 3.x serve).
SEGMENT = SegmentParams(window_s=3.0, hop_s=1.5, min_s=0.8, pad="end")
#: The VAD that cut 3.1.0's training windows: Silero, 0.3 s pause, 10 dB noise-floor gate; the
#: level-adaptive gate and bleed rejection off (``level_gain_db``, ``gate_share``, ``speech_hold_s``,
#: ``bleed_share`` 0).
TRAINING_VAD = SileroParams(threshold=0.3, off_threshold=0.2, min_silence_s=0.3, min_speech_s=0.25, pre_roll_s=0.2,
                            hangover_s=0.3, floor_dbfs=-60.0, reset_after_s=1.0, gate_db=10.0, speech_hold_s=0.0,
                            gate_share=0.0, level_gain_db=0.0, bleed_share=0.0, bleed_max_delay_s=0.064)
#: The VAD a new bundle is served with: the training VAD plus issue 27's level-adaptive gate and bleed
#: rejection (docs/vad.md), as 3.1.0 ships.
SERVING_VAD = replace(TRAINING_VAD, level_gain_db=20.0, gate_share=0.3, speech_hold_s=0.3, bleed_share=0.5)
#: Whisper's front end (``models.whisper.log_mel``): the 3.x models' features.
WHISPER = FeatureParams(n_fft=400, hop_length=160, n_mels=80, fmin=0.0, fmax=8000.0, amin=1e-10, kind="whisper")


def base_spec(labels: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
              *, vad: SileroParams = TRAINING_VAD) -> Spec:
    """The segmenter, VAD and front end the recipe cuts and encodes training windows with."""
    return Spec(name=MODEL_NAME, version="0.0.0", labels=labels, sample_rate=SAMPLE_RATE, segment=SEGMENT,
                features=WHISPER, vad=vad, norm_mean=np.zeros(80, np.float32), norm_std=np.ones(80, np.float32))


def encoder_onnx(blocks: int = BLOCKS) -> bytes:
    """The frozen encoder prefix alone (what the cache is encoded with), exported like every graph here."""
    from training.encoder import build_encoder
    from training.export import to_onnx
    from training.whisper_weights import encoder_weights

    enc = build_encoder(encoder_weights(), n_frames=N_FRAMES, blocks=blocks)
    return to_onnx(enc, n_frames=N_FRAMES, n_mels=80, output_name="frames")


def prepare(*, data: tuple[str, ...], data_root: Path | None, out: Path, labels: tuple[str, ...],
            hold_out: tuple[str, ...] = HOLD_OUT, seed: int = SPLIT_SEED, processes: int = 2,
            aug_seed: int = 0, log: Any = print) -> dict[str, Any]:
    """Load, split and encode; returns the run's ``{"items", "parts", "jobs"}``."""
    from training.data import load_waves
    from training.encode import build_cache

    out.mkdir(parents=True, exist_ok=True)
    res = load_corpora(parse_data_args(data, data_root), labels)
    spec = base_spec(labels)
    store, items, fails = load_waves(res.items, sr=spec.sample_rate, cache=out / "waves.npz")
    log(f"{len(items)} clips decoded ({len(fails)} dropped)")
    held = [i for i, it in enumerate(items) if it.corpus in hold_out]
    main = [i for i, it in enumerate(items) if it.corpus not in hold_out]
    split = speaker_split([items[i] for i in main], seed=seed)
    parts = {k: [main[j] for j in v] for k, v in assign([items[i] for i in main], split).items()}
    parts["loco"] = held
    (out / "items.json").write_text(json.dumps([asdict(it) for it in items]) + "\n", encoding="utf-8")
    (out / "split.json").write_text(json.dumps({"seed": seed, "hold_out": list(hold_out), **split,
                                                "clips": {k: len(v) for k, v in parts.items()}}, indent=1) + "\n",
                                    encoding="utf-8")
    jobs: dict[str, list[int]] = {"clean": sorted(parts["train"] + parts["val"] + parts["test"] + held)}
    for k in range(AUG_VERSIONS):
        jobs[f"aug{k}"] = sorted(parts["train"] + (parts["val"] if k == 0 else []))
    for v in TEST_VERSIONS[1:]:
        jobs[v] = sorted(parts["test"] + (held if v in LOCO_VERSIONS else []))
    onnx_path = out / "encoder.onnx"
    if not onnx_path.is_file():
        onnx_path.write_bytes(encoder_onnx())
    rng = np.random.default_rng(seed)
    babble = sorted(int(i) for i in rng.choice(parts["train"], size=min(400, len(parts["train"])), replace=False))
    build_cache(store, spec, jobs=jobs, onnx_bytes=onnx_path.read_bytes(), cache=out / "cache", babble_idx=babble,
                seed=aug_seed, processes=processes, log=log)
    return {"items": items, "parts": parts, "jobs": jobs}


def load_items(out: Path) -> list[Item]:
    return [Item(**d) for d in json.loads((out / "items.json").read_text(encoding="utf-8"))]
