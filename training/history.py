"""Speaker histories for training: the ``speaker`` input as a live call would have it.

In a call, a segment's speaker statistics (:mod:`models.speaker`) hold the prior, the segment
itself and whatever that channel said before: mostly neutral speech, over the same line. Training
simulates exactly that for every example: the example's own voiced frames (after augmentation,
computed by the serving functions) plus the sums of ``k`` other clips of the same *training*
speaker, ``k`` random (0 in :attr:`HistoryConfig.p_empty` of examples: the first seconds of a call),
each clip neutral with probability :attr:`HistoryConfig.p_neutral` (an emotion-skewed history, never
a balanced one). The history's clips pass through the same kind of channel as the example (clean,
or narrowband: band-limited and mu-law coded) and the same gain, so that the statistics describe
the voice, not the line. Validation and test histories never look at labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from models.bundle import Spec
from models.speaker import segment_sums as speaker_sums
from training.augment import telephone
from training.corpora import Item
from training.data import WaveStore


@dataclass(frozen=True)
class HistoryConfig:
    """How training histories are drawn."""

    p_empty: float = 0.15
    max_clips: int = 10
    p_neutral: float = 0.6
    val_clips: int = 6

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def segment_sums(segs: np.ndarray, x: np.ndarray, spec: Spec) -> np.ndarray:
    """Voiced-frame sums ``(k, 2 * n_mels + 1)`` of segments ``(k, window)`` with normalised features ``x``
    (:func:`models.speaker.segment_sums` with the spec's parameters)."""
    if spec.speaker is None:
        raise ValueError("the spec has no speaker_stats")
    return speaker_sums(segs, x, params=spec.speaker, features=spec.features)


def clip_sums(store: WaveStore, idx: list[int], spec: Spec, featurize: object, *, narrowband: bool
              ) -> np.ndarray:
    """Sums ``(len(idx), 2 * n_mels + 1)`` of each clip's serving segments (clean, or through the
    deterministic telephone channel). ``featurize(segs) -> normalised features``."""
    from training.train import clip_segments

    out = np.zeros((len(idx), 2 * spec.features.n_mels + 1), dtype=np.float64)
    for k, i in enumerate(idx):
        y = store.get(i)
        if narrowband:
            y = telephone(y, sr=spec.sample_rate)
        segs = clip_segments(y, spec)
        if len(segs):
            out[k] = segment_sums(segs, featurize(segs), spec).sum(axis=0)  # type: ignore[operator]
    return out


def gain_shift(sums: np.ndarray, gain_db: np.ndarray, norm_std: np.ndarray) -> np.ndarray:
    """The sums of the same frames after a gain of ``gain_db`` (one per row): log-mel moves by
    ``gain_db`` in every band, i.e. by ``gain_db / norm_std`` in normalised units."""
    f = len(norm_std)
    d = np.asarray(gain_db, dtype=np.float64)[:, None] / np.asarray(norm_std, dtype=np.float64)[None, :]
    s1, s2, n = sums[:, :f], sums[:, f : 2 * f], sums[:, 2 * f :]
    return np.concatenate([s1 + n * d, s2 + 2 * d * s1 + n * d * d, n], axis=1)


class Histories:
    """Per-clip sums of the training (and validation) clips and the draw of a history for an example."""

    def __init__(self, items: list[Item], idx: list[int], clean: np.ndarray, narrow: np.ndarray,
                 cfg: HistoryConfig) -> None:
        self.cfg = cfg
        self.row = {i: r for r, i in enumerate(idx)}
        self.clean, self.narrow = clean, narrow
        self.by_speaker: dict[str, tuple[list[int], list[int]]] = {}
        for i in idx:
            neutral, other = self.by_speaker.setdefault(items[i].speaker, ([], []))
            (neutral if items[i].label == "neutral" else other).append(i)
        self.speaker = {i: items[i].speaker for i in idx}

    def draw(self, clip: int, *, narrowband: bool, rng: np.random.Generator) -> np.ndarray:
        """A training history for example clip ``clip``: summed sums of other clips of its speaker."""
        table = self.narrow if narrowband else self.clean
        out = np.zeros(table.shape[1], dtype=np.float64)
        if rng.random() < self.cfg.p_empty:
            return out
        neutral, other = self.by_speaker[self.speaker[clip]]
        neutral = [i for i in neutral if i != clip]
        other = [i for i in other if i != clip]
        for _ in range(int(rng.integers(1, self.cfg.max_clips + 1))):
            pool = neutral if neutral and (not other or rng.random() < self.cfg.p_neutral) else other
            if not pool:
                break
            out += table[self.row[pool[int(rng.integers(0, len(pool)))]]]
        return out

    def label_blind(self, clip: int, *, n: int, rng: np.random.Generator) -> np.ndarray:
        """A history of ``n`` random other clips of the speaker, chosen without looking at labels
        (validation and test: labels of held-out speakers must not shape their statistics)."""
        neutral, other = self.by_speaker[self.speaker[clip]]
        pool = [i for i in neutral + other if i != clip]
        out = np.zeros(self.clean.shape[1], dtype=np.float64)
        if pool:
            for j in rng.choice(len(pool), size=min(n, len(pool)), replace=False):
                out += self.clean[self.row[pool[int(j)]]]
        return out
