"""Train the head on the encoded cache and score it per version and corpus.

Selection uses validation speakers only (clip UAR over their clean and line-augmented versions);
test speakers and the left-out corpus are scored once, at the end, per evaluation version
(:data:`training.recipe.TEST_VERSIONS`), with a speaker bootstrap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.history import DEFAULT_MAX_SEGMENTS, DEFAULT_PRIOR_SEGMENTS, HistoryParams, shrunk_mean
from training.calibrate import calibrate, ece
from training.corpora import Item
from training.encode import load_version
from training.metrics import uar
from training.recipe import AUG_VERSIONS, TEST_VERSIONS, load_items

BOOTSTRAP = 1000


def run_parts(run: Path, items: list[Item]) -> dict[str, list[int]]:
    """The run's parts (train/val/test speakers, ``loco``: the left-out corpora) as clip indices."""
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    where = {s: p for p in ("train", "val", "test") for s in split[p]}
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": [], "loco": []}
    for i, it in enumerate(items):
        if it.corpus in split["hold_out"]:
            parts["loco"].append(i)
        elif it.speaker in where:
            parts[where[it.speaker]].append(i)
    return parts


def windows(run: Path, version: str, clips: list[int]) -> tuple[np.ndarray, np.ndarray]:
    x, owner = load_version(run / "cache", version)
    keep = np.isin(owner, np.asarray(clips))
    return x[keep], owner[keep]


