"""The Keras CNN-(Bi)LSTM: log-mel frames in, label probabilities out.

Input ``(frames, n_mels)`` named ``features`` (already normalised with the spec's per-band
mean/std); output softmax named ``probs``.

1. Per-segment mean normalisation (``SegmentCMN``): each mel band's mean over the segment's frames
   is subtracted inside the graph. This removes the recording channel's spectral colouring, which
   otherwise lets the network recognise the *corpus* (and hence labels that only some corpora
   have, such as ``surprised``) instead of the emotion. The segment's overall level and spread are
   kept as two scalars (``SegmentLevel``) that join the head, because loudness is an emotion cue.
2. Four small conv blocks (BatchNorm, ReLU, spatial dropout, max-pool; time pooled by 3 first so it
   stays cheap on CPU; a residual connection on the last block).
3. Dense projection per time step, a BiLSTM, mean + max pooling over time, dense, softmax.
4. Optional second input ``speaker`` ``(2 * n_mels + 1,)``: the channel's running statistics
   (:mod:`models.speaker`). ``SpeakerDeviation`` turns them into how this segment differs from the
   speaker's usual voice (band means and spreads relative to the speaker's, in the speaker's own
   units) plus the statistics' weight, and a small dense layer feeds that to the head. This is the
   per-segment level and tilt that ``SegmentCMN`` removes, measured against the right reference.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="ser")
class SegmentCMN(layers.Layer):
    """Subtract each band's mean over the time axis: ``(b, t, f) -> (b, t, f)``."""

    def call(self, x: Any) -> Any:
        return x - ops.mean(x, axis=1, keepdims=True)


@keras.saving.register_keras_serializable(package="ser")
class SegmentLevel(layers.Layer):
    """Mean and standard deviation of a whole segment's features: ``(b, t, f) -> (b, 2)``."""

    def call(self, x: Any) -> Any:
        mean = ops.mean(x, axis=(1, 2))
        std = ops.sqrt(ops.mean(ops.square(x - mean[:, None, None]), axis=(1, 2)) + 1e-6)
        return ops.stack([mean, std], axis=-1)


