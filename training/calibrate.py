"""Confidence that means something: temperature scaling, the ``uncertain`` threshold, and ECE.

Both are fitted on the *validation speakers'* segments (never on test speakers), on the
probabilities each segment gets in serving: a result record is one segment.

- :func:`fit_temperature`: the ``T`` minimising the negative log-likelihood of
  ``softmax(log p / T)`` (a 1-D search; ``T > 1`` softens an over-confident network).
- :func:`uncertain_threshold`: the lowest calibrated confidence ``c`` such that the segments at or
  above ``c`` are right at least ``precision`` of the time; records below ``c`` are flagged
  ``uncertain``.
- :func:`ece`: expected calibration error with equal-width confidence bins.
"""

from __future__ import annotations

import numpy as np

from models.bundle import Calibration

#: The precision the ``uncertain`` threshold is chosen for: segments at or above it are right at
#: least this often on validation speakers.
TARGET_PRECISION = 0.6
#: Equal-width confidence bins of :func:`ece`.
ECE_BINS = 15


def nll(probs: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = Calibration(temperature=temperature).apply(probs)
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """Temperature in [0.25, 8] minimising the NLL of ``probs`` ``(k, n_labels)`` for labels ``y`` ``(k,)``."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
    best = min(grid, key=lambda t: nll(probs, y, float(t)))
    fine = np.exp(np.linspace(np.log(best) - 0.06, np.log(best) + 0.06, 25))
    return round(float(min(fine, key=lambda t: nll(probs, y, float(t)))), 4)


def uncertain_threshold(probs: np.ndarray, y: np.ndarray, *, precision: float = TARGET_PRECISION) -> float:
    """Lowest confidence ``c`` with accuracy >= ``precision`` among segments whose confidence >= ``c``
    (probs already calibrated). Returns 0 when every segment already meets it, and the highest
    confidence seen when none does."""
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == y
    order = np.argsort(-conf)
    acc = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    ok = np.nonzero(acc >= precision)[0]
    if len(ok) == 0:
        return round(float(conf.max()), 4)
    k = ok[-1]
    return 0.0 if k == len(order) - 1 else round(float(conf[order[k]]), 4)


def ece(probs: np.ndarray, y: np.ndarray, *, bins: int = ECE_BINS) -> float:
    """Expected calibration error of ``probs`` ``(k, n_labels)`` against labels ``y``."""
    if len(y) == 0:
        return 0.0
    conf = probs.max(axis=1)
    right = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(right[sel].mean() - conf[sel].mean())
    return float(total)


def calibrate(probs: np.ndarray, y: np.ndarray, *, precision: float = TARGET_PRECISION
              ) -> tuple[Calibration, dict[str, float]]:
    """Fit the temperature and the threshold on validation segments; returns the calibration and a
    summary (ECE before/after, the share of validation segments flagged uncertain)."""
    t = fit_temperature(probs, y)
    cal = Calibration(temperature=t)
    p = cal.apply(probs)
    c = uncertain_threshold(p, y, precision=precision)
    conf = p.max(axis=1)
    keep = conf >= c
    summary = {
        "temperature": t, "uncertain_below": c, "target_precision": precision, "segments": int(len(y)),
        "val_ece_before": round(ece(probs, y), 4), "val_ece_after": round(ece(p, y), 4),
        "val_uncertain_share": round(float(1 - keep.mean()), 4),
        "val_precision_confident": round(float((p.argmax(axis=1) == y)[keep].mean()) if keep.any() else 0.0, 4),
    }
    return Calibration(temperature=t, uncertain_below=c), summary
