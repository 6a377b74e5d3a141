"""The training recipe: load -> decode (cached) -> split by speaker -> normalisation stats ->
augmented epochs -> early stopping on validation UAR -> ONNX export + parity -> bundle.

Everything the model sees is computed with the serving functions (:func:`models.features.segment`,
:func:`models.features.logmel`); augmentation touches training clips only.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from models.bundle import Spec
from models.features import FeatureParams, SegmentParams, VadParams, logmel
from models.speaker import SpeakerParams, stats_vector
from models.utterances import clip_windows
from models.vad import SileroParams
from training import CORPUS_SHARES, DEFAULT_CORPUS_SHARE, MODEL_NAME, MODEL_VERSION
from training.augment import AugmentConfig, augment_example, spec_augment
from training.corpora import Item
from training.data import WaveStore
from training.history import Histories, HistoryConfig, clip_sums, gain_shift, segment_sums
from training.metrics import uar
from training.schedule import EarlyStopping, WeightAverage, cosine_lr

#: Down-weight TESS in the balanced sampler: two speakers, 200 words, very easy, 2800 clips.
CORPUS_WEIGHT = {"tess": 0.5}


@dataclass
class FitConfig:
    labels: tuple[str, ...]
    seed: int = 1234
    epochs: int = 68
    patience: int = 10
    average_decay: float = 0.75
    corpus_share: str = DEFAULT_CORPUS_SHARE
    batch_size: int = 32
    epoch_size: int = 4096
    lr: float = 1e-3
    label_smoothing: float = 0.1
    width: int = 16
    rnn_units: int = 64
    spectrum_coefs: int = 0
    dropout: float = 0.3
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    spec_augment: bool = True
    corpus_adversary: float = 0.0
    teacher: str | None = None
    distill_weight: float = 0.5
    speaker: bool = False
    vad: str = "silero"
    history: HistoryConfig = field(default_factory=HistoryConfig)
    threads: int = 2
    progress: bool = True
    name: str = MODEL_NAME
    version: str = MODEL_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in {"augment", "progress", "threads"}}
        out["labels"] = list(self.labels)
        out["augment"] = self.augment.to_dict()
        out["history"] = self.history.to_dict()
        return out


#: Segments of utterance-aligned bundles (``--vad silero``, the default): at least 0.8 s, 3 s windows
#: every 1.5 s inside long utterances (see :mod:`models.utterances`).
UTTERANCE_SEGMENT = SegmentParams(window_s=3.0, hop_s=1.5, min_s=0.8)
#: ``--vad`` choices: Silero + utterance segments, or the 1.x energy gate + fixed 3 s windows.
VADS = ("silero", "energy")


def base_spec(labels: tuple[str, ...], mean: np.ndarray, std: np.ndarray, *, name: str, version: str,
              info: dict[str, Any] | None = None, speaker: SpeakerParams | None = None,
              vad: str = "silero") -> Spec:
    if vad not in VADS:
        raise ValueError(f"vad must be one of {', '.join(VADS)}, got {vad!r}")
    segment, vad_params = ((UTTERANCE_SEGMENT, SileroParams()) if vad == "silero"
                           else (SegmentParams(), VadParams()))
    return Spec(name=name, version=version, labels=labels, sample_rate=8000, segment=segment,
                features=FeatureParams(), vad=vad_params, norm_mean=mean.astype(np.float32),
                norm_std=std.astype(np.float32), speaker=speaker, info=info or {})


def speaker_tables(store: WaveStore, items: list[Item], parts: dict[str, list[int]], spec: Spec,
                   cfg: HistoryConfig) -> tuple[SpeakerParams, Histories]:
    """The prior of the speaker statistics (voiced training frames, pooled) and every training and
    validation clip's voiced-frame sums, clean and narrowband, for drawing histories."""
    idx = parts["train"] + parts["val"]
    mean, std = spec.norm_mean, spec.norm_std

    def featurize(segs: np.ndarray) -> np.ndarray:
        return ((features(segs, spec) - mean) / std).astype(np.float32)

    probe = replace_speaker(spec, SpeakerParams(prior_mean=(0.0,) * len(mean), prior_std=(1.0,) * len(mean)))
    clean = clip_sums(store, idx, probe, featurize, narrowband=False)
    narrow = clip_sums(store, idx, probe, featurize, narrowband=True)
    f = len(mean)
    tot = clean[: len(parts["train"])].sum(axis=0)
    pm = tot[:f] / tot[-1]
    ps = np.sqrt(np.maximum(tot[f : 2 * f] / tot[-1] - pm * pm, 1e-4))
    params = SpeakerParams(prior_mean=tuple(float(v) for v in pm), prior_std=tuple(float(v) for v in ps))
    return params, Histories(items, idx, clean, narrow, cfg)


