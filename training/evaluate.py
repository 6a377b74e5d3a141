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
from training.calibrate import ece
from training.corpora import Item
from training.lines import condition as line_condition
from training.metrics import scores

#: ``history``: how many earlier clips of the speaker the clip was heard with (as a record's ``history``
#: counts earlier segments; 0 for a model without one or ``--history none``).
CSV_FIXED = ["path", "corpus", "speaker", "true_label", "pred_label", "confidence", "history"]


def csv_columns(labels: tuple[str, ...]) -> list[str]:
    return CSV_FIXED + [f"p_{label}" for label in labels]


#: Channel conditions: what each test clip passes through before the serving path
#: (``training.cli.CONDITIONS`` repeats them for the CLI; a test keeps the two equal).
#: ``white20``/``white10``/``pink20``/``pink10``/``hum``: a noise floor at that SNR against active speech
#: (:mod:`training.lines`), seeded per clip.
CONDITIONS = ("clean", "telephone", "gsm", "opus8", "mp3", "white20", "white10", "pink20", "pink10", "hum")
#: What each clip is heard with by a bundle that takes a history (3.x: the embedding history; 2.x: the
#: speaker statistics of the clips it would hold), ignored by others:
#: ``none``: the clip alone (a single file); ``speaker``: plus :data:`HISTORY_CLIPS` other clips of
#: the same speaker, drawn without looking at labels; ``call``: generated calls (:func:`call_orders`),
#: each clip's history is what the call said before it, causally.
HISTORIES = ("none", "speaker", "call")
HISTORY_CLIPS = 6
#: Generated calls: ``CALL_NEUTRAL`` neutral clips and ``CALL_OTHER`` clips of other emotions per call.
CALL_NEUTRAL, CALL_OTHER = 8, 3


