"""The schedule of a training run: cosine learning rate, early stopping over the second half, and the
moving average of weights that may be kept instead of the raw epoch."""

from __future__ import annotations

import numpy as np


class WeightAverage:
    """Exponential moving average of a model's weights over epochs (``decay`` per epoch), from epoch
    ``start`` on: the second half of the cosine schedule, where consecutive epochs stay in one basin.
    Averaging the weights of neighbouring epochs (as SWA does) smooths out the epoch-to-epoch wander
    of the validation score; batch-norm statistics are averaged like the weights."""

    def __init__(self, *, decay: float, start: int) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay, self.start = decay, start
        self.weights: list[np.ndarray] = []
        self.count = 0

    def update(self, epoch: int, weights: list[np.ndarray]) -> bool:
        """Fold in epoch ``epoch``'s weights (1-based); True once the average holds two or more epochs."""
        if epoch < self.start or self.decay == 0.0:
            return False
        if not self.weights:
            self.weights = [np.array(w, dtype=np.float64) for w in weights]
        else:
            for avg, w in zip(self.weights, weights, strict=True):
                avg *= self.decay
                avg += (1.0 - self.decay) * w
        self.count += 1
        return self.count >= 2


class EarlyStopping:
    """Track the best epoch by validation score over the second half of an ``epochs``-long schedule, and
    :attr:`stop` once it has not improved for ``patience`` epochs there. Epochs of the first half run at
    a high learning rate, where validation scores wander: they are neither kept nor counted (a run that
    could keep them picked a lucky epoch 21 of 68, validation UAR 0.573, that scored 0.47 on CREMA-D
    test speakers)."""

    def __init__(self, *, epochs: int, patience: int, min_delta: float = 1e-4) -> None:
        self.epochs, self.patience, self.min_delta = epochs, patience, min_delta
        self.best, self.best_epoch, self.since, self.stop = -1.0, -1, 0, False

    @property
    def start(self) -> int:
        """The first epoch (1-based) of the second half: the first that can be kept."""
        return self.epochs // 2 + 1

    def update(self, epoch: int, score: float) -> bool:
        """Record epoch ``epoch`` (1-based); True when it is the new best."""
        if epoch < self.start:
            return False
        if score > self.best + self.min_delta:
            self.best, self.best_epoch, self.since = score, epoch, 0
            return True
        self.since += 1
        self.stop = self.since >= self.patience
        return False


def cosine_lr(base: float, epoch: int, epochs: int, *, floor: float = 0.02) -> float:
    """Cosine decay from ``base`` to ``floor * base`` over ``epochs`` (epoch 0 gets ``base``)."""
    frac = epoch / max(epochs - 1, 1)
    return float(base * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * frac))))
