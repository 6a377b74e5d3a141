"""Export the model (frozen Whisper prefix + trained head) as one ONNX graph in a bundle.

Parity is checked twice before anything is written: onnxruntime against Keras on real segments, and
against the independent path (numpy Whisper reference :func:`training.whisper_weights.encode` -> frame pooling
-> the Keras head), so a mistake in the Keras encoder would fail here, not in a user's call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import Calibration, Spec, write_bundle
from models.history import HistoryParams
from models.vad import SileroParams
from training import MODEL_NAME
from training.encode import pool_frames
from training.export import ExportError, parity, to_onnx
from training.recipe import BLOCKS, N_FRAMES, SERVING_VAD, WHISPER
from training.whisper_weights import PINNED, encode, encoder_weights


def export_graph(head: Any, mel: np.ndarray, *, tol: float = 2e-4, prior: np.ndarray | None = None
              ) -> tuple[bytes, dict[str, float]]:
    """ONNX bytes of encoder + pooling + ``head`` and the parity figures on Whisper log-mel ``mel`` ``(k, 300, 80)``.

    ``prior``: ``(384,)`` for the embedding-history model (:func:`training.head.full_model` with
    ``history``): parity is then checked on both outputs with history vectors scattered around it."""
    import onnxruntime as ort

    from training.encoder import build_encoder
    from training.head import full_model

    weights = encoder_weights()
    model = full_model(build_encoder(weights, n_frames=N_FRAMES, blocks=BLOCKS), head, history=prior is not None)
    mel = mel.astype(np.float32)
    pooled = pool_frames(encode(mel, weights, blocks=BLOCKS))  # the independent numpy reference
    if prior is None:
        onnx_bytes = to_onnx(model, n_frames=N_FRAMES, n_mels=80)
        keras_parity = parity(model, onnx_bytes, mel, tol=tol)["max_abs_diff"]
        sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        (got,) = sess.run(["probs"], {"features": mel})
        ref = np.asarray(head(pooled, training=False))
        emb_diff = None
    else:
        onnx_bytes = to_onnx(model, n_frames=N_FRAMES, n_mels=80, history=("history", len(prior), "embedding"))
        rng = np.random.default_rng(0)
        hist = (prior[None, :] + rng.standard_normal((len(mel), len(prior))) * np.std(prior)).astype(np.float32)
        sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        got, got_emb = sess.run(["probs", "embedding"], {"features": mel, "history": hist})
        k_probs, k_emb = (np.asarray(v) for v in model([mel, hist], training=False))
        keras_parity = float(max(np.abs(got - k_probs).max(), np.abs(got_emb - k_emb).max()))
        if not np.isfinite(keras_parity) or keras_parity > tol or (got.argmax(1) != k_probs.argmax(1)).any():
            raise ExportError(f"ONNX vs Keras (history model): max |diff| {keras_parity:.2e} > {tol:.0e} "
                              "or an argmax differs")
        ref = np.asarray(head(pooled - hist[:, None, :], training=False))
        emb_diff = float(np.abs(got_emb - pooled.mean(axis=1)).max())
        if not np.isfinite(emb_diff) or emb_diff > tol * 10:  # embeddings are un-normalised (|x| up to ~10)
            raise ExportError(f"ONNX embedding vs numpy Whisper reference: max |diff| {emb_diff:.2e}")
    diff = float(np.abs(got - ref).max())
    if not np.isfinite(diff) or diff > tol:
        raise ExportError(f"ONNX vs numpy Whisper reference + head: max |diff| {diff:.2e} > {tol:.0e}")
    out = {"keras_max_abs_diff": keras_parity, "reference_max_abs_diff": diff, "n": int(len(mel)), "opset": 17}
    if emb_diff is not None:
        out["embedding_max_abs_diff"] = emb_diff
    return onnx_bytes, out


def quantize_int8(onnx_bytes: bytes) -> bytes:
    """onnxruntime's dynamic int8 quantisation of the graph's MatMul/Gemm weights (activations stay float)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        return dst.read_bytes()


def graph_diff(a: bytes, b: bytes, mel: np.ndarray, *, prior: np.ndarray | None = None) -> dict[str, float]:
    """How far two graphs' probabilities lie apart on ``mel`` (history: ``prior``, for a history model):
    max |diff| and the argmax agreement."""
    import onnxruntime as ort

    feeds = {"features": mel.astype(np.float32)}
    if prior is not None:
        feeds["history"] = np.repeat(prior[None, :].astype(np.float32), len(mel), axis=0)
    pa, pb = (ort.InferenceSession(g, providers=["CPUExecutionProvider"]).run(["probs"], feeds)[0] for g in (a, b))
    return {"max_abs_diff": round(float(np.abs(pa - pb).max()), 5),
            "argmax_agreement": round(float((pa.argmax(1) == pb.argmax(1)).mean()), 4), "n": int(len(mel))}


def model_spec(base: Spec, *, version: str, labels: tuple[str, ...], calibration: Calibration,
               info: dict[str, Any], history: HistoryParams | None = None, vad: SileroParams = SERVING_VAD) -> Spec:
    """The bundle's spec: ``base``'s segmenter, ``vad`` (:data:`training.recipe.SERVING_VAD`), Whisper
    features (identity normalisation), no speaker input; ``history``: the embedding history of a model
    trained with ``--speaker-norm``."""
    return Spec(name=MODEL_NAME, version=version, labels=labels, sample_rate=base.sample_rate, segment=base.segment,
                features=WHISPER, vad=vad, norm_mean=np.zeros(80, np.float32), norm_std=np.ones(80, np.float32),
                calibration=calibration, history=history, info={"encoder": encoder_info(), **info})


def encoder_info() -> dict[str, Any]:
    return {"model": PINNED["model"], "blocks": f"conv stem + blocks 1-{BLOCKS} of 4 (frozen)",
            "source": {k: PINNED[k] for k in ("package", "version", "file", "bytes", "sha256")},
            "licence": PINNED["licence"], "front_end": "models.whisper.log_mel (8 kHz resampled to 16 kHz)"}


#: Beside the weights derived from Whisper (the encoder prefix inside ``model.onnx``): its licence.
WHISPER_LICENSE_FILE = "WHISPER_LICENSE"
WHISPER_LICENSE = """The encoder layers inside model.onnx (Whisper tiny.en's conv stem and first blocks) are
derived from OpenAI Whisper's weights, released under the MIT License:

MIT License

Copyright (c) 2022 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def write_model(out: Path, *, onnx_bytes: bytes, spec: Spec, card: str) -> Any:
    """The bundle (model.onnx, spec.json, MODEL_CARD.md) and Whisper's MIT licence beside it."""
    bundle = write_bundle(out, onnx_bytes=onnx_bytes, spec=spec, card=card)
    (Path(out) / WHISPER_LICENSE_FILE).write_text(WHISPER_LICENSE, encoding="utf-8")
    return bundle
