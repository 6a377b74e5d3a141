"""The learning-rate schedule of the head's training: cosine decay to a floor."""

from __future__ import annotations

import numpy as np


def cosine_lr(base: float, epoch: int, epochs: int, *, floor: float = 0.02) -> float:
    """Cosine decay from ``base`` to ``floor * base`` over ``epochs`` (epoch 0 gets ``base``)."""
    frac = epoch / max(epochs - 1, 1)
    return float(base * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * frac))))
