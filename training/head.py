"""The v3 head over Whisper encoder frames, and the whole v3 model (encoder prefix + head) for export.

Head input: the encoder's frames averaged over ``POOL`` (3) frames, ``(50, 384)`` for a 3 s segment:

1. LayerNorm over the 384 features (the encoder's block outputs are un-normalised residual streams),
   dropout;
2. a Conv1D (k=3) projection to ``width`` with ReLU, then a BiLSTM over time (the CNN-LSTM family);
3. attention pooling (a learned score per frame, softmax over time) beside mean pooling;
4. dense, dropout, softmax over the labels.

:func:`full_model` puts the frozen encoder (:mod:`training.encoder`) and the pooling in front, so the
shipped ONNX graph takes Whisper log-mel ``(300, 80)`` and gives probabilities: one graph.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from training.encode import POOL


@keras.saving.register_keras_serializable(package="ser")
class AttentionPool(layers.Layer):
    """``(b, t, d) -> (b, d)``: frames weighted by a softmax over time of a learned score."""

    def build(self, input_shape: Any) -> None:
        self.score = layers.Dense(1, name="score")
        self.score.build(input_shape)

    def call(self, x: Any) -> Any:
        w = ops.softmax(self.score(x), axis=1)
        return ops.sum(w * x, axis=1)


def build_head(*, n_frames: int, width: int, n_labels: int, rnn_units: int = 64, dropout: float = 0.3,
               seed: int = 0, kind: str = "cnn-lstm") -> Any:
    """Uncompiled Keras head: pooled encoder frames ``(n_frames, width)`` -> probabilities.

    ``kind``: ``cnn-lstm`` (Conv1D + BiLSTM + attention/mean pooling) or ``attention`` (a per-frame dense
    projection and attention/mean pooling only)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(n_frames, width), name="frames")
    x = layers.LayerNormalization(epsilon=1e-5, name="head_ln")(inp)
    x = layers.Dropout(dropout / 2, name="head_in_drop")(x)
    if kind == "cnn-lstm":
        x = layers.Conv1D(128, 3, padding="same", activation="relu", name="head_conv")(x)
        x = layers.Dropout(dropout / 2, name="head_conv_drop")(x)
        x = layers.Bidirectional(layers.LSTM(rnn_units, return_sequences=True), name="head_bilstm")(x)
    elif kind == "attention":
        x = layers.Dense(128, activation="relu", name="head_proj")(x)
    else:
        raise ValueError(f"head kind must be cnn-lstm or attention, got {kind!r}")
    pooled = layers.Concatenate(name="head_pool")([AttentionPool(name="head_attn")(x),
                                                    layers.GlobalAveragePooling1D(name="head_mean")(x)])
    h = layers.Dropout(dropout, name="head_drop")(pooled)
    h = layers.Dense(128, activation="relu", name="head_dense")(h)
    h = layers.Dropout(dropout, name="head_drop2")(h)
    out = layers.Dense(n_labels, activation="softmax", name="probs")(h)
    return keras.Model(inp, out, name="head")


@keras.saving.register_keras_serializable(package="ser")
class Centre(layers.Layer):
    """``(b, t, d), (b, d) -> (b, t, d)``: every frame minus the channel's history vector."""

    def call(self, x: Any, history: Any) -> Any:
        return x - ops.expand_dims(history, 1)


def full_model(encoder: Any, head: Any, *, history: bool = False) -> Any:
    """Whisper log-mel -> frozen encoder prefix -> mean over ``POOL`` frames -> head -> probabilities.

    ``history``: the embedding-history model (:mod:`models.history`): a second input ``history``
    ``(b, 384)`` subtracted from every pooled frame before the head, and a second output
    ``embedding``, the segment's pooled frames averaged over time (what its channel's history folds in)."""
    inp = keras.Input(shape=encoder.input_shape[1:], name="features")
    x = encoder(inp)
    x = layers.AveragePooling1D(POOL, strides=POOL, padding="valid", name="frame_pool")(x)
    if not history:
        return keras.Model(inp, head(x), name="ser_v3")
    hist = keras.Input(shape=(x.shape[-1],), name="history")
    emb = layers.GlobalAveragePooling1D(name="embedding")(x)
    probs = head(Centre(name="centre")(x, hist))
    return keras.Model([inp, hist], [probs, emb], name="ser_v3_history")
