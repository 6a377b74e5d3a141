"""Evaluate a bundle through the full serving path (:meth:`models.runtime.EmotionModel.predict_clip`).

One CSV row per file (``path,corpus,speaker,true_label,pred_label,confidence,p_<label>…``) and a
JSON report with UAR / WA / macro-F1 / confusion matrix per corpus and overall, plus a
confusion-matrix PNG beside the report.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.audio import decode, to_mono
from models.errors import SERError
from models.runtime import EmotionModel
from training.augment import telephone as telephone_channel
from training.corpora import Item
from training.metrics import scores

CSV_FIXED = ["path", "corpus", "speaker", "true_label", "pred_label", "confidence"]


def csv_columns(labels: tuple[str, ...]) -> list[str]:
    return CSV_FIXED + [f"p_{label}" for label in labels]


def evaluate_items(model: EmotionModel, items: list[Item], *, telephone: bool = False, progress: bool = True
                   ) -> tuple[list[dict[str, object]], list[tuple[str, str]]]:
    """Classify every item; returns CSV rows and failures ``(path, reason)``."""
    sr = model.spec.sample_rate
    rows, fails = [], []
    for it in tqdm(items, desc="evaluating" + (" (telephone)" if telephone else ""), unit="clip",
                   disable=not progress, mininterval=2):
        try:
            y, _ = decode(it.path, sr=sr)
            y = to_mono(y)
            if telephone:
                y = telephone_channel(y, sr=sr)
            probs, _ = model.predict_clip(y)
        except SERError as exc:
            fails.append((it.path, str(exc)))
            continue
        k = int(np.argmax(probs))
        row: dict[str, object] = {"path": it.path, "corpus": it.corpus, "speaker": it.speaker,
                                  "true_label": it.label, "pred_label": model.labels[k],
                                  "confidence": round(float(probs[k]), 6)}
        for label, p in zip(model.labels, probs, strict=True):
            row[f"p_{label}"] = round(float(p), 6)
        rows.append(row)
    return rows, fails


def report(rows: list[dict[str, object]], labels: tuple[str, ...], **extra: object) -> dict[str, object]:
    """Metrics per corpus and overall."""
    groups: dict[str, list[dict[str, object]]] = defaultdict(list)
    for r in rows:
        groups[str(r["corpus"])].append(r)
    per = {c: scores([str(r["true_label"]) for r in g], [str(r["pred_label"]) for r in g], labels)
           for c, g in sorted(groups.items())}
    overall = scores([str(r["true_label"]) for r in rows], [str(r["pred_label"]) for r in rows], labels)
    return {**extra, "labels": list(labels), "corpora": per, "overall": overall}


def write_csv(path: Path, rows: list[dict[str, object]], labels: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=csv_columns(labels))
        writer.writeheader()
        writer.writerows(rows)


def plot_confusion(path: Path, rep: dict[str, object], title: str) -> None:
    """One normalised confusion matrix per corpus plus overall, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rep["labels"])  # type: ignore[arg-type]
    panels = [("overall", rep["overall"])] + list(rep["corpora"].items())  # type: ignore[union-attr]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (name, sc) in zip(axes[0], panels, strict=True):
        cm = np.asarray(sc["confusion"], dtype=float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(range(len(labels)), [s[:3] for s in labels], fontsize=7)
        ax.set_yticks(range(len(labels)), [s[:3] for s in labels], fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(f"{name}: UAR {sc['uar']:.3f} (n={sc['n']})", fontsize=9)
        for i in range(len(labels)):
            for j in range(len(labels)):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_evaluation(model: EmotionModel, items: list[Item], *, predictions: Path, report_path: Path,
                   telephone: bool = False, progress: bool = True, **extra: object) -> dict[str, object]:
    """Evaluate, write CSV + JSON report + PNG (``<report stem>.png``); returns the report."""
    rows, fails = evaluate_items(model, items, telephone=telephone, progress=progress)
    rep = report(rows, model.labels, model=model.model_id, telephone=telephone,
                 failures=[{"path": p, "reason": r} for p, r in fails], **extra)
    write_csv(predictions, rows, model.labels)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(rep, indent=1) + "\n", encoding="utf-8")
    plot_confusion(report_path.with_suffix(".png"), rep,
                   f"{model.model_id}{' (telephone mu-law)' if telephone else ''}")
    return rep
