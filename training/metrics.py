"""UAR (balanced accuracy), WA (accuracy), macro-F1 and the confusion matrix.

UAR and macro-F1 average over the labels that occur in the ground truth (a corpus without
``surprised`` is not penalised for it), while predictions range over every model label
(open-set argmax): a clip predicted ``surprised`` in CREMA-D simply counts as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(true: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(true, pred, strict=True):
        cm[index[t], index[p]] += 1
    return cm


def scores(true: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, object]:
    """``{"n", "uar", "wa", "macro_f1", "recall": {label: r}, "labels", "confusion"}`` (rows = truth)."""
    cm = confusion(true, pred, labels)
    support = cm.sum(axis=1)
    present = support > 0
    tp = np.diag(cm).astype(float)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    n = int(cm.sum())
    return {
        "n": n,
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "wa": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "recall": {label: float(recall[i]) for i, label in enumerate(labels) if present[i]},
        "labels": list(labels),
        "confusion": cm.tolist(),
    }


def uar(true_idx: np.ndarray, pred_idx: np.ndarray, n_labels: int) -> float:
    """UAR on integer labels (used per epoch for early stopping)."""
    recalls = [float(np.mean(pred_idx[true_idx == k] == k)) for k in range(n_labels) if np.any(true_idx == k)]
    return float(np.mean(recalls)) if recalls else 0.0
