"""Keras -> ONNX with tf2onnx (opset 17) and a parity check that fails loudly."""

from __future__ import annotations

from typing import Any

import numpy as np

OPSET = 17
PARITY_TOL = 1e-4


class ExportError(RuntimeError):
    """The exported graph does not reproduce the Keras model (or could not be built)."""


def to_onnx(model: Any, *, n_frames: int, n_mels: int, input_name: str = "features",
            output_name: str = "probs", history: tuple[str, int, str] | None = None) -> bytes:
    """Convert a Keras model to ONNX bytes with input ``input_name`` ``[None, n_frames, n_mels]`` and output
    ``output_name``.

    ``history``: ``(input, size, output)`` of an embedding-history model (:mod:`models.history`): a
    second input ``[None, size]`` and a second output (the model's second Keras output) under those names."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    sig = [tf.TensorSpec([None, n_frames, n_mels], tf.float32, name=input_name)]
    if history:
        sig.append(tf.TensorSpec([None, history[1]], tf.float32, name=history[0]))
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=sig, opset=OPSET)
    graph = proto.graph
    want = [input_name] + ([history[0]] if history else [])
    if [i.name for i in graph.input] != want:
        raise ExportError(f"exported inputs {[i.name for i in graph.input]} != {want}")
    outs = [output_name] + ([history[2]] if history else [])
    if len(graph.output) != len(outs):
        raise ExportError(f"exported graph has {len(graph.output)} outputs, expected {len(outs)}")
    for out, name in zip(graph.output, outs, strict=True):
        if out.name != name:  # rename via an Identity node, keeping the graph intact
            old = out.name
            graph.node.append(onnx.helper.make_node("Identity", [old], [name], name=f"{name}_identity"))
            out.name = name
    proto.producer_name = "ser-train (tf2onnx)"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def parity(model: Any, onnx_bytes: bytes, x: np.ndarray, *, input_name: str = "features",
           output_name: str = "probs", tol: float = PARITY_TOL) -> dict[str, float]:
    """Compare Keras and onnxruntime on ``x``; raise
    :class:`ExportError` unless max |diff| <= tol and every argmax agrees. Returns ``{"max_abs_diff", "n"}``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    feeds = {input_name: x.astype(np.float32)}
    (got,) = sess.run([output_name], feeds)
    want = np.asarray(model(x.astype(np.float32), training=False))
    diff = float(np.max(np.abs(got - want))) if len(x) else 0.0
    same = bool(np.all(np.argmax(got, axis=1) == np.argmax(want, axis=1)))
    if not np.isfinite(diff) or diff > tol or not same:
        raise ExportError(f"ONNX parity check failed on {len(x)} real feature windows: max |diff| {diff:.3g} "
                          f"(tolerance {tol}), argmax {'agrees' if same else 'DIFFERS'}")
    return {"max_abs_diff": diff, "n": int(len(x))}