def channel(y: np.ndarray, *, sr: int, condition: str, seed: int = 0) -> np.ndarray:
    """``y`` through evaluation ``condition`` (:func:`training.lines.condition`, which the encoding cache
    of ``ser-train fit`` uses too; noise seeded by ``seed``)."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
    return line_condition(y, name=condition, sr=sr, seed=seed)


def call_orders(items: list[Item], *, seed: int) -> list[list[int]]:
    """Generated calls per speaker: every non-neutral clip appears once, in calls of ``CALL_OTHER``
    such clips among ``CALL_NEUTRAL`` neutral ones (drawn with replacement from the speaker's
    neutral clips), in random order: mostly neutral, as calls are."""
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, tuple[list[int], list[int]]] = {}
    for i, it in enumerate(items):
        neutral, other = by_speaker.setdefault(it.speaker, ([], []))
        (neutral if it.label == "neutral" else other).append(i)
    calls = []
    for speaker in sorted(by_speaker):
        neutral, other = by_speaker[speaker]
        other = [other[int(j)] for j in rng.permutation(len(other))]
        for k in range(0, max(len(other), 1), CALL_OTHER):
            chunk = other[k : k + CALL_OTHER]
            picks = [neutral[int(j)] for j in rng.integers(0, len(neutral), CALL_NEUTRAL)] if neutral else []
            order = chunk + picks
            calls.append([order[int(j)] for j in rng.permutation(len(order))])
    return calls


def history_part(model: EmotionModel, y: np.ndarray) -> np.ndarray:
    """What clip ``y`` adds to its speaker's history, in the form ``predict_clip``'s ``history`` takes:
    its voiced-frame sums (a bundle with speaker statistics) or its mean embedding ``(1, size)`` (a
    bundle with an embedding history, :mod:`models.history`)."""
    return model.clip_embeddings(y).mean(axis=0, keepdims=True) if model.uses_history else model.clip_sums(y)


def speaker_histories(speakers: list[str], sums: list[np.ndarray], *, rng: np.random.Generator,
                      stack: bool = False) -> list[tuple[np.ndarray, int]]:
    """The label-blind ``speaker`` history of each clip: the sum of the voiced-frame ``sums`` of
    :data:`HISTORY_CLIPS` other clips of its speaker (fewer if the speaker has fewer), drawn with
    ``rng``, and how many were drawn. The clip's own sums are not included. ``stack``: the drawn
    rows ``(m, size)`` stacked instead of summed (an embedding history, :mod:`models.history`)."""
    by_speaker: dict[str, list[int]] = {}
    for k, spk in enumerate(speakers):
        by_speaker.setdefault(spk, []).append(k)
    out = []
    for k, spk in enumerate(speakers):
        pool = [j for j in by_speaker[spk] if j != k]
        pick = rng.choice(len(pool), size=min(HISTORY_CLIPS, len(pool)), replace=False) if pool else []
        drawn = [sums[pool[int(j)]] for j in pick]
        if stack:
            out.append((np.concatenate(drawn) if drawn else np.zeros((0, sums[k].shape[-1])), len(pick)))
        else:
            out.append((sum(drawn, np.zeros_like(sums[k])), len(pick)))
    return out


def evaluate_items(model: EmotionModel, items: list[Item], *, telephone: bool = False, condition: str = "clean",
                   history: str = "none", seed: int = 0, progress: bool = True
                   ) -> tuple[list[dict[str, object]], list[tuple[str, str]]]:
    """Classify every item (``call`` history: every position of every generated call); returns CSV
    rows and failures ``(path, reason)``. ``telephone`` is the older spelling of ``condition="telephone"``."""
    if telephone:
        condition = "telephone"
    if history not in HISTORIES:
        raise ValueError(f"history must be one of {', '.join(HISTORIES)}, got {history!r}")
    sr = model.spec.sample_rate
    waves: dict[int, np.ndarray] = {}
    fails = []
    for k, it in enumerate(tqdm(items, desc=f"decoding ({condition})", unit="clip", disable=not progress,
                                mininterval=2)):
        try:
            waves[k] = channel(to_mono(decode(it.path, sr=sr)[0]), sr=sr, condition=condition, seed=seed + k)
            if len(waves[k]) < model.spec.segment.samples(sr)[2]:
                raise SERError(f"clip of {len(waves[k]) / sr:.2f} s is shorter than segment.min_s")
        except SERError as exc:
            waves.pop(k, None)
            fails.append((it.path, str(exc)))
    stack = model.uses_history  # an embedding history: each earlier clip adds its mean embedding (1, size)
    use_history = (model.uses_speaker or stack) and history != "none"
    sums = {k: history_part(model, y) for k, y in waves.items()} if use_history else {}
    rng = np.random.default_rng(seed)
    jobs: list[tuple[int, np.ndarray | None, int]] = []  # (item, history sums, clips in the history)
    if not use_history:
        jobs = [(k, None, 0) for k in waves]
    elif history == "speaker":
        keys = list(waves)
        hists = speaker_histories([items[k].speaker for k in keys], [sums[k] for k in keys], rng=rng, stack=stack)
        jobs = [(k, hist, n) for k, (hist, n) in zip(keys, hists, strict=True)]
    else:
        kept = [k for k in range(len(items)) if k in waves]
        for call in call_orders([items[k] for k in kept], seed=seed):
            first = next(iter(sums.values()))
            acc = np.zeros((0, first.shape[-1])) if stack else np.zeros_like(first)
            for n, pos in enumerate(call):
                k = kept[pos]
                jobs.append((k, acc.copy(), n))
                acc = np.concatenate([acc, sums[k]]) if stack else acc + sums[k]
    rows = []
    for k, hist, n_hist in tqdm(jobs, desc="evaluating", unit="clip", disable=not progress, mininterval=2):
        it = items[k]
        try:
            probs, _ = model.predict_clip(waves[k], history=hist)
        except SERError as exc:
            fails.append((it.path, str(exc)))
            continue
        best = int(np.argmax(probs))
        row: dict[str, object] = {"path": it.path, "corpus": it.corpus, "speaker": it.speaker,
                                  "true_label": it.label, "pred_label": model.labels[best],
                                  "confidence": round(float(probs[best]), 6), "history": n_hist}
        for label, p in zip(model.labels, probs, strict=True):
            row[f"p_{label}"] = round(float(p), 6)
        rows.append(row)
    return rows, fails


def report(rows: list[dict[str, object]], labels: tuple[str, ...], **extra: object) -> dict[str, object]:
    """Metrics per corpus and overall."""
    groups: dict[str, list[dict[str, object]]] = defaultdict(list)
    for r in rows:
        groups[str(r["corpus"])].append(r)
    def score(g: list[dict[str, object]]) -> dict[str, object]:
        sc = scores([str(r["true_label"]) for r in g], [str(r["pred_label"]) for r in g], labels)
        probs = np.array([[float(r[f"p_{lab}"]) for lab in labels] for r in g])  # type: ignore[arg-type]
        y = np.array([labels.index(str(r["true_label"])) for r in g])
        sc["ece"] = round(ece(probs, y), 4) if len(g) else 0.0
        return sc

    per = {c: score(g) for c, g in sorted(groups.items())}
    return {**extra, "labels": list(labels), "corpora": per, "overall": score(rows)}


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
                   telephone: bool = False, condition: str = "clean", history: str = "none", seed: int = 0,
                   progress: bool = True, **extra: object) -> dict[str, object]:
    """Evaluate, write CSV + JSON report + PNG (``<report stem>.png``); returns the report."""
    condition = "telephone" if telephone else condition
    rows, fails = evaluate_items(model, items, condition=condition, history=history, seed=seed, progress=progress)
    rep = report(rows, model.labels, model=model.model_id, telephone=condition == "telephone",
                 condition=condition, history=history if model.uses_speaker or model.uses_history else "n/a",
                 failures=[{"path": p, "reason": r} for p, r in fails], **extra)
    write_csv(predictions, rows, model.labels)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(rep, indent=1) + "\n", encoding="utf-8")
    plot_confusion(report_path.with_suffix(".png"), rep,
                   f"{model.model_id} ({condition}, history {history})")
    return rep