def replace_speaker(spec: Spec, speaker: SpeakerParams | None) -> Spec:
    from dataclasses import replace

    return replace(spec, speaker=speaker)


def clip_segments(y: np.ndarray, spec: Spec) -> np.ndarray:
    """The segments serving would classify for this clip (voiced ones, or all when none is)."""
    return clip_windows(y=y, spec=spec)


def features(segs: np.ndarray, spec: Spec, *, chunk: int = 512) -> np.ndarray:
    out = [logmel(y=segs[i : i + chunk], sr=spec.sample_rate, params=spec.features)
           for i in range(0, len(segs), chunk)]
    return np.concatenate(out) if out else np.zeros((0, spec.n_frames, spec.features.n_mels), np.float32)


def norm_stats(store: WaveStore, idx: list[int], spec: Spec, *, rng: np.random.Generator, max_clips: int = 2000
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-band mean/std of the clean serving-path features of (a sample of) the training clips."""
    pick = idx if len(idx) <= max_clips else sorted(rng.choice(idx, max_clips, replace=False).tolist())
    segs = [clip_segments(store.get(i), spec) for i in pick]
    feats = features(np.concatenate([s for s in segs if len(s)]), spec)
    flat = feats.reshape(-1, feats.shape[-1]).astype(np.float64)
    return flat.mean(axis=0), np.maximum(flat.std(axis=0), 1e-3)


class ClipSet:
    """Features of whole clips as serving sees them, for validation (clip = mean of segment probs).

    With a speaker spec and ``histories``, every segment also gets its speaker vector: the clip's
    own voiced frames plus a label-blind history of ``val_clips`` other clips of its speaker
    (seeded, the same every epoch)."""

    def __init__(self, store: WaveStore, idx: list[int], items: list[Item], spec: Spec,
                 mean: np.ndarray, std: np.ndarray, histories: Histories | None = None, seed: int = 0) -> None:
        segs, owner = [], []
        self.y = np.array([spec.labels.index(items[i].label) for i in idx], dtype=np.int64)
        for k, i in enumerate(idx):
            s = clip_segments(store.get(i), spec)
            segs.append(s)
            owner.extend([k] * len(s))
        self.owner = np.asarray(owner, dtype=np.int64)
        self.x = ((features(np.concatenate(segs), spec) - mean) / std).astype(np.float32) if segs else None
        self.n = len(idx)
        self.speaker: np.ndarray | None = None
        if spec.speaker is not None and self.x is not None:
            own = segment_sums(np.concatenate(segs), self.x, spec)
            per_clip = np.zeros((self.n, own.shape[1]))
            np.add.at(per_clip, self.owner, own)
            if histories is not None:
                rng = np.random.default_rng(seed)
                per_clip += np.stack([histories.label_blind(i, n=histories.cfg.val_clips, rng=rng) for i in idx])
            self.speaker = stats_vector(per_clip, spec.speaker)[self.owner]

    @property
    def inputs(self) -> Any:
        return self.x if self.speaker is None else [self.x, self.speaker]

    def segment_probs(self, model: Any, batch: int = 256) -> np.ndarray:
        return np.asarray(model.predict(self.inputs, batch_size=batch, verbose=0))

    def predict(self, model: Any, batch: int = 256) -> np.ndarray:
        probs = self.segment_probs(model, batch)
        out = np.zeros((self.n, probs.shape[1]), dtype=np.float64)
        np.add.at(out, self.owner, probs)
        return out / np.maximum(np.bincount(self.owner, minlength=self.n), 1)[:, None]


def sampling_weights(items: list[Item], idx: list[int], *, corpus_share: str = DEFAULT_CORPUS_SHARE
                     ) -> np.ndarray:
    """Balanced sampling: every label gets the same total weight, and within a label the corpora that
    have it share that weight, so that no label is carried mostly by one corpus's recording conditions.

    ``corpus_share="equal"``: every corpus gets an equal share of a label (TESS a reduced one,
    :data:`CORPUS_WEIGHT`). ``"sqrt-speakers"``: a corpus's share grows with the square root of its
    number of training speakers (times :data:`CORPUS_WEIGHT`), so that many-speaker corpora (CREMA-D)
    are not drowned out by two-speaker ones (SAVEE, TESS) whose few clips would repeat many times.
    """
    if corpus_share not in CORPUS_SHARES:
        raise ValueError(f"corpus_share must be one of {', '.join(CORPUS_SHARES)}, got {corpus_share!r}")
    keys = [(items[i].label, items[i].corpus) for i in idx]
    per_cell: Counter[tuple[str, str]] = Counter(keys)
    speakers: dict[str, set[str]] = {}
    for i in idx:
        speakers.setdefault(items[i].corpus, set()).add(items[i].speaker)

    def corpus_weight(corpus: str) -> float:
        base = CORPUS_WEIGHT.get(corpus, 1.0)
        return base * float(np.sqrt(len(speakers[corpus]))) if corpus_share == "sqrt-speakers" else base

    share: dict[tuple[str, str], float] = {}
    for label in {k[0] for k in per_cell}:
        cells = [k for k in per_cell if k[0] == label]
        total = sum(corpus_weight(c) for _, c in cells)
        for cell in cells:
            share[cell] = corpus_weight(cell[1]) / total
    w = np.array([share[k] / per_cell[k] for k in keys], dtype=np.float64)
    return w / w.sum()


def epoch_data(store: WaveStore, items: list[Item], idx: list[int], probs: np.ndarray, spec: Spec,
               mean: np.ndarray, std: np.ndarray, cfg: FitConfig, rng: np.random.Generator,
               histories: Histories | None = None) -> tuple[Any, np.ndarray, np.ndarray]:
    """One epoch of augmented, normalised training features, integer labels and the item index of
    every example; with ``histories``, the inputs are ``[features, speaker vectors]`` (see
    :mod:`training.history`)."""
    n = min(cfg.epoch_size, max(len(idx), cfg.batch_size)) if cfg.epoch_size else len(idx)
    pick = rng.choice(len(idx), size=n, replace=True, p=probs)
    window, _, _ = spec.segment.samples(spec.sample_rate)
    babble = [store.get(idx[int(j)]) for j in rng.choice(len(idx), size=64)] if cfg.augment.p_babble else None
    examples = [augment_example(store.get(idx[j]), sr=spec.sample_rate, window=window, rng=rng,
                                cfg=cfg.augment, babble=babble) for j in pick]
    waves = np.stack([e[0] for e in examples])
    x = ((features(waves, spec) - mean) / std).astype(np.float32)
    inputs: Any = x
    if histories is not None and spec.speaker is not None:
        own = segment_sums(waves, x, spec)
        hist = np.stack([histories.draw(idx[j], narrowband=e[2], rng=rng) for j, e in zip(pick, examples,
                                                                                           strict=True)])
        hist = gain_shift(hist, np.array([e[1] for e in examples]), std)
        inputs = [x, stats_vector(own + hist, spec.speaker)]
    if cfg.spec_augment:
        spec_augment(x, rng=rng)
    y = np.array([spec.labels.index(items[idx[j]].label) for j in pick], dtype=np.int64)
    return inputs, y, np.asarray(idx, dtype=np.int64)[pick]


def configure_tf(threads: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process (tests): keep what is set
        pass


def train_model(store: WaveStore, items: list[Item], parts: dict[str, list[int]], spec: Spec,
                cfg: FitConfig, *, log: Any = print, histories: Histories | None = None) -> tuple[Any, dict[str, Any]]:
    """Train with early stopping on validation UAR; returns the best Keras model and the history.

    The weights of the second-half epoch with the best validation UAR are kept (raw, or their moving
    average when that scores higher). Training stops early when that has not improved for
    ``cfg.patience`` epochs (see :class:`EarlyStopping`: in the first half the learning rate is high
    and validation UAR wanders; a 56-epoch run with patience counted from the start stopped at epoch 21
    with a model 10 points worse)."""
    configure_tf(cfg.threads)
    import keras

    from training.model import adversary_scale, build_model, with_corpus_adversary

    rng = np.random.default_rng(cfg.seed)
    mean, std = spec.norm_mean, spec.norm_std
    train_idx, val_idx = parts["train"], parts["val"]
    probs = sampling_weights(items, train_idx, corpus_share=cfg.corpus_share)
    val = ClipSet(store, val_idx, items, spec, mean, std, histories, seed=cfg.seed)
    model = build_model(n_frames=spec.n_frames, n_mels=spec.features.n_mels, n_labels=len(spec.labels),
                        width=cfg.width, rnn_units=cfg.rnn_units, dropout=cfg.dropout, seed=cfg.seed,
                        spectrum_coefs=cfg.spectrum_coefs, speaker=spec.speaker is not None)
    label_loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    trainer, reversal, corpora = model, None, sorted({items[i].corpus for i in train_idx})
    if cfg.corpus_adversary > 0:
        trainer, reversal = with_corpus_adversary(model, n_corpora=len(corpora), dropout=cfg.dropout)
        trainer.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.lr),
                        loss=[label_loss, keras.losses.CategoricalCrossentropy()])
        log(f"corpus adversary over {', '.join(corpora)}, gradient reversal up to {cfg.corpus_adversary}")
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.lr), loss=label_loss)
    history: list[dict[str, float]] = []
    stopper = EarlyStopping(epochs=cfg.epochs, patience=cfg.patience)
    average = WeightAverage(decay=cfg.average_decay, start=stopper.start)
    best_weights, best_kind = model.get_weights(), "raw"
    bar = tqdm(range(cfg.epochs), desc="epochs", unit="epoch", disable=not cfg.progress)
    teacher = None
    if cfg.teacher:
        from training.distill import Teacher, targets

        teacher = Teacher(cfg.teacher, spec)
        log(f"distilling from {teacher.model_id}: targets {1 - cfg.distill_weight:g} x label + "
            f"{cfg.distill_weight:g} x teacher")

    # The next epoch's augmented features are computed in a background thread while Keras fits this
    # one (numpy, scipy and soxr release the GIL). Only that thread draws from ``rng``, in epoch
    # order, so the data are exactly those computed in line. data_s is the time spent waiting for it.
    # A teacher scores the epoch in the same thread (onnxruntime releases the GIL too).
    def epoch_and_teacher() -> tuple[Any, np.ndarray, np.ndarray, np.ndarray | None]:
        x, y, picked = epoch_data(store, items, train_idx, probs, spec, mean, std, cfg, rng, histories)
        return x, y, picked, (teacher.probs(x) if teacher is not None else None)

    prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="epoch-data")
    next_epoch = functools.partial(prefetch.submit, epoch_and_teacher)
    upcoming = next_epoch()
    try:
        for epoch in bar:
            current_lr = cosine_lr(cfg.lr, epoch, cfg.epochs)
            trainer.optimizer.learning_rate.assign(current_lr)
            if reversal is not None:
                reversal.scale.assign(adversary_scale(epoch, cfg.epochs, weight=cfg.corpus_adversary))
            t0 = time.time()
            x, y, picked, soft = upcoming.result()
            if epoch + 1 < cfg.epochs:
                upcoming = next_epoch()
            t1 = time.time()
            target: Any = np.eye(len(spec.labels), dtype=np.float32)[y]
            if soft is not None:
                target = targets(target, soft, weight=cfg.distill_weight)
            if reversal is not None:
                source = np.array([corpora.index(items[i].corpus) for i in picked])
                target = [target, np.eye(len(corpora), dtype=np.float32)[source]]
            h = trainer.fit(x, target, batch_size=cfg.batch_size, epochs=1, verbose=0, shuffle=True)
            t2 = time.time()
            v_uar, v_wa = _score(val, model, len(spec.labels))
            rec = {"epoch": epoch + 1, "loss": float(h.history["loss"][-1]), "val_uar": v_uar, "val_wa": v_wa,
                   "lr": current_lr, "data_s": round(t1 - t0, 1), "fit_s": round(t2 - t1, 1)}
            if reversal is not None:
                rec["corpus_loss"] = float(h.history["corpus_loss"][-1])
                rec["reversal"] = float(reversal.scale.numpy())
            weights = model.get_weights()
            candidate, kind = weights, "raw"
            if average.update(epoch + 1, weights):
                model.set_weights(average.weights)
                rec["avg_val_uar"], rec["avg_val_wa"] = _score(val, model, len(spec.labels))
                model.set_weights(weights)
                if rec["avg_val_uar"] > v_uar:
                    candidate, kind = average.weights, "average"
            rec["val_s"] = round(time.time() - t2, 1)
            history.append(rec)
            log(json.dumps(rec))
            best_now = max(v_uar, rec.get("avg_val_uar", -1.0))
            bar.set_postfix(loss=f"{rec['loss']:.3f}", val_uar=f"{best_now:.3f}")
            if stopper.update(epoch + 1, best_now):
                best_weights, best_kind = [w.copy() for w in candidate], kind
            if stopper.stop:
                log(f"early stop at epoch {epoch + 1}: best val UAR {stopper.best:.4f} at epoch {stopper.best_epoch}")
                break
    finally:
        prefetch.shutdown(wait=True, cancel_futures=True)
    model.set_weights(best_weights)
    return model, {"epochs": history, "best_epoch": stopper.best_epoch, "best_val_uar": stopper.best,
                   "best_weights": best_kind}


def _score(val: ClipSet, model: Any, n_labels: int) -> tuple[float, float]:
    """Clip-level validation UAR and WA of ``model``."""
    pred = val.predict(model).argmax(axis=1)
    return uar(val.y, pred, n_labels), float(np.mean(pred == val.y))


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "scipy", "librosa",
                "soundfile", "soxr"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def class_counts(items: list[Item], idx: list[int]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = {}
    for i in idx:
        out.setdefault(items[i].corpus, Counter())[items[i].label] += 1
    return {c: dict(sorted(v.items())) for c, v in sorted(out.items())}
