"""The v3 recipe's data side: corpora -> speaker split -> encoded cache (``ser-train encode``).

One run directory holds everything: ``items.json`` (the clips, in order), ``split.json``,
``waves.npz`` (decoded 8 kHz clips), ``encoder.onnx`` (the frozen Whisper prefix) and ``cache/``
(:mod:`training.encode`). Training speakers get the clean version and ``AUG_VERSIONS`` line-augmented
ones; validation speakers the clean one and one augmented (to pick epochs under realistic lines); test
speakers the clean one and every evaluation condition; a corpus left out (``--hold-out-corpus``,
nEMO by default) is all test speakers, clean and the noise conditions.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import load_bundle
from training.corpora import Item, load_corpora, parse_data_args
from training.split import assign, speaker_split

AUG_VERSIONS = 3
TEST_VERSIONS = ("clean", "white20", "white10", "pink20", "pink10", "hum", "gsm", "opus8")
LOCO_VERSIONS = ("clean", "white20", "pink10")
BLOCKS = 2
N_FRAMES = 300  # 3 s segments: 48,000 samples at 16 kHz, 160 per frame
SPLIT_SEED = 1234


def base_spec() -> Any:
    """Segmenting and VAD of the shipped pipeline (the v3 model keeps 2.0.0's segmenter)."""
    return load_bundle().spec


def encoder_onnx(blocks: int = BLOCKS) -> bytes:
    """The frozen encoder prefix alone (what the cache is encoded with), exported like every graph here."""
    from training.encoder import build_encoder
    from training.export import to_onnx
    from training.whisper import encoder_weights

    enc = build_encoder(encoder_weights(), n_frames=N_FRAMES, blocks=blocks)
    return to_onnx(enc, n_frames=N_FRAMES, n_mels=80, output_name="frames")


def prepare(*, data: tuple[str, ...], data_root: Path | None, out: Path, labels: tuple[str, ...],
            hold_out: tuple[str, ...] = ("nemo",), seed: int = SPLIT_SEED, processes: int = 2,
            aug_seed: int = 0, log: Any = print) -> dict[str, Any]:
    """Load, split and encode; returns the run's ``{"items", "parts", "jobs"}``."""
    from training.data import load_waves
    from training.encode import build_cache

    out.mkdir(parents=True, exist_ok=True)
    res = load_corpora(parse_data_args(data, data_root), labels)
    spec = base_spec()
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


if __name__ == "__main__":  # a developer's entry point; ``ser-train encode`` is the documented one
    import sys
    import time

    from training.corpora import CANONICAL_LABELS

    def _log(msg: str) -> None:
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    prepare(data=(), data_root=Path(sys.argv[1]), out=Path(sys.argv[2]), labels=CANONICAL_LABELS, log=_log)
