"""Speaker-disjoint seeded split; the companding and telephone channel; metrics; the learning-rate schedule."""

from __future__ import annotations

import numpy as np
import pytest

from training import augment
from training.corpora import Item
from training.metrics import scores, uar
from training.split import assign, speaker_split


def _items() -> list[Item]:
    items = []
    for spk in range(1001, 1031):
        for lab in ("angry", "sad"):
            items.append(Item(f"/x/{spk}_{lab}.wav", "cremad", f"cremad:{spk}", lab))
    for actor in range(1, 21):
        items.append(Item(f"/r/{actor}.wav", "ravdess", f"ravdess:{actor:02d}", "happy"))
    for spk in ("DC", "JE", "JK"):
        items.append(Item(f"/s/{spk}.wav", "savee", f"savee:{spk}", "sad"))
    for spk in ("OAF", "YAF"):
        items.append(Item(f"/t/{spk}.wav", "tess", f"tess:{spk}", "angry"))
    return items


def test_split_is_speaker_disjoint_seeded_and_follows_protocol() -> None:
    items = _items()
    a, b, c = speaker_split(items, seed=7), speaker_split(items, seed=7), speaker_split(items, seed=8)
    assert a == b and a != c
    sets = {k: set(v) for k, v in a.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert set().union(*sets.values()) == {i.speaker for i in items}
    test = a["test"]
    assert sum(s.startswith("cremad:") for s in test) == 15
    assert sum(s.startswith("cremad:") for s in a["val"]) == 8
    rav_test = [int(s.split(":")[1]) for s in test if s.startswith("ravdess:")]
    assert len(rav_test) == 4 and sum(x % 2 for x in rav_test) == 2  # 2 male (odd), 2 female (even)
    rav_val = [int(s.split(":")[1]) for s in a["val"] if s.startswith("ravdess:")]
    assert len(rav_val) == 2 and sum(x % 2 for x in rav_val) == 1
    assert sum(s.startswith("savee:") for s in test) == 1
    assert {"tess:OAF", "tess:YAF"} <= sets["train"]
    parts = assign(items, a)
    for part, idx in parts.items():
        assert {items[i].speaker for i in idx} <= sets[part]
    assert sum(len(v) for v in parts.values()) == len(items)


def test_small_corpus_keeps_training_speakers() -> None:
    items = [Item(f"/x/{s}.wav", "cremad", f"cremad:{s}", "sad") for s in range(1001, 1007)]
    split = speaker_split(items, seed=0)
    assert len(split["test"]) == 1 and len(split["val"]) == 1 and len(split["train"]) == 4


def test_companding_and_channel() -> None:
    y = np.linspace(-1, 1, 8001, dtype=np.float32)
    for fn in (augment.mu_law, augment.a_law):
        z = fn(y)
        assert z.shape == y.shape and np.isfinite(z).all()
        assert np.max(np.abs(z - y)) < 0.05  # 8-bit companding: small error
        assert len(np.unique(z)) <= 256
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    tel = augment.telephone(tone, sr=16000)
    assert tel.shape == tone.shape and np.isfinite(tel).all()
    low = (0.5 * np.sin(2 * np.pi * 60 * np.arange(8000) / 8000)).astype(np.float32)
    assert np.std(augment.band_limit(low, sr=8000)[2000:]) < 0.05 * np.std(low)  # hum removed


def test_metrics() -> None:
    labels = ("a", "b", "c")
    sc = scores(["a", "a", "b", "b"], ["a", "b", "b", "c"], labels)
    assert sc["uar"] == pytest.approx(0.5) and sc["wa"] == pytest.approx(0.5)
    assert sc["confusion"] == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]
    assert set(sc["recall"]) == {"a", "b"}  # c absent from the truth: not averaged
    assert uar(np.array([0, 0, 1]), np.array([0, 1, 1]), 3) == pytest.approx(0.75)


def test_cosine_schedule_decays_from_the_base_to_the_floor() -> None:
    from training.schedule import cosine_lr

    lrs = [cosine_lr(1e-3, e, 18) for e in range(18)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(2e-5)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
