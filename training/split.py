"""Speaker-independent train/val/test split, grouped by corpus + speaker, seeded.

Defaults per corpus (scaled down when a corpus has fewer speakers):

- CREMA-D: 15 test speakers, 8 validation speakers, the rest train.
- RAVDESS: 4 test actors (2 male = odd ids, 2 female = even ids), 2 validation actors (1 + 1).
- SAVEE: 1 test speaker, the rest train (only 3 speakers).
- nEMO: 2 test speakers, 1 validation speaker, the rest train.
- TESS: training only. It has just two speakers, both female, reading the same 200 words; holding
  one out would halve its training data and test one voice only.
- manifests / anything else: ~20 % of speakers test, ~10 % validation.

``hold_out`` corpora (leave-one-corpus-out) put every speaker of that corpus in test: a model
trained without them shows what an unseen corpus (language, recording set-up) does.

``random`` mode splits clips, not speakers (70/10/20): its figures leak speaker and sentence and
are NOT comparable; it exists only to show how misleading such figures are.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from training.corpora import Item

DEFAULT_COUNTS: dict[str, tuple[int, int]] = {"cremad": (15, 8), "ravdess": (4, 2), "savee": (1, 0),
                                              "nemo": (2, 1), "tess": (0, 0)}


_FIRST = ("cremad", "ravdess", "savee", "tess")


def _counts(corpus: str, n: int) -> tuple[int, int]:
    if corpus in DEFAULT_COUNTS:
        test, val = DEFAULT_COUNTS[corpus]
        if corpus == "tess":
            return 0, 0
        if n < test + val + 1:  # a small corpus: keep at least one speaker for training
            test = max(1, round(0.2 * n)) if n >= 2 else 0
            val = max(1, round(0.1 * n)) if n - test >= 2 else 0
        return test, val
    test = max(1, round(0.2 * n)) if n >= 2 else 0
    val = max(1, round(0.1 * n)) if n - test >= 2 else 0
    return test, val


def _ravdess_pick(speakers: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """Pick ``n`` RAVDESS actors, alternating male (odd id) and female (even id)."""
    male = [s for s in speakers if int(s.split(":")[1]) % 2 == 1]
    female = [s for s in speakers if int(s.split(":")[1]) % 2 == 0]
    rng.shuffle(male)
    rng.shuffle(female)
    out: list[str] = []
    while len(out) < n and (male or female):
        for pool in (male, female):
            if pool and len(out) < n:
                out.append(pool.pop())
    return out


def speaker_split(items: list[Item], *, seed: int, hold_out: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Return ``{"train": [...], "val": [...], "test": [...]}`` speaker ids (sorted), disjoint.

    The other corpora's split does not depend on ``hold_out`` (the same seed gives the same
    speakers), so leave-one-corpus-out runs share their test speakers with the main run."""
    rng = np.random.default_rng(seed)
    by_corpus: dict[str, set[str]] = defaultdict(set)
    for it in items:
        by_corpus[it.corpus].add(it.speaker)
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    # corpora added later (nEMO) draw after the original four, so their test speakers stay those of 1.2.0
    for corpus in sorted(by_corpus, key=lambda c: (c not in _FIRST, c)):
        speakers = sorted(by_corpus[corpus])
        n_test, n_val = _counts(corpus, len(speakers))
        if corpus == "ravdess" and all(s.split(":")[1].isdigit() for s in speakers):
            test = _ravdess_pick(speakers, n_test, rng)
            val = _ravdess_pick([s for s in speakers if s not in test], n_val, rng)
        else:
            perm = [speakers[i] for i in rng.permutation(len(speakers))]
            test, val = perm[:n_test], perm[n_test : n_test + n_val]
        if corpus in hold_out:  # drawn as usual first, so the other corpora's speakers do not change
            test, val = speakers, []
        out["test"].extend(test)
        out["val"].extend(val)
        out["train"].extend(s for s in speakers if s not in test and s not in val)
    return {k: sorted(v) for k, v in out.items()}


def assign(items: list[Item], split: dict[str, list[str]]) -> dict[str, list[int]]:
    """Indices of ``items`` in each part of a speaker split."""
    where = {s: part for part, speakers in split.items() for s in speakers}
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, it in enumerate(items):
        part = where.get(it.speaker)
        if part in out:
            out[part].append(i)
    return out


def read_split(path: Path) -> dict[str, object]:
    """A run's ``split.json``, or the split recorded in a bundle (its directory or ``spec.json``).

    A bundle records speakers only, so a random (clip-level) split must come from the run's
    ``split.json``. Raises ``ValueError`` with the reason when ``path`` holds no usable split.
    """
    if path.is_dir():
        path = path / "spec.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if "training" not in data:
        return data
    training = data["training"]
    recorded = training.get("split") if isinstance(training, dict) else None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("speakers"), dict):
        raise ValueError("the bundle's spec.json records no speaker split")
    if recorded.get("mode") == "random":
        raise ValueError("a bundle records no clip list for a random split: use the run's split.json")
    return {"mode": recorded.get("mode"), "seed": recorded.get("seed"), **recorded["speakers"]}
