"""Whisper tiny.en's conv stem and first blocks as frozen Keras layers (exported with tf2onnx).

The same arithmetic as :func:`training.whisper_weights.encode` (the numpy reference, itself checked against
CTranslate2): PyTorch-style padding 1 on both sides of each conv (a Keras ``"same"`` stride-2 conv
would pad on the right only and shift every frame), exact (erf) GELU, LayerNorm eps 1e-5, fused
q/k/v projections, sinusoidal positions sliced to the segment's frames.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

from training.whisper_weights import HEADS, EncoderWeights


def gelu(z: Any) -> Any:
    """Exact GELU written with ``erf`` (Keras' own uses ``erfc``, which ONNX lacks)."""
    return 0.5 * z * (1.0 + ops.erf(z * 0.7071067811865476))


@keras.saving.register_keras_serializable(package="ser")
class WhisperBlock(layers.Layer):
    """One pre-LayerNorm transformer block ``(b, t, d) -> (b, t, d)`` with Whisper's layout."""

    def __init__(self, width: int, heads: int = HEADS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width, self.heads = width, heads
        self.ln1 = layers.LayerNormalization(epsilon=1e-5, name="ln1")
        self.ln2 = layers.LayerNormalization(epsilon=1e-5, name="ln2")
        self.qkv = layers.Dense(3 * width, name="qkv")
        self.out = layers.Dense(width, name="out")
        self.fc1 = layers.Dense(4 * width, name="fc1")
        self.fc2 = layers.Dense(width, name="fc2")

    def build(self, input_shape: Any) -> None:
        d = self.width
        self.ln1.build(input_shape)
        self.ln2.build(input_shape)
        self.qkv.build(input_shape)
        self.out.build((None, None, d))
        self.fc1.build((None, None, d))
        self.fc2.build((None, None, 4 * d))

    def call(self, x: Any) -> Any:
        d, h = self.width, self.heads
        t = x.shape[1]
        qkv = self.qkv(self.ln1(x))

        def heads(z: Any) -> Any:
            return ops.transpose(ops.reshape(z, (-1, t, h, d // h)), (0, 2, 1, 3))

        q, k, v = heads(qkv[..., :d]), heads(qkv[..., d : 2 * d]), heads(qkv[..., 2 * d :])
        att = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / float(np.sqrt(d // h)), axis=-1)
        o = ops.reshape(ops.transpose(ops.matmul(att, v), (0, 2, 1, 3)), (-1, t, d))
        x = x + self.out(o)
        return x + self.fc2(gelu(self.fc1(self.ln2(x))))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "width": self.width, "heads": self.heads}

    def set_whisper(self, p: dict[str, np.ndarray]) -> None:
        self.ln1.set_weights([p["ln1_g"], p["ln1_b"]])
        self.ln2.set_weights([p["ln2_g"], p["ln2_b"]])
        self.qkv.set_weights([p["qkv_w"].T, p["qkv_b"]])
        self.out.set_weights([p["out_w"].T, p["out_b"]])
        self.fc1.set_weights([p["fc1_w"].T, p["fc1_b"]])
        self.fc2.set_weights([p["fc2_w"].T, p["fc2_b"]])


@keras.saving.register_keras_serializable(package="ser")
class AddPositions(layers.Layer):
    """Add Whisper's sinusoidal positions ``(t, d)`` (sliced to the input's frames)."""

    def __init__(self, positions: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init = None if positions is None else np.asarray(positions, dtype=np.float32)

    def build(self, input_shape: Any) -> None:
        t, d = int(input_shape[1]), int(input_shape[2])
        init = self._init[:t] if self._init is not None else np.zeros((t, d), np.float32)
        self.positions = self.add_weight(shape=(t, d), initializer=keras.initializers.Constant(init),
                                         trainable=False, name="positions")

    def call(self, x: Any) -> Any:
        return x + self.positions[None]


def build_encoder(weights: EncoderWeights, *, n_frames: int, blocks: int, name: str = "whisper") -> Any:
    """Frozen Keras model: Whisper log-mel ``(n_frames, 80)`` -> ``(ceil(n_frames / 2), 384)`` after the
    conv stem and the first ``blocks`` blocks."""
    width = weights.conv1_w.shape[0]
    inp = keras.Input(shape=(n_frames, weights.conv1_w.shape[1]), name="features")
    c1 = layers.Conv1D(width, 3, padding="valid", name=f"{name}_conv1")
    c2 = layers.Conv1D(width, 3, strides=2, padding="valid", name=f"{name}_conv2")
    x = layers.ZeroPadding1D(1, name=f"{name}_pad1")(inp)
    x = layers.Activation(gelu, name=f"{name}_gelu1")(c1(x))
    x = layers.ZeroPadding1D(1, name=f"{name}_pad2")(x)
    x = layers.Activation(gelu, name=f"{name}_gelu2")(c2(x))
    x = AddPositions(weights.positions, name=f"{name}_positions")(x)
    block_layers = [WhisperBlock(width, name=f"{name}_block{i}") for i in range(blocks)]
    for blk in block_layers:
        x = blk(x)
    model = keras.Model(inp, x, name=name)
    c1.set_weights([weights.conv1_w.transpose(2, 1, 0), weights.conv1_b])
    c2.set_weights([weights.conv2_w.transpose(2, 1, 0), weights.conv2_b])
    for blk, p in zip(block_layers, weights.blocks[:blocks], strict=True):
        blk.set_whisper(p)
    model.trainable = False
    return model