@keras.saving.register_keras_serializable(package="ser")
class SegmentSpectrum(layers.Layer):
    """Coarse shape of a segment's average spectrum: DCT-II coefficients ``1..n_coefs`` of the band
    means over time, ``(b, t, f) -> (b, n_coefs)``. Coefficient 0 (the level) is left out (see
    :class:`SegmentLevel`); the low orders carry spectral tilt (vocal effort), which
    :class:`SegmentCMN` removes from the frames, while finer channel detail is dropped."""

    def __init__(self, n_coefs: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if n_coefs < 1:
            raise ValueError(f"n_coefs must be >= 1, got {n_coefs}")
        self.n_coefs = n_coefs

    def build(self, input_shape: Any) -> None:
        n_bands = int(input_shape[-1])
        k = np.arange(1, self.n_coefs + 1)[None, :]
        f = np.arange(n_bands)[:, None]
        self._basis = np.sqrt(2.0 / n_bands) * np.cos(np.pi * (f + 0.5) * k / n_bands)

    def call(self, x: Any) -> Any:
        basis = ops.convert_to_tensor(self._basis.astype("float32"))
        return ops.matmul(ops.mean(x, axis=1), basis)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_coefs": self.n_coefs}


@keras.saving.register_keras_serializable(package="ser")
class SpeakerDeviation(layers.Layer):
    """``[features (b, t, f), speaker (b, 2f + 1)] -> (b, 2f + 1)``: the segment's band means minus
    the speaker's, over the speaker's std; the log ratio of the segment's band std to the speaker's;
    and the statistics' weight (how much of them is the speaker's own voice)."""

    def call(self, inputs: Any) -> Any:
        x, spk = inputs
        f = x.shape[-1]
        mean, std, weight = spk[:, :f], spk[:, f : 2 * f], spk[:, 2 * f :]
        seg_mean = ops.mean(x, axis=1)
        seg_std = ops.sqrt(ops.mean(ops.square(x - seg_mean[:, None, :]), axis=1) + 1e-4)
        return ops.concatenate([(seg_mean - mean) / std, ops.log(seg_std / std), weight], axis=-1)


def build_model(
    *, n_frames: int, n_mels: int, n_labels: int, width: int = 16, rnn_units: int = 64,
    dropout: float = 0.3, seed: int = 0, cmn: bool = True, spectrum_coefs: int = 0, speaker: bool = False,
) -> Any:
    """Return an uncompiled ``keras.Model`` (two inputs, ``features`` and ``speaker``, when ``speaker``)."""
    keras.utils.set_random_seed(seed)

    def conv_block(x: Any, filters: int, pool: tuple[int, int], *, residual: bool, name: str) -> Any:
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        y = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(y)
        if residual:
            y = layers.Activation("relu", name=f"{name}_relu1")(y)
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
            y = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn2")(y)
            shortcut = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_proj")(x)
            y = layers.Add(name=f"{name}_add")([y, shortcut])
        y = layers.Activation("relu", name=f"{name}_relu")(y)
        y = layers.MaxPooling2D(pool, name=f"{name}_pool")(y)
        return layers.SpatialDropout2D(dropout / 3, name=f"{name}_drop")(y)

    inp = keras.Input(shape=(n_frames, n_mels), name="features")
    x = SegmentCMN(name="segment_cmn")(inp) if cmn else inp
    x = layers.Reshape((n_frames, n_mels, 1), name="to_image")(x)
    x = conv_block(x, width, (3, 2), residual=False, name="b1")
    x = conv_block(x, width * 2, (2, 2), residual=False, name="b2")
    x = conv_block(x, width * 4, (2, 2), residual=False, name="b3")
    x = conv_block(x, width * 4, (1, 2), residual=True, name="b4")
    t, f, c = x.shape[1], x.shape[2], x.shape[3]
    x = layers.Reshape((t, f * c), name="to_sequence")(x)
    x = layers.Dropout(dropout, name="seq_drop")(x)
    x = layers.Dense(128, activation="relu", name="seq_proj")(x)
    x = layers.Bidirectional(layers.LSTM(rnn_units, return_sequences=True), name="bilstm")(x)
    pooled = [layers.GlobalAveragePooling1D(name="mean_t")(x), layers.GlobalMaxPooling1D(name="max_t")(x)]
    if cmn:
        pooled.append(SegmentLevel(name="segment_level")(inp))
    if spectrum_coefs:
        pooled.append(SegmentSpectrum(spectrum_coefs, name="segment_spectrum")(inp))
    inputs = [inp]
    if speaker:
        spk = keras.Input(shape=(2 * n_mels + 1,), name="speaker")
        inputs.append(spk)
        d = SpeakerDeviation(name="speaker_deviation")([inp, spk])
        d = layers.Dropout(dropout / 2, name="speaker_drop")(d)
        pooled.append(layers.Dense(32, activation="relu", name="speaker_proj")(d))
    x = layers.Concatenate(name="pool")(pooled)
    x = layers.Dropout(dropout, name="head_drop")(x)
    x = layers.Dense(64, activation="relu", name="head")(x)
    out = layers.Dense(n_labels, activation="softmax", name="probs")(x)
    return keras.Model(inputs if speaker else inp, out, name="ser_cnn_lstm")


@keras.saving.register_keras_serializable(package="ser")
class GradientReversal(layers.Layer):
    """Identity forward; the gradient is multiplied by ``-scale`` on the way back (Ganin & Lempitsky,
    2015). ``scale`` is a non-trainable weight so that a schedule can raise it between epochs.
    ``stop_gradient(x * (1 + s)) - s * x`` is ``x`` forward and has gradient ``-s``: no custom gradient,
    so it works on every Keras backend."""

    def build(self, input_shape: Any) -> None:
        self.scale = self.add_weight(shape=(), initializer="zeros", trainable=False, name="scale")

    def call(self, x: Any) -> Any:
        s = ops.cast(self.scale, x.dtype)
        return ops.stop_gradient(x * (1.0 + s)) - s * x


def with_corpus_adversary(model: Any, *, n_corpora: int, units: int = 64, dropout: float = 0.3) -> tuple[Any, Any]:
    """A training model with a second output, ``corpus`` ``(b, n_corpora)``: a small classifier of the
    training corpus fed by the ``head`` layer through a :class:`GradientReversal`. Trained jointly, the
    adversary learns to tell the corpora apart while the shared layers learn to make that hard, so the
    label head cannot lean on a corpus's recording conditions. ``model`` (the label classifier, which is
    what is exported) shares every layer; returns ``(trainer, reversal layer)``."""
    if n_corpora < 2:
        raise ValueError(f"n_corpora must be >= 2 for a corpus adversary, got {n_corpora}")
    reversal = GradientReversal(name="corpus_reversal")
    z = reversal(model.get_layer("head").output)
    z = layers.Dense(units, activation="relu", name="corpus_hidden")(z)
    z = layers.Dropout(dropout, name="corpus_drop")(z)
    corpus = layers.Dense(n_corpora, activation="softmax", name="corpus")(z)
    return keras.Model(model.inputs, [model.output, corpus], name="ser_cnn_lstm_adversarial"), reversal


def adversary_scale(epoch: int, epochs: int, *, weight: float) -> float:
    """DANN's ramp: ``weight * (2 / (1 + exp(-10 p)) - 1)`` with ``p = epoch / epochs`` (0 at the start,
    near ``weight`` after the first third), so the adversary only pushes once the features exist."""
    p = epoch / max(epochs, 1)
    return float(weight * (2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0))
