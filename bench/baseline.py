"""A seed-style baseline on the same audio: separate librosa calls per segment (the "kitchen
sink": mfcc, chroma_stft, melspectrogram, spectral_contrast, tonnetz (from the STFT chroma), zcr,
rms, spectral_centroid, rolloff) stacked into an 82 x 64 image, then a per-segment Keras ``model.predict`` of a residual
Conv2D CNN with Dense 256/128 (random weights: cost, not accuracy). Keras/TensorFlow are imported
only here; without TensorFlow the baseline is skipped."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from bench.load import segment_pool

#: Image the seed fed its CNN: 82 feature rows x 64 frames.
ROWS, FRAMES = 82, 64


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("keras") is not None


def kitchen_sink(y: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    hop = 375  # 65 frames of 3 s at 8 kHz, cropped to 64
    chroma = librosa.feature.chroma_stft(y=y, sr=sr, hop_length=hop)
    feats = [
        librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40, hop_length=hop),
        chroma,
        librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=13, hop_length=hop)),
        librosa.feature.spectral_contrast(y=y, sr=sr, hop_length=hop, fmin=100.0, n_bands=6),
        # tonnetz from the STFT chroma: librosa's default (CQT chroma, 7 octaves) cannot run at 8 kHz,
        # and the CQT variant (with harmonic separation) costs 55-130 ms more per segment; the cheaper choice
        # keeps the baseline conservative (faster than the seed).
        librosa.feature.tonnetz(sr=sr, chroma=chroma),
        librosa.feature.zero_crossing_rate(y, hop_length=hop),
        librosa.feature.rms(y=y, hop_length=hop),
        librosa.feature.spectral_centroid(y=y, sr=sr, hop_length=hop),
        librosa.feature.spectral_rolloff(y=y, sr=sr, hop_length=hop),
    ]
    n = min(f.shape[1] for f in feats)
    img = np.concatenate([f[:, :n] for f in feats], axis=0)
    out = np.zeros((ROWS, FRAMES), dtype=np.float32)
    out[: img.shape[0], : min(n, FRAMES)] = img[:ROWS, :FRAMES]
    return out


def seed_model(n_labels: int) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from keras import layers

    inp = keras.Input((ROWS, FRAMES, 1))
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
    r = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    r = layers.Conv2D(32, 3, padding="same")(r)
    x = layers.Activation("relu")(layers.Add()([x, r]))
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    r = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    r = layers.Conv2D(64, 3, padding="same")(r)
    x = layers.Activation("relu")(layers.Add()([x, r]))
    x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dense(128, activation="relu")(x)
    out = layers.Dense(n_labels, activation="softmax")(x)
    return keras.Model(inp, out)


def baseline_rate(*, sr: int, window: int, n_labels: int, seconds: float) -> tuple[float, float, float]:
    """``(segments/s, features ms, predict ms)`` per segment, one segment at a time."""
    model = seed_model(n_labels)
    pool = segment_pool(window)
    for y in pool[:2]:  # librosa's lazy imports, Keras' first-call tracing
        model.predict(kitchen_sink(y, sr)[None, :, :, None], verbose=0)
    feat_s = pred_s = 0.0
    done = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or done < 3:
        y = pool[done % len(pool)]
        a = time.perf_counter()
        x = kitchen_sink(y, sr)
        b = time.perf_counter()
        model.predict(x[None, :, :, None], verbose=0)
        pred_s += time.perf_counter() - b
        feat_s += b - a
        done += 1
    total = time.perf_counter() - t0
    return done / total, 1000 * feat_s / done, 1000 * pred_s / done
