"""Do prosodic clip statistics add to the network? A linear probe on held-out speakers.

Features per clip (the speech the serving segmenter keeps): log-f0 (YIN, on frames within 25 dB of
the clip's loudest), RMS level, spectral centroid / flatness / rolloff, zero-crossing rate: mean,
std, 10/50/90th percentiles and slope. Per-speaker z-normalisation uses the statistics of 6 other
clips of the speaker drawn without labels (as evaluation's "speaker" history). Logistic regression
on the training speakers; UAR per corpus on the test speakers; fused with a run's per-clip test
probabilities (geometric mean, fixed weight 0.5: no tuning on test speakers).

    PYTHONPATH=. python docs/experiments/prosody_probe.py runs/s7 runs/s1234/eval/test_clean.csv

RUN_DIR: a ``ser-train fit`` run of the default recipe (its ``waves.npz``, ``speech.npz`` and
``split.json``; the features are cached there as ``prosody.npy``); EVAL_CSV: a run's
``eval/test_clean.csv`` on the same split. An experiment, not part of the package (results:
docs/measurements.md, "Prosodic statistics: a linear probe").
"""

import csv
import json
import sys
from pathlib import Path

import librosa
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from training.corpora import load_corpora, parse_data_args
from training.data import load_waves

SR = 8000
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
D = "../shared/data"


def stats(v: np.ndarray) -> list[float]:
    if len(v) < 2:
        return [0.0] * 6
    t = np.linspace(0, 1, len(v))
    slope = float(np.polyfit(t, v, 1)[0])
    return [float(np.mean(v)), float(np.std(v)), *map(float, np.percentile(v, [10, 50, 90])), slope]


def clip_features(y: np.ndarray) -> np.ndarray:
    y = y.astype(np.float32) / 32768.0 if y.dtype == np.int16 else y.astype(np.float32)
    hop, n_fft = 80, 512
    rms = librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop)[0]
    db = 20 * np.log10(np.maximum(rms, 1e-6))
    voiced = db > db.max() - 25
    f0 = librosa.yin(y, fmin=60, fmax=400, sr=SR, frame_length=n_fft, hop_length=hop)
    n = min(len(f0), len(voiced))
    lf0 = np.log(f0[:n][voiced[:n]])
    S = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    cen = librosa.feature.spectral_centroid(S=S, sr=SR)[0][voiced[: S.shape[1]]]
    flat = np.log(librosa.feature.spectral_flatness(S=S)[0] + 1e-6)[voiced[: S.shape[1]]]
    roll = librosa.feature.spectral_rolloff(S=S, sr=SR)[0][voiced[: S.shape[1]]]
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop)[0][voiced[: len(db)]]
    dd = np.diff(db[voiced])
    return np.array(stats(lf0) + stats(db[voiced]) + stats(cen) + stats(flat) + stats(roll) + stats(zcr)
                    + [float(np.mean(voiced)), float(np.std(dd)) if len(dd) else 0.0, len(y) / SR])


def uar(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean([np.mean(p[y == k] == k) for k in np.unique(y)]))


def main(run: Path, eval_csv: Path) -> None:
    data = tuple(f"{c}={D}/{c}" for c in ("cremad", "ravdess", "tess", "savee"))
    items = load_corpora(parse_data_args(data, None), LABELS).items
    store, items, _ = load_waves(items, sr=SR, cache=run / "waves.npz", progress=False)
    split = json.loads((run / "split.json").read_text())
    part = {s: k for k in ("train", "val", "test") for s in split[k]}
    bounds = np.load(run / "speech.npz")["bounds"]
    cache = run / "prosody.npy"
    if cache.is_file():
        feats = np.load(cache)
    else:
        feats = np.array([clip_features(store.get(i)[int(bounds[i][0]):int(bounds[i][1])]
                                        if bounds[i][1] > bounds[i][0] else store.get(i)) for i in range(len(items))])
        feats = np.nan_to_num(feats)
        np.save(cache, feats)
    spk = np.array([it.speaker for it in items])
    y = np.array([LABELS.index(it.label) for it in items])
    corp = np.array([it.corpus for it in items])
    def znorm(p_neutral: float | None) -> np.ndarray:
        """Each clip against itself + 6 other clips of its speaker: drawn without labels (None), or
        each neutral with probability p_neutral (a call's mostly neutral history)."""
        rng = np.random.default_rng(0)
        normed = feats.copy()
        for s in np.unique(spk):
            idx = np.flatnonzero(spk == s)
            for i in idx:
                others = idx[idx != i]
                if p_neutral is None:
                    pick = rng.choice(others, size=min(6, len(others)), replace=False)
                else:
                    neu, oth = others[y[others] == 0], others[y[others] != 0]
                    pick = np.array([rng.choice(neu) if (rng.random() < p_neutral and len(neu)) or not len(oth)
                                     else rng.choice(oth) for _ in range(6)])
                ref = feats[np.concatenate([[i], pick])]
                normed[i] = (feats[i] - ref.mean(0)) / (ref.std(0) + 1e-3)
        return normed

    normed, called = znorm(None), znorm(0.6)
    parts = np.array([part.get(s, "none") for s in spk])
    tr, te = parts == "train", parts == "test"
    rows = {r["path"]: r for r in csv.DictReader(open(eval_csv))}
    for name, X in (("raw", feats), ("speaker-z", normed), ("speaker-z, mostly neutral history", called),
                    ("both", np.hstack([feats, normed]))):
        sc = StandardScaler().fit(X[tr])
        lr = LogisticRegression(max_iter=3000, C=0.3, class_weight="balanced").fit(sc.transform(X[tr]), y[tr])
        pr = lr.predict_proba(sc.transform(X[te]))
        full = np.zeros((len(pr), len(LABELS)))
        full[:, lr.classes_] = pr
        paths = [items[i].path for i in np.flatnonzero(te)]
        have = np.array([p in rows for p in paths])
        net = np.array([[float(rows[p][f"p_{lab}"]) for lab in LABELS] if p in rows else [1 / 7] * 7 for p in paths])
        fused = np.exp(0.5 * np.log(full + 1e-6) + 0.5 * np.log(net + 1e-6))
        out = {}
        for c in ("cremad", "ravdess", "savee"):
            m = (corp[te] == c) & have
            out[c] = (round(uar(y[te][m], full[m].argmax(1)), 3), round(uar(y[te][m], net[m].argmax(1)), 3),
                      round(uar(y[te][m], fused[m].argmax(1)), 3))
        print(name, "(probe, network, fused):", out, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
