"""The end of ``ser-train fit`` after the network is trained: calibration on the validation speakers,
ONNX export with the parity check, the bundle and its card; and picking up an interrupted run
(``fit --resume``) from its saved ``model.keras``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from training.corpora import Item


def resumed(out: Path, log: Any) -> tuple[Any, dict[str, Any], float]:
    """The trained model and history of an interrupted run, and the minutes its training took
    (from ``train.log``: its first ``command:`` line to the history's last epoch line)."""
    keras_path, hist_path = out / "model.keras", out / "history.json"
    if not keras_path.is_file() or not hist_path.is_file():
        raise click.ClickException(f"--resume needs {keras_path} and {hist_path} from a run that finished training")
    from training.train import configure_tf

    configure_tf(1)
    import keras

    import training.model  # noqa: F401  (registers the custom layers)

    hist = json.loads(hist_path.read_text(encoding="utf-8"))
    lines = (out / "train.log").read_text(encoding="utf-8").splitlines()
    first = next((line[:8] for line in lines if " command: " in line), None)
    last = next((line[:8] for line in reversed(lines) if ' {"epoch": ' in line), None)
    minutes = 0.0
    if first and last:
        h0, m0, s0 = map(int, first.split(":"))
        h1, m1, s1 = map(int, last.split(":"))
        minutes = ((h1 - h0) * 3600 + (m1 - m0) * 60 + (s1 - s0)) % 86400 / 60
    log(f"resuming: {keras_path} (best epoch {hist.get('best_epoch')}), training took {minutes:.1f} min")
    return keras.models.load_model(keras_path), hist, minutes


def calibrate_run(model: Any, spec: Any, store: Any, items: list[Item], parts: dict[str, list[int]],
                  histories: Any, seed: int, log: Any) -> tuple[Any, dict[str, Any]]:
    """Temperature and ``uncertain`` threshold fitted on the validation speakers' segments."""
    from dataclasses import replace

    from training import train
    from training.calibrate import calibrate

    val = train.ClipSet(store, parts["val"], items, spec, spec.norm_mean, spec.norm_std, histories, seed=seed)
    cal, summary = calibrate(val.segment_probs(model), val.y[val.owner])
    log("calibration on validation segments: " + json.dumps(summary))
    return replace(spec, calibration=cal), summary


def export_run(model: Any, spec: Any, store: Any, items: list[Item], parts: dict[str, list[int]], out: Path,
               log: Any, histories: Any = None, seed: int = 0) -> dict[str, Any]:
    from models.bundle import write_bundle
    from training import train
    from training.export import OPSET, ExportError, parity, to_onnx

    probe_idx = (parts["val"] or parts["train"])[:64]
    probe = train.ClipSet(store, probe_idx, items, spec, spec.norm_mean, spec.norm_std, histories, seed=seed)
    x, spk = probe.x, probe.speaker
    np.save(out / "parity_features.npy", x[:128])
    if spk is not None:
        np.save(out / "parity_speaker.npy", spk[:128])
    try:
        onnx_bytes = to_onnx(model, n_frames=spec.n_frames, n_mels=spec.features.n_mels,
                             speaker_input=spec.speaker.input if spec.speaker is not None else None)
        par = parity(model, onnx_bytes, x[:128], speaker=None if spk is None else spk[:128])
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    par["opset"] = OPSET
    log(f"ONNX parity: max |diff| {par['max_abs_diff']:.2e} on {par['n']} windows, {len(onnx_bytes) / 1e6:.2f} MB")
    write_bundle(out / "bundle-raw", onnx_bytes=onnx_bytes, spec=spec, card=None)
    (out / "model.onnx").write_bytes(onnx_bytes)
    return {"parity": par}


def write_final(out: Path, bundle: Path | None, spec: Any, info: dict[str, Any], log: Any) -> None:
    from dataclasses import replace

    from models.bundle import write_bundle
    from training.card import render_card

    onnx_bytes = (out / "model.onnx").read_bytes()
    final = replace(spec, info=info)
    card = render_card(final.to_dict(), command=info["training"]["command"])
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    for target in [out / "bundle"] + ([bundle] if bundle is not None else []):
        write_bundle(target, onnx_bytes=onnx_bytes, spec=final, card=card)
        log(f"bundle written to {target}")