def clip_probs(probs: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Window probabilities -> per clip mean ``(clips, labels)``, as ``predict_clip`` averages."""
    clips, inv = np.unique(owner, return_inverse=True)
    out = np.zeros((len(clips), probs.shape[1]))
    np.add.at(out, inv, probs)
    out /= np.bincount(inv)[:, None]
    return clips, out


#: Speaker-mean history (``--speaker-norm``; serving: :mod:`models.history`): a clip's history is up
#: to ``MAX_HISTORY`` other clips of its speaker, drawn label-blind; the mean is shrunk towards the
#: training prior with the weight of ``PRIOR_CLIPS`` clips; evaluation draws ``EVAL_HISTORY``.
MAX_HISTORY, EVAL_HISTORY, PRIOR_CLIPS = DEFAULT_MAX_SEGMENTS, 6, DEFAULT_PRIOR_SEGMENTS


def clip_embeddings(x: np.ndarray, owner: np.ndarray) -> dict[int, np.ndarray]:
    """Per clip: the mean over its windows and frames of the pooled encoder frames ``(384,)``."""
    clips, inv = np.unique(owner, return_inverse=True)
    sums = np.zeros((len(clips), x.shape[2]))
    np.add.at(sums, inv, x.astype(np.float32).mean(axis=1))
    sums /= np.bincount(inv)[:, None]
    return {int(c): sums[i] for i, c in enumerate(clips)}


def history_means(owner: np.ndarray, emb: dict[int, np.ndarray], speaker: np.ndarray, prior: np.ndarray, *,
                  rng: np.random.Generator, k: int | None) -> np.ndarray:
    """For each window, the shrunk mean embedding of ``k`` (None: 0..MAX_HISTORY) *other* clips of its
    clip's speaker, drawn label-blind: ``(windows, 384)``. Never the clip itself, never its label."""
    params = HistoryParams(prior=tuple(float(v) for v in prior), prior_segments=PRIOR_CLIPS, max_segments=MAX_HISTORY)
    by_spk: dict[str, list[int]] = {}
    for c in emb:
        by_spk.setdefault(str(speaker[c]), []).append(c)
    per_clip = {}
    for c in np.unique(owner):
        pool = [o for o in by_spk[str(speaker[c])] if o != c]
        n = int(rng.integers(0, MAX_HISTORY + 1)) if k is None else k
        pick = rng.choice(len(pool), size=min(n, len(pool)), replace=False) if pool else []
        past = np.stack([emb[pool[int(j)]] for j in pick]) if len(pick) else np.zeros((0, len(prior)))
        per_clip[int(c)] = shrunk_mean(past, params)  # the very function serving uses (models.history)
    return np.stack([per_clip[int(c)] for c in owner]).astype(np.float32)


def fit_head(run: Path, *, seed: int, labels: tuple[str, ...], kind: str = "cnn-lstm", epochs: int = 18,
             batch: int = 128, lr: float = 1e-3, speaker_norm: bool = False, log: Any = print
             ) -> tuple[Any, dict[str, Any]]:
    import keras

    from training.head import build_head
    from training.schedule import cosine_lr

    items = load_items(run)
    parts = run_parts(run, items)
    y_of = np.array([labels.index(it.label) for it in items])
    xs, owners = zip(*[windows(run, v, parts["train"]) for v in ["clean"] + [f"aug{k}" for k in range(AUG_VERSIONS)]],
                     strict=True)
    x_tr, o_tr = np.concatenate(xs), np.concatenate(owners)
    y_tr = y_of[o_tr]
    val = [windows(run, v, parts["val"]) for v in ("clean", "aug0")]
    spk = np.array([it.speaker for it in items])
    if speaker_norm:  # each version's own embeddings: a call's history shares its line
        embs = [clip_embeddings(xv, ov) for xv, ov in zip(xs, owners, strict=True)]
        prior = np.mean([e for em in embs for e in em.values()], axis=0)
        val_means = [history_means(ov, clip_embeddings(xv, ov), spk, prior, rng=np.random.default_rng(seed),
                                   k=EVAL_HISTORY) for xv, ov in val]
        val = [(xv.astype(np.float32) - m[:, None, :], ov) for (xv, ov), m in zip(val, val_means, strict=True)]
    counts = np.bincount(y_tr, minlength=len(labels)).astype(np.float64)
    class_weight = {k: float(len(y_tr) / (len(labels) * c)) for k, c in enumerate(counts) if c > 0}
    model = build_head(n_frames=x_tr.shape[1], width=x_tr.shape[2], n_labels=len(labels), seed=seed, kind=kind)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    log(f"seed {seed}: {len(x_tr)} training windows, {sum(len(v[0]) for v in val)} validation windows, "
        f"{model.count_params()} parameters")
    best, best_w, epoch_log = -1.0, None, []
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        t0 = time.time()
        model.optimizer.learning_rate.assign(cosine_lr(lr, epoch, epochs))
        perm = rng.permutation(len(x_tr))
        xe = x_tr[perm].astype(np.float32)
        if speaker_norm:
            means = np.concatenate([history_means(owners[v], embs[v], spk, prior, rng=rng, k=None)
                                    for v in range(len(owners))])
            xe -= means[perm][:, None, :]
        h = model.fit(xe, y_tr[perm], batch_size=batch, epochs=1, verbose=0, class_weight=class_weight)
        del xe
        score = float(np.mean([uar(y_of[c], p.argmax(1), len(labels))
                               for c, p in (clip_probs(predict(model, xv), ov) for xv, ov in val)]))
        epoch_log.append({"epoch": epoch, "loss": round(float(h.history["loss"][-1]), 4), "val_uar": round(score, 4),
                        "seconds": round(time.time() - t0, 1)})
        log(f"seed {seed} epoch {epoch}: loss {epoch_log[-1]['loss']} val UAR {score:.3f} "
            f"({epoch_log[-1]['seconds']} s)")
        if score > best:
            best, best_w = score, model.get_weights()
    model.set_weights(best_w)
    info = {"seed": seed, "kind": kind, "epochs": epochs, "best_val_uar": round(best, 4), "epoch_log": epoch_log,
            "train_windows": int(len(x_tr)), "speaker_norm": speaker_norm}
    if speaker_norm:
        info["prior"] = [round(float(v), 5) for v in prior]
    return model, info


def predict(model: Any, x: np.ndarray, *, batch: int = 512) -> np.ndarray:
    return np.concatenate([np.asarray(model(x[i : i + batch].astype(np.float32), training=False))
                           for i in range(0, len(x), batch)]) if len(x) else np.zeros((0, model.output_shape[-1]))


def bootstrap(y: np.ndarray, pred: np.ndarray, speakers: np.ndarray, n_labels: int, *, seed: int = 0
              ) -> tuple[float, float]:
    """95 % speaker-bootstrap interval of the UAR (speakers drawn with replacement)."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(speakers)
    idx = {s: np.flatnonzero(speakers == s) for s in uniq}
    vals = []
    for _ in range(BOOTSTRAP):
        pick = np.concatenate([idx[s] for s in rng.choice(uniq, size=len(uniq))])
        vals.append(uar(y[pick], pred[pick], n_labels))
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def score_run(run: Path, model: Any, *, labels: tuple[str, ...], temperature: float = 1.0,
              prior: np.ndarray | None = None) -> dict[str, Any]:
    """Clip-level UAR, interval, ECE, worst speaker per corpus and version on test speakers and ``loco``."""
    from models.bundle import Calibration

    items = load_items(run)
    parts = run_parts(run, items)
    cal = Calibration(temperature=temperature)
    out: dict[str, Any] = {}
    for version in TEST_VERSIONS:
        x, owner = windows(run, version, parts["test"] + parts["loco"])
        if not len(x):
            continue
        if prior is not None:  # the speaker-mean lever: 6 other clips of the speaker, same condition
            spk_all = np.array([it.speaker for it in items])
            x = x.astype(np.float32) - history_means(owner, clip_embeddings(x, owner), spk_all, prior,
                                                     rng=np.random.default_rng(0), k=EVAL_HISTORY)[:, None, :]
        clips, p = clip_probs(predict(model, x), owner)
        p = cal.apply(p.astype(np.float32))
        y = np.array([labels.index(items[c].label) for c in clips])
        corpus = np.array([items[c].corpus for c in clips])
        spk = np.array([items[c].speaker for c in clips])
        for name in sorted(set(corpus)):
            sel = corpus == name
            pred = p[sel].argmax(1)
            per_spk = {s: uar(y[sel][spk[sel] == s], pred[spk[sel] == s], len(labels)) for s in np.unique(spk[sel])}
            worst = min(per_spk, key=lambda s: per_spk[s])
            lo, hi = bootstrap(y[sel], pred, spk[sel], len(labels))
            out.setdefault(name, {})[version] = {
                "uar": round(uar(y[sel], pred, len(labels)), 4), "ci95": [round(lo, 4), round(hi, 4)],
                "ece": round(ece(p[sel], y[sel]), 4), "clips": int(sel.sum()), "speakers": len(per_spk),
                "worst_speaker": [worst, round(per_spk[worst], 4)]}
    return out


#: Validation precision the 3.x ``uncertain`` threshold is chosen for: 2.0.0's 0.6 flags nothing here
#: (this model is right on more than 0.6 of every validation confidence band).
V3_PRECISION = 0.75


def calibration_of(run: Path, model: Any, *, labels: tuple[str, ...], precision: float = V3_PRECISION,
                   prior: np.ndarray | None = None) -> tuple[Any, dict[str, float]]:
    """Temperature and ``uncertain`` threshold fitted on validation speakers' clean and augmented clips
    (one segment each, mostly: a clip's probability is its segments' mean, as a turn's is).
    ``prior``: a speaker-mean model, fed a label-blind history of ``EVAL_HISTORY`` other clips."""
    items = load_items(run)
    parts = run_parts(run, items)
    spk = np.array([it.speaker for it in items])
    ps, ys = [], []
    for version in ("clean", "aug0"):
        x, owner = windows(run, version, parts["val"])
        if prior is not None:
            x = x.astype(np.float32) - history_means(owner, clip_embeddings(x, owner), spk, prior,
                                                     rng=np.random.default_rng(0), k=EVAL_HISTORY)[:, None, :]
        clips, p = clip_probs(predict(model, x), owner)
        ps.append(p)
        ys.append(np.array([labels.index(items[c].label) for c in clips]))
    return calibrate(np.concatenate(ps).astype(np.float32), np.concatenate(ys), precision=precision)
